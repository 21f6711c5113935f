"""Visual outputs of a prediction (overlay, side-by-side) and their atomic PNG files."""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ..utils.atomic import atomic_path
from ..utils.sizes import resize_rgb_to
from . import png
from .prediction import Prediction

log = logging.getLogger(__name__)

OUTPUT_KINDS = ("mask", "overlay", "result")
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Two threads that encode and write PNGs side by side (OpenCV's encoder releases the GIL)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lesionseg-png")
        return _POOL


def overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 64, 0), alpha: float = 0.35,
            outline: bool = True) -> np.ndarray:
    """Translucent ``color`` over the lesion plus its contour; (H, W, 3) uint8 + (H, W) {0, 1} -> (H, W, 3) uint8.

    The image is resized to the mask's size when they differ.
    """
    rgb = np.ascontiguousarray(resize_rgb_to(np.asarray(rgb, dtype=np.uint8), mask.shape[:2]))
    a = np.ascontiguousarray(mask, dtype=np.uint8)
    m = cv2.compare(a, np.zeros_like(a), cv2.CMP_NE)  # 0 / 255, any nonzero = lesion
    out = rgb.copy()
    if cv2.countNonZero(m):
        # the blend of every possible byte value, per channel, then a table look-up: the same bytes
        # as blending pixel by pixel, several times faster on full-resolution photos
        tint = np.asarray(color, dtype=np.float32)
        levels = np.arange(256, dtype=np.float32)[:, None]
        lut = np.round(levels * (1.0 - alpha) + tint * alpha).astype(np.uint8)  # (256, 3)
        cv2.copyTo(cv2.LUT(rgb, lut[None]), m, out)  # masked copy: vectorised, unlike np.copyto(where=)
        if outline:
            thickness = max(1, round(min(m.shape) / 250))
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), thickness, lineType=cv2.LINE_AA)
    return out


def side_by_side(rgb: np.ndarray, overlay_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """image | overlay | mask (white lesion on black) as one (H, 3W, 3) uint8 image at the mask's size."""
    shape = mask.shape[:2]
    mask_rgb = np.repeat((mask.astype(bool).astype(np.uint8) * 255)[..., None], 3, axis=2)
    return np.concatenate([resize_rgb_to(rgb, shape), resize_rgb_to(overlay_rgb, shape), mask_rgb], axis=1)


def _png_params(a: np.ndarray, compression: int) -> list[int]:
    """zlib level plus, where OpenCV offers them, the row filter and strategy that suit the content:
    no filter + run-length matching for gray masks (long runs of 0 and 255: faster and smaller than
    the adaptive default), the 'up' filter for photos (one cheap filter instead of trying five)."""
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]
    if compression > 0 and hasattr(cv2, "IMWRITE_PNG_FILTER"):
        if a.ndim == 2:
            params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE,
                       cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
        else:
            params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    return params


def encode_png(array: np.ndarray, compression: int = 1) -> bytes:
    """(H, W) gray or (H, W, 3) RGB uint8 -> PNG bytes (level 1: fast, still lossless).

    Both go through :mod:`.png` (numpy row filter + ISA-L deflate: faster than OpenCV's zlib, and
    smaller files for photos); gray images unfiltered, as masks compress best. OpenCV (run-length
    mode for gray) where ``isal`` is missing or ``compression`` is 0.
    """
    a = np.asarray(array)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ValueError(f"cannot encode array of dtype {a.dtype} and shape {a.shape} as PNG")
    if compression > 0 and png.available() and a.size:
        return png.encode_png(a, level=min(int(compression), 3), up=a.ndim == 3)
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR if a.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", a, _png_params(a, compression))
    if not ok:
        raise ValueError(f"PNG encoding failed for array of shape {a.shape}")
    return buf.tobytes()


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as PNG atomically (temp file + rename); raises OSError if it cannot be written."""
    data = encode_png(array)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def save_mask_png(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write a {0, 1} (or any nonzero = lesion) (H, W) mask as a 0 / 255 gray PNG, atomically."""
    a = np.ascontiguousarray(mask, dtype=np.uint8)
    # one pass: every nonzero value becomes 255 (uint8 > 0)
    return save_png(path, cv2.threshold(a, 0, 255, cv2.THRESH_BINARY)[1])


def parse_output_kinds(text: str) -> tuple[str, ...]:
    """"mask,overlay" -> ("mask", "overlay") in OUTPUT_KINDS order; ValueError naming the valid kinds."""
    kinds = {k.strip().lower() for k in text.split(",") if k.strip()}
    unknown = sorted(kinds - set(OUTPUT_KINDS))
    if unknown or not kinds:
        raise ValueError(f"unknown output kind(s) {', '.join(unknown) or '(none given)'}: choose from "
                         f"{', '.join(OUTPUT_KINDS)}, comma-separated")
    return tuple(k for k in OUTPUT_KINDS if k in kinds)


def output_paths(out_dir: str | os.PathLike, image_id: str,
                 kinds: tuple[str, ...] = OUTPUT_KINDS) -> dict[str, Path]:
    """{"mask", "overlay", "result"} (or the ``kinds`` asked for) -> ``<out_dir>/<id>_<kind>.png``."""
    return {k: Path(out_dir) / f"{image_id}_{k}.png" for k in kinds}


def write_prediction_outputs(out_dir: str | os.PathLike, image_id: str, rgb: np.ndarray,
                             pred: Prediction, kinds: tuple[str, ...] = OUTPUT_KINDS) -> dict[str, Path]:
    """Write ``<id>_mask.png`` (0/255), ``<id>_overlay.png`` and ``<id>_result.png`` at the mask's size
    (or only the ``kinds`` asked for).

    ``rgb`` may be smaller than the mask (reduced-scale decoding); it is resized up to it, and only
    when an overlay or result is asked for.
    """
    paths = output_paths(out_dir, image_id, kinds)
    jobs = []
    if "overlay" in paths or "result" in paths:
        full = resize_rgb_to(np.asarray(rgb, dtype=np.uint8), pred.mask.shape)
        ov = overlay(full, pred.mask)
        # the files are encoded and written concurrently; every write finishes before returning
        if "result" in paths:
            jobs.append(_pool().submit(save_png, paths["result"], side_by_side(full, ov, pred.mask)))
        if "overlay" in paths:
            jobs.append(_pool().submit(save_png, paths["overlay"], ov))
    errors = []
    if "mask" in paths:
        try:
            save_mask_png(paths["mask"], pred.mask)
        except OSError as e:
            errors.append(e)
    for job in jobs:
        try:
            job.result()
        except OSError as e:
            errors.append(e)
    if errors:
        raise errors[0]
    log.debug("wrote %s outputs to %s", image_id, out_dir)
    return paths
