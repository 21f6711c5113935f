"""Sections 1-3 and 7: forward latency and agreement, FLOPs vs matmul peak, peer models, GPU.

Every variant is a function (B, 3, S, S) normalised float32 -> (B, S, S) probabilities, so the
baseline (the research code's fp32 eager NCHW) and the candidates are timed and compared alike.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable

import numpy as np
import torch

from lesionseg.data.transforms import normalize, resize_rgb
from lesionseg.inference import Predictor, load_model
from lesionseg.inference.cpu import (FrozenBF16Runner, FrozenFp32Runner, OnnxFp32Runner, OpenVinoRunner,
                                     cpu_bf16_supported)
from lesionseg.inference.cpu.openvino import openvino_available

from .common import Settings, count_flops, dice, matmul_peak, params, real_images, time_interleaved

log = logging.getLogger("benchmarks")
Fn = Callable[[torch.Tensor], torch.Tensor]
AGREE = 0.99  # mean Dice a candidate must reach against the fp32 eager masks


def _eager(model: torch.nn.Module, channels_last: bool, bf16: bool) -> Fn:
    m = copy.deepcopy(model).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)

    def fn(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return torch.sigmoid(m(x).float())[:, 0]
    return fn


def _bf16_weights(model: torch.nn.Module) -> Fn:
    """The model held in bf16 with channels_last, run eagerly (the project path without the trace)."""
    m = copy.deepcopy(model).eval().to(torch.bfloat16).to(memory_format=torch.channels_last)

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.sigmoid(m(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float())[:, 0]
    return fn


def _compiled(model: torch.nn.Module, bf16: bool) -> tuple[Fn, float]:
    """torch.compile (inductor) of the channels_last model; returns (fn, compile seconds)."""
    m = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    cm = torch.compile(m, dynamic=False)

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return torch.sigmoid(cm(x).float())[:, 0]
    t = time.perf_counter()
    fn(torch.zeros(1, 3, model.inference_img_size, model.inference_img_size))
    return fn, time.perf_counter() - t


def _predictor_fn(pred: Predictor) -> Fn:
    return lambda x: torch.from_numpy(pred._forward(x))  # noqa: SLF001 - exactly the Predictor's model call


def batch_of(images: list[np.ndarray], model: Any) -> torch.Tensor:
    """RGB uint8 images -> normalised (N, 3, S, S) float32, the Predictor's preprocessing."""
    s = model.inference_img_size
    return torch.from_numpy(np.stack([normalize(resize_rgb(im, s), model.preprocess_mean, model.preprocess_std)
                                      for im in images]))


def agreement(fn: Fn, ref: np.ndarray, x: torch.Tensor, threshold: float) -> dict[str, float]:
    """Per-image Dice of ``fn``'s masks against reference probabilities ``ref`` (batch 1 each)."""
    probs = np.concatenate([fn(x[i:i + 1]).float().numpy() for i in range(len(x))])
    d = [dice(p >= threshold, r >= threshold) for p, r in zip(probs, ref)]
    return {"dice_mean": float(np.mean(d)), "dice_min": float(np.min(d)),
            "max_prob_diff": float(np.abs(probs - ref).max())}


