"""``lesionseg export``: write trained weights in another form.

``--onnx``: an ONNX graph for ONNX Runtime (default ``<weights>/model.onnx``), checked against
PyTorch before it is written (largest logit difference, mask agreement), written atomically.
The Predictor's ``--backend onnx`` picks it up from the weights folder.

Without ``--onnx``: re-save the weights as ``config.json`` + ``model.safetensors`` in ``--output``
(converts a trusted ``.pth`` checkpoint with ``--allow-pickle``).
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from ..inference.weights import WeightsError, default_weights_source, load_model
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
    return _export_onnx(model, args) if args.onnx else _export_safetensors(model, args)
