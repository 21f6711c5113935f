"""One image's prediction: the model's probability map, cut into a mask at any size and threshold.

A :class:`Prediction` keeps what the model computed once, at the model's resolution (S x S), and
the size of the photo it belongs to. Full-size arrays, other sizes and other thresholds are
derived from it on demand, so a screen view, a re-threshold or a download never runs the model
again and never has to be rebuilt from anything but this object.

Brush and eraser edits (:meth:`Prediction.with_edits`, see edits.py) are kept as dabs in the
photo's full-size coordinates and painted over the thresholded, cleaned-up mask at whatever size
is asked for, so a new threshold re-cuts the probabilities and paints the same edits again.
"""
from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

from ..measurements import ANALYSIS_MAX_SIDE, measure
from ..postprocess import NO_CLEANUP, MaskCleanup
from ..utils.sizes import fit_size
from .edits import Stroke, check_strokes, paint
from .wide_view import combine


def check_threshold(t: float) -> float:
    """``t`` as a float in [0, 1]; ValueError otherwise."""
    t = float(t)
    if not 0.0 <= t <= 1.0 or np.isnan(t):
        raise ValueError(f"threshold must lie in [0, 1], got {t}")
    return t


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 logits -> probabilities, same shape, in numpy (no overflow: only exp(-|x|) is taken).

    Not torch: the CPU fast paths (OpenVINO, ONNX Runtime) run on their own threads, and a torch
    op between two of their calls slowed the next call, most likely because it woke torch's OpenMP
    threads, which then spin on the cores that call needs (docs/benchmarks.md)."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, np.float32(1.0), e) / (np.float32(1.0) + e)


def binarize(prob: np.ndarray, t: float) -> np.ndarray:
    """(H, W) probabilities -> uint8 {0, 1} mask of ``prob >= t`` in one pass (a bool array viewed as uint8).

    ``t <= 0`` marks every pixel, also where resampling left a probability a rounding error below 0."""
    if t <= 0:
        return np.ones(prob.shape, dtype=np.uint8)
    return np.greater_equal(prob, t).view(np.uint8)


def resize_prob(prob: np.ndarray, size: tuple[int, int], clip: bool = True) -> np.ndarray:
    """(h, w) float32 -> (H, W) float32 in [0, 1]; bilinear, area-averaged when shrinking both sides.

    ``clip=False`` skips the pass that clamps rounding errors to [0, 1]: for a mask cut at once with
    :func:`binarize` (both interpolations are weighted means, so nothing else leaves the range)."""
    h, w = size
    if prob.shape == (h, w):
        return np.ascontiguousarray(prob, dtype=np.float32)
    interp = cv2.INTER_AREA if h < prob.shape[0] and w < prob.shape[1] else cv2.INTER_LINEAR
    out = cv2.resize(prob.astype(np.float32, copy=False), (w, h), interpolation=interp)
    return np.clip(out, 0.0, 1.0, out=out) if clip else out  # in place: no second full-size array


