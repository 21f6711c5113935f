"""``lesionseg predict``: segment every image in a folder; masks, overlays and a CSV summary.

For each image ``<id>_mask.png`` (0/255 at the image's own size), ``<id>_overlay.png`` and
``<id>_result.png`` (image | overlay | mask) are written atomically, then ``predictions.csv`` with
each image's size, lesion area and measurements. An unreadable image gets an ``error`` row and
the rest are still processed (exit code 1). The work is done by the batch engine
(:mod:`lesionseg.inference.batch`), the same one the app's Batch tab runs.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..data.inputs import folder_inputs
from ..data.io import IMAGE_EXTENSIONS
from ..data.pairing import find_images_dir
from ..inference.batch import CSV_NAME, OUTPUT_SUFFIXES, BatchWriteError, run_batch
from ..inference.outputs import OUTPUT_KINDS, parse_output_kinds
from .common import (EXIT_INPUT, EXIT_OK, EXIT_OUTPUT, EXIT_PARTIAL, add_model_args, error, positive_int,
                     writable_output_and_predictor)

log = logging.getLogger("lesionseg.predict")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="segment all images in a folder",
                              description="Segment every image in --input_dir; write masks, overlays and "
                                          f"{CSV_NAME} to --output_dir.")
    p.add_argument("--input_dir", "--input-dir", dest="input_dir", required=True,
                   help="folder of images (or a data folder with images/, as `lesionseg data prepare` makes)")
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


def _log_errors(done: int, total: int, row: dict) -> None:
    if row["status"] == "error":
        log.error("%s", row["error"])


def run(args: argparse.Namespace) -> int:
    input_dir, output_dir = Path(args.input_dir), Path(args.output_dir)
    if not input_dir.is_dir():
        error(f"{input_dir}: input folder not found (pass --input_dir FOLDER of images)")
        return EXIT_INPUT
    inner = find_images_dir(input_dir)
    if inner is not None and not folder_inputs(input_dir):
        input_dir = inner  # a data folder (lesionseg data prepare): its images/
        log.info("predicting the images of %s", input_dir)
    same = output_dir.resolve() == input_dir.resolve()  # our own outputs are not inputs
    items = folder_inputs(input_dir, OUTPUT_SUFFIXES if same else ())
    if not items:
        error(f"{input_dir}: no images found (expected {', '.join(IMAGE_EXTENSIONS)} files)")
        return EXIT_INPUT
    predictor, code = writable_output_and_predictor(args, output_dir)
    if predictor is None:
        return code
    start = time.monotonic()
    try:
        result = run_batch(predictor, items, output_dir, kinds=args.outputs, threshold=args.threshold,
                           skip_existing=args.skip_existing, jobs=args.jobs, on_row=_log_errors)
    except BatchWriteError as e:
        error(f"{output_dir}: cannot write outputs ({e.error.strerror or e.error}); {e.done} of {e.total} images "
              "done, rerun with --skip-existing to finish")
        return EXIT_OUTPUT
    counts = result.counts
    print(f"{counts['ok']} predicted, {counts['skipped']} skipped, {counts['error']} failed "
          f"in {time.monotonic() - start:.1f} s; summary: {result.csv_path}")
    return EXIT_PARTIAL if counts["error"] else EXIT_OK
