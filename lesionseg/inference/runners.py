"""Backends behind one calling convention: ``runner(x)`` maps the normalised image batch
(B, 3, S, S) float32 on the CPU to logits (B, 1, S, S) float32 on the CPU.

:func:`make_runner` picks one per Predictor:

- ``torch`` on an x86 CPU (AVX2 or AVX-512, bf16 or not) where openvino is installed (and
  LESIONSEG_OPENVINO is not 0): :class:`~.cpu.OpenVinoRunner` (OpenVINO, fp32 with the decoder's
  3x3 convolutions in int8 where the weights carry their calibration ranges, see cpu/openvino.py);
- otherwise, on a CPU with native bf16: :class:`~.cpu.FrozenBF16Runner` (bf16, channels_last,
  frozen trace, int8 convolutions below full resolution where the CPU has int8 dot products);
- otherwise, on any other x86 CPU (AVX2, or bf16 capped by ATEN_CPU_CAPABILITY /
  ONEDNN_MAX_CPU_ISA): :class:`~.cpu.OnnxFp32Runner` (ONNX Runtime, fp32), or
  :class:`~.cpu.FrozenFp32Runner` (fp32, channels_last, frozen trace) without onnxruntime;
- the click refiner (6-channel input, no ONNX export): the frozen bf16 or fp32 trace as above;
- ``torch`` with ``fast=False``, on a GPU, or on a CPU without oneDNN's x86 kernels (ARM):
  :class:`EagerRunner`, the model as loaded (fp32).
  On a GPU this is the fast path: the model is bound by GroupNorm and kernel launches there, which
  bf16 and channels_last do not shorten (benchmarks/ section 7);
- ``onnx``: :class:`OnnxBackend`, ONNX Runtime on the CPU (fp32).
"""
from __future__ import annotations

import logging
from typing import Protocol

import torch

from ..utils.cpu_isa import cpu_bf16_supported, cpu_fp32_fast_supported
from .cpu import FrozenBF16Runner, FrozenFp32Runner, OnnxFp32Runner, OpenVinoRunner
from .cpu.openvino import openvino_enabled
from .cpu.ort import exportable, onnx_runtime_available

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")


class Runner(Protocol):
    """A model call. ``name`` says which path it is (for logs and benchmarks); ``side_by_side``
    says whether several images are best predicted at once on their own threads (the CPU's fast
    paths) or one after another (the ``onnx`` backend and GPUs spread one image over their threads)."""

    name: str
    side_by_side: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class EagerRunner:
    """The model as loaded, on its device, in its own dtype (fp32)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model, self.device = model, device
        self.name = "fp32" if device.type == "cpu" else f"fp32 on {device.type}"
        self.side_by_side = device.type == "cpu"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.to(self.device, non_blocking=True)).float().cpu()


class OnnxBackend:
    """ONNX Runtime on the CPU (fp32) with the torch calling convention (see onnx_backend.py)."""

    name = "onnx (fp32)"
    side_by_side = False

    def __init__(self, model: torch.nn.Module, onnx_folder: str | None = None):
        from .onnx_backend import runner_for

        self.session = runner_for(model, onnx_folder)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session(x.numpy()))


def make_runner(model: torch.nn.Module, device: torch.device, backend: str = "torch", fast: bool = True,
                int8: bool = True, onnx_folder: str | None = None) -> Runner:
    """The runner for ``model`` (already on ``device``, eval mode); ValueError for an unknown backend
    or ONNX on a non-CPU device. ``onnx_folder``: where a saved ``model.onnx`` may lie (for the
    ``onnx`` backend and the CPU fast paths, beside ``int8_calibration.json``). ``fast=False`` keeps the
    eager fp32 model on the CPU; ``int8=False`` keeps the fast paths free of int8 (OpenVINO in fp32, the
    bf16 path in bf16 throughout)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "onnx":
        if device.type != "cpu":
            raise ValueError(f"backend 'onnx' runs on the CPU only, not on {device}")
        return OnnxBackend(model, onnx_folder)
    if not fast or device.type != "cpu":
        return EagerRunner(model, device)
    size = int(getattr(model, "inference_img_size", 256))
    if exportable(model) and cpu_fp32_fast_supported() and openvino_enabled():
        return OpenVinoRunner(model, size, onnx_folder, int8=int8)
    if cpu_bf16_supported():
        return FrozenBF16Runner(model, size, int8=int8)
    if not cpu_fp32_fast_supported():
        return EagerRunner(model, device)
    if exportable(model) and onnx_runtime_available():
        return OnnxFp32Runner(model, size, onnx_folder)
    return FrozenFp32Runner(model, size)
