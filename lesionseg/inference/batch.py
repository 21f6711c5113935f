"""The batch engine: ``lesionseg predict``, ``lesionseg inference`` and the app's Batch tab all run here.

For each input, in order: decode once, predict (the Predictor's own TTA setting and clean-up),
write ``<id>_mask.png`` / ``<id>_overlay.png`` / ``<id>_result.png`` atomically (the kinds asked
for) and record one CSV row with the image's size, lesion area and measurements. An input that
cannot be decoded gets an ``error`` row and the others go on; with ``skip_existing`` an input
whose outputs a previous run wrote completely gets a ``skipped`` row measured from its mask file.
Images are predicted side by side on a multi-core CPU (see parallel.py), files written in the
background, rows and the CSV always in input order.
"""
from __future__ import annotations

import csv
import functools
import io
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from ..data.inputs import InputFile
from ..data.io import ImageLoadError, load_mask, public_message
from ..measurements import ANALYSIS_MAX_SIDE, measure
from ..utils.atomic import atomic_write_text
from ..utils.sizes import fit_size
from .outputs import OUTPUT_KINDS, output_paths, write_prediction_outputs
from .parallel import image_workers, ordered_map
from .prediction import Prediction, check_threshold
from .predictor import Predictor

log = logging.getLogger(__name__)

CSV_NAME = "predictions.csv"
MEASUREMENT_FIELDS = ["perimeter_px", "longest_diameter_px", "regions", "asymmetry_index", "border_irregularity",
                      "compactness", "mean_probability", "uncertain_fraction", "flags"]
CSV_FIELDS = ["id", "file", "status", "error", "width", "height", "threshold", "lesion_area_px", "lesion_fraction",
              *MEASUREMENT_FIELDS]
OUTPUT_SUFFIXES = tuple(f"_{k}.png" for k in OUTPUT_KINDS)
OnRow = Callable[[int, int, dict], None]
OnImage = Callable[[InputFile, dict, np.ndarray, Prediction], None]


class BatchWriteError(Exception):
    """An output could not be written (``error``: the OSError); ``done`` of ``total`` rows were
    recorded, and the CSV (when one is kept) lists them."""

    def __init__(self, error: OSError, done: int, total: int):
        super().__init__(str(error))
        self.error, self.done, self.total = error, done, total


@dataclass
class BatchResult:
    """Rows in input order (:data:`CSV_FIELDS` keys), counts by status, the CSV written (or None)."""

    rows: list[dict]
    counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0, "skipped": 0})
    csv_path: Path | None = None


def _row(item: InputFile, **values: object) -> dict:
    return {**dict.fromkeys(CSV_FIELDS, ""), "id": item.id, "file": item.name, **values}


def _measurement_cells(meas: dict) -> dict:
    cells = {k: "" if meas.get(k) is None else meas[k] for k in MEASUREMENT_FIELDS}
    cells["flags"] = "; ".join(meas["flags"])
    return cells


def _size_cells(size: tuple[int, int], area: int) -> dict:
    h, w = size
    return {"width": w, "height": h, "lesion_area_px": area, "lesion_fraction": f"{area / (h * w):.6f}" if h * w else ""}


def result_row(item: InputFile, pred: Prediction) -> dict:
    """The ``ok`` row of a predicted image: full-size area, measurements at the analysis size."""
    return _row(item, status="ok", threshold=f"{pred.threshold:.4f}", **_size_cells(pred.size, pred.lesion_area_px),
                **_measurement_cells(pred.measurements()))


def problem_row(item: InputFile, message: str | None = None) -> dict:
    """An ``error`` row (or ``skipped``, for an input that is not an image) with its one-line reason."""
    return _row(item, status="skipped" if item.skipped else "error", error=message or item.problem or "")


