"""``lesionseg inference``: segment one image file; writes its mask, overlay and side-by-side result.

The same batch engine as ``lesionseg predict`` and the app's Batch tab, on one file, without a CSV.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..data.inputs import InputFile
from ..inference.batch import BatchWriteError, run_batch
from ..inference.outputs import output_paths
from .common import EXIT_INPUT, EXIT_OK, EXIT_OUTPUT, add_model_args, error, writable_output_and_predictor
from .predict import add_outputs_arg

log = logging.getLogger("lesionseg.inference")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("inference", help="segment one image",
                              description="Segment --input; write <id>_mask.png, <id>_overlay.png and "
                                          "<id>_result.png to --output_dir.")
    p.add_argument("--input", "--image", dest="input", required=True, help="image file")
    p.add_argument("--output_dir", "--output-dir", dest="output_dir", required=True, help="folder for results")
    add_outputs_arg(p)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    file, output_dir = Path(args.input), Path(args.output_dir)
    if file.is_dir():
        error(f"{file}: is a directory, not an image file (pass --input FILE, or use lesionseg predict "
              "--input_dir for a folder)")
        return EXIT_INPUT
    if not file.exists():
        error(f"{file}: input image not found (pass --input FILE)")
        return EXIT_INPUT
    predictor, code = writable_output_and_predictor(args, output_dir)
    if predictor is None:
        return code
    item = InputFile(file.stem, file.name, file)
    try:
        row = run_batch(predictor, [item], output_dir, kinds=args.outputs, threshold=args.threshold, jobs=1,
                        csv_name=None).rows[0]
    except BatchWriteError as e:
        error(f"{output_dir}: cannot write outputs ({e.error.strerror or e.error})")
        return EXIT_OUTPUT
    if row["status"] != "ok":
        error(row["error"])
        return EXIT_INPUT
    print(f"{file.name}: {row['width']}x{row['height']}, lesion {row['lesion_area_px']} px "
          f"({float(row['lesion_fraction']) * 100:.1f}%) at threshold {row['threshold']}")
    for kind, path in output_paths(output_dir, item.id, args.outputs).items():
        print(f"  {kind}: {path}")
    return EXIT_OK
