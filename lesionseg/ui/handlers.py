"""The app's event functions: call the tested logic, turn errors into messages, shape outputs.

Each function returns exactly what its outputs in ``app.py`` expect. No image maths here (see
:mod:`session`, :mod:`views`, :mod:`batch`). :func:`rethreshold` and
:func:`downloads` take the kept :class:`~lesionseg.ui.session.ImageResult` and no predictor,
so moving the threshold cannot run the model.
"""
from __future__ import annotations

import atexit
import html
import logging
import math
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from .. import operating_points
from ..data.archive import ZipLimits
from ..data.io import ImageLoadError, public_message
from ..inference.batch import BatchWriteError
from ..inference.predictor import Predictor
from . import batch as batch_mod
from . import session
from .formatting import format_measurements
from .redraws import REDRAWS

log = logging.getLogger(__name__)

# The full-resolution downloads are written in the event after each redraw. Written at once, they
# compete for the CPU (and this server's GIL) with the browser fetching and drawing the new overlay,
# and slow that down (docs/benchmarks.md, "The slider and the downloads"); nobody downloads within
# a fraction of a second of moving the slider, so the writing waits this long first.
DOWNLOADS_SETTLE_S = 0.2


class WorkDir:
    """A private temporary folder for result files; sub-folders older than ``max_age_s`` are pruned."""

    def __init__(self, root: str | Path | None = None, max_age_s: float = 3 * 3600):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="lesionseg-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        if root is None:
            atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def new(self, prefix: str) -> Path:
        self.prune()
        return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=self.root))

    def prune(self) -> None:
        cutoff = time.time() - self.max_age_s
        for d in self.root.iterdir():
            try:
                if d.is_dir() and d.stat().st_mtime < cutoff:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass


_WORK: WorkDir | None = None


def default_work() -> WorkDir:
    """The process's work folder, created on first use and removed at exit."""
    global _WORK
    if _WORK is None:
        _WORK = WorkDir()
    return _WORK


def _mm(mm_per_px: Any) -> float | None:
    try:
        v = float(mm_per_px)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _warn(message: str) -> str:
    gr.Warning(html.escape(message))
    return f"⚠️ {message}"


def preset_choices(table: dict[str, float]) -> list[tuple[str, str]]:
    """Radio choices ("Balanced (0.55)", "Balanced")."""
    return [(f"{name} ({t:.2f})", name) for name, t in table.items()]


