"""Correcting an outline by hand: refiner clicks, brush and eraser dabs, undo, clear, save.

The corrections of a photo are the kept :class:`~lesionseg.ui.session.ImageResult`'s ``actions``,
in the order made and in the photo's full-size pixel coordinates: a
:class:`~lesionseg.clicks.Click` reshapes the outline through the click refiner
(:meth:`Predictor.refine`, given every click so far and the last refined prediction), a
:class:`~lesionseg.inference.edits.Stroke` is painted over the mask
(:meth:`Prediction.with_edits`). Refining is deterministic, so the corrected prediction is a
function of the model's own prediction and the actions alone: Undo replays the clicks that are
left and Clear drops them all, with no other history kept per user.

Dabs are painted last, over whatever the clicks made of the outline: a pixel the clinician
painted by hand stays as painted when a later click reshapes the outline around it.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..clicks import MAX_CLICKS, Click, check_clicks, to_model_coords
from ..data.transforms import resize_rgb
from ..inference.edits import Stroke, check_strokes
from ..inference.prediction import Prediction, check_threshold
from ..inference.predictor import Predictor, RefineUnavailable
from ..inference.weights import weights_source
from .session import Action, ImageResult, full_rgb

log = logging.getLogger(__name__)

ADD, REMOVE, BRUSH, ERASER = "add", "remove", "brush", "eraser"
MODE_CHOICES = [("Add lesion (+)", ADD), ("Remove (−)", REMOVE), ("Brush", BRUSH), ("Eraser", ERASER)]
UNAVAILABLE = ("click correction is unavailable: these weights have no click refiner; "
               "use the Brush and Eraser modes instead")


def _model_input(predictor: Predictor, result: ImageResult):
    """The photo at the model's resolution, as the refiner takes it (decoded again if not kept)."""
    if result.model_input is not None:
        return result.model_input
    if not result.path:
        raise ValueError(f"{result.name}: the photo is no longer on the server; drop it again")
    return resize_rgb(predictor.load(result.path)[0], predictor.img_size)


def _refine(predictor: Predictor, result: ImageResult, clicks: list[Click], previous: Prediction,
            threshold: float | None = None) -> Prediction:
    # refine on the kept (S, S) model input: the model sees exactly that photo, and the clicks
    # move to its grid as they would from any other copy of the photo
    if not predictor.can_refine:
        raise RefineUnavailable(UNAVAILABLE)
    grid = to_model_coords(clicks, result.full_size, predictor.img_size)
    # at the threshold the outline is shown at: the merge keeps the region the click flipped there
    return predictor.refine(_model_input(predictor, result), grid, previous=previous, threshold=threshold)


def rebuild(predictor: Predictor, result: ImageResult, actions: tuple[Action, ...],
            threshold: float | None = None) -> ImageResult:
    """``result`` with its corrections replaced by ``actions``, rebuilt from the model's own
    prediction: one refiner call per click (as they were made, at ``threshold``: the slider's
    value, None for the prediction's own), then the dabs. ValueError (one
    line) for a click or dab off the photo or too many; RefineUnavailable for clicks on weights
    without a refiner."""
    original = result.uncorrected if result.uncorrected is not None else result.prediction
    if not actions:
        return replace(result, prediction=original, actions=(), uncorrected=None)
    clicks = check_clicks([a for a in actions if isinstance(a, Click)], result.full_size)
    strokes = check_strokes([a for a in actions if isinstance(a, Stroke)], result.full_size)
    start = time.perf_counter()
    pred = original
    for k in range(1, len(clicks) + 1):
        pred = _refine(predictor, result, clicks[:k], pred, threshold)
    if clicks:
        log.info("%s: %d click(s) replayed in %.2f s", result.name, len(clicks), time.perf_counter() - start)
    return replace(result, prediction=pred.with_edits(strokes), actions=tuple(actions), uncorrected=original)


def add_click(predictor: Predictor, result: ImageResult, x: float, y: float, positive: bool,
              threshold: float | None = None) -> ImageResult:
    """One more refiner click at (x, y) in full-size photo coordinates (one refiner call)."""
    if not predictor.can_refine:
        raise RefineUnavailable(UNAVAILABLE)
    clicks = check_clicks([*result.clicks, Click(x, y, positive)], result.full_size)
    # the dabs do not change the probabilities the refiner reads: the last prediction is the previous
    refined = _refine(predictor, result, clicks, result.prediction, threshold)
    original = result.uncorrected if result.uncorrected is not None else result.prediction
    return replace(result, prediction=refined.with_edits(result.strokes), actions=(*result.actions, clicks[-1]),
                   uncorrected=original)


