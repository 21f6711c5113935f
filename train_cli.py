#!/usr/bin/env python
"""Train DS-AttentionUNet: ``python train_cli.py --data-dir ../shared/data/isic2017_train_256 --epochs 30``.

Same flags as ``lesionseg train`` (see ``--help``); the research code's spellings work too.
"""
import sys

from lesionseg.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