def forward_section(settings: Settings) -> dict[str, Any]:
    """Section 1 (+ data for 2): every forward variant at batch 1, timed and checked against fp32."""
    model = load_model(settings.weights)
    images, source = real_images(settings, settings.iters(20, 4))
    x = batch_of(images, model)
    x1 = x[:1].clone()
    t = model.inference_threshold
    base = Predictor(model, fast=False)
    folder = str(settings.weights)  # model.onnx and int8_calibration.json lie there
    ours = Predictor(copy.deepcopy(model), onnx_folder=folder)  # the project's default path
    candidates: list[tuple[str, Fn, dict[str, Any]]] = [
        ("fp32 eager NCHW (baseline, research code)", _predictor_fn(base), {}),
        ("fp32 eager channels_last", _eager(model, True, False), {}),
    ]
    bf16 = cpu_bf16_supported()
    if bf16:
        candidates.append(("bf16 autocast + channels_last", _eager(model, True, True), {}))
        candidates.append(("bf16 weights + channels_last, eager", _bf16_weights(model), {}))
    try:
        onnx = Predictor(copy.deepcopy(model), backend="onnx")
        candidates.append(("ONNX Runtime fp32 (--backend onnx)", _predictor_fn(onnx), {}))
    except Exception as e:  # noqa: BLE001 - onnxruntime missing or failing: reported, not fatal
        candidates.append(("ONNX Runtime fp32 (--backend onnx)", None, {"skipped": f"{type(e).__name__}: {e}"}))
    if settings.compile and not settings.quick:
        variants = [("torch.compile fp32 channels_last", False)] + (
            [("torch.compile bf16 autocast channels_last", True)] if bf16 else [])
        for name, use_bf16 in variants:
            try:
                fn, secs = _compiled(model, use_bf16)
                candidates.append((name, fn, {"compile_s": secs}))
            except Exception as e:  # noqa: BLE001 - no compiler / inductor failure
                candidates.append((name, None, {"skipped": f"{type(e).__name__}: {str(e)[:120]}"}))
    else:
        candidates.append(("torch.compile", None, {"skipped": "not run with --quick (compiles for minutes)"}))
    for name, runner in fallbacks(model, ours, folder, settings.quick):
        other = Predictor(copy.deepcopy(model), fast=False)
        other.runner = runner
        candidates.append((name, _predictor_fn(other), {}))
    if ours.int8:  # the step the int8 convolutions add, on the same path
        no_int8 = Predictor(copy.deepcopy(model), int8=False, onnx_folder=folder)
        candidates.append((f"{describe(no_int8)} (--no-int8)", _predictor_fn(no_int8), {}))
    candidates.append((f"project Predictor default ({describe(ours)})", _predictor_fn(ours), {"ours": True}))

    ref = np.concatenate([_predictor_fn(base)(x[i:i + 1]).numpy() for i in range(len(x))])
    timed = time_interleaved({name: (lambda fn=fn: fn(x1)) for name, fn, _ in candidates if fn is not None},
                             settings.iters(40, 2), warmup=settings.iters(5, 1))
    rows = []
    for name, fn, extra in candidates:
        row: dict[str, Any] = {"variant": name, **extra}
        if fn is not None:
            row.update(timed[name])
            row.update(agreement(fn, ref, x, t))
        rows.append(row)
    for row in rows:  # baseline first: paired per-round ratios to it
        if "median_ms" in row:
            row["speedup"] = row["paired_speedup"]
    return {"rows": rows, "images": source, "threshold": t, "ours": describe(ours), "model": model}


def fallbacks(model: torch.nn.Module, ours: Predictor, folder: str | None = None,
              quick: bool = False) -> list[tuple[str, Any]]:
    """The other CPU paths beside the default, as (name, runner) pairs: where the default is
    OpenVINO, the paths without it (LESIONSEG_OPENVINO=0: the bf16 trace where bf16 is native, else
    ONNX Runtime fp32); where it is not (LESIONSEG_OPENVINO=0) and openvino is installed, the
    OpenVINO path (int8 from ``folder``'s calibration; not in quick runs); and the frozen fp32 trace
    (no onnxruntime either)."""
    size = int(model.inference_img_size)
    out: list[tuple[str, Any]] = []
    if not quick and not isinstance(ours.runner, OpenVinoRunner) and openvino_available():
        runner = OpenVinoRunner(copy.deepcopy(model), size, folder)
        label = "int8 decoder 3x3 convolutions below its coarsest stage" if runner.int8_convs else "fp32"
        out.append((f"OpenVINO fp32, {label} (the default with openvino)", runner))
    if isinstance(ours.runner, OpenVinoRunner):
        if cpu_bf16_supported():
            name = "fp32 encoder + bf16 weights + channels_last, TorchScript-frozen (LESIONSEG_OPENVINO=0)"
            out.append((name, FrozenBF16Runner(copy.deepcopy(model), size)))
        else:
            out.append(("ONNX Runtime fp32 (LESIONSEG_OPENVINO=0)", OnnxFp32Runner(copy.deepcopy(model), size)))
    if isinstance(ours.runner, (OpenVinoRunner, OnnxFp32Runner)):
        out.append(("fp32 + channels_last, TorchScript-frozen", FrozenFp32Runner(copy.deepcopy(model), size)))
    return out


