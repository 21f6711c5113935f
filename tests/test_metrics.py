"""Per-image metrics, empty-case conventions, aggregation and operating points, by hand."""
from __future__ import annotations

import numpy as np
import pytest

from lesionseg.metrics import (
    ISIC_IOU_THRESHOLD,
    METRICS,
    aggregate,
    choose_threshold,
    confusion,
    image_metrics,
    metrics_from_counts,
    operating_points,
)

# 4x4: TP 3, FP 1, FN 2, TN 10
TARGET = np.array([[1, 1, 1, 0],
                   [1, 1, 0, 0],
                   [0, 0, 0, 0],
                   [0, 0, 0, 0]], dtype=np.uint8)
PRED = np.array([[1, 1, 0, 0],
                 [1, 0, 0, 1],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]], dtype=np.uint8)


def test_confusion_counts():
    assert confusion(PRED, TARGET) == (3, 1, 2, 10)
    # any non-zero value is foreground: {0, 255} and bool arrays give the same counts
    assert confusion(PRED.astype(bool), TARGET * 255) == (3, 1, 2, 10)


def test_image_metrics_on_known_counts():
    m = image_metrics(PRED, TARGET)
    assert set(m) == set(METRICS)
    assert m["dice"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))     # 6/9
    assert m["iou"] == pytest.approx(3 / (3 + 1 + 2))               # 1/2
    assert m["recall"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(10 / 11)
    assert m["accuracy"] == pytest.approx(13 / 16)


def test_perfect_prediction():
    assert image_metrics(TARGET, TARGET) == {m: 1.0 for m in METRICS}


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        image_metrics(PRED, TARGET[:3])


# -- empty cases, as documented in lesionseg.metrics ----------------------------------------------

def test_empty_truth_empty_prediction_is_all_ones():
    z = np.zeros((5, 7), np.uint8)
    assert image_metrics(z, z) == {m: 1.0 for m in METRICS}


def test_empty_truth_nonempty_prediction():
    pred = np.zeros((4, 4), np.uint8)
    pred[0, :2] = 1
    m = image_metrics(pred, np.zeros_like(pred))
    assert (m["dice"], m["iou"], m["precision"], m["recall"]) == (0.0, 0.0, 0.0, 1.0)
    assert m["specificity"] == pytest.approx(14 / 16)
    assert m["accuracy"] == pytest.approx(14 / 16)


def test_nonempty_truth_empty_prediction():
    m = image_metrics(np.zeros_like(TARGET), TARGET)
    assert (m["dice"], m["iou"], m["recall"], m["precision"]) == (0.0, 0.0, 0.0, 1.0)
    assert m["specificity"] == 1.0
    assert m["accuracy"] == pytest.approx(11 / 16)


def test_specificity_without_negative_pixels_is_one():
    ones = np.ones((3, 3), np.uint8)
    m = image_metrics(ones, ones)
    assert m["specificity"] == 1.0
    assert metrics_from_counts(2, 0, 7, 0)["specificity"] == 1.0


def test_no_metric_is_ever_nan():
    for counts in [(0, 0, 0, 0), (0, 0, 0, 5), (0, 3, 0, 0), (0, 0, 3, 0), (1, 0, 0, 0)]:
        values = metrics_from_counts(*counts).values()
        assert all(np.isfinite(v) and 0 <= v <= 1 for v in values), counts


# -- aggregation -----------------------------------------------------------------------------------

def _row(iou: float, dice: float = 0.5) -> dict[str, float]:
    return {"dice": dice, "iou": iou, "recall": 1.0, "precision": 0.5, "specificity": 0.9, "accuracy": 0.8}


def test_aggregate_mean_std_median():
    rows = [_row(0.9, dice=0.2), _row(0.6, dice=0.4), _row(0.7, dice=0.6), _row(0.5, dice=1.0)]
    a = aggregate(rows)
    assert a["n_images"] == 4
    assert a["dice_mean"] == pytest.approx(0.55)
    # population SD: deviations -0.35, -0.15, 0.05, 0.45 -> sqrt((0.1225 + 0.0225 + 0.0025 + 0.2025) / 4)
    assert a["dice_std"] == pytest.approx(np.sqrt(0.35 / 4))
    assert a["dice_median"] == pytest.approx(0.5)
    assert a["iou_mean"] == pytest.approx(0.675)
    assert a["recall_std"] == 0.0
    for m in METRICS:
        assert {f"{m}_mean", f"{m}_std", f"{m}_median"} <= set(a)


def test_thresholded_jaccard_and_failure_rate():
    rows = [_row(0.9), _row(0.6), _row(0.7), _row(0.5), _row(ISIC_IOU_THRESHOLD)]
    a = aggregate(rows)
    # IoU < 0.65 counts as 0; exactly 0.65 passes
    assert a["thresholded_jaccard"] == pytest.approx((0.9 + 0 + 0.7 + 0 + 0.65) / 5)
    assert a["failure_rate"] == pytest.approx(2 / 5)
    assert ISIC_IOU_THRESHOLD == 0.65


def test_pooled_dice_and_iou():
    a = aggregate([_row(0.5)], pooled_counts=(10, 5, 5, 80))
    assert a["pooled_dice"] == pytest.approx(20 / 30)
    assert a["pooled_iou"] == pytest.approx(10 / 20)
    assert "pooled_dice" not in aggregate([_row(0.5)])
    empty = aggregate([_row(1.0)], pooled_counts=(0, 0, 0, 100))
    assert empty["pooled_dice"] == 1.0 and empty["pooled_iou"] == 1.0


def test_pooled_differs_from_mean_per_image():
    """One big well-segmented lesion and one tiny missed one: per-image mean and pooled disagree."""
    big_t = np.zeros((10, 10), np.uint8)
    big_t[:8, :8] = 1
    small_t = np.zeros((10, 10), np.uint8)
    small_t[0, 0] = 1
    preds, targets = [big_t.copy(), np.zeros((10, 10), np.uint8)], [big_t, small_t]
    rows = [image_metrics(p, t) for p, t in zip(preds, targets)]
    counts = np.sum([confusion(p, t) for p, t in zip(preds, targets)], axis=0)
    a = aggregate(rows, pooled_counts=tuple(int(c) for c in counts))
    assert a["dice_mean"] == pytest.approx(0.5)
    assert a["pooled_dice"] == pytest.approx(128 / 129)


def test_aggregate_of_nothing_raises():
    with pytest.raises(ValueError, match="no images"):
        aggregate([])


# -- operating points and the default threshold -----------------------------------------------------

# one image, four pixels: truth [1, 0, 1, 1], probabilities [0.2, 0.5, 0.7, 0.9]
PROBS = [np.array([[0.2, 0.5, 0.7, 0.9]])]
TRUTH = [np.array([[1, 0, 1, 1]], np.uint8)]


def test_operating_points_by_hand():
    pts = operating_points(PROBS, TRUTH, thresholds=[0.1, 0.3, 0.6, 0.95])
    assert [p["threshold"] for p in pts] == [0.1, 0.3, 0.6, 0.95]
    # 0.1: all four predicted -> TP 3, FP 1
    assert pts[0]["recall"] == pytest.approx(1.0) and pts[0]["precision"] == pytest.approx(0.75)
    assert pts[0]["dice"] == pytest.approx(6 / 7)
    # 0.3: [0, 1, 1, 1] -> TP 2, FP 1, FN 1
    assert pts[1]["recall"] == pytest.approx(2 / 3) and pts[1]["precision"] == pytest.approx(2 / 3)
    # 0.6: [0, 0, 1, 1] -> TP 2, FP 0, FN 1
    assert pts[2]["recall"] == pytest.approx(2 / 3) and pts[2]["precision"] == pytest.approx(1.0)
    assert pts[2]["dice"] == pytest.approx(4 / 5)
    # 0.95: nothing predicted -> recall 0, precision 1 by convention
    assert pts[3]["recall"] == 0.0 and pts[3]["precision"] == 1.0


def test_operating_points_average_over_images():
    probs = PROBS + [np.array([[0.9, 0.9, 0.1, 0.1]])]
    truth = TRUTH + [np.array([[1, 1, 0, 0]], np.uint8)]
    (pt,) = operating_points(probs, truth, thresholds=[0.3])
    assert pt["recall"] == pytest.approx((2 / 3 + 1) / 2)
    assert pt["precision"] == pytest.approx((2 / 3 + 1) / 2)


def test_default_thresholds_are_0_05_to_0_95():
    pts = operating_points(PROBS, TRUTH)
    assert [p["threshold"] for p in pts] == [round(0.05 * i, 2) for i in range(1, 20)]


def test_choose_threshold_highest_precision_meeting_recall():
    pts = operating_points(PROBS, TRUTH, thresholds=[0.1, 0.3, 0.6, 0.95])
    assert choose_threshold(pts, recall_target=0.6)["threshold"] == 0.6
    assert choose_threshold(pts, recall_target=0.9)["threshold"] == 0.1


def test_choose_threshold_falls_back_to_highest_recall():
    pts = [{"threshold": 0.2, "recall": 0.8, "precision": 0.5},
           {"threshold": 0.4, "recall": 0.8, "precision": 0.7},
           {"threshold": 0.6, "recall": 0.5, "precision": 0.9}]
    # no point reaches 0.95: highest recall, and among equal recall the lowest threshold
    assert choose_threshold(pts, recall_target=0.95)["threshold"] == 0.2
    # equal precision among those meeting the target: the higher threshold wins
    tied = pts + [{"threshold": 0.5, "recall": 0.85, "precision": 0.7}]
    assert choose_threshold(tied, recall_target=0.75)["threshold"] == 0.5