class Prediction:
    """One image's result.

    lowres: (S, S) float32 probabilities at the model's resolution, where the clean-up judges
    regions: the plain view's (``lowres_plain``), or where the wide view was taken
    (``lowres_wide``, see wide_view.py) their pixel-wise combination; size: (H, W) of the photo
    as displayed (EXIF applied); lowres_uncertainty: (S, S)
    max - min over the flip-TTA views (None without TTA); edits: brush / eraser dabs in (H, W)
    pixel coordinates, painted in order over the mask (see :meth:`with_edits`).

    ``prob`` (H, W) float32, ``mask`` (H, W) uint8 {0, 1} (``prob >= threshold`` after the
    clean-up, then the edits) and ``uncertainty`` (H, W) float32 or None are computed on first
    use and kept.
    """

    def __init__(self, lowres: np.ndarray, size: tuple[int, int], threshold: float,
                 cleanup: MaskCleanup = NO_CLEANUP, lowres_uncertainty: np.ndarray | None = None,
                 edits: tuple[Stroke, ...] = (), lowres_wide: np.ndarray | None = None):
        self.lowres_plain = lowres
        self.lowres_wide = lowres_wide
        self.lowres = combine(lowres, lowres_wide)
        self.size = (int(size[0]), int(size[1]))
        self.threshold = check_threshold(threshold)
        self.cleanup = cleanup
        self.lowres_uncertainty = lowres_uncertainty
        self.edits = tuple(edits)
        self._prob: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._uncertainty: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, prob: np.ndarray, mask: np.ndarray, threshold: float,
                    uncertainty: np.ndarray | None = None) -> "Prediction":
        """A prediction already at full size: prob (H, W), mask (H, W) {0, 1}, no clean-up."""
        pred = cls(prob, prob.shape[:2], threshold, NO_CLEANUP, uncertainty)
        pred._prob, pred._mask = np.asarray(prob, dtype=np.float32), mask
        return pred

    @property
    def prob(self) -> np.ndarray:
        if self._prob is None:
            self._prob = resize_prob(self.lowres, self.size)
        return self._prob

    @property
    def mask(self) -> np.ndarray:
        if self._mask is None:
            cleaned = self.cleanup.apply(self.lowres, self.threshold)
            full = self._prob if cleaned is None and self._prob is not None else \
                resize_prob(self.lowres if cleaned is None else cleaned, self.size, clip=False)
            mask = binarize(full, self.threshold)
            self._mask = paint(mask, self.edits, self.size) if self.edits else mask
        return self._mask

    @property
    def uncertainty(self) -> np.ndarray | None:
        if self._uncertainty is None and self.lowres_uncertainty is not None:
            self._uncertainty = resize_prob(self.lowres_uncertainty, self.size)
        return self._uncertainty

    def prob_at(self, size: tuple[int, int]) -> np.ndarray:
        """(H', W') = ``size`` float32 probabilities."""
        return self.prob if tuple(size) == self.size and self._prob is not None else resize_prob(self.lowres, size)

    def uncertainty_at(self, size: tuple[int, int]) -> np.ndarray | None:
        """(H', W') = ``size`` float32 uncertainty, or None without TTA."""
        if self.lowres_uncertainty is None:
            return None
        return resize_prob(self.lowres_uncertainty, size)

    def mask_at(self, size: tuple[int, int], t: float | None = None) -> np.ndarray:
        """(H', W') = ``size`` uint8 {0, 1} mask cut at ``t`` (default: this prediction's threshold)."""
        t = self.threshold if t is None else check_threshold(t)
        if tuple(size) == self.size and t == self.threshold:
            return self.mask
        cleaned = self.cleanup.apply(self.lowres, t)
        mask = binarize(resize_prob(self.lowres if cleaned is None else cleaned, tuple(size), clip=False), t)
        return paint(mask, self.edits, self.size) if self.edits else mask

    def with_threshold(self, t: float) -> "Prediction":
        """The same prediction (and edits) cut at another threshold; no model call."""
        return self._derived(t, self.edits)

    def with_edits(self, strokes: Iterable[Stroke | tuple[float, float, float, bool]]) -> "Prediction":
        """The same prediction with ``strokes`` (every brush / eraser dab, replacing any kept ones:
        (x, y, radius, add) in this prediction's full-size pixel coordinates) painted over its
        mask at every size and threshold; no model call. ValueError for a dab off the image."""
        return self._derived(self.threshold, check_strokes(strokes, self.size))

    def _derived(self, t: float, edits: tuple[Stroke, ...]) -> "Prediction":
        # the probability maps do not depend on the threshold or the edits: share them
        other = Prediction(self.lowres_plain, self.size, t, self.cleanup, self.lowres_uncertainty, edits,
                           self.lowres_wide)
        other._prob, other._uncertainty = self._prob, self._uncertainty
        return other

    @property
    def lesion_area_px(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def lesion_fraction(self) -> float:
        return self.lesion_area_px / self.mask.size if self.mask.size else 0.0

    @property
    def analysis_size(self) -> tuple[int, int]:
        """(h, w) at which the measurements are taken: the photo's size, at most ANALYSIS_MAX_SIDE."""
        return fit_size(*self.size, ANALYSIS_MAX_SIDE)

    def measurements(self, mm_per_px: float | None = None) -> dict:
        """Image measurements of the mask (see :func:`lesionseg.measurements.measure`), taken at
        :attr:`analysis_size` and scaled to the photo."""
        size = self.analysis_size
        return measure(self.mask_at(size), self.prob_at(size), mm_per_px=mm_per_px or None, full_size=self.size)
