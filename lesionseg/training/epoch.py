"""One training epoch and the validation pass, as :func:`lesionseg.training.loop.fit` runs them.

Both work the same in one process and under torchrun: training steps go through the
DistributedDataParallel wrapper (gradients averaged over processes); validation predicts this
process's contiguous shard of the validation set and gathers per-image rows, so the metrics are
those of the whole set, in its order, as a single process computes them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..losses import supervised_loss
from ..metrics import aggregate, confusion, image_metrics
from .distributed import Distributed


def use_channels_last(requested: bool, device: torch.device, dtype: torch.dtype | None) -> bool:
    """channels_last speeds up fp32 CPU and CUDA convolutions, but PyTorch's CPU GroupNorm backward is
    much slower on channels_last bf16 tensors than on NCHW ones, so bf16 training on the CPU stays NCHW
    (the benchmarks' training section compares the two). MPS lacks some kernels for it."""
    return requested and device.type != "mps" and not (device.type == "cpu" and dtype == torch.bfloat16)


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed."""

    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = fp32
    channels_last: bool

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def make_optimisation(model: torch.nn.Module, lr: float, weight_decay: float, epochs: int, n_batches: int,
                      max_steps: int | None, dtype: torch.dtype | None,
                      encoder_lr_scale: float = 1.0) -> tuple[Any, Any, Any, int]:
    """The recipe's optimisation: AdamW, OneCycleLR over all steps (15% warm-up) and a loss scaler
    for fp16 autocast (None otherwise); returns (optimizer, scheduler, scaler, steps per epoch).

    ``encoder_lr_scale`` != 1 gives ``model.encoder``'s parameters their own group at that fraction
    of ``lr`` (discriminative fine-tuning: a pretrained encoder moved less keeps more of what it
    learnt on ImageNet)."""
    steps = n_batches if max_steps is None else min(n_batches, max_steps)
    groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    max_lr: float | list[float] = lr
    if encoder_lr_scale != 1.0:
        encoder_ids = {id(p) for p in model.encoder.parameters()}
        groups = [{"params": [p for p in model.parameters() if id(p) in encoder_ids]},
                  {"params": [p for p in model.parameters() if id(p) not in encoder_ids]}]
        max_lr = [lr * encoder_lr_scale, lr]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps,
                                                    pct_start=0.15)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return optimizer, scheduler, scaler, steps


def train_epoch(model: torch.nn.Module, loader: DataLoader, steps: int, optimizer: torch.optim.Optimizer,
                scheduler: Any, scaler: Any, loss_fn: Callable, ds_decay: float, grad_clip: float, rt: Runtime,
                desc: str, batch_log: IO[str] | None, epoch: int,
                after_step: Callable[[], None] | None = None) -> tuple[float, int]:
    """At most ``steps`` optimiser steps; returns (sum of loss x batch size, images) of this process.

    ``model`` may be the DDP wrapper; ``batch_log`` (rank 0 only) gets one JSON line per step with
    this process's batch loss and Dice. The progress bar is shown where ``batch_log`` is given.
    ``after_step`` runs after every optimiser step (the weight average's update).
    """
    model.train()
    running, n_seen = 0.0, 0
    bar = tqdm(loader, total=steps, desc=desc, leave=False, dynamic_ncols=True, mininterval=2.0,
               disable=batch_log is None)
    for step, (x, y, _) in enumerate(bar):
        if step >= steps:
            break
        x, y = rt.to_input(x), y.to(rt.device, non_blocking=True)
        with rt.autocast():
            outputs = model(x)
        loss = supervised_loss(outputs, y, loss_fn, ds_decay)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step()
        running += loss.item() * len(x)
        n_seen += len(x)
        if batch_log is not None:
            with torch.no_grad():
                final = outputs[0] if isinstance(outputs, tuple) else outputs
                pred = (final.float() > 0).float()
                inter = (pred * y).flatten(1).sum(1)
                denom = pred.flatten(1).sum(1) + y.flatten(1).sum(1)
                batch_dice = torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom)).mean().item()
            bar.set_postfix(loss=f"{loss.item():.3f}", dice=f"{batch_dice:.3f}")
            batch_log.write(json.dumps({"epoch": epoch, "step": step + 1, "loss": round(loss.item(), 5),
                                        "dice": round(batch_dice, 5), "lr": scheduler.get_last_lr()[-1]}) + "\n")
            # flushed every step so the log can be followed live (and shows how far a killed run got)
            batch_log.flush()
    return running, n_seen


@torch.no_grad()
def predict_probs(model: torch.nn.Module, loader: DataLoader, device: torch.device, dtype: torch.dtype | None,
                  channels_last: bool) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Probabilities (S, S) float32, masks (S, S) uint8 and ids for every item of ``loader``."""
    rt = Runtime(device, dtype, channels_last)
    model.eval()
    probs, masks, ids = [], [], []
    for x, y, batch_ids in loader:
        with rt.autocast():
            logits = model(rt.to_input(x))
        p = torch.sigmoid(logits.float()).cpu().numpy()[:, 0]
        probs += list(p)
        masks += list(y.numpy()[:, 0].astype(np.uint8))
        ids += list(batch_ids)
    return probs, masks, ids


def image_rows(probs: list[np.ndarray], masks: list[np.ndarray], threshold: float = 0.5) -> tuple[list[dict], np.ndarray]:
    """Per-image metric rows and the pooled confusion counts (tp, fp, fn, tn as :func:`confusion`)."""
    rows, pooled = [], np.zeros(4, dtype=np.int64)
    for p, m in zip(probs, masks):
        pred = p >= threshold
        rows.append(image_metrics(pred, m))
        pooled += confusion(pred, m)
    return rows, pooled


def validation_metrics(probs: list[np.ndarray], masks: list[np.ndarray], threshold: float = 0.5) -> dict[str, float]:
    rows, pooled = image_rows(probs, masks, threshold)
    return aggregate(rows, tuple(int(v) for v in pooled))


def validate(model: torch.nn.Module, shard_loader: DataLoader, rt: Runtime,
             ctx: Distributed) -> tuple[dict[str, float], list[np.ndarray], list[np.ndarray]]:
    """Metrics of the whole validation set at 0.5, and this process's (probs, masks).

    ``shard_loader`` holds this process's contiguous shard (:meth:`Distributed.shard`); the rows
    of all shards are gathered in rank order, i.e. in the validation set's own order.
    """
    probs, masks, _ = predict_probs(model, shard_loader, rt.device, rt.dtype, rt.channels_last)
    rows, pooled = image_rows(probs, masks)
    if ctx.enabled:
        parts = ctx.all_gather((rows, pooled))
        rows = [r for part_rows, _ in parts for r in part_rows]
        pooled = sum((part_pooled for _, part_pooled in parts), np.zeros(4, dtype=np.int64))
    return aggregate(rows, tuple(int(v) for v in pooled)), probs, masks


def seed_epoch(epoch_seed: int, loader_gen: torch.Generator, dataset: Any) -> None:
    """Seed one epoch's shuffling (``loader_gen``), dropout (torch) and augmentation (the dataset's
    transform) from ``epoch_seed``, so an epoch is the same whether or not the run was resumed before it."""
    loader_gen.manual_seed(epoch_seed)
    torch.manual_seed(epoch_seed)
    if getattr(dataset, "transform", None) is not None:
        dataset.transform.set_random_seed(epoch_seed)
