"""Mask clean-up (lesionseg/postprocess.py): holes filled, specks dropped, judged at model resolution."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from lesionseg.inference import Predictor
from lesionseg.inference.prediction import Prediction
from lesionseg.metrics import operating_points
from lesionseg.models import DSAttentionUNet
from lesionseg.postprocess import NO_CLEANUP, MaskCleanup, cleanup_of


def lesion_with_hole_and_speck(s: int = 64) -> np.ndarray:
    """(s, s) probabilities: a ring-shaped lesion (0.9) with a 0.1 hole, a 0.8 speck, a border blob."""
    p = np.full((s, s), 0.05, np.float32)
    cv2.circle(p, (s // 2, s // 2), s // 4, 0.9, -1)
    cv2.circle(p, (s // 2, s // 2), s // 12, 0.1, -1)  # hole inside the lesion
    p[4:6, 4:6] = 0.8  # 4-pixel speck, far under 10% of the lesion
    return p


def test_fills_holes_and_drops_specks_only():
    p = lesion_with_hole_and_speck()
    cleaned = MaskCleanup().apply(p, 0.5)
    assert cleaned is not None and p[32, 32] == pytest.approx(0.1)  # the input is left as it was
    m = cleaned >= 0.5
    assert m[32, 32] and not m[4:6, 4:6].any()
    n, _ = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    assert n == 2  # one lesion, no holes: its complement is one region too
    assert cv2.connectedComponents((~m).astype(np.uint8), connectivity=4)[0] == 2
    assert np.array_equal(m, MaskCleanup().mask(p, 0.5).astype(bool))
    # only what was asked for
    holes_only = MaskCleanup(fill_holes=True, min_region_fraction=0.0).mask(p, 0.5)
    assert holes_only[32, 32] and holes_only[4:6, 4:6].all()
    specks_only = MaskCleanup(fill_holes=False, min_region_fraction=0.1).mask(p, 0.5)
    assert not specks_only[32, 32] and not specks_only[4:6, 4:6].any()
    assert NO_CLEANUP.apply(p, 0.5) is None


def test_clean_masks_are_left_alone_and_background_on_the_border_is_not_a_hole():
    p = np.zeros((40, 40), np.float32)
    p[:, :10] = 1.0  # a lesion along the left edge, cut off by the frame
    p[10:29, 20:40] = 1.0  # a second region almost as large (380 vs 400 px): both stay
    assert MaskCleanup().apply(p, 0.5) is None
    assert MaskCleanup(min_region_fraction=1.0).apply(p, 0.5) is not None  # largest only: one goes


def test_full_size_mask_has_no_speck_and_no_hole_after_resizing():
    p = lesion_with_hole_and_speck(64)
    pred = Prediction(p, (300, 411), 0.5, MaskCleanup())
    assert pred.mask.shape == (300, 411) and pred.prob.shape == (300, 411)
    assert cv2.connectedComponents(pred.mask, connectivity=8)[0] == 2
    assert cv2.connectedComponents(1 - pred.mask, connectivity=4)[0] == 2
    raw = Prediction(p, (300, 411), 0.5, NO_CLEANUP)
    assert np.array_equal(raw.mask, (raw.prob >= 0.5).astype(np.uint8))
    assert np.array_equal(raw.prob, pred.prob)  # the probability map itself is not altered
    assert pred.mask.sum() > raw.mask.sum() - 300  # the hole added more than the speck removed


def test_moving_the_threshold_cleans_again():
    p = lesion_with_hole_and_speck(64)
    pred = Prediction(p, (128, 128), 0.5, MaskCleanup())
    low = pred.with_threshold(0.07)  # the hole (0.1) is lesion by itself now; the speck is still a speck
    assert low.threshold == 0.07 and low.mask[64, 64] == 1 and low.mask[8:12, 8:12].sum() == 0
    assert low.mask[0, 0] == 0  # background (0.05) stays out
    assert np.array_equal(low.mask, pred.mask_at((128, 128), 0.07))
    back = low.with_threshold(0.5)
    assert np.array_equal(back.mask, pred.mask)
    small = pred.mask_at((32, 32))
    assert small.shape == (32, 32) and small[16, 16] == 1 and small[1, 1] == 0


def test_config_round_trip_and_older_weights_get_the_default(tmp_path, tiny_model_kwargs):
    m = DSAttentionUNet(**tiny_model_kwargs, inference_fill_holes=False, inference_min_region_fraction=0.25)
    m.save_pretrained(tmp_path / "w")
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    assert cfg["inference_fill_holes"] is False and cfg["inference_min_region_fraction"] == 0.25
    p = Predictor.from_weights(tmp_path / "w", device="cpu", fast=False)
    assert p.cleanup == MaskCleanup(False, 0.25)
    assert Predictor.from_weights(tmp_path / "w", device="cpu", fast=False, cleanup=False).cleanup == NO_CLEANUP

    del cfg["inference_fill_holes"], cfg["inference_min_region_fraction"]  # as saved before the clean-up
    (tmp_path / "w" / "config.json").write_text(json.dumps(cfg))
    assert Predictor.from_weights(tmp_path / "w", device="cpu", fast=False).cleanup == MaskCleanup()
    assert cleanup_of(object()) == MaskCleanup()
    with pytest.raises(ValueError, match="min_region_fraction"):
        DSAttentionUNet(**tiny_model_kwargs, inference_min_region_fraction=1.5)


def test_operating_points_can_describe_cleaned_masks():
    p = lesion_with_hole_and_speck(64)
    gt = MaskCleanup().mask(p, 0.5)
    raw = operating_points([p], [gt], thresholds=[0.5])[0]
    clean = operating_points([p], [gt], thresholds=[0.5], mask_fn=MaskCleanup().mask)[0]
    assert clean["dice"] == pytest.approx(1.0) and raw["dice"] < 0.99
    assert clean["recall"] > raw["recall"] and clean["precision"] > raw["precision"]
