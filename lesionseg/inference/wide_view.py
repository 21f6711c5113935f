"""The wide view: a second look, zoomed out, at photos whose outline touches the border.

Lesions that fill the frame or are cut by its edge are the failure the independent sets show
(outlined only at their darkest core), and the training images rarely frame a lesion that way. The
wide view shows the model the same photo shrunk inside a margin of its own skin colour (the
per-channel median), so the lesion sits in the frame at a scale the model knows; its probabilities
over the photo are combined with the plain view's by the pixel-wise maximum. Only photos whose
plain outline covers more than :data:`MIN_BORDER_FRACTION` of the border pixels get the second
model call, so a lesion well inside the frame costs nothing more and keeps its plain outline. The
wide view is kept only where its own outline covers more than :data:`MIN_WIDE_BORDER_FRACTION` of
the photo's border: a lesion cut by the frame still reaches the border when seen from further
away, while a plain outline that only leaked along a dark corner or a vignette does not, and there
the maximum would add skin.

The weights opt in through ``inference_wide_view`` in config.json (the zoom-out factor, 0: off);
folders saved before it existed keep the plain view. docs/generalization.md has the measurements.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from ..models.ds_attention_unet import check_wide_view

# the plain outline must cover more than this fraction of the photo's border pixels for the wide
# view to be taken, and the wide view's outline more than the second for it to be kept; chosen
# for the shipped weights on the framing stress test (docs/generalization.md, "The wide view")
MIN_BORDER_FRACTION = 0.05
MIN_WIDE_BORDER_FRACTION = 0.3


def wide_view_arg(text: str) -> float:
    """argparse type of ``--wide-view`` (the command line and the app's launcher)."""
    try:
        return check_wide_view(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("inference_wide_view: ") if "factor" in str(e)
                                         else f"{text!r} is not a number") from None


def border_fraction(mask: np.ndarray) -> float:
    """Fraction of the border pixels of ``mask`` (H, W) that are set (nonzero)."""
    m = np.asarray(mask) != 0
    if m.shape[0] < 3 or m.shape[1] < 3:
        return float(m.mean()) if m.size else 0.0
    edge = np.concatenate([m[0], m[-1], m[1:-1, 0], m[1:-1, -1]])
    return float(edge.mean())


def needs_wide_view(prob: np.ndarray, threshold: float) -> bool:
    """True when the outline of ``prob`` (S, S) cut at ``threshold`` covers more than
    :data:`MIN_BORDER_FRACTION` of the border."""
    return border_fraction(np.asarray(prob) >= threshold) > MIN_BORDER_FRACTION


def keeps_wide_view(wide: np.ndarray, threshold: float) -> bool:
    """True when the outline of the wide view's ``wide`` (S, S) (over the photo, after
    :func:`narrow`) cut at ``threshold`` covers more than :data:`MIN_WIDE_BORDER_FRACTION` of the border."""
    return border_fraction(np.asarray(wide) >= threshold) > MIN_WIDE_BORDER_FRACTION


def _margin(size: int, factor: float) -> int:
    return max(1, int(round(size * (factor - 1.0) / 2.0)))


def widen(rgb: np.ndarray, factor: float) -> np.ndarray:
    """(S, S, 3) uint8 -> (S, S, 3) uint8: ``rgb`` shrunk by ``factor`` inside a margin of its median colour."""
    s = rgb.shape[0]
    if rgb.shape[:2] != (s, s):
        raise ValueError(f"widen takes a square image, got {rgb.shape[:2]}")
    m = _margin(s, factor)
    fill = [int(v) for v in np.median(rgb.reshape(-1, 3), axis=0)]
    padded = cv2.copyMakeBorder(np.ascontiguousarray(rgb), m, m, m, m, cv2.BORDER_CONSTANT, value=fill)
    return cv2.resize(padded, (s, s), interpolation=cv2.INTER_AREA)


def narrow(prob: np.ndarray, factor: float) -> np.ndarray:
    """(S, S) probabilities of a :func:`widen` ed image -> (S, S) over the original image."""
    s = prob.shape[0]
    m = _margin(s, factor)
    full = cv2.resize(np.asarray(prob, dtype=np.float32), (s + 2 * m, s + 2 * m), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(np.clip(full[m:m + s, m:m + s], 0.0, 1.0))


def combine(plain: np.ndarray, wide: np.ndarray | None) -> np.ndarray:
    """The probabilities a mask is cut from: ``plain`` (S, S), or its pixel-wise maximum with ``wide``."""
    return plain if wide is None else np.maximum(plain, wide)