def describe(pred: Predictor) -> str:
    """Short name of a Predictor's execution path."""
    if pred.backend == "onnx":
        return "ONNX Runtime fp32"
    if not pred.fast:
        return "fp32 eager"
    if isinstance(pred.runner, OpenVinoRunner):
        if pred.runner.name.startswith("onnx") or pred.runner.name.startswith("fp32"):
            return f"{pred.runner.name} (OpenVINO failed)"
        return ("OpenVINO fp32, int8 decoder 3x3 convolutions below its coarsest stage" if pred.int8
                else "OpenVINO fp32")
    if pred.int8:
        return "bf16 weights + channels_last + int8 convolutions below full resolution, TorchScript-frozen"
    if isinstance(pred.runner, OnnxFp32Runner):
        return "ONNX Runtime fp32" if pred.runner.name.startswith("onnx") else \
            "fp32 + channels_last, TorchScript-frozen (ONNX Runtime failed)"
    if isinstance(pred.runner, FrozenBF16Runner):
        encoder = "fp32 encoder + " if pred.runner.fp32_encoder else ""
        return f"{encoder}bf16 weights + channels_last, TorchScript-frozen"
    return "fp32 + channels_last, TorchScript-frozen"


def peak_section(settings: Settings, fwd: dict[str, Any]) -> dict[str, Any]:
    """Section 2: model FLOPs vs sustained matmul GFLOP/s -> share of peak reached by the forward."""
    model = fwd["model"]
    s = model.inference_img_size
    flops = count_flops(copy.deepcopy(model).eval(), torch.zeros(1, 3, s, s))
    secs = 0.3 if settings.quick else 2.0
    peaks = {"fp32": matmul_peak(torch.float32, secs)}
    if fwd["ours"].startswith("bf16") or any(r["variant"].startswith("bf16") for r in fwd["rows"]):
        peaks["bf16"] = matmul_peak(torch.bfloat16, secs)
    rows = []
    for r in fwd["rows"]:
        if "median_ms" not in r:
            continue
        gflops = flops / (r["median_ms"] / 1e3) / 1e9
        kind = "bf16" if "bf16" in r["variant"] and "bf16" in peaks else "fp32"
        rows.append({"variant": r["variant"], "gflops": gflops, "peak_kind": kind,
                     "share": gflops / peaks[kind], "share_fp32": gflops / peaks["fp32"]})
    return {"flops": flops, "peaks": peaks, "rows": rows, "matmul_n": 2048}


def _peer_models() -> tuple[list[tuple[str, torch.nn.Module]], list[str]]:
    """smp Unet(resnet34) and MONAI AttentionUnet with random weights, where installed."""
    from .peers import monai_attention_unet, smp_unet_resnet34

    models, missing = [], []
    for name, make in (("smp Unet(resnet34)", smp_unet_resnet34), ("MONAI AttentionUnet", monai_attention_unet)):
        try:
            models.append((name, make()))
        except Exception as e:  # noqa: BLE001 - optional benchmark dependency
            missing.append(f"{name}: {type(e).__name__}: {str(e)[:160]}")
    return models, missing


