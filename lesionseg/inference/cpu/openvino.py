"""The CPU fast path on every x86 CPU class: the ONNX graph in OpenVINO, the decoder's 3x3 convolutions in int8.

OpenVINO's CPU plugin keeps the whole graph in a blocked layout and fuses a QuantizeLinear ->
DequantizeLinear -> Conv chain into one int8 convolution, where ONNX Runtime reorders and
transposes around each one, so int8 pays there even without int8 dot-product instructions
(AVX2: benchmarks/ section 1). The int8 part needs the weights' calibration ranges
(``int8_calibration.json``, see qdq.py; ``lesionseg export --int8-calibration`` writes it);
without them, or with ``int8=False``, the same graph runs in fp32. Precision is pinned to fp32
outside those convolutions: OpenVINO would otherwise pick bf16 on a CPU that has it.

The model is compiled on first use (a process that never predicts pays nothing) at batch 1, once
per thread count; a batch runs image by image. Any failure (no openvino, an export or compile
error) falls back to ONNX Runtime fp32 (ort.py), which falls back to the frozen fp32 trace.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import os
import threading
from pathlib import Path

import numpy as np
import torch

from ..onnx_backend import INPUT_NAME, onnx_source
from .ort import OnnxFp32Runner
from .qdq import insert_qdq, load_calibration

log = logging.getLogger(__name__)


# LESIONSEG_OPENVINO=0 keeps the fast path off OpenVINO (the paths a machine without it takes)
OPENVINO_ENV = "LESIONSEG_OPENVINO"


def openvino_available() -> bool:
    """True where openvino and onnx (for the export) are installed, unless LESIONSEG_OPENVINO=0."""
    if os.environ.get(OPENVINO_ENV, "").strip() == "0":
        return False
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "onnx"))


class OpenVinoRunner:
    """(B, 3, S, S) float32 normalised -> (B, 1, S, S) float32 logits through OpenVINO.

    ``model`` (eval mode, on the CPU) is copied, so later changes to the caller's weights do not
    reach this runner. ``folder``: where ``model.onnx`` and ``int8_calibration.json`` may lie.
    ``int8_convs`` is the number of convolutions that run in int8. Thread-safe; images run side
    by side: a call borrows a compiled model (one stream) for ``torch.get_num_threads()`` at the
    call and returns it, so the batch engine's workers (one thread each) each get their own, made
    on first use and kept for later batches; two callers on one stream would queue. Inputs of
    another spatial size than ``img_size`` run the eager model.
    """

    side_by_side = True

    def __init__(self, model: torch.nn.Module, img_size: int, folder: str | None = None, int8: bool = True):
        self.model, self.size, self.folder = copy.deepcopy(model).eval(), int(img_size), folder
        self.ranges = load_calibration(self.model, folder) if int8 else None
        self.int8_convs = len(self.ranges) if self.ranges else 0
        self.name = self._label()
        self._graph: bytes | None = None
        self.compiled: dict[int, int] = {}  # thread count -> compiled models made for it
        self._free: dict[int, list] = {}  # thread count -> idle infer requests, one per compiled model
        self._fallback: OnnxFp32Runner | None = None
        self._lock = threading.Lock()

    def _label(self) -> str:
        return ("openvino fp32 + int8 decoder convolutions (OpenVINO)" if self.int8_convs
                else "openvino fp32 (OpenVINO)")

    def _build_graph(self) -> bytes:
        source = onnx_source(self.model, self.folder)
        data = Path(source).read_bytes() if isinstance(source, str) else source
        if self.ranges:
            data, self.int8_convs = insert_qdq(data, self.ranges)
            self.name = self._label()
        return data

    def _compile(self, threads: int):
        import openvino as ov

        core = ov.Core()
        graph = core.read_model(self._graph)
        graph.reshape({INPUT_NAME: [1, 3, self.size, self.size]})
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
                  "INFERENCE_PRECISION_HINT": "f32",
                  # side-by-side workers each run one thread: pinned, they would share one core
                  "ENABLE_CPU_PINNING": False}
        return core.compile_model(graph, "CPU", config)

    def _borrow(self, threads: int):
        """An idle infer request of a compiled model for ``threads`` (compiled now if every one is in
        use), or the fallback runner."""
        with self._lock:
            if self._fallback is not None:
                return self._fallback
            free = self._free.setdefault(threads, [])
            if free:
                return free.pop()
            try:
                if self._graph is None:
                    self._graph = self._build_graph()
                request = self._compile(threads).create_infer_request()
            except Exception as e:  # noqa: BLE001 - any export / compile failure keeps a working path
                log.warning("OpenVINO path unavailable (%s: %s); running ONNX Runtime fp32 instead",
                            type(e).__name__, str(e)[:200])
                self._fallback = OnnxFp32Runner(self.model, self.size, self.folder)
                self.name, self.int8_convs = self._fallback.name, 0
                return self._fallback
            self.compiled[threads] = self.compiled.get(threads, 0) + 1
            return request

    def _give_back(self, threads: int, request) -> None:
        with self._lock:
            self._free.setdefault(threads, []).append(request)

    def prepare(self) -> None:
        """Compile now for the current thread count (what the first call would do)."""
        threads = max(1, torch.get_num_threads())
        request = self._borrow(threads)
        if not isinstance(request, OnnxFp32Runner):
            self._give_back(threads, request)

    @property
    def ready(self) -> bool:
        """True once a compiled model (or the fallback) exists: the first call has been paid."""
        return bool(self.compiled) or self._fallback is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.size, self.size):
            with torch.inference_mode():
                return self.model(x.float()).float()
        threads = max(1, torch.get_num_threads())
        request = self._borrow(threads)
        if isinstance(request, OnnxFp32Runner):
            return request(x)
        try:
            batch = np.ascontiguousarray(x.float().numpy())
            out = [np.array(request.infer({0: batch[i:i + 1]})[0], copy=True) for i in range(batch.shape[0])]
        finally:
            self._give_back(threads, request)
        return torch.from_numpy(np.concatenate(out))
