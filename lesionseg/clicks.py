"""Correction clicks: checking them, encoding them for the click refiner, and simulating them.

A click is ``(x, y, positive)`` in the photo's pixel coordinates (x to the right, y down, the
centre of the top-left pixel at (0, 0)); ``positive=True`` says "this is lesion". The refiner
sees, at its own square resolution S, disks of ``radius`` pixels at the positive and at the
negative clicks (two channels), as RITM and FocalClick encode them.

The simulated user (training and ``lesionseg evaluate --clicks``) follows RITM's evaluation
protocol: the next click goes to the point farthest inside the larger error region (missed
lesion -> positive click, outlined skin -> negative click), distances measured to the region's
border with the image frame counting as border.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, NamedTuple, Sequence

import cv2
import numpy as np

from .utils.sizes import rescale_point

MAX_CLICKS = 50
NOC_TARGETS = (0.85, 0.90)


class Click(NamedTuple):
    """One correction click in the photo's pixel coordinates."""

    x: float
    y: float
    positive: bool


def _one(click: Any, i: int) -> Click:
    if isinstance(click, dict):
        try:
            click = (click["x"], click["y"], click.get("positive", True))
        except KeyError:
            raise ValueError(f"click {i + 1}: a dict needs keys x, y (and positive)") from None
    if isinstance(click, (str, bytes)) or not isinstance(click, (Sequence, np.ndarray)) or len(click) != 3:
        raise ValueError(f"click {i + 1}: expected (x, y, positive), got {click!r}")
    x, y, positive = click
    try:
        x, y = float(x), float(y)
    except (TypeError, ValueError):
        raise ValueError(f"click {i + 1}: x and y must be numbers, got {click[0]!r}, {click[1]!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"click {i + 1}: x and y must be finite numbers, got ({x}, {y})")
    if not isinstance(positive, (bool, np.bool_, int, np.integer)) or int(positive) not in (0, 1):
        raise ValueError(f"click {i + 1}: positive must be True (lesion) or False (not lesion), got {positive!r}")
    return Click(x, y, bool(positive))


def check_clicks(clicks: Iterable[Any], size: tuple[int, int]) -> list[Click]:
    """The clicks as :class:`Click` s, each inside an image of ``size`` = (H, W); ValueError (one
    line naming the click and what to do) for a click outside the image, NaN, a malformed click or
    more than :data:`MAX_CLICKS`."""
    if clicks is None:
        return []
    if isinstance(clicks, (str, bytes, dict)):
        raise ValueError("clicks must be a list of (x, y, positive)")
    items = list(clicks)
    if len(items) > MAX_CLICKS:
        raise ValueError(f"{len(items)} clicks is more than the {MAX_CLICKS} allowed: clear the clicks and start "
                         "again, or use the brush for fine edits")
    h, w = int(size[0]), int(size[1])
    out = []
    for i, c in enumerate(items):
        click = _one(c, i)
        if not (-0.5 <= click.x < w - 0.5 + 1e-9 and -0.5 <= click.y < h - 0.5 + 1e-9):
            raise ValueError(f"click {i + 1} at ({click.x:g}, {click.y:g}) is outside the {w}x{h} image: "
                             f"click on the photo (x in 0..{w - 1}, y in 0..{h - 1})")
        out.append(click)
    return out


def to_model_coords(clicks: Sequence[Click], size: tuple[int, int], side: int) -> list[Click]:
    """Clicks in an (H, W) photo -> the same clicks on the model's (side, side) squash-resized grid."""
    return [Click(*rescale_point(c.x, c.y, size, (side, side)), c.positive) for c in clicks]


def grid_cell(click: Click, shape: tuple[int, int]) -> tuple[int, int]:
    """(row, col) of the pixel of an (h, w) = ``shape`` grid nearest to ``click`` (clamped inside it)."""
    h, w = shape
    return int(round(min(max(click.y, 0), h - 1))), int(round(min(max(click.x, 0), w - 1)))


def click_maps(clicks: Sequence[Click], side: int, radius: int) -> np.ndarray:
    """(2, side, side) float32: disks of ``radius`` px at the positive (channel 0) and the negative
    (channel 1) clicks, given in the (side, side) grid's coordinates."""
    maps = np.zeros((2, side, side), np.uint8)
    for c in clicks:
        row, col = grid_cell(c, (side, side))
        cv2.circle(maps[0 if c.positive else 1], (col, row), int(radius), 1, thickness=-1)
    return maps.astype(np.float32)


def error_depths(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each pixel to the border of its error region: (missed lesion, outlined skin),
    both (H, W) float32 (0 outside the region; the image frame counts as border)."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    out = []
    for region in (gt & ~pred, pred & ~gt):
        padded = np.pad(region, 1).astype(np.uint8)
        out.append(cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1])
    return out[0], out[1]


def next_click(pred: np.ndarray, gt: np.ndarray, rng: np.random.Generator | None = None) -> Click | None:
    """The simulated user's next click on mask ``pred`` (H, W) against the reference ``gt`` (H, W).

    Deterministic (``rng`` None): the deepest point of the larger error region, as in RITM's
    evaluation. With ``rng`` (training): a random point among those at least half as deep, so the
    model also learns from clicks that are not perfectly centred. None when ``pred`` equals ``gt``.
    """
    fn, fp = error_depths(pred, gt)
    fn_max, fp_max = float(fn.max(initial=0)), float(fp.max(initial=0))
    if max(fn_max, fp_max) <= 0:
        return None
    positive = fn_max >= fp_max
    depth = fn if positive else fp
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    else:
        ys, xs = np.nonzero(depth >= 0.5 * depth.max())
        k = int(rng.integers(len(ys)))
        y, x = ys[k], xs[k]
    return Click(float(x), float(y), bool(positive))


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two (H, W) masks; 1.0 when both are empty."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def number_of_clicks(ious: Sequence[float], target: float) -> int:
    """NoC@target: the number of clicks after which IoU first reaches ``target`` (``ious[k]`` = IoU
    after k clicks, k = 0..N); N when it never does (RITM's convention: capped at the budget)."""
    for k, v in enumerate(ious):
        if v >= target:
            return k
    return len(ious) - 1


def progressive_merge(previous: np.ndarray, new: np.ndarray, click: Click, threshold: float) -> np.ndarray:
    """FocalClick's progressive merge: the refiner's map ``new`` is taken only in the connected
    region of pixels whose side of ``threshold`` it changed that holds the newest ``click`` (in the
    maps' grid coordinates); everywhere else ``previous`` is kept, so a click never disturbs the
    outline far from it. Both maps (S, S) float32; returns a new (S, S) map (``previous`` itself
    where the click's pixel did not change side)."""
    r, c = grid_cell(click, previous.shape)
    changed = (np.greater_equal(previous, threshold) != np.greater_equal(new, threshold)).view(np.uint8)
    if not changed[r, c]:
        return previous
    _, labels = cv2.connectedComponents(changed, connectivity=8)
    region = labels == labels[r, c]
    out = previous.copy()
    out[region] = new[region]
    return out
