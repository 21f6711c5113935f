"""One photo's segmentation, kept between events: re-thresholding never runs the model again.

:class:`ImageResult` holds the model's probability map at the model's own resolution (e.g.
256 x 256, a quarter of a megabyte) plus a screen-size copy of the photo. Any other size is
derived from it with the same resize the :class:`~lesionseg.inference.Predictor` uses, so the
screen views, the measurements (at up to ``ANALYSIS_MAX_SIDE`` pixels, scaled to the photo) and
the full-resolution mask download all come from one forward pass.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import ImageLoadError, load_image
from ..inference.outputs import overlay, save_png
from ..inference.predictor import Prediction, Predictor, make_prediction
from ..postprocess import NO_CLEANUP, MaskCleanup
from ..utils.atomic import atomic_path
from . import operating_points
from .measurements import measure
from .views import DISPLAY_MAX_SIDE, fit_size, mask_views, render_views, resize_rgb_to

ANALYSIS_MAX_SIDE = 2048
DISCLAIMER = "Image measurements from a research segmentation model; not a diagnosis."


@dataclass
class ImageResult:
    """A segmented photo (what the app keeps in ``gr.State``).

    prob / uncertainty: (S, S) float32 at the model's input resolution; rgb: the photo at screen
    size; full_size: (H, W) of the photo as displayed (EXIF applied); path: the photo file, read
    again at full resolution only for the overlay download.
    """

    name: str
    full_size: tuple[int, int]
    rgb: np.ndarray
    prob: np.ndarray
    uncertainty: np.ndarray | None
    default_threshold: float
    operating_points: list[dict]
    path: str | None = None
    cleanup: MaskCleanup = NO_CLEANUP

    @property
    def display_size(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]

    @property
    def analysis_size(self) -> tuple[int, int]:
        return fit_size(*self.full_size, ANALYSIS_MAX_SIDE)

    def prediction(self, size: tuple[int, int], threshold: float | None = None,
                   uncertainty: bool = True) -> Prediction:
        """The prediction resized to ``size`` (H, W), cut at ``threshold`` (default: the model's).

        ``uncertainty=False`` skips resizing the uncertainty map (None in the result).
        """
        t = self.default_threshold if threshold is None else float(threshold)
        return make_prediction(self.prob, size, t, self.cleanup, self.uncertainty if uncertainty else None)


def segment_file(predictor: Predictor, path: str | os.PathLike, tta: bool = True,
                 name: str | None = None) -> ImageResult:
    """Decode ``path`` (reduced-scale JPEG decoding), run the model once (4 views with ``tta``).

    Raises ImageLoadError (one-line message) for an unreadable or too large file.
    """
    rgb, full_size = predictor.load(path)
    return _segment(predictor, rgb, tuple(full_size), tta, name or Path(path).name, str(path))


def segment_array(predictor: Predictor, rgb: np.ndarray, tta: bool = True, name: str = "image") -> ImageResult:
    """As :func:`segment_file` for an RGB array already in memory."""
    rgb = np.asarray(rgb)
    return _segment(predictor, rgb, (int(rgb.shape[0]), int(rgb.shape[1])), tta, name, None)


def _segment(predictor: Predictor, rgb: np.ndarray, full_size: tuple[int, int], tta: bool, name: str,
             path: str | None) -> ImageResult:
    s = predictor.img_size
    raw = predictor.predict_batch([rgb], tta=tta, sizes=[(s, s)])[0]  # model resolution: resized later
    display = resize_rgb_to(np.asarray(rgb, dtype=np.uint8) if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, 2),
                            fit_size(*full_size, DISPLAY_MAX_SIDE))
    return ImageResult(name=name, full_size=(int(full_size[0]), int(full_size[1])), rgb=display[..., :3],
                       prob=raw.prob, uncertainty=raw.uncertainty, default_threshold=float(predictor.threshold),
                       operating_points=list(predictor.operating_points), path=path, cleanup=predictor.cleanup)


def measurements(result: ImageResult, threshold: float, mm_per_px: float | None = None) -> dict:
    """Measurements at the analysis resolution, scaled to the photo, plus threshold context."""
    pred = result.prediction(result.analysis_size, threshold, uncertainty=False)
    meas = measure(pred.mask, pred.prob, mm_per_px=mm_per_px or None, full_size=result.full_size)
    meas["threshold"] = round(float(threshold), 4)
    stats = operating_points.validation_stats(result.operating_points, threshold)
    if stats:
        meas["validation_recall"] = round(stats["recall"], 4)
        meas["validation_precision"] = round(stats["precision"], 4)
    return meas


def first_outputs(result: ImageResult, threshold: float | None = None,
                  mm_per_px: float | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """All four screen views and the measurements, right after :func:`segment_file`."""
    t = result.default_threshold if threshold is None else float(threshold)
    views = render_views(result.rgb, result.prediction(result.display_size, t), t)
    return views, measurements(result, t, mm_per_px)


def rethreshold(result: ImageResult, threshold: float,
                mm_per_px: float | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The threshold-dependent views {"overlay", "mask"} and the measurements at a new threshold.

    Takes no predictor: it re-cuts the probability map kept in ``result``.
    """
    t = float(threshold)
    pred = result.prediction(result.display_size, t, uncertainty=False)
    return mask_views(result.rgb, pred.mask), measurements(result, t, mm_per_px)


def _full_rgb(result: ImageResult) -> np.ndarray:
    if result.path:
        try:
            rgb = load_image(result.path)
            if rgb.shape[:2] == tuple(result.full_size):
                return rgb
            return resize_rgb_to(rgb, result.full_size)
        except ImageLoadError:
            pass
    return resize_rgb_to(result.rgb, result.full_size)


def write_downloads(result: ImageResult, threshold: float, meas: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Full-resolution ``<stem>_mask.png`` (0 / 255) and ``<stem>_overlay.png``, and
    ``<stem>_measurements.json``, in ``out_dir``; returns the three paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(result.name).stem or "image"
    pred = result.prediction(result.full_size, threshold, uncertainty=False)
    mask_path = save_png(out / f"{stem}_mask.png", pred.mask * np.uint8(255))
    overlay_path = save_png(out / f"{stem}_overlay.png", overlay(_full_rgb(result), pred.mask))
    doc = {"file": result.name, "note": DISCLAIMER, **meas}
    json_path = out / f"{stem}_measurements.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return [mask_path, overlay_path, json_path]
