"""``lesionseg`` entry point: dispatches to the command modules (exit codes: see common.py)."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from .common import EXIT_INTERRUPTED, pixel_limit

COMMANDS = ["train", "evaluate", "predict", "inference", "export", "data"]


def build_parser() -> argparse.ArgumentParser:
    from lesionseg import __version__

    parser = argparse.ArgumentParser(prog="lesionseg", description="Skin-lesion segmentation with DS-AttentionUNet.")
    parser.add_argument("--version", action="version", version=f"lesionseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"lesionseg.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        with pixel_limit(args):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
