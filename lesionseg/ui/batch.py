"""Segment a folder, a list of files or ZIP archives; one results ZIP with masks, overlays and a CSV.

Every input gets a table row: a bad file (unreadable, not an image, refused archive) shows its
reason while the others are processed. Per image the ZIP holds ``masks/<id>_mask.png`` at the
photo's full resolution and ``overlays/<id>_overlay.png`` (at the resolution the photo was
decoded at: full size up to about 1000 px on the short side, a 1/2 - 1/8 scale for larger
photos); ``results.csv`` has one row per input with its measurements.
"""
from __future__ import annotations

import csv
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.io import ImageLoadError, is_image_file
from ..inference.outputs import overlay, save_png
from ..inference.predictor import Predictor
from .archive import UnsafeArchiveError, ZipLimits, safe_zip_members
from .measurements import FLAG_LOW_CONFIDENCE
from .session import ImageResult, measurements
from .views import fit_size, resize_rgb_to

__all__ = ["CSV_COLUMNS", "TABLE_HEADERS", "BatchInput", "UnsafeArchiveError", "ZipLimits", "collect_inputs",
           "public_message", "run_batch", "safe_zip_members"]

TABLE_HEADERS = ["file", "size", "lesion area", "confidence", "flags", "status"]
CSV_COLUMNS = ["file", "status", "error", "width_px", "height_px", "threshold", "area_px", "area_pct",
               "perimeter_px", "longest_diameter_px", "regions", "asymmetry_index", "border_irregularity",
               "compactness", "mean_probability", "uncertain_fraction", "flags", "mask_file", "overlay_file"]
THUMB_MAX_SIDE = 320
Progress = Callable[[float, str], None]


@dataclass
class BatchInput:
    """One input: a file to segment (``path``) or a row that only reports ``error``."""

    name: str
    path: Path | None = None
    error: str | None = None
    skipped: bool = False


