"""Run a trained model on RGB images with the training preprocessing; return probabilities and masks.

Pipeline per image: resize to ``img_size`` x ``img_size`` (:func:`resize_rgb`), normalise with the
model's mean / std (:func:`normalize`), forward, sigmoid, resize the probability map back to the
image's own (H, W). Thresholding is separate from the forward pass, so moving the threshold
(:meth:`Prediction.with_threshold`) never runs the model again. The mask is cut after the model's
clean-up (holes filled, specks dropped; see postprocess.py) unless the Predictor is told otherwise.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from ..data.io import ImageLoadError, load_image, read_image_size
from ..data.transforms import normalize, resize_rgb
from ..models.ds_attention_unet import DSAttentionUNet
from ..postprocess import NO_CLEANUP, MaskCleanup, cleanup_of
from .cpu_bf16 import FrozenBF16Runner, cpu_bf16_supported
from .weights import default_weights_source, load_model, resolve_device

log = logging.getLogger(__name__)

# Flip variants for test-time augmentation: dims of a (B, C, H, W) tensor to flip.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
BACKENDS = ("torch", "onnx")
_ORIENTATION_TAG = 0x0112


@dataclass
class Prediction:
    """One image's result, all full-size arrays at the same (H, W).

    prob: (H, W) float32 in [0, 1]; mask: (H, W) uint8 {0, 1}: ``prob >= threshold`` after
    ``cleanup``; uncertainty: (H, W) float32 in [0, 1], max - min over the flip-TTA predictions
    (None without TTA); lowres: (S, S) probabilities at the model's resolution, where the clean-up
    judges regions (None: the mask is ``prob >= threshold`` as it is).
    """

    prob: np.ndarray
    mask: np.ndarray
    threshold: float
    uncertainty: np.ndarray | None = None
    lowres: np.ndarray | None = None
    cleanup: MaskCleanup = NO_CLEANUP

    def mask_at(self, size: tuple[int, int], t: float | None = None) -> np.ndarray:
        """(H', W') = ``size`` uint8 {0, 1} mask cut at ``t`` (default: this prediction's threshold)."""
        t = self.threshold if t is None else _check_threshold(t)
        cleaned = self.cleanup.apply(self.lowres, t) if self.lowres is not None else None
        return binarize(resize_prob(self.prob if cleaned is None else cleaned, tuple(size)), t)

    def with_threshold(self, t: float) -> "Prediction":
        """The same prediction cut at another threshold; no model call."""
        t = _check_threshold(t)
        return Prediction(self.prob, self.mask_at(self.prob.shape, t), t, self.uncertainty, self.lowres,
                          self.cleanup)

    @property
    def lesion_area_px(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def lesion_fraction(self) -> float:
        return self.lesion_area_px / self.mask.size if self.mask.size else 0.0


def make_prediction(lowres: np.ndarray, size: tuple[int, int], t: float, cleanup: MaskCleanup = NO_CLEANUP,
                    lowres_uncertainty: np.ndarray | None = None) -> Prediction:
    """Model-resolution (S, S) probabilities -> :class:`Prediction` at ``size`` (H, W), cut at ``t``."""
    prob = resize_prob(lowres, size)
    cleaned = cleanup.apply(lowres, t)
    mask = binarize(prob if cleaned is None else resize_prob(cleaned, size), t)
    unc = resize_prob(lowres_uncertainty, size) if lowres_uncertainty is not None else None
    return Prediction(prob, mask, t, unc, lowres, cleanup)


def binarize(prob: np.ndarray, t: float) -> np.ndarray:
    """(H, W) probabilities -> uint8 {0, 1} mask of ``prob >= t`` in one pass (a bool array viewed as uint8)."""
    return np.greater_equal(prob, t).view(np.uint8)


def _check_threshold(t: float) -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0 or np.isnan(t):
        raise ValueError(f"threshold must lie in [0, 1], got {t}")
    return t


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Accept (H, W) gray, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA in uint8 or uint16; return (H, W, 3) uint8.

    Anything else raises :class:`ImageLoadError` (a ValueError) with a one-line message.
    """
    a = np.asarray(image)
    if a.dtype == np.uint16:
        a = (a.astype(np.uint32) * 255 + 32767) // 65535
        a = a.astype(np.uint8)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        raise ImageLoadError("input array", f"dtype {a.dtype} is not supported",
                             "pass RGB uint8 (H, W, 3); scale float images with (x * 255).astype(np.uint8)")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0  # composite on white, as io.load_image does
        a = np.round(a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ImageLoadError("input array", f"shape {a.shape} is not an image", "pass RGB uint8 (H, W, 3)")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageLoadError("input array", f"shape {a.shape} is empty", "pass a non-empty image")
    return np.ascontiguousarray(a)


def resize_prob(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 -> (H, W) float32 in [0, 1]; bilinear, area-averaged when shrinking both sides."""
    h, w = size
    if prob.shape == (h, w):
        return np.ascontiguousarray(prob, dtype=np.float32)
    interp = cv2.INTER_AREA if h < prob.shape[0] and w < prob.shape[1] else cv2.INTER_LINEAR
    out = cv2.resize(prob.astype(np.float32, copy=False), (w, h), interpolation=interp)
    return np.clip(out, 0.0, 1.0, out=out)  # in place: no second full-size array


def _exif_transposed(path: str | os.PathLike) -> bool:
    """True when the file's EXIF orientation swaps width and height (orientations 5-8)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.getexif().get(_ORIENTATION_TAG, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - already decoded once by load_image; EXIF is best effort
        return False


def original_size(path: str | os.PathLike, decoded_shape: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) of the image as displayed (EXIF applied) at full resolution.

    ``decoded_shape`` is the shape of the (possibly reduced-scale) array :func:`load_image`
    returned; it confirms the orientation when the EXIF block is broken.
    """
    w, h = read_image_size(path)
    upright, turned = (h, w), (w, h)
    dh, dw = decoded_shape[:2]

    def err(c: tuple[int, int]) -> float:
        return abs(c[0] / c[1] - dh / dw)

    first, second = (turned, upright) if _exif_transposed(path) else (upright, turned)
    # trust EXIF unless the decoded aspect ratio clearly says otherwise
    return second if err(first) > err(second) + 0.02 else first


class Predictor:
    """Model + preprocessing + threshold. ``calls`` counts model forward passes."""

    def __init__(self, model: DSAttentionUNet, device: str | torch.device = "cpu", tta: bool = False,
                 fast: bool = True, batch_size: int = 8, backend: str = "torch", onnx_folder: str | None = None,
                 cleanup: bool = True, int8: bool = True):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tta = bool(tta)
        self.batch_size = max(1, int(batch_size))
        self.threshold: float = float(model.inference_threshold)
        self.operating_points: list[dict] = list(model.inference_operating_points)
        self.cleanup: MaskCleanup = cleanup_of(model) if cleanup else NO_CLEANUP
        self.img_size: int = int(model.inference_img_size)
        self.mean: list[float] = list(model.preprocess_mean)
        self.std: list[float] = list(model.preprocess_std)
        self.calls = 0
        self.source: str | None = None
        self.onnx = None
        if backend == "onnx":  # ONNX Runtime on the CPU, fp32; see onnx_backend.py
            from .onnx_backend import runner_for

            if self.device.type != "cpu":
                raise ValueError(f"backend 'onnx' runs on the CPU only, not on {self.device}")
            self.onnx = runner_for(self.model, onnx_folder)
        self.backend = backend
        self.fast = bool(fast) and self.onnx is None and self._fast_supported()
        # CPU: bf16 weights, channels_last, frozen trace (cpu_bf16.py), int8 convolutions below full
        # resolution where the CPU has int8 dot products (cpu_int8.py); other devices: fp32 as loaded
        self._cpu_bf16 = FrozenBF16Runner(self.model, self.img_size, int8=int8) if self.fast else None
        self.int8 = self._cpu_bf16 is not None and self._cpu_bf16.int8_convs > 0
        log.debug("predictor on %s, img_size %d, threshold %.3f, fast=%s, int8=%s", self.device, self.img_size,
                  self.threshold, self.fast, self.int8)

    @classmethod
    def from_weights(cls, source: str | Path | None = None, revision: str | None = None,
                     device: str | torch.device = "auto", tta: bool = False, allow_pickle: bool = False,
                     fast: bool = True, backend: str = "torch", cleanup: bool = True,
                     int8: bool = True) -> "Predictor":
        """Load weights (see :func:`load_model`) and wrap them; raises WeightsError on bad weights.

        ``backend="onnx"`` uses ``model.onnx`` beside local weights when it was exported from them."""
        dev = resolve_device(device)
        model = load_model(source, revision=revision, device=dev, allow_pickle=allow_pickle)
        path = Path(str(source if source is not None else default_weights_source())).expanduser()
        folder = str(path if path.is_dir() else path.parent) if path.exists() else None
        pred = cls(model, device=dev, tta=tta, fast=fast, backend=backend, onnx_folder=folder, cleanup=cleanup,
                   int8=int8)
        pred.source = str(source) if source is not None else None
        return pred

    def _fast_supported(self) -> bool:
        # On the GPU, fp32 eager NCHW is the fastest path measured for this model: on an H200, bf16
        # autocast + channels_last took 7.7 vs 4.0 ms at batch 1 and 21.3 vs 17.7 ms at batch 64
        # (GroupNorm-bound; benchmarks/results_gpu.json). So ``fast`` changes nothing there.
        return self.device.type == "cpu" and cpu_bf16_supported()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised -> (B, S, S) float32 probabilities; one model call."""
        if self.onnx is not None:
            self.calls += 1
            return torch.sigmoid(torch.from_numpy(self.onnx(x.numpy())))[:, 0]
        if self._cpu_bf16 is not None:
            self.calls += 1
            return torch.sigmoid(self._cpu_bf16(x))[:, 0]
        x = x.to(self.device, non_blocking=True)
        with torch.inference_mode():
            logits = self.model(x)
        self.calls += 1
        return torch.sigmoid(logits.float())[:, 0]

    def _probs(self, batch: np.ndarray, tta: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, 3, S, S) float32 -> probs (B, S, S) and, with TTA, uncertainty (B, S, S)."""
        x = torch.from_numpy(batch)
        if not tta:
            return self._forward(x).cpu().numpy(), None
        n = x.shape[0]
        views = torch.cat([x.flip(d) if d else x for d in TTA_FLIPS])
        out = self._forward(views)
        # flip every view back; flipping (H, W) of (B, S, S) uses the same negative dims
        stack = torch.stack([out[i * n:(i + 1) * n].flip(d) if d else out[i * n:(i + 1) * n]
                             for i, d in enumerate(TTA_FLIPS)])
        prob = stack.mean(0)
        unc = stack.amax(0) - stack.amin(0)
        return prob.cpu().numpy(), unc.cpu().numpy()

    def _chunks(self, n: int, tta: bool) -> Iterator[slice]:
        step = max(1, self.batch_size // (len(TTA_FLIPS) if tta else 1))
        for i in range(0, n, step):
            yield slice(i, min(i + step, n))

    def predict_batch(self, rgbs: Sequence[np.ndarray], threshold: float | None = None, tta: bool | None = None,
                      sizes: Sequence[tuple[int, int]] | None = None) -> list[Prediction]:
        """Predict several images with batched forwards.

        rgbs: (H_i, W_i, 3) uint8 each (gray / RGBA / uint16 converted). ``sizes``: optional (H, W)
        per image for the outputs (default: each input's own size), e.g. a file's full resolution
        when it was decoded at a reduced scale.
        """
        t = self.threshold if threshold is None else _check_threshold(threshold)
        use_tta = self.tta if tta is None else bool(tta)
        images = [as_rgb_uint8(r) for r in rgbs]
        if sizes is not None and len(sizes) != len(images):
            raise ValueError(f"sizes has {len(sizes)} entries for {len(images)} images")
        targets = [tuple(int(v) for v in s) for s in sizes] if sizes is not None else [im.shape[:2] for im in images]
        out: list[Prediction] = []
        for sl in self._chunks(len(images), use_tta):
            batch = np.stack([normalize(resize_rgb(im, self.img_size), self.mean, self.std) for im in images[sl]])
            probs, uncs = self._probs(batch, use_tta)
            for j, size in enumerate(targets[sl]):
                out.append(make_prediction(probs[j], size, t, self.cleanup, uncs[j] if uncs is not None else None))
        return out

    def predict(self, rgb: np.ndarray, threshold: float | None = None, tta: bool | None = None) -> Prediction:
        """One image (H, W, 3) uint8 -> :class:`Prediction` at (H, W)."""
        return self.predict_batch([rgb], threshold=threshold, tta=tta)[0]

    def load(self, path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int]]:
        """Decode a file for this model: (rgb (h, w, 3) possibly at reduced scale, full-size (H, W))."""
        rgb = load_image(path, min_side=self.img_size * 2)
        return rgb, original_size(path, rgb.shape)

    def predict_file(self, path: str | os.PathLike, threshold: float | None = None,
                     tta: bool | None = None) -> tuple[np.ndarray, Prediction]:
        """(rgb as decoded, possibly reduced; Prediction at the file's full upright size). ImageLoadError if bad."""
        rgb, size = self.load(path)
        return rgb, self.predict_batch([rgb], threshold=threshold, tta=tta, sizes=[size])[0]
