"""Graph rewrites for the OpenVINO path: the logits' bilinear upsample as two matrix products.

A decoder that stops at 1/2 resolution ends in a bilinear Resize of one-channel logits to the
input's size. OpenVINO's CPU plugin is slow at that one-channel Resize: its per-layer counters
put it above every other node that is not a convolution (docs/benchmarks.md). Bilinear
resampling is separable, so at a fixed input size it is exactly ``R @ X @ C``, with ``R`` (H, h)
and ``C`` (w, W) holding each output row's and column's two source weights: two small MatMuls,
equal to the Resize up to float rounding.
"""
from __future__ import annotations

import logging

import numpy as np

from ..onnx_backend import _require

log = logging.getLogger(__name__)

# the model's module that brings the logits to the input's size (models/ds_attention_unet.py)
LOGITS_UPSAMPLE = "upsample_logits"


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32: row i holds the weights of output i's two source samples, as
    PyTorch's bilinear resampling with ``align_corners=False`` (ONNX half_pixel) computes them."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        src = max(0.0, (i + 0.5) * n_in / n_out - 0.5)
        lo = min(int(np.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m.astype(np.float32)


def logits_upsample_as_matmul(onnx_model: bytes, in_size: tuple[int, int], out_size: tuple[int, int]) -> bytes:
    """``onnx_model`` with its logits' bilinear Resize (``in_size`` (h, w) -> ``out_size`` (H, W),
    fixed) replaced by two MatMuls; unchanged where the graph has no such Resize (a model whose
    decoder ends at full resolution) or it is not a half-pixel linear one."""
    onnx = _require("onnx")
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(onnx_model)
    graph = proto.graph
    found = [i for i, n in enumerate(graph.node) if n.op_type == "Resize" and LOGITS_UPSAMPLE in n.name]
    if len(found) != 1:
        return onnx_model
    index = found[0]
    node = graph.node[index]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("mode") != b"linear" or attrs.get("coordinate_transformation_mode") not in (
            b"half_pixel", b"pytorch_half_pixel"):
        log.debug("%s is not a half-pixel bilinear Resize; left as it is", node.name)
        return onnx_model
    (h, w), (big_h, big_w) = in_size, out_size
    rows, cols = f"{node.name}/rows", f"{node.name}/cols"
    graph.initializer.extend([numpy_helper.from_array(bilinear_matrix(h, big_h), rows),
                              numpy_helper.from_array(np.ascontiguousarray(bilinear_matrix(w, big_w).T), cols)])
    tmp = f"{node.name}/rows_output"
    first = helper.make_node("MatMul", [rows, node.input[0]], [tmp], name=f"{node.name}/rows_matmul")
    second = helper.make_node("MatMul", [tmp, cols], [node.output[0]], name=f"{node.name}/cols_matmul")
    graph.node.remove(node)
    graph.node.insert(index, second)
    graph.node.insert(index, first)
    return proto.SerializeToString()