def _safe_part(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"
    return stem[:120]


def collect_inputs(paths: Sequence[str | os.PathLike], work_dir: str | os.PathLike,
                   limits: ZipLimits = ZipLimits()) -> list[BatchInput]:
    """Expand ZIP archives (checked by :func:`safe_zip_members`) into ``work_dir``; one entry per file."""
    work = Path(work_dir)
    items: list[BatchInput] = []
    for k, raw in enumerate(paths):
        p = Path(raw)
        if p.suffix.lower() == ".zip":
            try:
                members = safe_zip_members(p, limits)
            except UnsafeArchiveError as e:
                items.append(BatchInput(p.name, error=str(e)))
                continue
            folder = work / f"zip{k:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for j, (member, data) in enumerate(members):
                shown = f"{p.name}/{member}"
                if not is_image_file(member):
                    items.append(BatchInput(shown, error="skipped: not an image file", skipped=True))
                    continue
                target = folder / f"{j:05d}_{_safe_part(Path(member).name)}"  # our name, never the member's path
                target.write_bytes(data)
                items.append(BatchInput(shown, path=target))
        elif is_image_file(p):
            items.append(BatchInput(p.name, path=p))
        else:
            items.append(BatchInput(p.name, error="skipped: not an image file", skipped=True))
    return items


def public_message(err: BaseException, name: str) -> str:
    """The error's one-line message with server-side paths replaced by the file's name."""
    msg = " ".join(str(err).split())
    path = getattr(err, "path", None)
    if path and path != name:
        msg = msg.replace(str(path), name)
    return msg


def _unique(stem: str, used: set[str]) -> str:
    base, n = _safe_part(stem), 2
    out = base
    while out in used:
        out, n = f"{base}_{n}", n + 1
    used.add(out)
    return out


def _row_for_error(item: BatchInput) -> tuple[list, dict]:
    status = item.error or "error"
    row = [item.name, "", "", "", "", status]
    rec = {"file": item.name, "status": "skipped" if item.skipped else "error", "error": item.error or ""}
    return row, rec


def _failed(item: BatchInput, err: BaseException) -> BatchInput:
    msg = public_message(err, item.name)
    prefix = f"{item.name}: "
    return BatchInput(item.name, error=f"error: {msg[len(prefix):] if msg.startswith(prefix) else msg}")


def _confidence(meas: dict) -> str:
    p = meas.get("mean_probability")
    if p is None:
        return ""
    return f"{'low' if FLAG_LOW_CONFIDENCE in meas['flags'] else 'ok'} ({p:.2f})"


def _process(predictor: Predictor, item: BatchInput, rgb: np.ndarray, full: tuple[int, int], prob: np.ndarray,
             threshold: float, stem: str, files_dir: Path, thumbs_dir: Path, mm_per_px: float | None
             ) -> tuple[tuple[str, str], list, dict]:
    display = resize_rgb_to(rgb, fit_size(*full, 1024))
    result = ImageResult(item.name, full, display, prob, None, predictor.threshold, list(predictor.operating_points),
                         str(item.path))
    meas = measurements(result, threshold, mm_per_px)
    mask_rel, overlay_rel = f"masks/{stem}_mask.png", f"overlays/{stem}_overlay.png"
    save_png(files_dir / mask_rel, result.prediction(full, threshold, uncertainty=False).mask * np.uint8(255))
    ov = overlay(rgb, result.prediction(rgb.shape[:2], threshold, uncertainty=False).mask)
    save_png(files_dir / overlay_rel, ov)
    thumb = save_png(thumbs_dir / f"{stem}.png", resize_rgb_to(ov, fit_size(*ov.shape[:2], THUMB_MAX_SIDE)))
    flags = ", ".join(meas["flags"])
    row = [item.name, f"{full[1]}×{full[0]}", f"{meas['area_px']:,} px ({meas['area_pct']:.1f} %)",
           _confidence(meas), flags, "ok"]
    rec = {"file": item.name, "status": "ok", "error": "", "width_px": full[1], "height_px": full[0],
           **{k: meas.get(k) for k in CSV_COLUMNS if k in meas and k not in ("flags",)},
           "flags": "; ".join(meas["flags"]), "mask_file": mask_rel, "overlay_file": overlay_rel}
    caption = f"{item.name} — {meas['area_pct']:.1f} %" + (f" — {flags}" if flags else "")
    return (str(thumb), caption), row, rec


def _write_zip(zip_path: Path, files_dir: Path, records: list[dict]) -> None:
    csv_path = files_dir / "results.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: ("" if rec.get(k) is None else rec.get(k)) for k in CSV_COLUMNS})
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        zf.write(csv_path, "results.csv", compress_type=zipfile.ZIP_DEFLATED)
        for rec in records:
            for key in ("mask_file", "overlay_file"):
                if rec.get(key):
                    zf.write(files_dir / rec[key], rec[key])
    os.replace(tmp, zip_path)


def run_batch(predictor: Predictor, paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
              progress: Progress | None = None, threshold: float | None = None, mm_per_px: float | None = None,
              limits: ZipLimits = ZipLimits(), tta: bool = False,
              ) -> tuple[list[tuple[str, str]], list[list], Path]:
    """Segment every image in ``paths`` (files and ZIP archives).

    Returns (gallery: [(overlay thumbnail path, caption)], table rows (:data:`TABLE_HEADERS`),
    path of ``out_dir/lesionseg_results.zip``). ``progress(fraction, text)`` is called per image.
    """
    out = Path(out_dir)
    files_dir, thumbs_dir = out / "files", out / "thumbs"
    for d in (files_dir / "masks", files_dir / "overlays", thumbs_dir):
        d.mkdir(parents=True, exist_ok=True)
    t = predictor.threshold if threshold is None else float(threshold)
    items = collect_inputs(paths, out / "inputs", limits)
    n = max(1, len(items))
    gallery: list[tuple[str, str]] = []
    rows: list[list] = [[] for _ in items]
    records: list[dict] = [{} for _ in items]
    used: set[str] = set()
    s = predictor.img_size
    step = max(1, predictor.batch_size)
    for start in range(0, len(items), step):
        loaded = []
        for i in range(start, min(start + step, len(items))):
            item = items[i]
            if item.path is None:
                rows[i], records[i] = _row_for_error(item)
                continue
            try:
                rgb, full = predictor.load(item.path)
                loaded.append((i, rgb, tuple(int(v) for v in full)))
            except (ImageLoadError, OSError, ValueError) as e:
                rows[i], records[i] = _row_for_error(_failed(item, e))
        probs = predictor.predict_batch([rgb for _, rgb, _ in loaded], threshold=t, tta=tta,
                                        sizes=[(s, s)] * len(loaded)) if loaded else []
        for (i, rgb, full), pred in zip(loaded, probs):
            item = items[i]
            try:
                thumb, rows[i], records[i] = _process(predictor, item, rgb, full, pred.prob, t,
                                                      _unique(Path(item.name).stem, used), files_dir, thumbs_dir,
                                                      mm_per_px)
                gallery.append(thumb)
            except (OSError, ValueError) as e:
                rows[i], records[i] = _row_for_error(_failed(item, e))
            if progress is not None:
                progress((i + 1) / n, f"{i + 1} / {len(items)}: {item.name}")
    zip_path = out / "lesionseg_results.zip"
    _write_zip(zip_path, files_dir, records)
    return gallery, rows, zip_path
