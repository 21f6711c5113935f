"""Run a trained model on RGB images with the training preprocessing; return :class:`Prediction` s.

Pipeline per image: resize to ``img_size`` x ``img_size`` (:func:`resize_rgb`), normalise with the
model's mean / std (:func:`normalize`), one call of the Predictor's runner (see runners.py),
sigmoid. The Prediction keeps that (S, S) map and the image's own (H, W); thresholding and
resizing happen there, so moving the threshold (:meth:`Prediction.with_threshold`) never runs the
model again. The mask is cut after the model's clean-up (holes filled, specks dropped; see
postprocess.py) unless the Predictor is told otherwise.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..clicks import Click, check_clicks, click_maps, grid_cell, progressive_merge, to_model_coords
from ..data.io import ImageLoadError, decode_image
from ..data.transforms import normalize, resize_rgb
from ..models.ds_attention_unet import DSAttentionUNet
from ..postprocess import NO_CLEANUP, MaskCleanup, cleanup_of
from ..utils.devices import resolve_device
from .cpu import FrozenRunner, OnnxFp32Runner, OpenVinoRunner
from .cpu.openvino import openvino_enabled
from .cpu.qdq import CALIBRATION_NAME
from .prediction import Prediction, check_threshold, resize_prob, sigmoid
from .runners import make_runner
from .weights import hub_extras_folder, load_model, load_refiner, local_weights_folder
from .wide_view import check_wide_view, keeps_wide_view, narrow, needs_wide_view, widen

log = logging.getLogger(__name__)

# Flip variants for test-time augmentation: dims of a (B, C, H, W) tensor to flip.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def _flip(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``a`` flipped along ``axes`` (negative: counted from the end), or ``a`` itself for ()."""
    return np.flip(a, axes) if axes else a


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


class RefineUnavailable(ValueError):
    """The weights have no click refiner; ``str()`` says which weights and what to do."""


