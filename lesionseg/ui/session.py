"""One photo's segmentation, kept between events: re-thresholding never runs the model again.

:class:`ImageResult` holds the photo's :class:`~lesionseg.inference.Prediction` (the model's
probability map at the model's own resolution plus the photo's full size) and a screen-size copy
of the photo. The screen views, the measurements and the full-resolution mask download are all
cut from that one prediction, by the Prediction's own methods.

A corrected result (clicks, brush dabs: see :mod:`editing`) keeps the corrected prediction in the
same place, so every view, measurement and download follows the correction unchanged.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Union

import numpy as np

from ..clicks import Click
from ..data.io import ImageLoadError, load_image
from ..data.transforms import resize_rgb
from ..inference.edits import Stroke
from ..inference.outputs import overlay, save_png
from ..inference.prediction import Prediction
from ..inference.predictor import Predictor
from ..operating_points import validation_stats
from ..utils.atomic import atomic_path
from ..utils.sizes import fit_size, rescale_point, resize_rgb_to
from .views import DISPLAY_MAX_SIDE, draw_clicks, mask_views, render_views

DISCLAIMER = "Image measurements from a research segmentation model; not a diagnosis."

Action = Union[Click, Stroke]  # one correction, in the photo's full-size pixel coordinates


@dataclass
class ImageResult:
    """A segmented photo (what the app keeps in ``gr.State``).

    prediction: at the photo's full upright size (H, W), corrected when ``actions`` are not empty;
    display: the photo at screen size (h, w, 3) uint8; path: the photo file, read again at full
    resolution only for the overlay download (and a saved correction) when it was decoded at a
    reduced scale; model_input: the photo at the model's resolution (S, S, 3) uint8, kept so the
    flip-TTA views or the click refiner can run later without decoding again; actions: the
    corrections in the order made; tta_pending: the app is still adding the flip-TTA views (which
    replace the kept result, so clicks wait); uncorrected: the model's own prediction once corrected (None
    while ``prediction`` is it).
    """

    name: str
    prediction: Prediction
    display: np.ndarray
    operating_points: list[dict]
    path: str | None = None
    model_input: np.ndarray | None = None
    actions: tuple[Action, ...] = ()
    uncorrected: Prediction | None = None
    tta_pending: bool = False

    @property
    def has_tta(self) -> bool:
        return self.prediction.lowres_uncertainty is not None

    @property
    def full_size(self) -> tuple[int, int]:
        return self.prediction.size

    @property
    def display_size(self) -> tuple[int, int]:
        return self.display.shape[0], self.display.shape[1]

    def to_photo(self, x: float, y: float) -> tuple[float, float]:
        """A pixel of the screen-size views -> the same point in full-size photo coordinates."""
        return rescale_point(x, y, self.display_size, self.full_size)

    def to_display(self, x: float, y: float) -> tuple[float, float]:
        """A full-size photo point -> the same point on the screen-size views."""
        return rescale_point(x, y, self.full_size, self.display_size)

    @property
    def clicks(self) -> list[Click]:
        return [a for a in self.actions if isinstance(a, Click)]

    @property
    def strokes(self) -> list[Stroke]:
        return [a for a in self.actions if isinstance(a, Stroke)]


def segment_file(predictor: Predictor, path: str | os.PathLike, name: str | None = None,
                 tta: bool | None = None) -> ImageResult:
    """Decode ``path`` once (reduced-scale JPEG decoding), run the model once (4 views with TTA;
    default: the predictor's setting). Raises ImageLoadError (one-line message) for an unreadable
    or too large file."""
    rgb, pred = predictor.predict_file(path, tta=tta)
    display = resize_rgb_to(rgb, fit_size(*pred.size, DISPLAY_MAX_SIDE))
    keep = (predictor.tta and pred.lowres_uncertainty is None) or predictor.can_refine
    return ImageResult(name or Path(path).name, pred, display, list(predictor.operating_points), str(path),
                       resize_rgb(rgb, predictor.img_size) if keep else None)


def add_tta(predictor: Predictor, result: ImageResult) -> ImageResult:
    """``result`` with its prediction replaced by the flip-TTA one (three more views in one model
    call, see :meth:`Predictor.add_tta`); unchanged when it already has TTA or kept no model input."""
    if result.has_tta or result.model_input is None:
        return result
    return replace(result, prediction=predictor.add_tta(result.model_input, result.prediction))


def measurements(result: ImageResult, threshold: float, mm_per_px: float | None = None) -> dict:
    """Measurements at the analysis resolution, scaled to the photo, plus threshold context."""
    meas = result.prediction.with_threshold(threshold).measurements(mm_per_px)
    meas["threshold"] = round(float(threshold), 4)
    if result.actions:
        meas["corrections"] = {"clicks": len(result.clicks), "brush_dabs": len(result.strokes)}
    stats = validation_stats(result.operating_points, threshold)
    if stats:
        meas["validation_recall"] = round(stats["recall"], 4)
        meas["validation_precision"] = round(stats["precision"], 4)
    return meas


def first_outputs(result: ImageResult, threshold: float | None = None,
                  mm_per_px: float | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """All four screen views and the measurements, right after :func:`segment_file`."""
    t = result.prediction.threshold if threshold is None else float(threshold)
    return render_views(result.display, result.prediction, t), measurements(result, t, mm_per_px)


def rethreshold(result: ImageResult, threshold: float,
                mm_per_px: float | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The threshold-dependent views {"overlay", "mask"} and the measurements at a new threshold.

    Takes no predictor: it re-cuts the prediction kept in ``result``.
    """
    t = float(threshold)
    mask = result.prediction.mask_at(result.display_size, t)
    views = mask_views(result.display, mask)
    if result.clicks:
        views["overlay"] = draw_clicks(views["overlay"], [(*result.to_display(c.x, c.y), c.positive)
                                                          for c in result.clicks])
    return views, measurements(result, t, mm_per_px)


def full_rgb(result: ImageResult, strict: bool = False) -> np.ndarray:
    """The photo at its full size (H, W, 3) uint8. A photo that fits the screen is whole in
    ``display``; a larger one is read again from ``path``. Where that file is gone, the screen copy
    enlarged (good enough for a download's overlay), or with ``strict`` a ValueError."""
    if result.path and result.display_size != result.full_size:
        try:
            return resize_rgb_to(load_image(result.path), result.full_size)
        except ImageLoadError:
            if strict:
                raise ValueError(f"{result.name}: the full-resolution photo is no longer on the server; "
                                 "drop it again") from None
    elif strict and result.display_size != result.full_size:
        raise ValueError(f"{result.name}: the full-resolution photo was not kept; drop it again")
    return resize_rgb_to(result.display, result.full_size)


def write_downloads(result: ImageResult, threshold: float, meas: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Full-resolution ``<stem>_mask.png`` (0 / 255) and ``<stem>_overlay.png``, and
    ``<stem>_measurements.json``, in ``out_dir``; returns the three paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(result.name).stem or "image"
    mask = result.prediction.with_threshold(threshold).mask
    mask_path = save_png(out / f"{stem}_mask.png", mask * np.uint8(255))
    overlay_path = save_png(out / f"{stem}_overlay.png", overlay(full_rgb(result), mask))
    doc = {"file": result.name, "note": DISCLAIMER, **meas}
    json_path = out / f"{stem}_measurements.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return [mask_path, overlay_path, json_path]
