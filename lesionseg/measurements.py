"""Image measurements of a predicted lesion mask (geometry and confidence; not a diagnosis).

All lengths are in pixels of the original photo, and in millimetres when the user gives the
photo's scale (``mm_per_px``). A mask may be measured at a lower *analysis* resolution than the
photo (``full_size``): pixel counts and coordinates are then scaled to the photo, so the numbers
always refer to the photo the clinician uploaded.

Definitions (all computed with OpenCV on the binary mask):

- ``area_px``: lesion pixels (all regions); ``area_pct``: percentage of the image.
- ``perimeter_px``: length of the outer contours of all regions (polygon through the boundary
  pixel centres, so a filled ``s`` x ``s`` square measures ``4 (s - 1)``); holes do not count.
- ``regions``: separate (8-connected) lesion regions.
- ``longest_diameter_px``: largest distance between two boundary points of the main (largest)
  region (maximum Feret diameter between pixel centres).
- ``asymmetry_index``: main region mirrored about each of its two principal axes (through its
  centroid); for each axis, the fraction of the region without a mirrored counterpart
  ``|M xor mirror(M)| / (2 |M|)``; the index is the mean of the two, in [0, 1] (0 for a disc,
  an ellipse or a rectangle).
- ``border_irregularity``: ``1 - area / convex hull area`` of the main region, in [0, 1) (0 for a
  convex shape). ``compactness`` is ``perimeter^2 / (4 pi area)`` of the main region (about 1
  for a disc, larger for ragged borders).
- ``mean_probability``: mean model probability inside the mask; ``uncertain_fraction``: share of
  mask pixels with probability in [0.3, 0.7].
- flags: ``no lesion found`` (empty mask), ``lesion touches the image border``, ``low confidence``
  (mean probability inside the mask below 0.6, or more than half of it uncertain).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

FLAG_NO_LESION = "no lesion found"
FLAG_BORDER = "lesion touches the image border"
FLAG_LOW_CONFIDENCE = "low confidence"
LOW_CONFIDENCE_MEAN = 0.6
LOW_CONFIDENCE_UNCERTAIN = 0.5
UNCERTAIN_BAND = (0.3, 0.7)
_ASYMMETRY_MAX_SIDE = 256  # the asymmetry ratio is scale-invariant: measure it on a small copy
# masks are measured at most this large and the results scaled to the photo: contour work grows
# with the pixel count, the measurements of a smooth outline do not
ANALYSIS_MAX_SIDE = 2048


def _largest_contour(contours: list[np.ndarray]) -> np.ndarray | None:
    if not contours:
        return None
    return max(contours, key=lambda c: (cv2.contourArea(c), len(c)))


def _region_mask(shape: tuple[int, int], contour: np.ndarray) -> np.ndarray:
    region = np.zeros(shape, np.uint8)
    cv2.drawContours(region, [contour], -1, 1, thickness=cv2.FILLED)
    return region


def _longest_diameter(points: np.ndarray) -> float:
    """Largest pairwise distance of (N, 2) float points (computed on their convex hull)."""
    if len(points) < 2:
        return 0.0
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) > 2000:  # keep the O(n^2) search small; hull points of a raster shape are few
        hull = hull[:: int(math.ceil(len(hull) / 2000))]
    d = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def asymmetry_index(region: np.ndarray) -> tuple[float, float]:
    """(index, max over the two axes) for a binary mask of one region, see the module docstring."""
    region = np.ascontiguousarray(region, dtype=np.uint8)
    x0, y0, bw, bh = cv2.boundingRect(region)  # of the nonzero pixels
    if bw * bh == 0:
        return 0.0, 0.0
    crop = region[y0:y0 + bh, x0:x0 + bw]
    s = _ASYMMETRY_MAX_SIDE / max(crop.shape)
    if s < 1:
        size = (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s)))
        crop = (cv2.resize(crop.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5).astype(np.uint8)
    m = cv2.moments(crop, binaryImage=True)
    if m["m00"] < 3:
        return 0.0, 0.0
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    # a square canvas centred on the centroid holds every mirrored pixel (mirroring keeps distances)
    h, w = crop.shape
    radius = math.ceil(max(math.hypot(x - cx, y - cy) for x in (0, w) for y in (0, h))) + 1
    side = 2 * radius + 1
    canvas = np.zeros((side, side), np.uint8)
    ox, oy = radius - round(cx), radius - round(cy)
    canvas[oy:oy + h, ox:ox + w] = crop
    c = np.array([cx + ox, cy + oy])
    theta = 0.5 * math.atan2(2 * m["mu11"], m["mu20"] - m["mu02"])  # principal axis angle
    area = float(np.count_nonzero(canvas))
    ratios = []
    for angle in (theta, theta + math.pi / 2):
        d = np.array([math.cos(angle), math.sin(angle)])
        reflect = 2 * np.outer(d, d) - np.eye(2)  # mirror about the line through the centroid along d
        affine = np.hstack([reflect, (c - reflect @ c)[:, None]]).astype(np.float64)
        mirrored = cv2.warpAffine(canvas, affine, (side, side), flags=cv2.INTER_NEAREST)
        xor = float(np.count_nonzero(canvas != mirrored))
        ratios.append(min(1.0, xor / (2 * area)))
    return float(np.mean(ratios)), float(max(ratios))


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def measure(mask: np.ndarray, prob: np.ndarray | None = None, mm_per_px: float | None = None,
            full_size: tuple[int, int] | None = None) -> dict:
    """Measurements of a (h, w) binary mask (any nonzero value is lesion) as a JSON-ready dict.

    prob: (h, w) probabilities for the confidence values (optional). mm_per_px: the photo's scale,
    adds ``*_mm`` / ``area_mm2`` values. full_size: (H, W) of the photo when ``mask`` is a resized
    copy of its mask; areas and lengths are scaled to the photo.
    """
    m = np.asarray(mask) != 0
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {m.shape}")
    h, w = m.shape
    H, W = (int(full_size[0]), int(full_size[1])) if full_size is not None else (h, w)
    sy, sx = H / h, W / w
    mm = float(mm_per_px) if mm_per_px else None
    if mm is not None and (not math.isfinite(mm) or mm <= 0):
        raise ValueError(f"mm_per_px must be a positive number, got {mm_per_px}")

    count = int(np.count_nonzero(m))
    out: dict = {
        "image_width_px": W, "image_height_px": H, "analysis_size_px": [w, h],
        "area_px": int(round(count * sy * sx)), "area_pct": round(100.0 * count / m.size, 3),
        "perimeter_px": 0.0, "regions": 0, "longest_diameter_px": 0.0,
        "asymmetry_index": None, "asymmetry_max_axis": None, "border_irregularity": None, "compactness": None,
        "mean_probability": None, "uncertain_fraction": None, "flags": [],
    }
    if count:
        m8 = m.astype(np.uint8)
        # two-level hierarchy: top level = outer boundaries of the 8-connected regions (islands
        # inside holes included), second level = holes
        found, hierarchy = cv2.findContours(m8, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        contours = [c for c, h in zip(found, hierarchy[0]) if h[3] < 0]
        scale = np.array([sx, sy])
        scaled = [c.reshape(-1, 2).astype(np.float64) * scale for c in contours]
        out["perimeter_px"] = round(sum(cv2.arcLength(c.astype(np.float32).reshape(-1, 1, 2), True)
                                        for c in scaled), 2)
        out["regions"] = len(contours)
        main = _largest_contour(list(contours))
        main_pts = main.reshape(-1, 2).astype(np.float64) * scale
        out["longest_diameter_px"] = round(_longest_diameter(main_pts), 2)
        region = _region_mask(m.shape, main) & m8
        region_area = float(np.count_nonzero(region)) * sy * sx
        hull_area = cv2.contourArea(cv2.convexHull(main_pts.astype(np.float32)))
        # a hull through pixel centres misses half a pixel all round: compare like with like
        main_poly_area = cv2.contourArea(main_pts.astype(np.float32))
        out["border_irregularity"] = round(max(0.0, 1.0 - main_poly_area / hull_area), 4) if hull_area > 0 else 0.0
        perim_main = cv2.arcLength(main_pts.astype(np.float32).reshape(-1, 1, 2), True)
        out["compactness"] = round(perim_main ** 2 / (4 * math.pi * region_area), 4) if region_area else None
        a_mean, a_max = asymmetry_index(region)
        out["asymmetry_index"], out["asymmetry_max_axis"] = round(a_mean, 4), round(a_max, 4)
        if _touches_border(m):
            out["flags"].append(FLAG_BORDER)
        if prob is not None:
            p = np.asarray(prob, dtype=np.float32)
            if p.shape != m.shape:
                raise ValueError(f"prob shape {p.shape} differs from mask shape {m.shape}")
            inside = p[m]
            out["mean_probability"] = round(float(inside.mean()), 4)
            lo, hi = UNCERTAIN_BAND
            out["uncertain_fraction"] = round(float(np.count_nonzero((inside >= lo) & (inside <= hi)) / inside.size), 4)
            if out["mean_probability"] < LOW_CONFIDENCE_MEAN or out["uncertain_fraction"] > LOW_CONFIDENCE_UNCERTAIN:
                out["flags"].append(FLAG_LOW_CONFIDENCE)
    else:
        out["flags"].append(FLAG_NO_LESION)
    if mm is not None:
        out["mm_per_px"] = mm
        out["area_mm2"] = round(out["area_px"] * mm * mm, 3)
        out["perimeter_mm"] = round(out["perimeter_px"] * mm, 3)
        out["longest_diameter_mm"] = round(out["longest_diameter_px"] * mm, 3)
    return out
