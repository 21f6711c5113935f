"""Exit codes, argument helpers and model loading shared by the commands.

Exit codes (documented in docs/reliability.md):
  0 success; 1 some inputs failed but the rest were written (batch); 2 bad arguments or input
  (missing folder, unreadable image, bad weights); 3 output could not be written; 4 publishing to
  the Hub failed after local outputs were saved; 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from ..utils.argtypes import positive_int

log = logging.getLogger("lesionseg")

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_OUTPUT, EXIT_PUBLISH, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def threshold_arg(text: str) -> float:
    """argparse type: a probability threshold strictly between 0 and 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"threshold must lie in (0, 1), got {v}")
    return v


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--weights (aliases --model_path / --model-path), --revision, --device, --use_gpu, --tta,
    --threshold, --img_size, --allow-pickle, --no-fast, --no-int8, --no-cleanup, --wide-view, --max-pixels, --backend."""
    from ..data.io import BUILTIN_MAX_PIXELS, MAX_PIXELS_ENV
    from ..inference.weights import default_weights_source
    from ..inference.wide_view import wide_view_arg

    p.add_argument("--weights", "--model_path", "--model-path", dest="weights", default=None, metavar="W",
                   help=f"weights folder (config.json + model.safetensors) or Hub repo id "
                        f"(default: $LESIONSEG_WEIGHTS or {default_weights_source()})")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) for a repo id")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--use_gpu", "--use-gpu", action="store_true",
                   help="same as --device cuda when CUDA is available (else a warning and cpu)")
    p.add_argument("--threshold", type=threshold_arg, default=None,
                   help="probability threshold (default: the model's tuned threshold)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (4 forwards per image)")
    p.add_argument("--img_size", "--img-size", type=int, default=None,
                   help="accepted for compatibility; the model's trained input size is always used")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also load .pth/.pt/.bin checkpoints (weights-only); only for files you trust")
    p.add_argument("--no-fast", dest="fast", action="store_false",
                   help="eager fp32 inference on the CPU instead of its fast path (bf16 where the CPU has it "
                        "natively, else fp32 on ONNX Runtime; GPUs run fp32 either way)")
    p.add_argument("--no-int8", dest="int8", action="store_false",
                   help="keep the CPU fast path in bf16 throughout (by default it runs the 3x3 convolutions below "
                        "full resolution in int8 where the CPU has int8 dot products)")
    p.add_argument("--no-cleanup", dest="cleanup", action="store_false",
                   help="raw masks: keep holes and small separate regions (by default the model's clean-up "
                        "fills holes and drops regions under 10%% of the largest)")
    p.add_argument("--wide-view", dest="wide_view", type=wide_view_arg, default=None, metavar="F",
                   help="zoom-out factor of the second, wide view of photos whose outline touches the border "
                        "(default: the weights' own, inference_wide_view in config.json; 0 turns it off)")
    p.add_argument("--max-pixels", "--max_pixels", dest="max_pixels", type=positive_int, default=None, metavar="N",
                   help=f"refuse images of more than N pixels before decoding them (default: ${MAX_PIXELS_ENV}, "
                        f"else {BUILTIN_MAX_PIXELS:_})")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch (default) or onnx: ONNX Runtime on the CPU, using <weights>/model.onnx from "
                        "lesionseg export --onnx when present (else exported in memory)")


@contextlib.contextmanager
def pixel_limit(args: argparse.Namespace) -> Iterator[None]:
    """Apply ``--max-pixels`` (if the command has it and it was given) for the duration of the command."""
    from ..data.io import MAX_PIXELS_ENV

    value = getattr(args, "max_pixels", None)
    if value is None:
        yield
        return
    old = os.environ.get(MAX_PIXELS_ENV)
    os.environ[MAX_PIXELS_ENV] = str(value)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(MAX_PIXELS_ENV, None)
        else:
            os.environ[MAX_PIXELS_ENV] = old


def error(message: str) -> None:
    """One-line error on stderr (no traceback)."""
    print(f"lesionseg: error: {' '.join(str(message).split())}", file=sys.stderr)


def cli_device(args: argparse.Namespace) -> str:
    if args.use_gpu:
        if torch.cuda.is_available():
            return "cuda"
        log.warning("--use_gpu: CUDA is not available, using the CPU")
        return "cpu"
    return args.device


def load_predictor(args: argparse.Namespace):
    """Predictor from the parsed model args. Raises WeightsError / ValueError."""
    from ..inference.predictor import Predictor

    pred = Predictor.from_weights(args.weights, revision=args.revision, device=cli_device(args), tta=args.tta,
                                  allow_pickle=args.allow_pickle, fast=args.fast,
                                  backend=getattr(args, "backend", "torch"), cleanup=getattr(args, "cleanup", True),
                                  int8=getattr(args, "int8", True), wide_view=getattr(args, "wide_view", None))
    if args.img_size is not None and args.img_size != pred.img_size:
        log.warning("--img_size %d ignored: the model was trained at %d px and is run at that size",
                    args.img_size, pred.img_size)
    log.info("model %s on %s, input %d px, threshold %.3f%s%s", args.weights or "(default weights)",
             pred.device, pred.img_size, pred.threshold if args.threshold is None else args.threshold,
             ", TTA" if args.tta else "", ", int8 convolutions" if pred.int8 else "")
    return pred


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove a file can be written there; raises OSError otherwise."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".lesionseg-write-test.", dir=d)
    os.close(fd)
    os.unlink(tmp)
    return d


def writable_output_and_predictor(args: argparse.Namespace, output_dir: Path):
    """Prove ``output_dir`` is writable, then load the predictor: the checks every writing command
    makes before touching an image. Returns ``(predictor, EXIT_OK)``, or ``(None, exit code)`` after
    printing the one-line error."""
    from ..inference.weights import WeightsError

    try:
        ensure_writable_dir(output_dir)
    except OSError as e:
        error(f"{output_dir}: output folder is not writable ({e.strerror or e})")
        return None, EXIT_OUTPUT
    try:
        return load_predictor(args), EXIT_OK
    except (WeightsError, ValueError) as e:
        error(str(e))
        return None, EXIT_INPUT
