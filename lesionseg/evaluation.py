"""Evaluate a Predictor on image/mask pairs: per-image metrics at each mask's own resolution.

The result is a JSON-ready dict with exactly the keys in :data:`RESULT_KEYS`; ``per_image`` holds
one row per image so that aggregate numbers can be recomputed or inspected.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .data.io import load_image, load_mask
from .data.pairing import DEFAULT_MASK_SUFFIX, DataError, Pair, collect_pairs
from .inference.prediction import resize_prob
from .inference.predictor import Predictor
from .metrics import METRICS, aggregate, confusion, metrics_from_counts

log = logging.getLogger(__name__)

RESULT_KEYS = ("n_images", "threshold", "dice_mean", "dice_std", "iou_mean", "iou_std", "recall_mean",
               "precision_mean", "specificity_mean", "accuracy_mean", "thresholded_jaccard", "failure_rate",
               "pooled_dice", "pooled_iou", "per_image")


class MetricAccumulator:
    """Collects per-image confusion counts; :meth:`result` builds the evaluation dict."""

    def __init__(self, threshold: float):
        self.threshold = float(threshold)
        self.rows: list[dict] = []
        self.pooled = np.zeros(4, dtype=np.int64)

    def add(self, image_id: str, pred_mask: np.ndarray, target: np.ndarray) -> dict:
        """pred_mask, target: (H, W) binary of the same shape. Returns the image's metric row."""
        counts = confusion(pred_mask, target)
        self.pooled += np.asarray(counts, dtype=np.int64)
        row = {"id": image_id, **{k: float(v) for k, v in metrics_from_counts(*counts).items()}}
        self.rows.append(row)
        return row

    def result(self) -> dict:
        if not self.rows:
            raise DataError("no images were evaluated")
        agg = aggregate(self.rows, pooled_counts=tuple(int(v) for v in self.pooled))
        out = {"n_images": len(self.rows), "threshold": self.threshold}
        for key in RESULT_KEYS:
            if key not in out and key != "per_image":
                out[key] = float(agg[key])
        out["per_image"] = [dict(r) for r in self.rows]
        return out


def evaluate_arrays(ids: Sequence[str], probs: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                    threshold: float) -> dict:
    """Evaluation dict from probability maps (H, W) float and masks (H', W') {0, 1}.

    A probability map of another size is resized to its mask's size before thresholding.
    """
    if not len(ids) == len(probs) == len(masks):
        raise ValueError(f"{len(ids)} ids, {len(probs)} probability maps and {len(masks)} masks")
    acc = MetricAccumulator(threshold)
    for i, p, m in zip(ids, probs, masks):
        p = resize_prob(np.asarray(p, dtype=np.float32), m.shape[:2])
        acc.add(i, p >= threshold, m)
    return acc.result()


def select_pairs(pairs: list[Pair], ids: Iterable[str] | None) -> list[Pair]:
    """Keep the pairs whose id is in ``ids`` (in the order given); unknown ids -> DataError."""
    if ids is None:
        return pairs
    by_id = {p.id: p for p in pairs}
    wanted = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise DataError(f"{len(missing)} requested id(s) have no usable image/mask pair, e.g. "
                        f"{', '.join(missing[:5])}")
    if not wanted:
        raise DataError("the id list is empty")
    return [by_id[i] for i in wanted]


def evaluate(predictor: Predictor, images_dir: str | Path, masks_dir: str | Path, threshold: float | None = None,
             tta: bool = False, mask_suffix: str = DEFAULT_MASK_SUFFIX, ids: list[str] | None = None,
             batch_size: int = 8) -> dict:
    """Predict every paired image and score it against its mask at the mask's resolution.

    Raises DataError for unusable folders / ids and ImageLoadError for an undecodable file.
    """
    # with an id list, mismatches outside it do not matter; without one, every mismatch is an error
    pairs = select_pairs(collect_pairs(images_dir, masks_dir, mask_suffix, strict=ids is None), ids)
    return evaluate_pairs(predictor, pairs, threshold, tta, batch_size)


def evaluate_pairs(predictor: Predictor, pairs: Sequence[Pair], threshold: float | None = None, tta: bool = False,
                   batch_size: int = 8) -> dict:
    """:func:`evaluate` on pairs already collected (from one folder or several)."""
    t = predictor.threshold if threshold is None else float(threshold)
    acc = MetricAccumulator(t)
    start, last_log = time.monotonic(), time.monotonic()
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s:s + batch_size]
        rgbs, targets = [], []
        for p in chunk:
            rgbs.append(load_image(p.image, min_side=predictor.img_size * 2))
            targets.append(load_mask(p.mask))
        preds = predictor.predict_batch(rgbs, threshold=t, tta=tta, sizes=[m.shape for m in targets])
        for p, pred, target in zip(chunk, preds, targets):
            acc.add(p.id, pred.mask, target)
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            log.info("evaluated %d/%d images (%.1f s)", len(acc.rows), len(pairs), last_log - start)
    log.info("evaluated %d images in %.1f s", len(acc.rows), time.monotonic() - start)
    return acc.result()


def format_table(result: dict) -> str:
    """Human-readable summary of an evaluation dict."""
    lines = [f"images: {result['n_images']}   threshold: {result['threshold']:.3f}",
             f"{'metric':<12} {'mean':>7} {'std':>7}"]
    for m in METRICS:
        std = result.get(f"{m}_std")
        lines.append(f"{m:<12} {result[f'{m}_mean']:>7.4f} " + (f"{std:>7.4f}" if std is not None else f"{'':>7}"))
    lines += [f"{'pooled dice':<20} {result['pooled_dice']:.4f}",
              f"{'pooled iou':<20} {result['pooled_iou']:.4f}",
              f"{'thresholded jaccard':<20} {result['thresholded_jaccard']:.4f}  (ISIC: IoU < 0.65 counts as 0)",
              f"{'failure rate':<20} {result['failure_rate']:.4f}  (share of images with IoU < 0.65)"]
    return "\n".join(lines)
