"""Brush and eraser edits of a mask: disks painted over the model's outline, at any mask size.

A :class:`Stroke` is one dab of a brush (``add=True``: "this is lesion") or of an eraser
(``add=False``) given in the photo's full-size pixel coordinates, so one list of dabs applies to
the full-resolution download, the screen view and the analysis-size measurements alike: each size
paints the same disk, scaled (an ellipse where the two axes scale differently). Dabs are painted
in order, a later one over an earlier one, after thresholding and the clean-up, so they are the
last word on the pixels they cover.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from ..utils.sizes import rescale_point

MAX_STROKES = 1000
# a scaled disk never shrinks below the nearest pixel centre: a dab always paints something
MIN_RADIUS = math.sqrt(0.5)


class Stroke(NamedTuple):
    """One brush (``add=True``) or eraser dab: a disk of ``radius`` px centred on (x, y), in the
    full-size photo's pixel coordinates (x right, y down, the top-left pixel's centre at (0, 0))."""

    x: float
    y: float
    radius: float
    add: bool


def _one(stroke: Any, i: int, size: tuple[int, int]) -> Stroke:
    if isinstance(stroke, (str, bytes)) or not isinstance(stroke, (Sequence, np.ndarray)) or len(stroke) != 4:
        raise ValueError(f"brush dab {i + 1}: expected (x, y, radius, add), got {stroke!r}")
    try:
        x, y, r = float(stroke[0]), float(stroke[1]), float(stroke[2])
    except (TypeError, ValueError):
        raise ValueError(f"brush dab {i + 1}: x, y and radius must be numbers, got {stroke!r}") from None
    if not all(math.isfinite(v) for v in (x, y, r)):
        raise ValueError(f"brush dab {i + 1}: x, y and radius must be finite numbers, got ({x}, {y}, {r})")
    h, w = size
    if r <= 0 or r > max(h, w):
        raise ValueError(f"brush dab {i + 1}: radius {r:g} must lie in (0, {max(h, w)}] px")
    if not (-0.5 <= x < w - 0.5 + 1e-9 and -0.5 <= y < h - 0.5 + 1e-9):
        raise ValueError(f"brush dab {i + 1} at ({x:g}, {y:g}) is outside the {w}x{h} image: paint on the photo")
    add = stroke[3]
    if not isinstance(add, (bool, np.bool_, int, np.integer)) or int(add) not in (0, 1):
        raise ValueError(f"brush dab {i + 1}: add must be True (brush) or False (eraser), got {add!r}")
    return Stroke(x, y, r, bool(add))


def check_strokes(strokes: Iterable[Any] | None, size: tuple[int, int]) -> tuple[Stroke, ...]:
    """The dabs as :class:`Stroke` s, each centred inside an image of ``size`` = (H, W) with a radius
    in (0, max(H, W)]; ValueError (one line naming the dab) otherwise or for more than
    :data:`MAX_STROKES`."""
    if strokes is None:
        return ()
    items = list(strokes)
    if len(items) > MAX_STROKES:
        raise ValueError(f"{len(items)} brush dabs is more than the {MAX_STROKES} allowed: clear and start again")
    return tuple(_one(s, i, size) for i, s in enumerate(items))


def paint(mask: np.ndarray, strokes: Sequence[Stroke], size: tuple[int, int]) -> np.ndarray:
    """Paint ``strokes`` (given for a (H, W) = ``size`` image) into ``mask`` (h, w) uint8 {0, 1}, in
    place and in order; returns ``mask``. A pixel is painted when its centre lies in the scaled disk."""
    big_h, big_w = size
    h, w = mask.shape
    sx, sy = w / big_w, h / big_h
    for s in strokes:
        cx, cy = rescale_point(s.x, s.y, size, (h, w))
        rx, ry = max(s.radius * sx, MIN_RADIUS), max(s.radius * sy, MIN_RADIUS)
        x0, x1 = max(math.ceil(cx - rx), 0), min(math.floor(cx + rx), w - 1)
        y0, y1 = max(math.ceil(cy - ry), 0), min(math.floor(cy + ry), h - 1)
        if x0 > x1 or y0 > y1:
            continue
        yy, xx = np.ogrid[y0:y1 + 1, x0:x1 + 1]
        disk = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        mask[y0:y1 + 1, x0:x1 + 1][disk] = 1 if s.add else 0
    return mask