class Predictor:
    """Model + preprocessing + threshold + one runner (the backend). ``calls`` counts model calls.

    ``refiner``: the click-conditioned model of the same weights (``weights/refiner/``) that
    :meth:`refine` runs; None where the weights have none."""

    def __init__(self, model: DSAttentionUNet, device: str | torch.device = "cpu", tta: bool = False,
                 fast: bool = True, batch_size: int = 8, backend: str = "torch", onnx_folder: str | None = None,
                 cleanup: bool = True, int8: bool = True, refiner: DSAttentionUNet | None = None,
                 wide_view: float | None = None):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tta = bool(tta)
        self.batch_size = max(1, int(batch_size))
        self.threshold: float = float(model.inference_threshold)
        self.operating_points: list[dict] = list(model.inference_operating_points)
        self.cleanup: MaskCleanup = cleanup_of(model) if cleanup else NO_CLEANUP
        # zoom-out factor of the wide view (wide_view.py): the weights' own unless given; 0: plain view only
        self.wide_view: float = check_wide_view(getattr(model, "inference_wide_view", 0.0)
                                                if wide_view is None else wide_view)
        self.img_size: int = int(model.inference_img_size)
        self.mean: list[float] = list(model.preprocess_mean)
        self.std: list[float] = list(model.preprocess_std)
        self.calls = 0
        self.source: str | None = None
        self.backend = backend
        self.runner = make_runner(self.model, self.device, backend, fast=fast, int8=int8, onnx_folder=onnx_folder)
        self.refiner = refiner.to(self.device).eval() if refiner is not None else None
        if self.refiner is not None and int(self.refiner.inference_img_size) != self.img_size:
            raise ValueError(f"the refiner works at {self.refiner.inference_img_size} px, the model at {self.img_size}")
        # the refiner always runs on torch (its 6-channel input has no ONNX export)
        self.refine_runner = (make_runner(self.refiner, self.device, "torch", fast=fast, int8=False)
                              if self.refiner is not None else None)
        log.debug("predictor on %s, img_size %d, threshold %.3f, runner %s", self.device, self.img_size,
                  self.threshold, self.runner.name)

    @classmethod
    def from_weights(cls, source: str | Path | None = None, revision: str | None = None,
                     device: str | torch.device = "auto", tta: bool = False, allow_pickle: bool = False,
                     fast: bool = True, backend: str = "torch", cleanup: bool = True,
                     int8: bool = True, wide_view: float | None = None) -> "Predictor":
        """Load weights (see :func:`load_model`) and wrap them; raises WeightsError on bad weights.

        ``backend="onnx"`` and the CPU fast paths use ``model.onnx`` beside local weights when it was
        exported from them; the OpenVINO path's int8 calibration (``int8_calibration.json``)
        comes from the folder or the Hub repo."""
        dev = resolve_device(device)
        model = load_model(source, revision=revision, device=dev, allow_pickle=allow_pickle)
        folder = local_weights_folder(source)
        if folder is None and fast and int8 and dev.type == "cpu" and openvino_enabled():
            folder = hub_extras_folder(source, CALIBRATION_NAME, revision)
        refiner = load_refiner(source, revision=revision, device=dev)
        pred = cls(model, device=dev, tta=tta, fast=fast, backend=backend,
                   onnx_folder=str(folder) if folder is not None else None, cleanup=cleanup, int8=int8,
                   refiner=refiner, wide_view=wide_view)
        pred.source = str(source) if source is not None else None
        return pred

    @property
    def fast(self) -> bool:
        """True when the runner is one of the CPU's fast paths (OpenVINO, the bf16 or fp32 frozen
        channels_last trace, or ONNX Runtime)."""
        return isinstance(self.runner, (FrozenRunner, OnnxFp32Runner, OpenVinoRunner))

    @property
    def int8(self) -> bool:
        """True when the runner computes some convolutions in int8."""
        return getattr(self.runner, "int8_convs", 0) > 0

    def warm_up(self) -> None:
        """One model call on a blank (1, 3, S, S) batch, not counted in ``calls``: the CPU fast paths
        build their frozen trace or ONNX Runtime session on first use, which a server should pay at
        start, not on a user's photo."""
        self.runner(torch.zeros(1, 3, self.img_size, self.img_size))
        if self.refine_runner is not None:
            self.refine_runner(torch.zeros(1, self.refiner.in_channels, self.img_size, self.img_size))

    @property
    def can_refine(self) -> bool:
        """True when these weights have a click refiner (:meth:`refine` works)."""
        return self.refine_runner is not None

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        """(B, 3, S, S) normalised -> (B, S, S) float32 probabilities; one model call. Everything
        around the runner is numpy (see :func:`~.prediction.sigmoid`)."""
        logits = self.runner(x)
        self.calls += 1
        return sigmoid(logits.detach().float().cpu().numpy()[:, 0])

    def _probs(self, batch: np.ndarray, tta: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(B, 3, S, S) float32 -> probs (B, S, S), the un-flipped view's probs (B, S, S) and, with
        TTA, uncertainty (B, S, S)."""
        if not tta:
            probs = self._forward(torch.from_numpy(batch))
            return probs, probs, None
        n = batch.shape[0]
        out = self._forward(torch.from_numpy(np.concatenate([_flip(batch, d) for d in TTA_FLIPS])))
        # flip every view back; flipping (H, W) of (B, S, S) uses the same negative axes
        stack = np.stack([_flip(out[i * n:(i + 1) * n], d) for i, d in enumerate(TTA_FLIPS)])
        return stack.mean(0), stack[0], stack.max(0) - stack.min(0)

    def _wide_views(self, images: Sequence[np.ndarray], plain: np.ndarray, t: float) -> list[np.ndarray | None]:
        """The wide view's (S, S) probabilities of each resized image (S, S, 3) uint8 whose plain
        un-flipped outline ``plain`` (B, S, S) cut at ``t`` touches the border enough, kept where
        its own outline does too (wide_view.py); None for the others and where the weights have
        no wide view. One batched model call for those that need it."""
        out: list[np.ndarray | None] = [None] * len(images)
        if not self.wide_view:
            return out
        todo = [j for j in range(len(images)) if needs_wide_view(plain[j], t)]
        if todo:
            x = np.stack([normalize(widen(images[j], self.wide_view), self.mean, self.std) for j in todo])
            for j, prob in zip(todo, self._forward(torch.from_numpy(x))):
                wide = narrow(prob, self.wide_view)
                out[j] = wide if keeps_wide_view(wide, t) else None
        return out

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
        t = self.threshold if threshold is None else check_threshold(threshold)
        use_tta = self.tta if tta is None else bool(tta)
        images = [as_rgb_uint8(r) for r in rgbs]
        if sizes is not None and len(sizes) != len(images):
            raise ValueError(f"sizes has {len(sizes)} entries for {len(images)} images")
        targets = [tuple(int(v) for v in s) for s in sizes] if sizes is not None else [im.shape[:2] for im in images]
        out: list[Prediction] = []
        for sl in self._chunks(len(images), use_tta):
            small = [resize_rgb(im, self.img_size) for im in images[sl]]
            probs, unflipped, uncs = self._probs(np.stack([normalize(im, self.mean, self.std) for im in small]), use_tta)
            wides = self._wide_views(small, unflipped, t)
            for j, size in enumerate(targets[sl]):
                out.append(Prediction(probs[j], size, t, self.cleanup, uncs[j] if uncs is not None else None,
                                      lowres_wide=wides[j]))
        return out

    def add_tta(self, rgb: np.ndarray, plain: Prediction) -> Prediction:
        """The flip-TTA prediction of ``rgb`` from its plain (un-flipped) prediction ``plain``: one
        batched call for the three flipped views, averaged with the kept one. Matches
        ``predict(rgb, tta=True)`` at ``plain``'s size and threshold (to the runner's rounding
        between batch sizes), so a first outline can be shown before the extra views are computed.

        rgb: (H, W, 3) uint8, the photo as given to the plain prediction (any size: it is resized).
        ValueError where ``plain`` is already a TTA prediction.
        """
        if plain.lowres_uncertainty is not None:
            raise ValueError("add_tta takes a plain prediction; this one already has the flip-TTA views")
        x = normalize(resize_rgb(as_rgb_uint8(rgb), self.img_size), self.mean, self.std)[None]
        flips = TTA_FLIPS[1:]
        out = self._forward(torch.from_numpy(np.concatenate([_flip(x, d) for d in flips])))  # (3, S, S)
        stack = np.stack([np.asarray(plain.lowres_plain, dtype=np.float32)] +
                         [_flip(out[i], d) for i, d in enumerate(flips)])
        prob, unc = stack.mean(0), stack.max(0) - stack.min(0)
        # the wide view depends on the photo only, and was taken (or not) on the same un-flipped view
        return Prediction(prob, plain.size, plain.threshold, plain.cleanup, unc, lowres_wide=plain.lowres_wide)

    def predict(self, rgb: np.ndarray, threshold: float | None = None, tta: bool | None = None) -> Prediction:
        """One image (H, W, 3) uint8 -> :class:`Prediction` at (H, W)."""
        return self.predict_batch([rgb], threshold=threshold, tta=tta)[0]

    def load(self, path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int]]:
        """Decode a file once for this model: (rgb (h, w, 3) possibly at reduced scale, full upright (H, W))."""
        return decode_image(path, min_side=self.img_size * 2)

    def predict_file(self, path: str | os.PathLike, threshold: float | None = None,
                     tta: bool | None = None) -> tuple[np.ndarray, Prediction]:
        """(rgb as decoded, possibly reduced; Prediction at the file's full upright size). ImageLoadError if bad."""
        rgb, size = self.load(path)
        return rgb, self.predict_batch([rgb], threshold=threshold, tta=tta, sizes=[size])[0]

    def refine(self, rgb: np.ndarray, clicks: Sequence[Click | tuple[float, float, bool]],
               previous: Prediction | None = None, threshold: float | None = None, merge: bool = True) -> Prediction:
        """Correct an outline with clicks: one call of the click refiner.

        rgb: (H, W, 3) uint8, the photo as given to the prediction being corrected. clicks: every
        click so far, ``(x, y, positive)`` in ``rgb``'s pixel coordinates (positive: "this is
        lesion"), the newest last. previous: the Prediction being corrected (None: the plain
        prediction, one model call more); only its probability map, size and threshold are read
        (brush edits on it are not carried over). ``merge`` (FocalClick's progressive merge): the
        refiner's map replaces the previous one only in the connected region it flipped that
        holds the newest click, so a click never disturbs the outline away from it. The result
        has ``previous``'s size and threshold (or ``threshold``), the model's clean-up (which
        never drops a region holding a positive click nor fills a hole holding a negative one)
        and no TTA uncertainty; deterministic.

        ValueError for a click outside the image, NaN or more than 50 clicks;
        :class:`RefineUnavailable` where the weights have no refiner.
        """
        if self.refine_runner is None:
            raise RefineUnavailable(f"{self.source or 'these weights'} have no click refiner (a refiner/ folder "
                                    "beside config.json); train one with train_cli.py --refiner-from WEIGHTS")
        img = as_rgb_uint8(rgb)
        checked = check_clicks(clicks, img.shape[:2])
        if previous is None:
            previous = self.predict(img, threshold=threshold, tta=False)
        t = previous.threshold if threshold is None else check_threshold(threshold)
        s = self.img_size
        prev = np.asarray(previous.lowres, dtype=np.float32)
        if prev.shape != (s, s):
            prev = resize_prob(prev, (s, s))
        on_grid = to_model_coords(checked, img.shape[:2], s)
        x = np.concatenate([normalize(resize_rgb(img, s), self.mean, self.std), prev[None],
                            click_maps(on_grid, s, self.refiner.click_radius)])
        prob = sigmoid(self.refine_runner(torch.from_numpy(x[None]))[0, 0].detach().float().numpy())
        self.calls += 1
        if merge and on_grid:
            prob = progressive_merge(prev, prob, on_grid[-1], t)

        cleanup = self.cleanup
        if cleanup.active:
            cleanup = MaskCleanup(cleanup.fill_holes, cleanup.min_region_fraction,
                                  keep=tuple(grid_cell(c, (s, s)) for c in on_grid if c.positive),
                                  clear=tuple(grid_cell(c, (s, s)) for c in on_grid if not c.positive))
        return Prediction(prob, previous.size, t, cleanup)
