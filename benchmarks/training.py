"""Section 6: training-step throughput at 256 px, batch 8, as the training loop runs a step.

One step = forward (deep supervision on), bce_dice loss over all heads, backward, gradient
clipping and an AdamW update: the body of :func:`lesionseg.training.loop.fit`'s inner loop, on
real ISIC images when present. Data loading and augmentation are excluded (the dataset decodes
once up front and augments per sample; that cost is the same for both paths). The model is the
weights folder's architecture (the shipped recipe's, fine-tuned from its weights: a step costs
the same as from ImageNet), or the default DSAttentionUNet where there is no weights folder.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lesionseg.losses import get_loss, supervised_loss
from lesionseg.inference import load_model
from lesionseg.models import DSAttentionUNet
from lesionseg.utils.cpu_isa import cpu_bf16_supported

from .common import Settings, real_images, time_interleaved
from .forward import batch_of

TRAIN_IMAGES = 1600  # 80 % of the 2,000 ISIC 2017 pairs: the recipe's training part
BATCH = 8


def trained_model(weights: Path) -> tuple[DSAttentionUNet, str]:
    """The model whose step is timed, and a description for the report."""
    if (weights / "config.json").is_file():
        model = load_model(weights)
        what = f"the architecture of {weights.name}/ ({getattr(model, 'encoder_name', 'unet')} encoder"
    else:
        torch.manual_seed(0)
        model, what = DSAttentionUNet(), "the default DSAttentionUNet (no weights folder; unet encoder"
    return model, f"{what}, {model.num_parameters() / 1e6:.2f} M parameters)"


def step_fn(template: DSAttentionUNet, channels_last: bool, bf16: bool, x: torch.Tensor, y: torch.Tensor) -> Any:
    """One training step of a copy of ``template`` on ``x``'s device, as the training loop runs it."""
    model = copy.deepcopy(template).to(x.device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = get_loss("bce_dice")

    def step() -> float:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = supervised_loss(out, y, loss_fn, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.item())
    return step


def _targets(images: list[np.ndarray], settings: Settings) -> torch.Tensor:
    """Ground-truth masks of the same images when the data is present, else dark-region masks."""
    from lesionseg.data.io import load_mask

    folder = settings.data / "masks"
    files = sorted(folder.glob("*_segmentation.png"))[:len(images)] if folder.is_dir() else []
    if len(files) == len(images):
        masks = [load_mask(f) for f in files]
    else:
        masks = [(im.mean(axis=2) < 120).astype(np.uint8) for im in images]
    return torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]


def training_section(settings: Settings) -> dict[str, Any]:
    """Median step time of fp32 eager NCHW vs the bf16 autocast variants; seconds per epoch."""
    batch = BATCH if not settings.quick else 2  # --quick: a smoke run of the same code
    images, source = real_images(settings, batch)
    ref, what = trained_model(settings.weights)
    x = batch_of(images, ref)
    y = _targets(images, settings)
    if y.shape[-1] != x.shape[-1]:
        y = torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="nearest")
    bf16 = cpu_bf16_supported()  # follows ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA, as training does
    variants = [("fp32 eager NCHW (baseline" + ("" if bf16 else "; the project default without native bf16") + ")",
                 False, False), ("fp32 channels_last", True, False)]
    if bf16:  # the project's CPU default last: bf16 autocast in NCHW (channels_last slows GroupNorm backward)
        variants += [("bf16 autocast + channels_last", True, True), ("bf16 autocast NCHW (project default)", False, True)]
    steps = {name: step_fn(ref, cl, use_bf16, x, y) for name, cl, use_bf16 in variants}
    timed = time_interleaved(steps, settings.iters(8, 1), warmup=settings.iters(2, 1))
    rows = []
    for name, r in timed.items():
        ips = batch / (r["median_ms"] / 1e3)
        rows.append({"variant": name, **r, "images_per_s": ips, "epoch_s": TRAIN_IMAGES / ips})
    for row in rows:  # baseline first: paired per-round ratios to it
        row["speedup"] = row["paired_speedup"]
    return {"rows": rows, "source": source, "batch": batch, "train_images": TRAIN_IMAGES, "model": what}
