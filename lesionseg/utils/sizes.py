"""Image sizes: fit a photo inside a bound, move a point or resize an RGB image to another size."""
from __future__ import annotations

import cv2
import numpy as np


def fit_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) scaled down (never up) so that the longer side is at most ``max_side``; aspect kept."""
    if height < 1 or width < 1:
        raise ValueError(f"invalid size {height}x{width}")
    s = min(1.0, max_side / max(height, width))
    return max(1, round(height * s)), max(1, round(width * s))


def rescale_point(x: float, y: float, from_size: tuple[int, int], to_size: tuple[int, int]) -> tuple[float, float]:
    """A point (x, y) of an image of (H, W) = ``from_size`` (pixel centres at integers) -> the same
    point of the image resized to ``to_size``."""
    (fh, fw), (th, tw) = from_size, to_size
    return (x + 0.5) * tw / fw - 0.5, (y + 0.5) * th / fh - 0.5


def resize_rgb_to(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 -> (H, W, 3) = ``size``; area averaging when shrinking, bilinear when enlarging."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    h, w = size
    interp = cv2.INTER_AREA if h < rgb.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interp)
