"""Mask clean-up: fill holes in the lesion and drop specks far smaller than the main region.

A dermoscopic photo shows one lesion, and its reference outline is one solid region. At a
recall-tuned threshold the model's raw mask sometimes adds small islands of darker skin (hair
crossings, vignetting) or leaves holes in pale lesion centres. Filling holes and dropping regions
under a fraction of the largest one was chosen on validation (the model card's "Mask clean-up"
gives its effect on the shipped model).

The regions are judged on the probability map at the model's resolution (S x S, e.g. 256 x 256),
where the labelling is cheap whatever the photo's size: a speck's probabilities are set to 0 and a
hole's to 1, and the full-size mask is cut from that map resized like any other (labelling a
full-resolution mask would cost in proportion to its pixels). Zeroing a speck cannot leave a pixel >= t nearby after
bilinear resizing, because every low-resolution neighbour of a speck is below t (an 8-connected
neighbour >= t would belong to the speck).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MaskCleanup:
    """fill_holes: background regions enclosed by the lesion become lesion.
    min_region_fraction: 8-connected regions smaller than this fraction of the largest region's
    area are removed (0 keeps every region; 1 keeps only the largest).
    keep / clear: (row, col) points at the map's resolution where a user said "lesion" / "not
    lesion" (correction clicks): a region holding a ``keep`` point is never dropped as a speck, and
    a hole holding a ``clear`` point is never filled."""

    fill_holes: bool = True
    min_region_fraction: float = 0.1
    keep: tuple[tuple[int, int], ...] = ()
    clear: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_region_fraction <= 1.0:
            raise ValueError(f"min_region_fraction must lie in [0, 1], got {self.min_region_fraction}")

    @property
    def active(self) -> bool:
        return self.fill_holes or self.min_region_fraction > 0

    def apply(self, prob: np.ndarray, threshold: float) -> np.ndarray | None:
        """(h, w) float32 probabilities -> a cleaned copy whose ``>= threshold`` mask has no holes and
        no specks, or None when the mask needs no change (the common case: no copy is made)."""
        if not self.active:
            return None
        mask = np.greater_equal(prob, threshold).view(np.uint8)
        out = None
        if self.min_region_fraction > 0:
            n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            if n > 2:
                areas = stats[1:, cv2.CC_STAT_AREA]
                small = np.flatnonzero(areas < self.min_region_fraction * areas.max()) + 1
                if self.keep:
                    small = np.setdiff1d(small, [labels[r, c] for r, c in self.keep])
                if small.size:
                    out = prob.copy()
                    out[np.isin(labels, small)] = 0.0
                    mask = np.greater_equal(out, threshold).view(np.uint8)
        if self.fill_holes:
            # background regions (4-connected, the complement of 8-connected lesion) off the border
            n, labels = cv2.connectedComponents(1 - mask, connectivity=4)
            if n > 2:
                border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
                hole = np.ones(n, dtype=bool)
                hole[0] = False  # label 0 is the lesion itself
                hole[border] = False
                for r, c in self.clear:
                    hole[labels[r, c]] = False
                if hole.any():
                    out = prob.copy() if out is None else out
                    out[hole[labels]] = 1.0
        return out


    def mask(self, prob: np.ndarray, threshold: float) -> np.ndarray:
        """(h, w) probabilities -> uint8 {0, 1} cleaned mask at the same resolution."""
        cleaned = self.apply(prob, threshold)
        return np.greater_equal(prob if cleaned is None else cleaned, threshold).view(np.uint8)


NO_CLEANUP = MaskCleanup(fill_holes=False, min_region_fraction=0.0)


def cleanup_of(model: object) -> MaskCleanup:
    """The clean-up a model's config asks for (weights saved before it existed get the default)."""
    return MaskCleanup(bool(getattr(model, "inference_fill_holes", True)),
                       float(getattr(model, "inference_min_region_fraction", 0.1)))
