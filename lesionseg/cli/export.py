"""``lesionseg export``: write trained weights in another form.

``--onnx``: an ONNX graph for ONNX Runtime (default ``<weights>/model.onnx``), checked against
PyTorch before it is written (largest logit difference, mask agreement), written atomically.
The Predictor's ``--backend onnx`` picks it up from the weights folder.

``--int8-calibration DIR``: measure the input ranges of the decoder's 3x3 convolutions on photos
(default: 64 of them, evenly spaced; ``--ids`` picks a split's training part) and write
``<weights>/int8_calibration.json``, which the OpenVINO path (the CPU default where openvino is
installed) needs to run them in int8.
Before writing, the int8 masks are compared with exact fp32 on those photos; nothing is written
when they disagree (Dice under 0.99 mean or 0.95 on any photo).

Without ``--onnx`` / ``--int8-calibration``: re-save the weights as ``config.json`` +
``model.safetensors`` in ``--output``
(converts a trusted ``.pth`` checkpoint with ``--allow-pickle``).
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from ..inference.weights import WeightsError, default_weights_source, load_model
from ..utils.argtypes import positive_int
from .common import EXIT_INPUT, EXIT_OK, EXIT_OUTPUT, error

log = logging.getLogger("lesionseg.export")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export weights to ONNX (or re-save them as safetensors)",
                              description="Export trained weights: --onnx writes model.onnx for ONNX Runtime "
                                          "(checked against PyTorch); without it, config.json + model.safetensors.")
    p.add_argument("--onnx", action="store_true", help="export an ONNX graph (needs onnx and onnxruntime)")
    p.add_argument("--weights", "--model_path", "--model-path", dest="weights", default=None, metavar="W",
                   help=f"weights folder or Hub repo id (default: $LESIONSEG_WEIGHTS or {default_weights_source()})")
    p.add_argument("--revision", default=None, help="Hub revision for a repo id")
    p.add_argument("--output", "-o", default=None,
                   help="with --onnx: the .onnx file (default <weights folder>/model.onnx); "
                        "otherwise the folder to write (required)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="with --onnx: skip the ONNX Runtime vs PyTorch check")
    p.add_argument("--int8-calibration", default=None, metavar="DIR",
                   help="measure int8 ranges on the photos in DIR (a folder of images, or a data folder with "
                        "images/) and write <weights>/int8_calibration.json")
    p.add_argument("--ids", default=None, help="with --int8-calibration: only these ids (a text file, one per line, "
                                               "or a split JSON, whose --split part is used)")
    p.add_argument("--split", default="train", help="with --ids as a split JSON: the part to use (default train)")
    p.add_argument("--max-images", type=positive_int, default=64, metavar="N",
                   help="with --int8-calibration: at most N photos, evenly spaced (default 64)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load .pth/.pt/.bin checkpoints (weights-only); only for files you trust")
    p.set_defaults(func=run)


def _default_onnx_path(source: str | None) -> Path | None:
    path = Path(source or default_weights_source()).expanduser()
    if not path.exists():
        return None
    return (path if path.is_dir() else path.parent) / "model.onnx"


def _export_onnx(model, args: argparse.Namespace) -> int:
    from ..inference.onnx_backend import OnnxUnavailableError, save_onnx

    out = Path(args.output) if args.output else _default_onnx_path(args.weights)
    if out is None:
        error(f"{args.weights}: not a local folder; pass --output FILE.onnx")
        return EXIT_INPUT
    try:
        check = save_onnx(model, out, check=args.check)
    except OnnxUnavailableError as e:
        error(str(e))
        return EXIT_INPUT
    except ValueError as e:
        error(str(e))
        return EXIT_OUTPUT
    except OSError as e:
        error(f"{out}: cannot write ({e.strerror or e})")
        return EXIT_OUTPUT
    if check is not None:
        print(f"check: max |logit diff| {check.max_abs_diff:.2e}, mask Dice {check.mask_dice:.4f} "
              f"on {check.n_inputs} inputs (ONNX Runtime vs PyTorch)")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return EXIT_OK


def _calibration_photos(args: argparse.Namespace) -> list[Path]:
    """The photos named by --int8-calibration / --ids / --max-images; DataError when there are none."""
    from ..data.io import IMAGE_EXTENSIONS
    from ..data.pairing import DataError, find_images_dir
    from .evaluate import read_ids

    folder = Path(args.int8_calibration)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (pass a folder of photos, or a data folder with images/)")
    folder = find_images_dir(folder) or (folder / "images" if (folder / "images").is_dir() else folder)
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                    and not p.name.startswith("."))
    if args.ids:
        wanted = set(read_ids(args.ids, args.split))
        photos = [p for p in photos if p.stem in wanted]
    if not photos:
        raise DataError(f"{folder}: no photos to calibrate on" + (f" with the ids of {args.ids}" if args.ids else "")
                        + f" (image types: {', '.join(IMAGE_EXTENSIONS)})")
    step = max(1, len(photos) // args.max_images)
    return photos[::step][:args.max_images]


def _export_int8_calibration(model, args: argparse.Namespace) -> int:
    from ..data.io import ImageLoadError
    from ..data.pairing import DataError
    from ..inference.calibration import CalibrationDisagrees, write_calibration
    from ..inference.cpu.qdq import CALIBRATION_NAME

    folder = _default_onnx_path(args.weights)
    if folder is None:
        error(f"{args.weights}: not a local weights folder; calibrate a local copy (hf download, then --weights DIR)")
        return EXIT_INPUT
    out = Path(args.output) if args.output else folder.parent / CALIBRATION_NAME
    try:
        photos = _calibration_photos(args)
        source = f"{len(photos)} photos of {Path(args.int8_calibration).name}" + (f" ({args.ids})" if args.ids else "")
        report = write_calibration(model, photos, out, source)
    except (DataError, ImageLoadError) as e:
        error(str(e))
        return EXIT_INPUT
    except CalibrationDisagrees as e:
        error(str(e))
        return EXIT_OUTPUT
    except OSError as e:
        error(f"{out}: cannot write ({e.strerror or e})")
        return EXIT_OUTPUT
    print(report)
    print(f"wrote {out} ({source})")
    return EXIT_OK


def _export_safetensors(model, args: argparse.Namespace) -> int:
    if not args.output:
        error("pass --output FOLDER for config.json + model.safetensors (or --onnx)")
        return EXIT_INPUT
    out = Path(args.output)
    try:
        if out.exists() and not out.is_dir():
            raise OSError(f"{out} is a file")
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as tmp:
            model.save_pretrained(tmp)
            for name in ("config.json", "model.safetensors"):
                (Path(tmp) / name).replace(out / name)  # rename within one folder: atomic per file
    except OSError as e:
        error(f"{out}: cannot write ({getattr(e, 'strerror', None) or e})")
        return EXIT_OUTPUT
    print(f"wrote {out / 'config.json'} and {out / 'model.safetensors'}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    try:
        model = load_model(args.weights, revision=args.revision, device="cpu", allow_pickle=args.allow_pickle)
    except (WeightsError, ValueError) as e:
        error(str(e))
        return EXIT_INPUT
    if args.int8_calibration:
        return _export_int8_calibration(model, args)
    return _export_onnx(model, args) if args.onnx else _export_safetensors(model, args)