def peers_section(settings: Settings, fwd: dict[str, Any]) -> dict[str, Any]:
    """Section 3: params, GFLOPs and latency of peers and ours, fp32 eager and bf16 + channels_last."""
    torch.manual_seed(0)
    ours = fwd["model"]
    s = ours.inference_img_size
    x = torch.randn(1, 3, s, s)
    models, missing = _peer_models()
    rows = []
    bf16 = cpu_bf16_supported()
    fns = {}
    for name, m in [("DS-AttentionUNet (ours)", ours)] + models:
        m = m.eval()
        rows.append({"model": name, "params": params(m), "gflops": count_flops(m, x) / 1e9})
        fns[(name, "fp32_ms")] = lambda fn=_eager(m, False, False): fn(x)
        if bf16:
            fns[(name, "bf16_cl_ms")] = lambda fn=_eager(m, True, True): fn(x)
    timed = time_interleaved(fns, settings.iters(20, 1), warmup=settings.iters(3, 1))
    for row in rows:
        for (name, key), r in timed.items():
            if name == row["model"]:
                row[key] = r["median_ms"]
    ours_row = next((r for r in fwd["rows"] if r.get("ours")), None)
    if ours_row:
        rows[0]["project_path_ms"] = ours_row["median_ms"]
    return {"rows": rows, "missing": missing}


# calls of each path back to back per round in section 1c (see common.time_interleaved)
PHOTO_BLOCK = 5


def photo_1024(settings: Settings) -> tuple[np.ndarray, str]:
    """The photo of section 1c: the first ISIC image upscaled to 1024x768 (RGB uint8), and its source."""
    import cv2  # noqa: PLC0415

    images, source = real_images(settings, 1)
    return cv2.resize(images[0], (1024, 768), interpolation=cv2.INTER_CUBIC), source


def time_photo(model: torch.nn.Module, rgb: np.ndarray, settings: Settings, with_frozen: bool = False,
               folder: str | None = None) -> tuple[dict, dict[str, float], Predictor]:
    """``Predictor.predict(rgb).mask`` of ``model`` with ``fast=False`` ("exact") and on the default
    path ("ours"), round-robin, exact first (so each paired speedup is exact / that path per round);
    ``with_frozen``: the paths of :func:`fallbacks` too (named as there). ``folder``: the weights folder
    (model.onnx, int8_calibration.json). Returns the timings, each path's mask Dice against exact,
    and the default Predictor."""
    exact, ours = Predictor(model, fast=False), Predictor(copy.deepcopy(model), onnx_folder=folder)
    paths = {"exact": exact, "ours": ours}
    for name, runner in (fallbacks(model, ours, folder, settings.quick) if with_frozen else []):
        paths[name] = Predictor(copy.deepcopy(model), fast=False)
        paths[name].runner = runner
    calls = {k: (lambda p=p: p.predict(rgb).mask) for k, p in paths.items()}
    timed = time_interleaved(calls, settings.iters(40, 2), warmup=settings.iters(5, 1), block=PHOTO_BLOCK)
    # the same pair one call at a time: each default call then follows an exact one directly
    alternating = time_interleaved({k: calls[k] for k in ("exact", "ours")}, settings.iters(40, 2))
    timed["ours"]["alternating_speedup"] = alternating["ours"]["paired_speedup"]
    ref = exact.predict(rgb).mask
    return timed, {k: dice(ref, p.predict(rgb).mask) for k, p in paths.items() if k != "exact"}, ours


def photo_section(settings: Settings) -> dict[str, Any]:
    """Section 1c: one 1024x768 photo (an ISIC image upscaled) through ``Predictor.predict`` and its
    full-size mask, the default path against ``fast=False`` in the same process, round-robin.

    What a user of the Python API waits for per photo: resizing, normalising, the model, the
    clean-up and the mask at the photo's size."""
    rgb, source = photo_1024(settings)
    timed, agree, ours = time_photo(load_model(settings.weights), rgb, settings, with_frozen=True,
                                    folder=str(settings.weights))
    rows = [{"variant": "Predictor(fast=False): exact fp32, eager", **timed["exact"]},
            {"variant": f"Predictor default ({describe(ours)})", **timed["ours"], "ours": True, "dice": agree["ours"]}]
    rows += [{"variant": name, **timed[name], "dice": agree[name]} for name in timed if name not in ("exact", "ours")]
    return {"rows": rows, "speedup": timed["ours"]["paired_speedup"], "image": source, "block": PHOTO_BLOCK,
            "alternating_speedup": timed["ours"]["alternating_speedup"]}
