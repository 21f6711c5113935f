"""int8 for the decoder's 3x3 convolutions: calibration ranges beside the weights, QDQ in the ONNX graph.

The decoder's 3x3 convolutions hold most of the model's multiply-adds (those below its coarsest
stage run in int8, see :func:`int8_targets`).
In int8 (per-output-channel symmetric weights, per-tensor asymmetric uint8 inputs and outputs) their masks
agree with exact fp32 (benchmarks/ section 1, the test part); the MobileNetV2 encoder's inverted
residuals drift in int8, so they stay fp32. An engine that runs QuantizeLinear -> DequantizeLinear
-> Conv as one int8 convolution (OpenVINO, see openvino.py) needs the range of each target's
input, which only real photos give: :func:`calibrate` measures them on images, and
``int8_calibration.json`` keeps them beside the weights with the weights' digest, so a file left
beside other weights is never used for them.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ...utils.atomic import atomic_write_bytes
from ..onnx_backend import _require, weights_digest

log = logging.getLogger(__name__)

CALIBRATION_NAME = "int8_calibration.json"
CALIBRATION_FORMAT = 1


def int8_targets(model: torch.nn.Module) -> list[str]:
    """Module names of the decoder's 3x3 convolutions (groups 1) below its coarsest stage: the ones
    run in int8. The coarsest stage (1/16 or 1/32 resolution) stays fp32: each of its activations
    spans a 16-32 px square of the output, so a rounding step there moves whole stretches of the
    outline, and it holds few of the multiply-adds."""
    stages = getattr(getattr(model, "decoder", None), "stages", None)
    if stages is None:
        return []
    return [f"decoder.stages.{i}.{name}" for i, stage in enumerate(stages) if i > 0
            for name, m in stage.named_modules()
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1]


Range = tuple[float, float]


def calibrate(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, dict[str, Range]]:
    """{target: {"input": (min, max), "output": (min, max)}} of each int8 target over ``batches`` of
    normalised images (B, 3, S, S), run through ``model`` in fp32 (eval mode): the ranges its int8
    input and output are quantised to (an int8 output lets the engine requantise inside the
    convolution instead of writing fp32 and quantising again)."""
    targets = int8_targets(model)
    if not targets:
        raise ValueError("this model has no decoder 3x3 convolutions to run in int8")
    modules = dict(model.named_modules())
    ranges: dict[str, dict[str, list[float]]] = {n: {} for n in targets}

    def widen(name: str, key: str, x: torch.Tensor) -> None:
        lo, hi = float(x.min()), float(x.max())
        old = ranges[name].get(key)
        ranges[name][key] = [min(lo, old[0]), max(hi, old[1])] if old else [lo, hi]

    def hook(name: str):
        def record(_module, inputs, output):
            widen(name, "input", inputs[0].detach())
            widen(name, "output", output.detach())
        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in targets]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.inference_mode():
            for x in batches:
                model(x.float())
                seen += int(x.shape[0])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not seen:
        raise ValueError("no calibration images")
    return {n: {k: (v[0], v[1]) for k, v in ranges[n].items()} for n in targets}


def save_calibration(model: torch.nn.Module, ranges: dict[str, dict[str, Range]], path: str | os.PathLike,
                     source: str, n_images: int) -> None:
    """Write ``ranges`` (from :func:`calibrate`) for ``model``'s weights to ``path`` (atomically)."""
    doc = {"format": CALIBRATION_FORMAT, "weights_sha256": weights_digest(model),
           "img_size": int(getattr(model, "inference_img_size", 256)),
           "method": "min / max of each convolution's input and output in exact fp32", "images": int(n_images),
           "source": source,
           "ranges": {n: {k: [float(v[0]), float(v[1])] for k, v in r.items()} for n, r in ranges.items()}}
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())


