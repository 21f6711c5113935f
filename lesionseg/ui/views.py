"""Screen-size pictures of a prediction: overlay, mask, probability heat map, uncertainty map.

Views are rendered at most ``DISPLAY_MAX_SIDE`` pixels on their longest side: a browser shows a
12-megapixel photo no better than a 1024-pixel one, and every pixel sent costs time. The
full-resolution mask and overlay are files to download (see :mod:`lesionseg.ui.session`).
"""
from __future__ import annotations

import cv2
import numpy as np

from ..inference.outputs import overlay
from ..inference.prediction import Prediction
from ..utils.sizes import fit_size, resize_rgb_to

DISPLAY_MAX_SIDE = 1024


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


POSITIVE_RGB = (40, 220, 60)
NEGATIVE_RGB = (235, 40, 40)


def draw_clicks(rgb: np.ndarray, points: list[tuple[float, float, bool]]) -> np.ndarray:
    """A copy of ``rgb`` (h, w, 3) with a dot per correction click: green "lesion", red "not
    lesion", white-rimmed so it shows on dark lesions and pale skin alike. points: (x, y, positive)
    in ``rgb``'s pixels."""
    out = np.ascontiguousarray(rgb).copy()
    radius = max(4, round(max(out.shape[:2]) / 110))
    for x, y, positive in points:
        centre = (int(round(x)), int(round(y)))
        cv2.circle(out, centre, radius + 2, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, centre, radius, POSITIVE_RGB if positive else NEGATIVE_RGB, -1, cv2.LINE_AA)
    return out


def render_views(rgb: np.ndarray, prediction: Prediction, threshold: float | None = None,
                 max_side: int = DISPLAY_MAX_SIDE) -> dict[str, np.ndarray]:
    """All four views of ``prediction`` at screen size (longest side <= ``max_side``).

    rgb: the photo at any size (it is resized); prediction: of that photo; threshold: cut the
    probability map here instead of ``prediction.threshold``. Only screen-size arrays are made.
    Returns {"overlay": (h, w, 3), "mask": (h, w), "probability": (h, w, 3), "uncertainty": (h, w, 3)}.
    """
    size = fit_size(*prediction.size, max_side)
    small = resize_rgb_to(np.asarray(rgb, dtype=np.uint8), size)
    views = mask_views(small, prediction.mask_at(size, threshold))
    views["probability"] = probability_view(prediction.prob_at(size))
    views["uncertainty"] = uncertainty_view(prediction.uncertainty_at(size), small)
    return views
