"""The CPU fast path where bf16 is not native (AVX2-class x86): ONNX Runtime in fp32.

On AVX2 kernels, ONNX Runtime runs this model faster than the frozen channels_last TorchScript
trace of fp32.py: its convolutions work in a blocked (NCHWc) layout with the ReLU6 clips and the
residual additions fused into them, where PyTorch runs those as separate passes over memory.
Both are fp32 and agree with the eager model to rounding (tests/test_cpu_paths.py);
benchmarks/ compares them on AVX2 kernels, with the CPUID masked (scripts/as_avx2.sh) so that
ONNX Runtime, which picks its kernels from the chip, not from torch's ISA caps, runs its AVX2
ones too.

The model is exported on first use (like the frozen trace: a process that never predicts pays
nothing), once per process and weights, or read from ``model.onnx`` beside the weights when it
was exported from them. Without onnx / onnxruntime, or if the export fails, the frozen fp32
trace runs instead.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import threading

import torch

from ..onnx_backend import OnnxRunner, onnx_source
from .fp32 import FrozenFp32Runner

log = logging.getLogger(__name__)


def onnx_runtime_available() -> bool:
    """True where onnx (for the export) and onnxruntime are both installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def exportable(model: torch.nn.Module) -> bool:
    """True for the plain segmentation model (3-channel input); the click refiner's 6-channel input
    has no ONNX export."""
    return int(getattr(model, "in_channels", 3)) == 3 and not getattr(model, "click_conditioned", False)


class OnnxFp32Runner:
    """(B, 3, S, S) float32 normalised -> (B, 1, S, S) float32 logits through ONNX Runtime.

    ``model`` (eval mode, on the CPU) is copied, as the frozen trace's is: later changes to the
    caller's weights do not reach this runner, whose export is taken on first use. Thread-safe;
    images run side by side (one ORT session per intra-op thread count, ``torch.get_num_threads()``
    at the call, which the batch engine sets to 1 while its workers run). Inputs of another
    spatial size than ``img_size`` run the eager model, as the frozen trace's do.
    """

    side_by_side = True
    int8_convs = 0

    def __init__(self, model: torch.nn.Module, img_size: int, onnx_folder: str | None = None):
        self.model, self.size, self.folder = copy.deepcopy(model).eval(), int(img_size), onnx_folder
        self.name = "onnx fp32 (ONNX Runtime)"
        self._source: str | bytes | None = None
        self._sessions: dict[int, OnnxRunner] = {}
        self._fallback: FrozenFp32Runner | None = None
        self._lock = threading.Lock()

    def _runner(self, threads: int) -> OnnxRunner | FrozenFp32Runner:
        with self._lock:
            if self._fallback is None and threads not in self._sessions:
                try:
                    if self._source is None:
                        self._source = onnx_source(self.model, self.folder)
                    self._sessions[threads] = OnnxRunner(self._source, threads)
                except Exception as e:  # noqa: BLE001 - any export / session failure keeps a working path
                    log.warning("ONNX Runtime path unavailable (%s: %s); running the frozen fp32 trace instead",
                                type(e).__name__, str(e)[:200])
                    self._fallback = FrozenFp32Runner(self.model, self.size)
                    self.name = self._fallback.name
            return self._fallback if self._fallback is not None else self._sessions[threads]

    @property
    def ready(self) -> bool:
        """True once a session (or the fallback) was built: the first call has been paid."""
        return bool(self._sessions) or self._fallback is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.size, self.size):
            with torch.inference_mode():
                return self.model(x.float()).float()
        runner = self._runner(max(1, torch.get_num_threads()))
        if isinstance(runner, FrozenFp32Runner):
            return runner(x)
        return torch.from_numpy(runner(x.float().contiguous().numpy()))
