"""The app's correction events: clicks and dabs on the overlay, Undo, Clear, Save, the refine API.

Each function returns exactly what its outputs in ``app.py`` expect; the logic is
:mod:`editing`'s. A failed correction never loses the result: the kept one stays, and a one-line
message says what happened and what to do.
"""
from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from ..clicks import Click, check_clicks
from ..data.io import ImageLoadError, public_message
from ..inference.prediction import check_threshold
from ..inference.predictor import Predictor, RefineUnavailable
from . import editing, session
from .handlers import WorkDir, _mm, _warn, default_work, rethreshold

log = logging.getLogger(__name__)

NO_PHOTO = "Drop a photo first: clicks and brush dabs correct its outline."
API_UNAVAILABLE = ("these weights have no click refiner (a refiner/ folder beside config.json), which clicks "
                   "need; send no clicks for the model's own outline, or serve weights with a refiner")


def _slider(threshold: Any) -> float | None:
    """The slider's value as a threshold, or None (the prediction's own) when it is not one."""
    try:
        return check_threshold(threshold)
    except (TypeError, ValueError):
        return None


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:]


class CorrectionHandlers:
    """Correction events bound to one predictor; ``corrections_dir`` turns "Save correction" on."""

    def __init__(self, predictor: Predictor, corrections_dir: str | Path | None = None,
                 work: WorkDir | None = None):
        self.predictor = predictor
        self.corrections_dir = Path(corrections_dir) if corrections_dir else None
        self.work = work
        self.default_mode = editing.ADD if predictor.can_refine else editing.BRUSH

    def describe(self, result: session.ImageResult | None) -> str:
        """The corrections line for the kept result."""
        return editing.summary(result, self.predictor.can_refine)

    def _shown(self, result: session.ImageResult, threshold: float, mm_per_px: Any,
               request: gr.Request | None = None) -> tuple:
        """(state, overlay, mask, measurements, downloads cleared until rewritten, corrections line)."""
        return (result, *rethreshold(result, threshold, mm_per_px, request), self.describe(result))

    @staticmethod
    def _kept(message: str) -> tuple:
        """Every output unchanged but the corrections line, which shows ``message`` (also a toast)."""
        return (*(gr.skip(),) * 5, _warn(message))

    def select(self, result: session.ImageResult | None, mode: str, brush_px: float, threshold: float,
               mm_per_px: Any, evt: gr.SelectData, request: gr.Request = None) -> tuple:
        """A click on the overlay at ``evt.index`` = [x, y] (the shown image's pixels): a refiner
        click (modes add / remove) or a brush / eraser dab of ``brush_px`` shown-image pixels."""
        if result is None:
            return self._kept(NO_PHOTO)
        index = getattr(evt, "index", None)
        if not isinstance(index, (list, tuple)) or len(index) != 2:
            return self._kept("That click was not on the photo: click inside the overlay image.")
        try:
            x, y = result.to_photo(float(index[0]), float(index[1]))
            if mode in (editing.BRUSH, editing.ERASER):
                radius = max(float(brush_px), 1.0) * result.full_size[1] / result.display_size[1]
                new = editing.add_dab(result, x, y, radius, add=mode == editing.BRUSH)
            else:
                if result.tta_pending:  # the flipped views would replace the state this click makes
                    return self._kept("The flip TTA views are still being added: click again in a moment.")
                new = editing.add_click(self.predictor, result, x, y, positive=mode != editing.REMOVE,
                                        threshold=_slider(threshold))
        except RefineUnavailable:
            return self._kept(_sentence(editing.UNAVAILABLE) + ".")
        except (TypeError, ValueError) as e:
            return self._kept(_sentence(str(e)))
        except (RuntimeError, MemoryError) as e:
            log.exception("correction failed for %s", result.name)
            return self._kept(f"The correction could not be applied ({type(e).__name__}); the outline is kept.")
        return self._shown(new, threshold, mm_per_px, request)

    def undo(self, result: session.ImageResult | None, threshold: float, mm_per_px: Any,
             request: gr.Request = None) -> tuple:
        """The kept result without its last click or dab."""
        if result is None:
            return self._kept(NO_PHOTO)
        if not result.actions:
            return self._kept("Nothing to undo: the outline is the model's own.")
        try:
            return self._shown(editing.undo(self.predictor, result, _slider(threshold)), threshold, mm_per_px,
                               request)
        except (ValueError, RuntimeError, MemoryError) as e:
            log.exception("undo failed for %s", result.name)
            return self._kept(f"Undo failed ({type(e).__name__}); the outline is kept. Clear starts again.")

    def clear(self, result: session.ImageResult | None, threshold: float, mm_per_px: Any,
              request: gr.Request = None) -> tuple:
        """The kept result back to the model's own outline."""
        if result is None:
            return self._kept(NO_PHOTO)
        return self._shown(editing.clear(result), threshold, mm_per_px, request)

    def save(self, result: session.ImageResult | None, threshold: float) -> str:
        """Save the corrected outline and the full-resolution photo as training data."""
        if self.corrections_dir is None:
            return _warn("Saving is off: start the app with --corrections-dir DIR to save corrections.")
        if result is None:
            return _warn(NO_PHOTO)
        try:
            record = editing.save_result(result, self.corrections_dir, threshold, self.predictor.source)
        except ValueError as e:
            return _warn(_sentence(str(e)))
        except OSError as e:
            log.exception("saving the correction of %s failed", result.name)
            return _warn(f"The correction could not be saved ({_sentence(str(e)) or type(e).__name__}); "
                         "check that the corrections folder is writable and has space.")
        gr.Info(html.escape(f"Correction saved as {record.id}."))
        return f"{self.describe(result)} Saved as **{html.escape(str(record.id))}**."

    def refine_api(self, image: str | None, clicks: str | None, threshold: float | None) -> tuple:
        """API: photo file + clicks (JSON list of [x, y, positive] in the photo's pixels) +
        threshold (empty: the model's) -> (overlay with the clicks at screen size, full-resolution
        mask PNG path, measurements). Bad input raises gr.Error with one line."""
        if not image:
            raise gr.Error("No photo: send the image file as the first input.", print_exception=False)
        name = Path(image).name
        try:
            t = self.predictor.threshold if threshold is None else check_threshold(threshold)
            wanted = editing.parse_clicks(clicks)
            if wanted and not self.predictor.can_refine:
                raise RefineUnavailable(API_UNAVAILABLE)
            result = session.segment_file(self.predictor, image, name=name)
            checked = check_clicks(wanted, result.full_size)
            result = editing.rebuild(self.predictor, result, tuple(Click(*c) for c in checked), t)
            views, meas = session.rethreshold(result, t, _mm(None))
            paths = session.write_downloads(result, t, meas, (self.work or default_work()).new("refine"))
        except ImageLoadError as e:
            raise gr.Error(html.escape(public_message(e, name)), print_exception=False) from None
        except ValueError as e:  # RefineUnavailable too
            raise gr.Error(html.escape(_sentence(public_message(e, name).replace(str(image), name))),
                           print_exception=False) from None
        except OSError as e:
            log.exception("refine API failed for %s", name)
            raise gr.Error(f"{html.escape(name)}: the result could not be written ({type(e).__name__})",
                           print_exception=False) from None
        return views["overlay"], str(paths[0]), meas
