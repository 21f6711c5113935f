"""Per-image segmentation metrics and their aggregation (ISIC conventions).

Empty cases are defined, not NaN:
- ground truth empty and prediction empty: every metric is 1.
- ground truth empty, prediction not: Dice = IoU = precision = 0, recall = 1 (nothing to miss).
- ground truth not empty, prediction empty: Dice = IoU = recall = 0, precision = 1 (no false
  positive was drawn).
- specificity with no negative pixels is 1.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

METRICS = ("dice", "iou", "recall", "precision", "specificity", "accuracy")
ISIC_IOU_THRESHOLD = 0.65


def confusion(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) pixel counts of two binary arrays of the same shape."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from mask shape {target.shape}")
    p, t = pred.astype(bool), target.astype(bool)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    tn = p.size - tp - fp - fn
    return tp, fp, fn, tn


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den else empty


def metrics_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Dice, IoU, recall, precision, specificity, accuracy from pixel counts (see module doc)."""
    both_empty = tp + fp + fn == 0
    return {
        "dice": 1.0 if both_empty else 2 * tp / (2 * tp + fp + fn),
        "iou": 1.0 if both_empty else tp / (tp + fp + fn),
        "recall": _ratio(tp, tp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, 1.0),
        "specificity": _ratio(tn, tn + fp, 1.0),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
    }


def image_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All per-image metrics for one binary prediction against its binary mask."""
    return metrics_from_counts(*confusion(pred, target))


def aggregate(per_image: Iterable[dict[str, float]],
              pooled_counts: tuple[int, int, int, int] | None = None) -> dict[str, float]:
    """Mean, SD and median of each metric over images, the ISIC thresholded Jaccard (per-image
    IoU below 0.65 counts as 0), the failure rate (share of images with IoU < 0.65) and, given
    summed pixel counts, pooled Dice and IoU (all pixels of all images together)."""
    rows = list(per_image)
    if not rows:
        raise ValueError("no images to aggregate")
    out: dict[str, float] = {"n_images": len(rows)}
    for m in METRICS:
        v = np.array([r[m] for r in rows], dtype=np.float64)
        out[f"{m}_mean"] = float(v.mean())
        out[f"{m}_std"] = float(v.std())
        out[f"{m}_median"] = float(np.median(v))
    iou = np.array([r["iou"] for r in rows])
    out["thresholded_jaccard"] = float(np.where(iou >= ISIC_IOU_THRESHOLD, iou, 0.0).mean())
    out["failure_rate"] = float((iou < ISIC_IOU_THRESHOLD).mean())
    if pooled_counts is not None:
        tp, fp, fn, _ = pooled_counts
        out["pooled_dice"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        out["pooled_iou"] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return out


def operating_points(probs: list[np.ndarray], targets: list[np.ndarray],
                     thresholds: Iterable[float] | None = None,
                     mask_fn: Callable[[np.ndarray, float], np.ndarray] | None = None) -> list[dict[str, float]]:
    """Per-image mean recall, precision and Dice at each threshold (default 0.05, 0.10, ..., 0.95).

    ``mask_fn(prob, threshold)`` makes each mask (default ``prob >= threshold``), e.g. with the
    model's clean-up, so that the points describe the masks users will get."""
    ths = [round(t, 2) for t in (thresholds if thresholds is not None else np.arange(0.05, 0.951, 0.05))]
    cut = mask_fn or (lambda p, th: p >= th)
    out = []
    for th in ths:
        rows = [image_metrics(cut(p, th), t) for p, t in zip(probs, targets)]
        out.append({"threshold": float(th),
                    "recall": float(np.mean([r["recall"] for r in rows])),
                    "precision": float(np.mean([r["precision"] for r in rows])),
                    "dice": float(np.mean([r["dice"] for r in rows]))})
    return out


def choose_threshold(points: list[dict[str, float]], recall_target: float) -> dict[str, float]:
    """Highest-precision point whose recall reaches ``recall_target``; else the highest-recall point."""
    ok = [p for p in points if p["recall"] >= recall_target]
    if ok:
        return max(ok, key=lambda p: (p["precision"], p["threshold"]))
    return max(points, key=lambda p: (p["recall"], -p["threshold"]))
