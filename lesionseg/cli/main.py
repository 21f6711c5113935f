"""``lesionseg`` entry point: dispatches to the command modules.

Exit codes (documented in README.md):
  0 success; 1 some inputs failed but the rest were written (batch); 2 bad arguments or input
  (missing folder, unreadable image, bad weights); 3 output could not be written; 4 publishing to
  the Hub failed after local outputs were saved; 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

COMMANDS = ["train", "evaluate", "predict", "inference", "export"]

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_OUTPUT, EXIT_PUBLISH, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def build_parser() -> argparse.ArgumentParser:
    from lesionseg import __version__

    parser = argparse.ArgumentParser(prog="lesionseg", description="Skin-lesion segmentation with DS-AttentionUNet.")
    parser.add_argument("--version", action="version", version=f"lesionseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"lesionseg.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"lesionseg.cli.{name}":
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from .common import pixel_limit

    try:
        with pixel_limit(args):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
