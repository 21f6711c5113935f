"""``lesionseg predict``: segment every image in a folder; masks, overlays and a CSV summary.

For each image ``<id>_mask.png`` (0/255 at the image's own size), ``<id>_overlay.png`` and
``<id>_result.png`` (image | overlay | mask) are written atomically, then ``predictions.csv``.
An unreadable image gets an ``error`` row and the rest are still processed (exit code 1).
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..data.io import IMAGE_EXTENSIONS, ImageLoadError, is_image_file, load_mask
from ..inference.outputs import OUTPUT_KINDS, output_paths, parse_output_kinds, write_prediction_outputs
from ..inference.parallel import image_workers, ordered_map
from ..inference.predictor import Predictor
from ..utils.atomic import atomic_write_text
from .common import add_model_args, error, positive_int, writable_output_and_predictor
from .main import EXIT_INPUT, EXIT_OK, EXIT_OUTPUT, EXIT_PARTIAL

log = logging.getLogger("lesionseg.predict")

CSV_NAME = "predictions.csv"
CSV_FIELDS = ["id", "file", "width", "height", "lesion_area_px", "lesion_fraction", "threshold", "status", "error"]
_OUTPUT_SUFFIXES = tuple(f"_{k}.png" for k in OUTPUT_KINDS)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="segment all images in a folder",
                              description="Segment every image in --input_dir; write masks, overlays and "
                                          f"{CSV_NAME} to --output_dir.")
    p.add_argument("--input_dir", "--input-dir", dest="input_dir", required=True, help="folder of images")
    p.add_argument("--output_dir", "--output-dir", dest="output_dir", required=True, help="folder for results")
    p.add_argument("--skip-existing", "--skip_existing", dest="skip_existing", action="store_true",
                   help="skip images whose requested outputs already exist")
    add_outputs_arg(p)
    p.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="images predicted side by side, each on one thread (default: one per CPU thread "
                        "on the CPU, 1 on a GPU or with --backend onnx)")
    add_model_args(p)
    p.set_defaults(func=run)


def output_kinds_arg(text: str) -> tuple[str, ...]:
    try:
        return parse_output_kinds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_outputs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--outputs", type=output_kinds_arg, default=OUTPUT_KINDS, metavar="KINDS",
                   help=f"which files to write per image, comma-separated from {','.join(OUTPUT_KINDS)} "
                        "(default: all three; 'mask' alone is faster on large batches)")


def list_inputs(input_dir: Path, output_dir: Path) -> list[Path]:
    """Entries of ``input_dir`` named like images (sorted, hidden ones skipped); our own outputs are
    skipped when the output folder is the input folder. A folder named like an image is kept, so
    that it gets an error row instead of vanishing silently."""
    files = sorted(p for p in input_dir.iterdir() if (p.is_file() or p.is_dir()) and is_image_file(p)
                   and not p.name.startswith("."))
    if output_dir.resolve() == input_dir.resolve():
        files = [p for p in files if not p.name.endswith(_OUTPUT_SUFFIXES)]
    return files


def assign_ids(files: list[Path]) -> list[str]:
    """File stems as ids; files sharing a stem (a.jpg, a.png) get the extension appended (a_jpg, a_png)."""
    stems = [f.stem for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{f.stem}_{f.suffix[1:].lower()}" if f.stem in dup else f.stem for f in files]


def result_row(image_id: str, file: Path, mask_shape: tuple[int, int], area: int, threshold: float | str,
               status: str = "ok", err: str = "") -> dict:
    h, w = mask_shape
    return {"id": image_id, "file": file.name, "width": w, "height": h, "lesion_area_px": area,
            "lesion_fraction": f"{area / (h * w):.6f}" if h * w else "", "threshold": threshold,
            "status": status, "error": err}


def error_row(image_id: str, file: Path, message: str) -> dict:
    return {"id": image_id, "file": file.name, "width": "", "height": "", "lesion_area_px": "",
            "lesion_fraction": "", "threshold": "", "status": "error", "error": message}


def process_image(predictor: Predictor, file: Path, out_dir: Path, image_id: str, threshold: float | None,
                  kinds: tuple[str, ...] = OUTPUT_KINDS) -> tuple[dict, dict[str, Path]]:
    """Predict one file and write its outputs. ImageLoadError for a bad image, OSError for a failed write."""
    rgb, pred = predictor.predict_file(file, threshold=threshold)
    paths = write_prediction_outputs(out_dir, image_id, rgb, pred, kinds)
    row = result_row(image_id, file, pred.mask.shape, pred.lesion_area_px, f"{pred.threshold:.4f}")
    return row, paths


def existing_row(image_id: str, file: Path, out_dir: Path, kinds: tuple[str, ...] = OUTPUT_KINDS) -> dict | None:
    """A "skipped" row from outputs a previous run wrote, or None if they are incomplete or unreadable."""
    paths = output_paths(out_dir, image_id, kinds)
    if not all(p.is_file() for p in paths.values()):
        return None
    if "mask" not in paths:
        # no mask asked for, so none to measure: the size and area stay blank
        return {**error_row(image_id, file, ""), "status": "skipped"}
    try:
        mask = load_mask(paths["mask"])
    except ImageLoadError:
        return None
    return result_row(image_id, file, mask.shape, int(mask.sum()), "", status="skipped")


def remove_stale_temp_files(out_dir: Path) -> int:
    """Delete temporary files a killed earlier run left behind (``.<output name>.<random>.tmp.png``,
    named so by :func:`lesionseg.utils.atomic.atomic_path`); finished outputs are never touched."""
    n = 0
    names = [f".*_{k}.png.*.tmp.png" for k in OUTPUT_KINDS] + [f".{CSV_NAME}.*.tmp.csv"]
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


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class RowRecorder:
    """Rows in input order; images' files are written in background threads (at most ``depth`` at a
    time) while the next image is decoded and predicted. A row is recorded only once its files are
    written: ``flush()`` waits for the writes in flight and raises the first OSError (the failed
    image's row and those after it are then not recorded)."""

    def __init__(self, rows: list[dict], counts: dict[str, int], depth: int = 1):
        self.rows, self.counts, self.depth = rows, counts, max(1, depth)
        self._pool = ThreadPoolExecutor(max_workers=self.depth, thread_name_prefix="lesionseg-write")
        self._pending: deque[tuple[Future, dict]] = deque()

    def _record(self, row: dict) -> None:
        self.rows.append(row)
        self.counts[row["status"]] += 1

    def add(self, row: dict) -> None:
        self.flush()
        self._record(row)

    def write_then_add(self, row: dict, fn, *args) -> None:  # noqa: ANN001 - fn(*args) writes the files
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


def predict_or_skip(predictor: Predictor, out_dir: Path, kinds: tuple[str, ...], skip_existing: bool,
                    threshold: float | None, image_id: str, file: Path) -> tuple[dict | None, object, object]:
    """(skipped row, None, None) when ``skip_existing`` finds complete outputs, else (None, rgb, Prediction).
    Raises ImageLoadError for a bad image. Runs in a worker thread (see inference/parallel.py)."""
    if skip_existing:
        row = existing_row(image_id, file, out_dir, kinds)
        if row is not None:
            return row, None, None
    rgb, pred = predictor.predict_file(file, threshold=threshold)
    return None, rgb, pred


def run(args: argparse.Namespace) -> int:
    input_dir, output_dir = Path(args.input_dir), Path(args.output_dir)
    if not input_dir.is_dir():
        error(f"{input_dir}: input folder not found (pass --input_dir FOLDER of images)")
        return EXIT_INPUT
    files = list_inputs(input_dir, output_dir)
    if not files:
        error(f"{input_dir}: no images found (expected {', '.join(IMAGE_EXTENSIONS)} files)")
        return EXIT_INPUT
    predictor, code = writable_output_and_predictor(args, output_dir)
    if predictor is None:
        return code

    remove_stale_temp_files(output_dir)
    ids = assign_ids(files)
    rows: list[dict] = []
    counts = {"ok": 0, "error": 0, "skipped": 0}
    csv_path = output_dir / CSV_NAME
    start = last = time.monotonic()
    recorder = RowRecorder(rows, counts)
    work = functools.partial(predict_or_skip, predictor, output_dir, args.outputs, args.skip_existing, args.threshold)
    jobs = ordered_map(work, zip(ids, files), args.jobs or image_workers(predictor))
    try:
        for n, ((image_id, file), job) in enumerate(jobs, 1):
            try:
                row, rgb, pred = job.result()
            except ImageLoadError as e:
                log.error("%s", e)
                recorder.add(error_row(image_id, file, str(e)))
            else:
                if row is not None:
                    recorder.add(row)
                else:
                    row = result_row(image_id, file, pred.mask.shape, pred.lesion_area_px, f"{pred.threshold:.4f}")
                    recorder.write_then_add(row, write_prediction_outputs, output_dir, image_id, rgb, pred,
                                            args.outputs)
            if time.monotonic() - last > 10 or n % 100 == 0:
                recorder.flush()
                last = time.monotonic()
                log.info("%d/%d images (%.1f s)", n, len(files), last - start)
                write_csv(csv_path, rows)
        recorder.flush()
        write_csv(csv_path, rows)
    except OSError as e:
        error(f"{output_dir}: cannot write outputs ({e.strerror or e}); {len(rows)} of {len(files)} images "
              "done, rerun with --skip-existing to finish")
        try:
            write_csv(csv_path, rows)  # an atomic write: the summary is complete or absent, never cut
        except OSError:
            pass
        return EXIT_OUTPUT
    except KeyboardInterrupt:
        try:
            write_csv(csv_path, rows)  # keep the rows done so far
        except OSError:
            pass
        raise
    finally:
        jobs.close()  # cancels predictions not yet started, waits for those running
        recorder.close()
    print(f"{counts['ok']} predicted, {counts['skipped']} skipped, {counts['error']} failed "
          f"in {time.monotonic() - start:.1f} s; summary: {csv_path}")
    return EXIT_PARTIAL if counts["error"] else EXIT_OK
