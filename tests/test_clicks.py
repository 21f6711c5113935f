"""Correction clicks: checking, encoding, the simulated user, NoC, and the clean-up's click points."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lesionseg.clicks import (MAX_CLICKS, Click, check_clicks, click_maps, iou, next_click, number_of_clicks,
                              to_model_coords)
from lesionseg.postprocess import MaskCleanup


def test_check_clicks_accepts_tuples_dicts_and_edges():
    out = check_clicks([(0, 0, True), {"x": 99, "y": 49.4, "positive": False}, [10.5, 3, 1]], (50, 100))
    assert out == [Click(0.0, 0.0, True), Click(99.0, 49.4, False), Click(10.5, 3.0, True)]
    assert check_clicks(None, (5, 5)) == []


@pytest.mark.parametrize("clicks, words", [
    ([(100, 10, True)], "outside the 100x50 image"),
    ([(-1, 10, True)], "outside"),
    ([(10, 50, True)], "outside"),
    ([(math.nan, 10, True)], "finite"),
    ([(10, math.inf, False)], "finite"),
    ([(10, 10)], "expected (x, y, positive)"),
    ([(10, 10, "yes")], "positive must be True"),
    ([("a", 10, True)], "must be numbers"),
    ("10,10,True", "list of (x, y, positive)"),
    ([{"y": 3}], "needs keys x, y"),
    ([(1, 1, True)] * (MAX_CLICKS + 1), f"more than the {MAX_CLICKS} allowed"),
])
def test_check_clicks_refuses_bad_clicks_with_one_line(clicks, words):
    with pytest.raises(ValueError) as e:
        check_clicks(clicks, (50, 100))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_model_coords_map_pixel_centres_and_click_maps_draw_disks():
    # the photo's corner pixel centres land on the grid's corner pixel centres
    grid = to_model_coords([Click(0, 0, True), Click(399, 199, False)], (200, 400), 64)
    assert grid[0].x == pytest.approx(-0.5 + 0.5 * 64 / 400) and grid[1].y == pytest.approx(63.5 - 0.5 * 64 / 200)
    maps = click_maps([Click(10, 20, True), Click(40, 40, False)], 64, 3)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert maps[0, 20, 10] == 1 and maps[1, 40, 40] == 1 and maps[0, 40, 40] == 0 and maps[1, 20, 10] == 0
    assert maps[0].sum() == pytest.approx(np.pi * 9, rel=0.35)  # a disk of radius 3, not a point


def test_next_click_goes_deepest_into_the_larger_error():
    gt = np.zeros((60, 80), np.uint8)
    gt[10:50, 10:50] = 1
    pred = gt.copy()
    pred[10:50, 30:50] = 0  # the right half of the lesion missed: 40 x 20
    pred[0:6, 60:80] = 1  # a thin strip of skin outlined: 6 x 20
    c = next_click(pred, gt)
    assert c.positive and 38 <= c.x <= 41 and 18 <= c.y <= 41  # on the 20 px wide gap's centre line
    pred2 = np.zeros_like(gt)
    pred2[20:40, 55:78] = 1  # skin outlined beside a fully missed lesion: the missed lesion is deeper
    assert next_click(pred2, gt).positive
    only_fp = gt.copy()
    only_fp[52:60, 0:80] = 1  # outlined skin along the bottom frame
    c = next_click(only_fp, gt)
    assert not c.positive and c.y >= 52
    assert next_click(gt, gt) is None
    rng = np.random.default_rng(0)
    for _ in range(20):  # training clicks: random, but always inside the error and at least half as deep
        c = next_click(pred, gt, rng)
        assert c.positive and gt[int(c.y), int(c.x)] and not pred[int(c.y), int(c.x)]


def test_iou_and_number_of_clicks():
    a = np.zeros((10, 10), bool)
    b = a.copy()
    assert iou(a, b) == 1.0
    a[:5] = True
    b[:, :5] = True
    assert iou(a, b) == pytest.approx(25 / 75)
    assert number_of_clicks([0.7, 0.86, 0.95], 0.85) == 1
    assert number_of_clicks([0.9, 0.95], 0.85) == 0
    assert number_of_clicks([0.5, 0.6, 0.7, 0.8], 0.85) == 3  # never reached: the budget


def test_cleanup_keeps_clicked_regions_and_clicked_holes():
    prob = np.zeros((40, 40), np.float32)
    prob[5:35, 5:35] = 0.9
    prob[15:20, 15:20] = 0.0  # a hole
    prob[37:39, 37:39] = 0.9  # a speck
    plain = MaskCleanup(True, 0.1).mask(prob, 0.5)
    assert plain[37, 37] == 0 and plain[17, 17] == 1
    clicked = MaskCleanup(True, 0.1, keep=((37, 37),), clear=((17, 17),)).mask(prob, 0.5)
    assert clicked[37, 37] == 1 and clicked[17, 17] == 0 and clicked[10, 10] == 1


def test_progressive_merge_changes_only_the_region_of_the_newest_click():
    from lesionseg.clicks import progressive_merge

    prev = np.zeros((40, 40), np.float32)
    prev[10:20, 10:20] = 0.9
    new = prev.copy()
    new[10:20, 20:30] = 0.8  # grown next to the click: connected to it
    new[35:38, 35:38] = 0.7  # a far-away change: not connected to the click
    new[12, 12] = 0.95  # no change of side: ignored either way
    out = progressive_merge(prev, new, Click(25, 15, True), 0.5)
    assert (out[10:20, 20:30] == 0.8).all() and (out[35:38, 35:38] == 0).all() and out[12, 12] == np.float32(0.9)
    assert progressive_merge(prev, new, Click(5, 5, True), 0.5) is prev  # the click's pixel did not change side
