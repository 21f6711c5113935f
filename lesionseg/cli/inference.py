"""``lesionseg inference``: segment one image file; writes its mask, overlay and side-by-side result."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..data.io import ImageLoadError
from .common import add_model_args, error, writable_output_and_predictor
from .main import EXIT_INPUT, EXIT_OK, EXIT_OUTPUT
from .predict import add_outputs_arg, process_image

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
    try:
        row, paths = process_image(predictor, file, output_dir, file.stem, args.threshold, args.outputs)
    except ImageLoadError as e:
        error(str(e))
        return EXIT_INPUT
    except OSError as e:
        error(f"{output_dir}: cannot write outputs ({e.strerror or e})")
        return EXIT_OUTPUT
    print(f"{file.name}: {row['width']}x{row['height']}, lesion {row['lesion_area_px']} px "
          f"({float(row['lesion_fraction']) * 100:.1f}%) at threshold {row['threshold']}")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return EXIT_OK
