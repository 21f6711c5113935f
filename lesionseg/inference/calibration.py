"""Measuring and writing the int8 calibration of a model's decoder convolutions (``int8_calibration.json``).

One function for ``lesionseg export --int8-calibration``, the end of training and
scripts/ship_weights.py: measure the ranges on photos, check the int8 masks against exact fp32 on
the same photos where OpenVINO is installed, and only then write the file (atomically).
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from .cpu.openvino import OpenVinoRunner, openvino_available
from .cpu.qdq import CALIBRATION_NAME, calibrate, calibration_inputs, mask_agreement, save_calibration

log = logging.getLogger(__name__)

# the bar every CPU path meets against exact fp32 (mean and worst image)
MIN_MEAN_DICE, MIN_IMAGE_DICE = 0.99, 0.95


class CalibrationDisagrees(ValueError):
    """The int8 masks disagree with exact fp32 on the calibration photos; nothing was written."""


def write_calibration(model: torch.nn.Module, photos: Sequence[str | os.PathLike], out: str | os.PathLike,
                      source: str) -> str:
    """Calibrate ``model`` (eval, CPU) on ``photos`` and write the ranges to ``out``; a one-line report.

    Raises ImageLoadError for an unreadable photo, ValueError for none, and
    :class:`CalibrationDisagrees` (nothing written) when the int8 masks miss the bar."""
    ranges = calibrate(model, calibration_inputs(model, photos))
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=".calibration-") as tmp:
        save_calibration(model, ranges, Path(tmp) / CALIBRATION_NAME, source, len(photos))
        if not openvino_available():
            report = "check skipped: openvino is not installed (pip install openvino)"
        else:
            runner = OpenVinoRunner(model, int(getattr(model, "inference_img_size", 256)), tmp)
            dice = mask_agreement(model, runner, calibration_inputs(model, photos))
            if dice.mean() < MIN_MEAN_DICE or dice.min() < MIN_IMAGE_DICE:
                raise CalibrationDisagrees(
                    f"int8 masks disagree with exact fp32 (Dice mean {dice.mean():.4f}, min {dice.min():.4f}, "
                    f"needed {MIN_MEAN_DICE} / {MIN_IMAGE_DICE}); {out} not written (calibrate on more or "
                    "other photos, or run fp32 with --no-int8)")
            report = (f"check: int8 masks vs exact fp32 on the {len(dice)} photos: Dice mean {dice.mean():.4f}, "
                      f"min {dice.min():.4f} ({len(ranges)} convolutions in int8)")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_calibration(model, ranges, out, source, len(photos))
    log.info("%s; wrote %s", report, out)
    return report