def existing_row(item: InputFile, out_dir: Path, kinds: tuple[str, ...] = OUTPUT_KINDS) -> dict | None:
    """A ``skipped`` row from outputs a previous run wrote, or None if they are incomplete or unreadable.

    Size, area and geometry come from the mask file (no probabilities: those cells stay blank);
    without a mask among ``kinds`` there is nothing to measure and they all stay blank."""
    paths = output_paths(out_dir, item.id, kinds)
    if not all(p.is_file() for p in paths.values()):
        return None
    if "mask" not in paths:
        return _row(item, status="skipped")
    try:
        mask = load_mask(paths["mask"])
    except ImageLoadError:
        return None
    h, w = size = mask.shape
    ah, aw = fit_size(h, w, ANALYSIS_MAX_SIDE)
    small = mask if (ah, aw) == size else cv2.resize(mask, (aw, ah), interpolation=cv2.INTER_NEAREST)
    cells = _measurement_cells(measure(small, full_size=size))
    return _row(item, status="skipped", **_size_cells(size, int(np.count_nonzero(mask))), **cells)


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """The rows as CSV with :data:`CSV_FIELDS`, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def remove_stale_temp_files(out_dir: Path, csv_name: str | None = CSV_NAME) -> int:
    """Delete temporary files a killed earlier run left behind (``.<output name>.<random>.tmp.png``,
    named so by :func:`lesionseg.utils.atomic.atomic_path`); finished outputs are never touched."""
    n = 0
    names = [f".*_{k}.png.*.tmp.png" for k in OUTPUT_KINDS] + ([f".{csv_name}.*.tmp.csv"] if csv_name else [])
    for pattern in names:
        for f in out_dir.glob(pattern):
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
    if n:
        log.info("removed %d temporary file(s) left by an interrupted run", n)
    return n


class RowRecorder:
    """Rows in input order; images' files are written in background threads (at most ``depth`` at a
    time) while the next image is decoded and predicted. A row is recorded only once its files are
    written: ``flush()`` waits for the writes in flight and raises the first OSError (the failed
    image's row and those after it are then not recorded). ``on_row(done, total, row)`` is called
    as each row is recorded."""

    def __init__(self, result: BatchResult, total: int, on_row: OnRow | None = None, depth: int = 1):
        self.result, self.total, self.on_row, self.depth = result, total, on_row, max(1, depth)
        self._pool = ThreadPoolExecutor(max_workers=self.depth, thread_name_prefix="lesionseg-write")
        self._pending: deque[tuple[Future, dict]] = deque()

    def _record(self, row: dict) -> None:
        self.result.rows.append(row)
        self.result.counts[row["status"]] += 1
        if self.on_row is not None:
            self.on_row(len(self.result.rows), self.total, row)

    def add(self, row: dict) -> None:
        self.flush()
        self._record(row)

    def write_then_add(self, row: dict, fn: Callable[..., object], *args: object) -> None:
        while len(self._pending) >= self.depth:
            self._wait_oldest()
        self._pending.append((self._pool.submit(fn, *args), row))

    def _wait_oldest(self) -> None:
        job, row = self._pending[0]
        try:
            job.result()
        except BaseException:
            for other, _ in self._pending:  # the rows after a failed write are not recorded either
                other.cancel()
            self._pending.clear()
            raise
        self._pending.popleft()
        self._record(row)

    def flush(self) -> None:
        while self._pending:
            self._wait_oldest()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _predict_or_skip(predictor: Predictor, out_dir: Path, kinds: tuple[str, ...], skip_existing: bool,
                     threshold: float, item: InputFile) -> tuple[dict, np.ndarray | None, Prediction | None]:
    """(row, rgb, Prediction) for an image to write, (row, None, None) for one that only reports.
    Raises ImageLoadError for a bad image. Runs in a worker thread (see parallel.py)."""
    if item.problem is not None or item.path is None:
        return problem_row(item), None, None
    if skip_existing:
        row = existing_row(item, out_dir, kinds)
        if row is not None:
            return row, None, None
    rgb, pred = predictor.predict_file(item.path, threshold=threshold)
    return result_row(item, pred), rgb, pred


def _save_csv_quietly(path: Path | None, rows: list[dict]) -> None:
    if path is None:
        return
    try:
        write_csv(path, rows)  # an atomic write: the summary is complete or absent, never cut
    except OSError:
        pass


def run_batch(predictor: Predictor, items: Sequence[InputFile], out_dir: str | Path,
              kinds: tuple[str, ...] = OUTPUT_KINDS, threshold: float | None = None, skip_existing: bool = False,
              jobs: int | None = None, csv_name: str | None = CSV_NAME, on_row: OnRow | None = None,
              on_image: OnImage | None = None) -> BatchResult:
    """Segment ``items`` into ``out_dir`` (which must exist); see the module docstring.

    threshold: the cut (default: the model's); jobs: images in flight (default: one per core on the
    CPU's torch paths); csv_name: the summary file in ``out_dir``, rewritten as rows come in and at
    the end (None: no CSV); on_row(done, total, row): per recorded row, in input order;
    on_image(item, row, rgb as decoded, Prediction): per predicted image, in input order.
    Raises :class:`BatchWriteError` when an output cannot be written (the CSV then lists the rows
    recorded); a KeyboardInterrupt also leaves the CSV of the rows recorded.
    """
    out = Path(out_dir)
    t = predictor.threshold if threshold is None else check_threshold(threshold)
    remove_stale_temp_files(out, csv_name)
    result = BatchResult([], csv_path=out / csv_name if csv_name else None)
    recorder = RowRecorder(result, len(items), on_row)
    work = functools.partial(_predict_or_skip, predictor, out, kinds, skip_existing, t)
    flight = ordered_map(work, ((item,) for item in items), jobs or image_workers(predictor))
    start = last = time.monotonic()
    try:
        for n, ((item,), job) in enumerate(flight, 1):
            try:
                row, rgb, pred = job.result()
            except ImageLoadError as e:
                recorder.add(problem_row(item, public_message(e, item.name)))
            else:
                if pred is None:
                    recorder.add(row)
                else:
                    recorder.write_then_add(row, write_prediction_outputs, out, item.id, rgb, pred, kinds)
                    if on_image is not None:
                        on_image(item, row, rgb, pred)
            if result.csv_path is not None and (time.monotonic() - last > 10 or n % 100 == 0):
                recorder.flush()
                last = time.monotonic()
                log.info("%d/%d images (%.1f s)", n, len(items), last - start)
                write_csv(result.csv_path, result.rows)
        recorder.flush()
        if result.csv_path is not None:
            write_csv(result.csv_path, result.rows)
    except OSError as e:
        _save_csv_quietly(result.csv_path, result.rows)
        raise BatchWriteError(e, len(result.rows), len(items)) from e
    except KeyboardInterrupt:
        _save_csv_quietly(result.csv_path, result.rows)  # keep the rows done so far
        raise
    finally:
        flight.close()  # cancels predictions not yet started, waits for those running
        recorder.close()
    return result
