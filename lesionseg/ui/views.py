"""Screen-size pictures of a prediction: overlay, mask, probability heat map, uncertainty map.

Views are rendered at most ``DISPLAY_MAX_SIDE`` pixels on their longest side: a browser shows a
12-megapixel photo no better than a 1024-pixel one, and every pixel sent costs time. The
full-resolution mask and overlay are files to download (see :mod:`lesionseg.ui.session`).
"""
from __future__ import annotations

import cv2
import numpy as np

from ..inference.outputs import overlay
from ..inference.predictor import Prediction, resize_prob

DISPLAY_MAX_SIDE = 1024
VIEW_NAMES = ("overlay", "mask", "probability", "uncertainty")


def fit_size(height: int, width: int, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """(h, w) scaled down (never up) so that the longer side is at most ``max_side``; aspect kept."""
    if height < 1 or width < 1:
        raise ValueError(f"invalid size {height}x{width}")
    s = min(1.0, max_side / max(height, width))
    return max(1, round(height * s)), max(1, round(width * s))


def resize_rgb_to(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 -> (H, W, 3); area averaging when shrinking, bilinear when enlarging."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    h, w = size
    interp = cv2.INTER_AREA if h < rgb.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interp)


def to_display(rgb: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Downscale an RGB image for the screen (unchanged if already small enough)."""
    return resize_rgb_to(rgb, fit_size(rgb.shape[0], rgb.shape[1], max_side))


def mask_view(mask: np.ndarray) -> np.ndarray:
    """(H, W) {0, 1} -> (H, W) uint8 {0, 255}: white lesion on black."""
    return (np.asarray(mask) != 0).astype(np.uint8) * 255


def heat_map(values: np.ndarray, colormap: int = cv2.COLORMAP_INFERNO) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W, 3) uint8 RGB heat map."""
    u8 = np.clip(np.round(np.asarray(values, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, colormap), cv2.COLOR_BGR2RGB)


def probability_view(prob: np.ndarray) -> np.ndarray:
    """Lesion probability as a heat map (black 0 -> yellow 1)."""
    return heat_map(prob, cv2.COLORMAP_INFERNO)


def uncertainty_view(uncertainty: np.ndarray | None, rgb: np.ndarray) -> np.ndarray:
    """Where flip-TTA predictions disagree, in colour over a dimmed grey copy of the photo.

    ``uncertainty`` (H, W) in [0, 1] (max - min over the TTA views); None gives the dimmed photo.
    """
    rgb = resize_rgb_to(rgb, rgb.shape[:2] if uncertainty is None else uncertainty.shape)
    grey = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB).astype(np.float32) * 0.5
    if uncertainty is None:
        return grey.astype(np.uint8)
    u = np.clip(np.asarray(uncertainty, dtype=np.float32) * 2.0, 0.0, 1.0)  # 0.5 disagreement = full colour
    colour = heat_map(u, cv2.COLORMAP_TURBO).astype(np.float32)
    a = u[..., None]
    return np.clip(grey * (1 - a) + colour * a, 0, 255).astype(np.uint8)


def mask_views(rgb: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The threshold-dependent views {"overlay", "mask"} at ``mask``'s size (rgb resized to it)."""
    return {"overlay": overlay(resize_rgb_to(rgb, mask.shape), mask), "mask": mask_view(mask)}


def render_views(rgb: np.ndarray, prediction: Prediction, threshold: float | None = None,
                 max_side: int = DISPLAY_MAX_SIDE) -> dict[str, np.ndarray]:
    """All four views of ``prediction`` at screen size (longest side <= ``max_side``).

    rgb: the photo at any size (it is resized); prediction: at any size (usually the photo's);
    threshold: cut the probability map here instead of ``prediction.threshold``.
    Returns {"overlay": (h, w, 3), "mask": (h, w), "probability": (h, w, 3), "uncertainty": (h, w, 3)}.
    """
    size = fit_size(*prediction.prob.shape[:2], max_side)
    prob = resize_prob(prediction.prob, size)
    mask = prediction.mask_at(size, threshold)
    small = resize_rgb_to(np.asarray(rgb, dtype=np.uint8), size)
    unc = resize_prob(prediction.uncertainty, size) if prediction.uncertainty is not None else None
    views = mask_views(small, mask)
    views["probability"] = probability_view(prob)
    views["uncertainty"] = uncertainty_view(unc, small)
    return views
