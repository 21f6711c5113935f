"""Section 7: the suite on a GPU, when one is visible.

    python -m benchmarks.gpu --output benchmarks/results_gpu.json

Inference: the shipped model and the two peers at batch 1 and 64, fp32 eager (NCHW) against bf16
autocast + channels_last, timed with CUDA synchronisation, peak GPU memory per batch; masks of
the bf16 path against fp32 on real images (Dice). Training: one optimiser step of the recipe
(deep-supervision bce_dice, clipping, AdamW) at batch 8 (the recipe's) and 64, fp32 against bf16.
Whole-epoch times on the real data come from the training runs (``benchmarks.peer_training``,
recorded in ``peer_accuracy.json``); ``report.py`` shows both, and on a machine without a GPU it
renders the last recorded file with its date. Here, without a GPU, it records why it measured nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .common import DEFAULT_DATA, DEFAULT_WEIGHTS, Settings, dice, real_images, time_fn

NO_GPU = ("No GPU was available in this run (torch.cuda.is_available() is False); no GPU figures were "
          "measured.")


def _sync(fn: Callable[[], Any], device: str) -> Callable[[], None]:
    def run() -> None:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    return run


def _forward_rows(name: str, model: torch.nn.Module, size: int, settings: Settings,
                  device: str) -> list[dict[str, Any]]:
    rows = []
    size = 64 if settings.quick else size  # --quick: a smoke run of the same code
    for batch in (1, 64) if not settings.quick else (1,):
        x = torch.randn(batch, 3, size, size, device=device)
        for variant, dtype, cl in (("fp32 eager NCHW", None, False), ("bf16 autocast + channels_last", torch.bfloat16, True)):
            m = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            xi = x.contiguous(memory_format=torch.channels_last) if cl else x

            def fwd() -> None:
                with torch.inference_mode(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
                    m(xi)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            r = time_fn(_sync(fwd, device), settings.iters(30 if batch > 1 else 100, 1), warmup=settings.iters(5, 1))
            rows.append({"model": name, "batch": batch, "variant": variant, **r,
                         "images_per_s": batch / (r["median_ms"] / 1e3),
                         "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None})
    return rows


def _agreement(model: torch.nn.Module, settings: Settings, device: str) -> dict[str, Any]:
    from .forward import batch_of

    images, source = real_images(settings, settings.iters(64, 4))
    x = batch_of(images, model).to(device)
    t = float(getattr(model, "inference_threshold", 0.5))
    with torch.inference_mode():
        ref = torch.sigmoid(model.to(memory_format=torch.contiguous_format)(x)).float().cpu().numpy()[:, 0]
        with torch.autocast(device, dtype=torch.bfloat16):
            m = model.to(memory_format=torch.channels_last)
            fast = torch.sigmoid(m(x.contiguous(memory_format=torch.channels_last))).float().cpu().numpy()[:, 0]
    d = [dice(f >= t, r >= t) for f, r in zip(fast, ref)]
    return {"images": source, "threshold": t, "dice_mean": float(np.mean(d)), "dice_min": float(np.min(d))}


def _train_rows(settings: Settings, device: str) -> list[dict[str, Any]]:
    from .training import step_fn, trained_model

    template, what = trained_model(settings.weights)
    rows = []
    size = 256 if not settings.quick else 64  # --quick: a smoke run of the same code
    for batch in (8, 64) if not settings.quick else (2,):
        x = torch.randn(batch, 3, size, size, device=device)
        y = (torch.rand(batch, 1, size, size, device=device) > 0.7).float()
        for variant, bf16, cl in (("fp32 eager NCHW", False, False), ("bf16 autocast + channels_last", True, True)):
            step = step_fn(template, cl, bf16, x, y)
            r = time_fn(_sync(step, device), settings.iters(30, 1), warmup=settings.iters(3, 1))
            rows.append({"batch": batch, "variant": variant, "model": what, **r,
                         "images_per_s": batch / (r["median_ms"] / 1e3),
                         "epoch_s_1600": 1600 / (batch / (r["median_ms"] / 1e3))})
    return rows


def gpu_section(settings: Settings, device: str = "cuda") -> dict[str, Any]:
    """Forward, agreement, peers and training steps on CUDA; ``{"available": False, ...}`` without one.
    ``device="cpu"`` runs the same code on the CPU (the CI check that it works)."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"available": False, "note": NO_GPU}
    from lesionseg.inference import load_model

    from .peers import monai_attention_unet, smp_unet_resnet34

    torch.backends.cudnn.benchmark = True
    ours = load_model(settings.weights, device=device).eval()
    rows = _forward_rows("DS-AttentionUNet (ours)", ours, ours.inference_img_size, settings, device)
    out: dict[str, Any] = {"available": True, "torch": torch.__version__, "cuda": torch.version.cuda,
                           "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                           "agreement": _agreement(ours, settings, device), "missing": []}
    for name, make in (("smp Unet(resnet34)", smp_unet_resnet34), ("MONAI AttentionUnet", monai_attention_unet)):
        try:
            rows += _forward_rows(name, make().to(device).eval(), ours.inference_img_size, settings, device)
        except ImportError as e:
            out["missing"].append(f"{name}: {e}")
    out["rows"] = rows
    out["train_rows"] = _train_rows(settings, device)
    return out


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    from .common import machine_info

    settings = Settings(quick=args.quick, weights=args.weights, data=args.data, compile=False)
    res = {"machine": machine_info(settings), "gpu": gpu_section(settings)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"gpu section -> {args.output} (available: {res['gpu']['available']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
