"""The Batch tab: uploaded folders, files and ZIP archives through the batch engine, then one ZIP.

The segmentation is :func:`lesionseg.inference.batch.run_batch`, the engine ``lesionseg predict``
runs: the same masks, clean-up, measurements and CSV columns. This module only adds what the page
shows: a gallery of overlay thumbnails, a table row per input and one results ZIP holding
``masks/<id>_mask.png`` and ``overlays/<id>_overlay.png`` at the photo's full resolution and
``results.csv`` (one row per input).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.archive import ZipLimits
from ..data.inputs import InputFile, upload_inputs
from ..inference.batch import run_batch as run_engine
from ..inference.outputs import output_paths, overlay, save_png
from ..inference.prediction import Prediction
from ..inference.predictor import Predictor
from ..measurements import FLAG_LOW_CONFIDENCE
from ..utils.sizes import fit_size, resize_rgb_to

TABLE_HEADERS = ["file", "size", "lesion area", "confidence", "flags", "status"]
CSV_NAME = "results.csv"
KINDS = ("mask", "overlay")
ZIP_FOLDERS = {"mask": "masks", "overlay": "overlays"}
THUMB_MAX_SIDE = 320
Progress = Callable[[float, str], None]


def _confidence(row: dict) -> str:
    p = row.get("mean_probability")
    if p in ("", None):
        return ""
    return f"{'low' if FLAG_LOW_CONFIDENCE in row['flags'] else 'ok'} ({float(p):.2f})"


def _status(row: dict) -> str:
    if row["status"] != "error":
        return row["status"] if row["status"] == "ok" else row["error"] or row["status"]
    prefix = f"{row['file']}: "
    msg = row["error"]
    return f"error: {msg[len(prefix):] if msg.startswith(prefix) else msg}"


def table_row(row: dict) -> list:
    """A CSV row of the engine as the page's table row (:data:`TABLE_HEADERS`)."""
    if row["status"] != "ok":
        return [row["file"], "", "", "", "", _status(row)]
    area = int(row["lesion_area_px"])
    flags = row["flags"].replace("; ", ", ")
    return [row["file"], f"{row['width']}×{row['height']}", f"{area:,} px ({float(row['lesion_fraction']) * 100:.1f} %)",
            _confidence(row), flags, "ok"]


def _write_zip(zip_path: Path, files_dir: Path, rows: list[dict]) -> None:
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        zf.write(files_dir / CSV_NAME, CSV_NAME, compress_type=zipfile.ZIP_DEFLATED)
        for row in rows:
            if row["status"] == "ok":
                for kind, path in output_paths(files_dir, row["id"], KINDS).items():
                    zf.write(path, f"{ZIP_FOLDERS[kind]}/{path.name}")
    os.replace(tmp, zip_path)


def run_batch(predictor: Predictor, paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
              progress: Progress | None = None, threshold: float | None = None,
              limits: ZipLimits = ZipLimits()) -> tuple[list[tuple[str, str]], list[list], Path]:
    """Segment every image in ``paths`` (files and ZIP archives) at ``threshold`` (default: the model's).

    Returns (gallery: [(overlay thumbnail path, caption)], table rows (:data:`TABLE_HEADERS`),
    path of ``out_dir/lesionseg_results.zip``). ``progress(fraction, text)`` is called per input.
    Raises :class:`lesionseg.inference.batch.BatchWriteError` when the work folder is not writable.
    """
    out = Path(out_dir)
    files_dir, thumbs_dir = out / "files", out / "thumbs"
    for d in (files_dir, thumbs_dir):
        d.mkdir(parents=True, exist_ok=True)
    items = upload_inputs(paths, out / "inputs", limits)
    gallery: list[tuple[str, str]] = []

    def on_image(item: InputFile, row: dict, rgb: np.ndarray, pred: Prediction) -> None:
        size = fit_size(*pred.size, THUMB_MAX_SIDE)
        thumb = save_png(thumbs_dir / f"{item.id}.png", overlay(resize_rgb_to(rgb, size), pred.mask_at(size)))
        flags = row["flags"].replace("; ", ", ")
        caption = f"{item.name} — {float(row['lesion_fraction']) * 100:.1f} %" + (f" — {flags}" if flags else "")
        gallery.append((str(thumb), caption))

    def on_row(done: int, total: int, row: dict) -> None:
        if progress is not None:
            progress(done / total, f"{done} / {total}: {row['file']}")

    result = run_engine(predictor, items, files_dir, kinds=KINDS, threshold=threshold, csv_name=CSV_NAME,
                        on_row=on_row, on_image=on_image)
    zip_path = out / "lesionseg_results.zip"
    _write_zip(zip_path, files_dir, result.rows)
    return gallery, [table_row(r) for r in result.rows], zip_path