def add_dab(result: ImageResult, x: float, y: float, radius: float, add: bool) -> ImageResult:
    """One more brush (``add``) or eraser dab of ``radius`` px at (x, y), all in full-size photo
    coordinates; no model call."""
    strokes = [*result.strokes, Stroke(x, y, radius, add)]
    prediction = result.prediction.with_edits(strokes)  # checks the dab
    original = result.uncorrected if result.uncorrected is not None else result.prediction
    return replace(result, prediction=prediction, actions=(*result.actions, prediction.edits[-1]),
                   uncorrected=original)


def undo(predictor: Predictor, result: ImageResult, threshold: float | None = None) -> ImageResult:
    """``result`` without its last correction: a dab is unpainted (no model call), a click replays
    the clicks before it. Unchanged without corrections."""
    if not result.actions:
        return result
    rest = result.actions[:-1]
    if isinstance(result.actions[-1], Stroke):
        return replace(result, prediction=result.prediction.with_edits([a for a in rest if isinstance(a, Stroke)]),
                       actions=rest) if rest else clear(result)
    return rebuild(predictor, result, rest, threshold)


def clear(result: ImageResult) -> ImageResult:
    """``result`` back to the model's own outline."""
    if result.uncorrected is None:
        return result
    return replace(result, prediction=result.uncorrected, actions=(), uncorrected=None)


def summary(result: ImageResult | None, can_refine: bool = True) -> str:
    """One line on the corrections so far, for the page."""
    if result is None:
        return ""
    if not result.actions:
        how = "click on the overlay" if can_refine else "use the Brush or Eraser on the overlay"
        return f"No corrections yet: {how} to correct the outline."
    clicks, strokes = result.clicks, result.strokes
    pos = sum(c.positive for c in clicks)
    parts = []
    if clicks:
        parts.append(f"{len(clicks)} click{'s' if len(clicks) != 1 else ''} ({pos} +, {len(clicks) - pos} −"
                     f"{'; the most allowed' if len(clicks) >= MAX_CLICKS else ''})")
    if strokes:
        added = sum(s.add for s in strokes)
        parts.append(f"{len(strokes)} brush dab{'s' if len(strokes) != 1 else ''} ({added} brush, "
                     f"{len(strokes) - added} eraser)")
    return "Corrected: " + " · ".join(parts) + ". Undo removes the last one; Clear all of them."


def parse_clicks(text: str | None) -> list[Any]:
    """Clicks sent as JSON text (a list of [x, y, positive]) -> the list, not yet checked against
    a photo; ValueError (one line) for anything that is not a JSON list."""
    if text is None or not str(text).strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"clicks: not valid JSON ({e.msg} at character {e.pos}); send a list of "
                         "[x, y, positive], e.g. [[120, 80, true]]") from None
    if not isinstance(value, list):
        raise ValueError("clicks: expected a JSON list of [x, y, positive], e.g. [[120, 80, true]]")
    return value


def save_result(result: ImageResult, folder: str | Path, threshold: float, model: str | None = None):
    """Write the photo at full resolution, its corrected mask at ``threshold`` and what made it to
    ``folder`` (see :func:`lesionseg.data.corrections.save_correction`; never overwrites).
    Returns the CorrectionRecord; ValueError when the photo is gone or nothing was corrected."""
    from ..data.corrections import save_correction

    if not result.actions:
        raise ValueError("nothing to save: correct the outline first (clicks, Brush or Eraser)")
    t = check_threshold(threshold)
    rgb = full_rgb(result, strict=True)
    mask = result.prediction.with_threshold(t).mask
    meta = {
        "source_file": result.name,
        "size": list(result.full_size),
        "threshold": round(t, 4),
        "clicks": [[round(c.x, 2), round(c.y, 2), c.positive] for c in result.clicks],
        "brush_strokes": [[round(s.x, 2), round(s.y, 2), round(s.radius, 2), s.add] for s in result.strokes],
        "actions": ["click" if isinstance(a, Click) else "brush" for a in result.actions],
        "model": weights_source(model),
        "flip_tta": (result.uncorrected or result.prediction).lowres_uncertainty is not None,
        "app": f"lesionseg {__version__}",
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record = save_correction(folder, rgb, mask, meta)
    log.info("correction of %s saved as %s", result.name, record.id)
    return record