def load_calibration(model: torch.nn.Module, folder: str | os.PathLike | None) -> dict[str, dict[str, Range]] | None:
    """The ranges in ``<folder>/int8_calibration.json`` when they were measured for these very weights
    and cover every int8 target; None otherwise (no folder, no file, other weights: logged)."""
    if folder is None:
        return None
    file = Path(folder) / CALIBRATION_NAME
    if not file.is_file():
        return None
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
        ranges = {str(n): {k: (float(r[k][0]), float(r[k][1])) for k in ("input", "output")}
                  for n, r in doc["ranges"].items()}
        digest, size = doc["weights_sha256"], int(doc["img_size"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        log.warning("%s: not a readable calibration file (%s); running fp32", file, type(e).__name__)
        return None
    if digest != weights_digest(model) or size != int(getattr(model, "inference_img_size", 256)):
        log.warning("%s was measured for other weights; running fp32 (re-run lesionseg export --int8-calibration)",
                    file)
        return None
    targets = int8_targets(model)
    missing = [n for n in targets if n not in ranges]
    ranges = {n: ranges[n] for n in targets if n in ranges}
    if missing or not all(np.isfinite(v).all() and v[0] <= v[1] for r in ranges.values() for v in r.values()):
        log.warning("%s does not cover this model's decoder (%d missing); running fp32", file, len(missing))
        return None
    return ranges


def _uint8_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point of an asymmetric uint8 range that holds [lo, hi] and 0 (ONNX Runtime's rule)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = int(np.clip(round(-lo / scale), 0, 255))
    return float(scale), zero


def insert_qdq(onnx_model: bytes, ranges: dict[str, dict[str, Range]]) -> tuple[bytes, int]:
    """The ONNX graph ``onnx_model`` with QuantizeLinear -> DequantizeLinear on the input and the output,
    and an int8 weight (per output channel) -> DequantizeLinear, on every Conv whose weight is
    ``<name>.weight`` for a name in ``ranges``. Returns (graph bytes, number of convolutions quantised)."""
    onnx = _require("onnx")
    from onnx import helper, numpy_helper

    proto = onnx.load_from_string(onnx_model)
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    by_weight = {f"{n}.weight": r for n, r in ranges.items()}
    nodes, done = [], 0
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in by_weight or node.input[1] not in inits:
            nodes.append(node)
            continue
        wname, x, y = node.input[1], node.input[0], node.output[0]
        w = numpy_helper.to_array(inits[wname]).astype(np.float32)
        w_scale = np.maximum(np.abs(w).reshape(w.shape[0], -1).max(axis=1), 1e-12) / 127.0
        w_q = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
        tag = wname[:-len(".weight")]
        graph.initializer.extend([
            numpy_helper.from_array(w_q, f"{tag}.weight_int8"),
            numpy_helper.from_array(w_scale.astype(np.float32), f"{tag}.weight_scale"),
            numpy_helper.from_array(np.zeros(w.shape[0], np.int8), f"{tag}.weight_zero"),
        ])
        for key in ("input", "output"):
            scale, zero = _uint8_qparams(*by_weight[wname][key])
            graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{tag}.{key}_scale"),
                                      numpy_helper.from_array(np.array(zero, np.uint8), f"{tag}.{key}_zero")])
        graph.initializer.remove(inits[wname])

        def qdq(key: str, src: str, dst: str) -> list:
            qparams = [f"{tag}.{key}_scale", f"{tag}.{key}_zero"]
            return [helper.make_node("QuantizeLinear", [src, *qparams], [f"{tag}.{key}_q"], name=f"{tag}.{key}_quantize"),
                    helper.make_node("DequantizeLinear", [f"{tag}.{key}_q", *qparams], [dst],
                                     name=f"{tag}.{key}_dequantize")]

        nodes += qdq("input", x, f"{tag}.input_dq")
        nodes.append(helper.make_node("DequantizeLinear",
                                      [f"{tag}.weight_int8", f"{tag}.weight_scale", f"{tag}.weight_zero"],
                                      [f"{tag}.weight_dq"], name=f"{tag}.weight_dequantize", axis=0))
        node.input[0], node.input[1], node.output[0] = f"{tag}.input_dq", f"{tag}.weight_dq", f"{tag}.output_fp32"
        nodes.append(node)
        nodes += qdq("output", f"{tag}.output_fp32", y)
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return proto.SerializeToString(), done


def calibration_inputs(model: torch.nn.Module, paths: Iterable[str | os.PathLike]) -> Iterable[torch.Tensor]:
    """(1, 3, S, S) normalised inputs of image files, preprocessed as the Predictor does; ImageLoadError
    (naming the file) for one that cannot be read."""
    from ...data.io import load_image
    from ...data.transforms import normalize, resize_rgb

    size = int(getattr(model, "inference_img_size", 256))
    mean, std = list(model.preprocess_mean), list(model.preprocess_std)
    for path in paths:
        yield torch.from_numpy(normalize(resize_rgb(load_image(path), size), mean, std)[None])


def mask_agreement(model: torch.nn.Module, runner, inputs: Iterable[torch.Tensor]) -> np.ndarray:
    """Per-input Dice of ``runner``'s masks against ``model``'s exact fp32 masks at the model's threshold
    (1.0 where both are empty): (N,) float."""
    t = float(getattr(model, "inference_threshold", 0.5))
    logit_t = float(np.log(t / (1.0 - t)))
    out = []
    with torch.inference_mode():
        for x in inputs:
            a = model(x.float()).float().numpy() >= logit_t
            b = runner(x).numpy() >= logit_t
            denom = int(a.sum() + b.sum())
            out.append(1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom)
    return np.asarray(out, dtype=np.float64)
