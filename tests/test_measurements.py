"""Lesion measurements on drawn masks whose values can be computed by hand."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from lesionseg.measurements import FLAG_BORDER, FLAG_LOW_CONFIDENCE, FLAG_NO_LESION, measure
from lesionseg.ui.formatting import format_measurements


def square(h: int = 200, w: int = 300, top: int = 50, left: int = 100, side: int = 100) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[top:top + side, left:left + side] = 1
    return m


def disc(size: int = 400, radius: int = 100) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.circle(m, (size // 2, size // 2), radius, 1, thickness=-1)
    return m


def test_filled_square():
    m = measure(square())
    assert m["area_px"] == 100 * 100
    assert m["area_pct"] == pytest.approx(100 * 10000 / (200 * 300), abs=1e-3)
    assert m["regions"] == 1
    # contour through the boundary pixel centres: 4 * (side - 1); diagonal (side - 1) * sqrt(2)
    assert m["perimeter_px"] == pytest.approx(4 * 99, abs=0.5)
    assert m["longest_diameter_px"] == pytest.approx(99 * math.sqrt(2), abs=0.1)
    assert m["asymmetry_index"] == pytest.approx(0.0, abs=0.01)
    assert m["border_irregularity"] == pytest.approx(0.0, abs=1e-3)
    assert (m["image_width_px"], m["image_height_px"]) == (300, 200)
    assert m["flags"] == []


def test_disc_area_diameter_perimeter_in_px_and_mm():
    m = measure(disc(radius=100), mm_per_px=0.02)
    assert m["area_px"] == pytest.approx(math.pi * 100 ** 2, rel=0.01)
    assert m["longest_diameter_px"] == pytest.approx(200, abs=1.5)
    assert m["perimeter_px"] == pytest.approx(2 * math.pi * 100, rel=0.08)  # pixel staircase: a few % long
    assert m["area_mm2"] == pytest.approx(m["area_px"] * 0.02 ** 2, rel=1e-3)
    assert m["longest_diameter_mm"] == pytest.approx(m["longest_diameter_px"] * 0.02, rel=1e-3)
    assert m["perimeter_mm"] == pytest.approx(m["perimeter_px"] * 0.02, rel=1e-3)
    assert m["asymmetry_index"] < 0.02
    assert m["border_irregularity"] < 0.02
    assert m["compactness"] == pytest.approx(1.0, abs=0.15)
    assert "area_mm2" not in measure(disc())


def test_two_blobs_count_as_two_regions():
    m = np.zeros((100, 100), np.uint8)
    m[10:30, 10:30] = 1
    m[60:90, 60:90] = 1
    out = measure(m)
    assert out["regions"] == 2
    assert out["area_px"] == 400 + 900
    assert out["perimeter_px"] == pytest.approx(4 * 19 + 4 * 29, abs=1)
    assert out["longest_diameter_px"] == pytest.approx(29 * math.sqrt(2), abs=0.1)  # of the largest region


def test_island_inside_a_hole_is_its_own_region_and_holes_add_no_perimeter():
    ring = np.zeros((100, 100), np.uint8)
    ring[20:70, 20:70] = 1  # 50 x 50 square ...
    ring[30:60, 30:60] = 0  # ... with a 30 x 30 hole ...
    ring[40:50, 40:50] = 1  # ... holding a 10 x 10 island
    out = measure(ring)
    assert out["regions"] == 2
    assert out["area_px"] == 2500 - 900 + 100
    assert out["perimeter_px"] == pytest.approx(4 * 49 + 4 * 9, abs=1)


def test_border_flag_and_empty_flag():
    touching = square(h=100, w=100, top=0, left=40, side=30)
    assert FLAG_BORDER in measure(touching)["flags"]
    assert FLAG_BORDER not in measure(square())["flags"]
    empty = measure(np.zeros((50, 60), np.uint8), prob=np.zeros((50, 60), np.float32))
    assert empty["flags"] == [FLAG_NO_LESION]
    assert empty["area_px"] == 0 and empty["regions"] == 0 and empty["perimeter_px"] == 0
    assert empty["mean_probability"] is None


def test_low_confidence_flag_from_probabilities():
    mask = square()
    sure = np.where(mask > 0, 0.95, 0.02).astype(np.float32)
    unsure = np.where(mask > 0, 0.45, 0.02).astype(np.float32)
    assert FLAG_LOW_CONFIDENCE not in measure(mask, sure)["flags"]
    out = measure(mask, unsure)
    assert FLAG_LOW_CONFIDENCE in out["flags"]
    assert out["mean_probability"] == pytest.approx(0.45, abs=1e-4)
    assert out["uncertain_fraction"] == pytest.approx(1.0)


def test_asymmetry_and_irregularity_rise_for_an_l_shape():
    ell = np.zeros((200, 200), np.uint8)
    ell[20:180, 20:60] = 1
    ell[140:180, 20:180] = 1
    out = measure(ell)
    assert out["asymmetry_index"] > 0.2  # symmetric about its diagonal only: one axis matches, one does not
    assert out["border_irregularity"] > 0.3
    star = np.zeros((300, 300), np.uint8)
    pts = [(150 + (120 if k % 2 == 0 else 45) * math.cos(k * math.pi / 6),
            150 + (120 if k % 2 == 0 else 45) * math.sin(k * math.pi / 6)) for k in range(12)]
    cv2.fillPoly(star, [np.round(np.array(pts)).astype(np.int32)], 1)
    assert measure(star)["border_irregularity"] > measure(disc(300, 100))["border_irregularity"] + 0.2


def test_measured_on_a_smaller_copy_scales_to_the_photo():
    small = square(h=200, w=300)
    full = measure(small, full_size=(400, 600))
    assert full["area_px"] == 4 * 10000
    assert full["area_pct"] == pytest.approx(measure(small)["area_pct"])
    assert full["longest_diameter_px"] == pytest.approx(2 * 99 * math.sqrt(2), abs=0.2)
    assert (full["image_width_px"], full["image_height_px"]) == (600, 400)


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        measure(np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        measure(square(), mm_per_px=-1)
    with pytest.raises(ValueError):
        measure(square(), prob=np.zeros((2, 2), np.float32))


def test_summary_says_not_a_diagnosis_and_lists_flags():
    text = format_measurements(measure(square(h=100, w=100, top=0, left=0, side=30), mm_per_px=0.1))
    assert "not a diagnosis" in text
    assert "900 px" in text and "mm²" in text
    assert FLAG_BORDER in text