class Handlers:
    """Event functions bound to one loaded predictor; flip TTA where the predictor has it on, in
    the single view and the Batch tab alike."""

    def __init__(self, predictor: Predictor, limits: ZipLimits = ZipLimits(), work: WorkDir | None = None):
        self.predictor = predictor
        self.limits = limits
        self.work = work or default_work()
        self.presets = operating_points.presets(predictor.operating_points, predictor.threshold)

    def segment(self, image_path: str | None, threshold: float, mm_per_px: float | None,
                request: gr.Request = None) -> Iterator[tuple]:
        """New photo -> (state, overlay, mask, probability, uncertainty, measurements, status, downloads).

        A generator: the plain (one-view) result first, so the first outline never waits for the
        flip-TTA views; where the predictor has TTA on, a second update follows with the kept
        result replaced by the TTA one and its probability and uncertainty views. The overlay,
        mask and measurements of that update are left to :func:`redraw_tta`, which reads the slider
        as it is then (it may have moved meanwhile). One generator per photo, so a new photo waits
        for the previous one's views instead of racing them.
        """
        REDRAWS.bump(request)
        empty = (None, None, None, None, None, "", "", None)
        if not image_path:
            yield empty
            return
        name = Path(image_path).name
        try:
            result = session.segment_file(self.predictor, image_path, name=name, tta=False)
            views, meas = session.first_outputs(result, threshold, _mm(mm_per_px))
        except ImageLoadError as e:
            yield (*empty[:6], _warn(public_message(e, name)), None)
            return
        except (ValueError, OSError, MemoryError) as e:
            log.exception("segmentation failed for %s", name)
            msg = public_message(e, name).replace(str(image_path), name)
            yield (*empty[:6], _warn(f"{name}: could not be segmented ({type(e).__name__}: {msg})"), None)
            return
        tta = self.predictor.tta
        yield (replace(result, tta_pending=tta), views["overlay"], views["mask"], views["probability"],
               views["uncertainty"], format_measurements(meas),
               _status(result) + (" · adding flip TTA views…" if tta else ""), None)
        if not tta:
            return
        try:
            with_tta = replace(session.add_tta(self.predictor, result), tta_pending=False)
            views = session.first_outputs(with_tta, threshold, _mm(mm_per_px))[0]
        except (ValueError, MemoryError, RuntimeError) as e:
            log.exception("flip TTA failed for %s", name)
            yield (result, *(gr.skip(),) * 5, _warn(f"{name}: the flip TTA views could not be added "
                                                    f"({type(e).__name__}); the plain outline is kept"), gr.skip())
            return
        skip = gr.skip()
        yield with_tta, skip, skip, views["probability"], views["uncertainty"], skip, _status(with_tta), skip

    def apply_preset(self, preset: str | None) -> Any:
        """Preset name -> slider value (unchanged for an unknown name)."""
        return self.presets.get(preset, gr.skip()) if preset else gr.skip()

    def describe(self, threshold: float) -> tuple[str, Any]:
        """(validation recall / precision text, matching preset or None) for the slider's value."""
        return (operating_points.describe(self.predictor.operating_points, threshold),
                operating_points.preset_for(threshold, self.presets))

    def batch(self, folder: list[str] | None, files: list[str] | None, preset: str | None,
              progress: gr.Progress = gr.Progress()):
        """Uploaded folder / files / ZIPs -> (gallery, table rows, results ZIP, status)."""
        in_folder = sorted((p for p in folder or [] if p), key=lambda p: Path(p).name.lower())
        paths = in_folder + [p for p in files or [] if p]
        if not paths:
            return gr.skip(), gr.skip(), gr.skip(), _warn("Drop a folder, some photos or a ZIP archive first.")
        threshold = self.presets.get(preset or "", self.predictor.threshold)
        out = self.work.new("batch")
        progress(0.0, desc=f"0 / {len(paths)}")
        try:
            gallery, rows, zip_path = batch_mod.run_batch(
                self.predictor, paths, out, progress=lambda f, text: progress(f, desc=text), threshold=threshold,
                limits=self.limits)
        except BatchWriteError as e:
            log.error("batch outputs could not be written: %s", e.error)
            return gr.skip(), gr.skip(), gr.skip(), _warn(f"the results could not be written ({e.error.strerror or e})")
        ok = sum(1 for r in rows if r and r[-1] == "ok")
        bad = [r for r in rows if r and r[-1] != "ok"]
        status = f"{ok} of {len(rows)} files segmented at threshold {threshold:.2f}."
        if bad:
            status += f" {len(bad)} not processed: see the status column."
            gr.Warning(f"{len(bad)} file(s) could not be processed (see the table).")
        return gallery, rows, str(zip_path), status


def _status(result: session.ImageResult) -> str:
    h, w = result.full_size
    return f"**{result.name}** — {w}×{h} px" + (" · flip TTA" if result.has_tta else "")


def redraw_tta(result: session.ImageResult | None, threshold: float, mm_per_px: float | None,
               request: gr.Request = None):
    """After :meth:`Handlers.segment`: the overlay, mask and measurements of a TTA result at the
    slider's current value; skips every output for a plain result (already drawn) or none."""
    if result is None or not result.has_tta:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return rethreshold(result, threshold, mm_per_px, request)


def rethreshold(result: session.ImageResult | None, threshold: float, mm_per_px: float | None,
                request: gr.Request = None):
    """Kept result + threshold -> (overlay, mask, measurements, downloads cleared until rewritten).

    Skips every output without a result. ``request``: a redraw is counted for its session (redraws.py).
    """
    if result is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    try:
        views, meas = session.rethreshold(result, threshold, _mm(mm_per_px))
    except ValueError as e:
        _warn(str(e))
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    REDRAWS.bump(request)  # before the return: the cleared links reach the browser after any older write's files
    return views["overlay"], views["mask"], format_measurements(meas), None


def downloads(result: session.ImageResult | None, threshold: float, mm_per_px: float | None,
              request: gr.Request = None) -> Any:
    """Full-resolution mask PNG, overlay PNG and measurements JSON for the kept result, written
    :data:`DOWNLOADS_SETTLE_S` after the call, once the screen views it follows have been drawn.

    Skipped (the links stay as the newer redraw left them) when the session redrew the views
    since the call: that redraw's own downloads follow (redraws.py)."""
    if result is None:
        return None
    seen = REDRAWS.count(request)
    time.sleep(DOWNLOADS_SETTLE_S)
    if REDRAWS.count(request) != seen:
        return gr.skip()
    try:
        meas = session.measurements(result, threshold, _mm(mm_per_px))
        paths = session.write_downloads(result, threshold, meas, default_work().new("single"))
    except (OSError, ValueError) as e:
        _warn(f"the result files could not be written ({type(e).__name__}: {e})")
        return None
    return [str(p) for p in paths] if REDRAWS.count(request) == seen else gr.skip()
