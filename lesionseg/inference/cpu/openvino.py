"""The CPU fast path where openvino is installed: the ONNX graph in OpenVINO, the decoder's 3x3 convolutions in int8.

OpenVINO's CPU plugin keeps the whole graph in a blocked layout and fuses a QuantizeLinear ->
DequantizeLinear -> Conv chain into one int8 convolution, where ONNX Runtime reorders and
transposes around each one, so int8 pays there even without int8 dot-product instructions
(AVX2: benchmarks/ section 1). The int8 part needs the weights' calibration ranges
(``int8_calibration.json``, see qdq.py; ``lesionseg export --int8-calibration`` writes it);
without them, or with ``int8=False``, the same graph runs in fp32. Precision is pinned to fp32
outside those convolutions: OpenVINO would otherwise pick bf16 on a CPU that has it. The logits'
final bilinear upsample runs as two matrix products (rewrite.py).

The model is compiled on first use (a process that never predicts pays nothing) at batch 1, once
per thread count; a batch runs image by image. An export or compile failure falls back to ONNX
Runtime fp32 (ort.py), which falls back to the frozen fp32 trace. LESIONSEG_OPENVINO=0 turns the
path off (the bf16 trace or ONNX Runtime then, as on a machine without openvino).
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
from .rewrite import logits_upsample_as_matmul

log = logging.getLogger(__name__)


# LESIONSEG_OPENVINO=0 turns this path off
OPENVINO_ENV = "LESIONSEG_OPENVINO"

_core = None
_core_lock = threading.Lock()


def shared_core() -> "openvino.Core":
    """The process's one ``openvino.Core``, made on first use and kept for the life of the interpreter.

    OpenVINO's CPU plugin, when it loads, swaps the loading thread's signal stack (sigaltstack) for
    one of its own and, when it is destroyed, swaps the previous one back and unmaps its own. Two
    plugins (one per Core) destroyed in the order they were made leave that thread on the first
    one's unmapped stack, and the next signal handled there (a child's SIGCHLD, a timer) kills the
    process without a traceback. One Core holds one plugin for the life of the process.
    """
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


def openvino_enabled() -> bool:
    """True where openvino and onnx (for the export) are installed, unless LESIONSEG_OPENVINO=0."""
    if os.environ.get(OPENVINO_ENV, "").strip() == "0":
        return False
    return openvino_available()


def openvino_available() -> bool:
    """True where openvino and onnx (for the export) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "onnx"))


class OpenVinoRunner:
    """(B, 3, S, S) float32 normalised -> (B, 1, S, S) float32 logits through OpenVINO.

    ``model`` (eval mode, on the CPU) is copied, so later changes to the caller's weights do not
    reach this runner. ``folder``: where ``model.onnx`` and ``int8_calibration.json`` may lie.
    ``int8_convs`` is the number of convolutions that run in int8. Thread-safe: one compiled model
    per ``torch.get_num_threads()`` at the call (compiled on first use), an infer request per
    calling thread. Inputs of another spatial size than ``img_size`` run the eager model.
    """

    side_by_side = True

    def __init__(self, model: torch.nn.Module, img_size: int, folder: str | None = None, int8: bool = True):
        self.model, self.size, self.folder = copy.deepcopy(model).eval(), int(img_size), folder
        self.ranges = load_calibration(self.model, folder) if int8 else None
        self.int8_convs = len(self.ranges) if self.ranges else 0
        self.name = self._label()
        self._graph: bytes | None = None
        self.compiled: dict[int, object] = {}  # thread count -> compiled model
        self._local = threading.local()  # each thread's infer requests, by thread count
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
        level = int(getattr(getattr(self.model, "encoder", None), "first_level", 0))
        stride = int(getattr(self.model, "stride", 0))
        # an input padded to the model's stride would upsample the padded size: left to OpenVINO
        if level and getattr(self.model, "upsample_logits", None) is not None and stride and self.size % stride == 0:
            low = self.size // 2 ** level
            data = logits_upsample_as_matmul(data, (low, low), (self.size, self.size))
        return data

    def _compile(self, threads: int):
        core = shared_core()
        graph = core.read_model(self._graph)
        graph.reshape({INPUT_NAME: [1, 3, self.size, self.size]})
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
                  "INFERENCE_PRECISION_HINT": "f32",
                  # side-by-side workers each run one thread: pinned, they would share one core
                  "ENABLE_CPU_PINNING": False}
        return core.compile_model(graph, "CPU", config)

    def _request(self, threads: int):
        """This thread's infer request on the compiled model for ``threads``, or the fallback runner."""
        with self._lock:
            if self._fallback is not None:
                return self._fallback
            try:
                if threads not in self.compiled:
                    if self._graph is None:
                        self._graph = self._build_graph()
                    self.compiled[threads] = self._compile(threads)
                compiled = self.compiled[threads]
            except Exception as e:  # noqa: BLE001 - any export / compile failure keeps a working path
                log.warning("OpenVINO path unavailable (%s: %s); running ONNX Runtime fp32 instead",
                            type(e).__name__, str(e)[:200])
                self._fallback = OnnxFp32Runner(self.model, self.size, self.folder)
                self.name, self.int8_convs = self._fallback.name, 0
                return self._fallback
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if threads not in requests:
            requests[threads] = compiled.create_infer_request()
        return requests[threads]

    def conv_kernels(self) -> dict[str, int]:
        """The kernels OpenVINO chose for this graph's convolutions, e.g. ``{"brgconv_avx2_1x1_f32": 50,
        "jit_avx2_I8": 6}``: which ISA the path really runs (OpenVINO's oneDNN follows
        ONEDNN_MAX_CPU_ISA). Compiles for this thread's count if needed; empty on the fallback."""
        threads = max(1, torch.get_num_threads())
        if isinstance(self._request(threads), OnnxFp32Runner):
            return {}
        compiled = self.compiled[threads]
        kernels: dict[str, int] = {}
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and info["layerType"].astype(str) in ("Convolution", "GroupConvolution"):
                name = info["primitiveType"].astype(str)
                kernels[name] = kernels.get(name, 0) + 1
        return kernels

    @property
    def ready(self) -> bool:
        """True once a compiled model (or the fallback) exists: the first call has been paid."""
        return bool(self.compiled) or self._fallback is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.size, self.size):
            with torch.inference_mode():
                return self.model(x.float()).float()
        request = self._request(max(1, torch.get_num_threads()))
        if isinstance(request, OnnxFp32Runner):
            return request(x)
        batch = np.ascontiguousarray(x.float().numpy())
        out = [np.array(request.infer({0: batch[i:i + 1]})[0], copy=True) for i in range(batch.shape[0])]
        return torch.from_numpy(np.concatenate(out))
