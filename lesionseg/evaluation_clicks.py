"""Click-correction evaluation: mean IoU after 0..N simulated clicks, NoC@85 / NoC@90.

The protocol (RITM's, from the network's own outline): predict the photo, then N times put the
next click at the point farthest inside the larger error region of the current mask against the
reference mask (:func:`lesionseg.clicks.next_click`, at the reference mask's own resolution) and
call :meth:`Predictor.refine` with every click so far and the last result. Everything goes through
the library's public calls, so the numbers are those a clinician's clicks in the app would give.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

from .clicks import NOC_TARGETS, Click, iou, next_click, number_of_clicks
from .data.io import load_image, load_mask
from .data.pairing import DataError, Pair
from .inference.edits import Stroke
from .inference.predictor import Predictor
from .metrics import ISIC_IOU_THRESHOLD
from .utils.sizes import rescale_point

log = logging.getLogger(__name__)
METHODS = ("refiner", "disk")
DISK_FRACTION = 0.05  # the naive baseline's disk radius, as a share of the photo's shorter side


def click_trajectory(predictor: Predictor, rgb: np.ndarray, target: np.ndarray, n_clicks: int,
                     threshold: float | None = None, method: str = "refiner") -> tuple[list[float], list[Click]]:
    """IoU after 0..n_clicks simulated clicks on one photo, and the clicks (in ``rgb``'s pixels).

    rgb: (h, w, 3) uint8, possibly decoded at a reduced scale; target: (H, W) {0, 1} reference
    mask at the photo's full resolution, where the masks are compared and the clicks are chosen.
    method: ``refiner`` (:meth:`Predictor.refine`) or ``disk``, the naive baseline the refiner has
    to beat: a disk of :data:`DISK_FRACTION` of the shorter side painted in or out at each click.
    """
    if method not in METHODS:
        raise ValueError(f"unknown click method {method!r}; valid: {', '.join(METHODS)}")
    size = target.shape[:2]
    pred = predictor.predict_batch([rgb], threshold=threshold, tta=False, sizes=[size])[0]
    plain, radius = pred, DISK_FRACTION * min(size)
    ious, clicks, dabs = [iou(pred.mask, target)], [], []
    for _ in range(n_clicks):
        c = next_click(pred.mask, target)
        if c is not None:  # an exact outline gets no more clicks and keeps its IoU
            clicks.append(Click(*rescale_point(c.x, c.y, size, rgb.shape[:2]), c.positive))
            if method == "refiner":
                pred = predictor.refine(rgb, clicks, previous=pred)
            else:
                dabs.append(Stroke(c.x, c.y, radius, c.positive))
                pred = plain.with_edits(dabs)
        ious.append(iou(pred.mask, target))
    return ious, clicks


def evaluate_clicks(predictor: Predictor, pairs: Sequence[Pair], n_clicks: int = 3,
                    threshold: float | None = None, method: str = "refiner") -> dict:
    """The click protocol on every pair; a JSON-ready dict (see :func:`format_clicks_table`)."""
    if n_clicks < 1:
        raise ValueError(f"--clicks must be >= 1, got {n_clicks}")
    if not pairs:
        raise DataError("no images were evaluated")
    t = predictor.threshold if threshold is None else float(threshold)
    rows, start, last_log = [], time.monotonic(), time.monotonic()
    for p in pairs:
        rgb = load_image(p.image, min_side=predictor.img_size * 2)
        ious, clicks = click_trajectory(predictor, rgb, load_mask(p.mask), n_clicks, t, method)
        rows.append({"id": p.id, "iou": ious, "clicks": [list(c) for c in clicks],
                     **{f"noc@{round(g * 100)}": number_of_clicks(ious, g) for g in NOC_TARGETS}})
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            log.info("click-evaluated %d/%d images (%.1f s)", len(rows), len(pairs), last_log - start)
    curve = np.asarray([r["iou"] for r in rows])
    out = {"n_images": len(rows), "threshold": t, "n_clicks": n_clicks, "method": method,
           "miou": [float(v) for v in curve.mean(0)],
           "failure_rate": [float(v) for v in (curve < ISIC_IOU_THRESHOLD).mean(0)]}
    for g in NOC_TARGETS:
        key = f"noc@{round(g * 100)}"
        out[key] = float(np.mean([r[key] for r in rows]))
        out[f"not_reached@{round(g * 100)}"] = float((curve.max(1) < g).mean())
    out["per_image"] = rows
    return out


def format_clicks_table(result: dict) -> str:
    """Human-readable summary of :func:`evaluate_clicks`."""
    lines = [f"images: {result['n_images']}   threshold: {result['threshold']:.3f}   "
             f"simulated clicks: {result['n_clicks']} (RITM protocol, from the model's own outline), "
             f"answered by: {result.get('method', 'refiner')}",
             f"{'clicks':<8} {'mean IoU':>9} {'IoU < 0.65':>11}"]
    for k, (m, f) in enumerate(zip(result["miou"], result["failure_rate"])):
        lines.append(f"{k:<8} {m:>9.4f} {f:>10.1%}")
    for g in NOC_TARGETS:
        key = round(g * 100)
        lines.append(f"NoC@{key}: {result[f'noc@{key}']:.2f}   (not reached within {result['n_clicks']} clicks: "
                     f"{result[f'not_reached@{key}']:.1%})")
    return "\n".join(lines)
