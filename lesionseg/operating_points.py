"""Threshold presets and the validation recall / precision of any threshold, from the weights' config.

The weights carry ``inference_operating_points``: a list of {threshold, recall, precision, dice}
measured on the training run's validation split, and ``inference_threshold``, the default chosen
for high recall (screening).
"""
from __future__ import annotations

import math

SCREENING = "Screening: high recall"
BALANCED = "Balanced"
HIGH_PRECISION = "High precision"
PRESET_NAMES = (SCREENING, BALANCED, HIGH_PRECISION)
PRECISION_TARGET = 0.95
MIN_RECALL = 0.5  # a "high precision" point must still find at least half of the lesion pixels
FALLBACK_RECALL = 0.8


def clean_points(points: list[dict] | None) -> list[dict]:
    """Valid operating points (finite threshold in [0, 1], recall / precision numbers), sorted by threshold."""
    out = []
    for p in points or []:
        try:
            q = {k: float(p[k]) for k in ("threshold", "recall", "precision")}
            q["dice"] = float(p.get("dice", math.nan))
        except (KeyError, TypeError, ValueError):
            continue
        if all(math.isfinite(q[k]) for k in ("threshold", "recall", "precision")) and 0 <= q["threshold"] <= 1:
            out.append(q)
    return sorted(out, key=lambda q: q["threshold"])


def presets(points: list[dict] | None, default_threshold: float) -> dict[str, float]:
    """{preset name: threshold}, in the order of :data:`PRESET_NAMES`.

    Screening: the model's default threshold. Balanced: the point with the highest Dice.
    High precision: the lowest threshold with precision >= 0.95 (and recall >= 0.5); else the most
    precise point with recall >= 0.8; else the balanced one. Without operating points the
    fallbacks are 0.5 and 0.7.
    """
    pts = clean_points(points)
    screening = float(default_threshold)
    with_dice = [p for p in pts if math.isfinite(p["dice"])]
    balanced = max(with_dice, key=lambda p: (p["dice"], -abs(p["threshold"] - 0.5)))["threshold"] if with_dice else 0.5
    precise = [p for p in pts if p["precision"] >= PRECISION_TARGET and p["recall"] >= MIN_RECALL]
    if precise:
        high = min(precise, key=lambda p: p["threshold"])["threshold"]
    else:
        usable = [p for p in pts if p["recall"] >= FALLBACK_RECALL]
        high = max(usable, key=lambda p: (p["precision"], p["threshold"]))["threshold"] if usable else (
            balanced if pts else 0.7)
    return {SCREENING: round(screening, 4), BALANCED: round(balanced, 4), HIGH_PRECISION: round(high, 4)}


def validation_stats(points: list[dict] | None, threshold: float) -> dict[str, float] | None:
    """Recall / precision / Dice at ``threshold``, linearly interpolated between the two nearest
    operating points (the end points outside their range). None without operating points."""
    pts = clean_points(points)
    if not pts:
        return None
    t = float(threshold)
    keys = ("recall", "precision", "dice")
    if t <= pts[0]["threshold"]:
        return {k: pts[0][k] for k in keys}
    if t >= pts[-1]["threshold"]:
        return {k: pts[-1][k] for k in keys}
    for lo, hi in zip(pts, pts[1:]):
        if lo["threshold"] <= t <= hi["threshold"]:
            span = hi["threshold"] - lo["threshold"]
            f = 0.0 if span == 0 else (t - lo["threshold"]) / span
            return {k: lo[k] + f * (hi[k] - lo[k]) for k in keys}
    return None  # unreachable: pts is sorted


def describe(points: list[dict] | None, threshold: float) -> str:
    """One line for beside the slider, e.g. "On validation images at 0.35: recall 94 %, precision 53 %"."""
    stats = validation_stats(points, threshold)
    if stats is None:
        return f"Threshold {threshold:.2f} (these weights carry no validation operating points)."
    return (f"On validation images at threshold {threshold:.2f}: recall {stats['recall'] * 100:.0f} % "
            f"(share of lesion pixels found), precision {stats['precision'] * 100:.0f} % "
            f"(share of outlined pixels that are lesion).")


def preset_for(threshold: float, table: dict[str, float]) -> str | None:
    """The preset name whose threshold equals ``threshold`` (to 3 decimals), if any."""
    for name, t in table.items():
        if abs(t - float(threshold)) < 5e-4:
            return name
    return None
