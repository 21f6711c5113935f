"""ONNX export of DS-AttentionUNet and an ONNX Runtime runner with the model's calling convention.

The graph takes the normalised image batch ``image`` (B, 3, S, S) float32 at the model's own
``inference_img_size`` S (the Predictor always resizes to it) with a dynamic batch axis, and
returns ``logits`` (B, 1, S, S) float32. The file carries the model's ``config.json`` and a
digest of its weights in its metadata, so a ``model.onnx`` left beside older weights is
recognised as stale and never used for them.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
OPSET = 17
META_DIGEST, META_CONFIG, META_SIZE = "lesionseg.weights_sha256", "lesionseg.config", "lesionseg.img_size"


class OnnxUnavailableError(RuntimeError):
    """onnx / onnxruntime are not installed; ``str()`` says how to install them."""


def _require(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise OnnxUnavailableError(f"{name} is not installed (pip install onnx onnxruntime, or use the "
                                   "default --backend torch)") from None


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes and values in NCHW order): identifies the weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        a = t.detach().to("cpu", torch.float32).contiguous().numpy()
        h.update(f"{name}:{tuple(a.shape)};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def export_onnx(model: torch.nn.Module, opset: int = OPSET) -> bytes:
    """Serialise ``model`` (eval, fp32) for ONNX Runtime: fixed (S, S) input, dynamic batch.

    The model is exported as it is (any memory format); its training flag is restored afterwards.
    """
    onnx = _require("onnx")
    size = int(getattr(model, "inference_img_size", 256))
    was_training = model.training
    model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings for the (constant) padding branch
            torch.onnx.export(model, (torch.zeros(1, 3, size, size),), buf, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buf.getvalue())
    config = getattr(model, "_hub_mixin_config", None)
    meta = {META_DIGEST: weights_digest(model), META_SIZE: str(size)}
    if isinstance(config, dict):
        meta[META_CONFIG] = json.dumps(config, sort_keys=True, default=str)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


class OnnxRunner:
    """An ONNX Runtime CPU session: ``runner(x)`` maps (B, 3, S, S) float32 to logits (B, 1, S, S).

    ``source``: serialised model bytes or a ``.onnx`` path. ``threads``: intra-op threads
    (default: torch's thread count, so both backends use the same cores).
    """

    def __init__(self, source: bytes | str | os.PathLike, threads: int | None = None):
        ort = _require("onnxruntime")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # no busy-waiting between calls: decoding and PNG encoding share the same cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = source if isinstance(source, bytes) else str(source)
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.img_size = int(self.metadata.get(META_SIZE, 0)) or None

    @property
    def digest(self) -> str | None:
        """The weights digest recorded at export, or None for a foreign ONNX file."""
        return self.metadata.get(META_DIGEST)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


@dataclass
class ExportCheck:
    """ONNX Runtime vs PyTorch (fp32) on the same inputs."""

    max_abs_diff: float  # largest logit difference
    mask_dice: float  # Dice of the thresholded masks, pooled over all inputs
    n_inputs: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff < 1e-2 and self.mask_dice >= 0.999


def check_inputs(size: int, n: int = 4, seed: int = 0) -> np.ndarray:
    """Deterministic (n, 3, S, S) float32 test inputs: noise plus smooth blobs, roughly normalised."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(rng.normal(0, 1, (3, size, size)))
        else:
            cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            out.append(np.stack([1.0 - 2.5 * blob] * 3) + rng.normal(0, 0.1, (3, size, size)))
    return np.stack(out).astype(np.float32)


def compare(model: torch.nn.Module, runner: OnnxRunner, inputs: np.ndarray,
            threshold: float | None = None) -> ExportCheck:
    """Run both on ``inputs`` (N, 3, S, S); logits difference and mask agreement."""
    t = float(threshold if threshold is not None else getattr(model, "inference_threshold", 0.5))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        ref = model(torch.from_numpy(inputs).float()).float().numpy()
    model.train(was_training)
    got = np.concatenate([runner(inputs[i:i + 1]) for i in range(len(inputs))])
    logit_t = float(np.log(t / (1.0 - t)))
    a, b = ref >= logit_t, got >= logit_t
    denom = int(a.sum() + b.sum())
    dice = 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom
    return ExportCheck(float(np.abs(ref - got).max()), dice, len(inputs))


def save_onnx(model: torch.nn.Module, path: str | os.PathLike, check: bool = True) -> ExportCheck | None:
    """Export, verify against PyTorch (``check``), then write ``path`` atomically.

    Raises ValueError when the check fails (nothing is written then).
    """
    data = export_onnx(model)
    result = None
    if check:
        result = compare(model, OnnxRunner(data), check_inputs(int(getattr(model, "inference_img_size", 256))))
        if not result.ok:
            raise ValueError(f"ONNX Runtime disagrees with PyTorch (max |logit diff| {result.max_abs_diff:.2e}, "
                             f"mask Dice {result.mask_dice:.4f}); not written")
    atomic_write_bytes(path, data)
    return result


# exports made in this process, by weights digest, input size and configuration: Predictors of
# the same weights (a server's, a batch's, a test's) export once
_EXPORTS: dict[tuple[str, int, str], bytes] = {}
_EXPORTS_KEPT = 4
_EXPORTS_LOCK = threading.Lock()


def onnx_source(model: torch.nn.Module, folder: str | os.PathLike | None = None) -> str | bytes:
    """What to open an ORT session on for ``model``: ``<folder>/model.onnx`` when it was exported
    from these very weights, else an in-memory export (kept per process and weights;
    ``lesionseg export --onnx`` saves it)."""
    digest, size = weights_digest(model), int(getattr(model, "inference_img_size", 256))
    if folder is not None:
        file = Path(folder) / ONNX_NAME
        if file.is_file():
            try:
                # the metadata alone, without an ORT session: the caller opens its own on the file
                proto = _require("onnx").load(str(file), load_external_data=False)
                meta = {p.key: p.value for p in proto.metadata_props}
            except Exception as e:  # noqa: BLE001 - a corrupt file falls back to a fresh export
                log.warning("%s: not a readable ONNX file (%s); exporting in memory", file, type(e).__name__)
            else:
                if meta.get(META_DIGEST) == digest and int(meta.get(META_SIZE, 0) or size) == size:
                    return str(file)
                log.warning("%s was exported from other weights; exporting in memory "
                            "(re-run lesionseg export --onnx to refresh it)", file)
    # the architecture settings outside the state dict (activation, groups) shape the graph too
    config = json.dumps(getattr(model, "_hub_mixin_config", None), sort_keys=True, default=str)
    key = (digest, size, config)
    with _EXPORTS_LOCK:
        if key not in _EXPORTS:
            log.info("exporting the model to ONNX in memory (save it with lesionseg export --onnx)")
            if len(_EXPORTS) >= _EXPORTS_KEPT:
                _EXPORTS.pop(next(iter(_EXPORTS)))
            _EXPORTS[key] = export_onnx(model)
        return _EXPORTS[key]


def runner_for(model: torch.nn.Module, folder: str | os.PathLike | None = None,
               threads: int | None = None) -> OnnxRunner:
    """An ORT runner for ``model`` on :func:`onnx_source`."""
    return OnnxRunner(onnx_source(model, folder), threads)
