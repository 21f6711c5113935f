"""The training loop, top to bottom: data, model, optimiser, epochs, checkpoints, threshold tuning."""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.dataset import LesionDataset
from ..data.pairing import DataError, collect_pairs, resolve_data_dir
from ..data.split import load_split, make_split, save_split
from ..data.transforms import train_transform
from ..losses import get_loss, supervised_loss
from ..metrics import aggregate, choose_threshold, confusion, image_metrics, operating_points
from ..models import DSAttentionUNet
from ..utils.atomic import atomic_write_text
from .checkpoint import find_checkpoint, load_last, save_best, save_last, set_rng_state
from .config import TrainConfig
from .plots import plot_history, save_epoch_samples

log = logging.getLogger(__name__)
DEBUG_PAIRS = 48


@dataclass
class RunResult:
    run_dir: Path
    best_model_dir: Path
    best_score: float
    epochs_done: int
    history: list[dict[str, Any]]
    split: dict[str, list[str]]
    threshold: float
    operating_points: list[dict[str, float]]
    wall_seconds: float


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 on CPUs that support it and on recent GPUs; fp16 (with a scaler) on older GPUs."""
    if not amp:
        return None
    if device.type == "cpu":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _resolve_pairs(cfg: TrainConfig):
    if cfg.images and cfg.masks:
        images, masks = Path(cfg.images), Path(cfg.masks)
    elif cfg.data_dir:
        images, masks = resolve_data_dir(cfg.data_dir)
    else:
        raise DataError("no data given: pass --images DIR --masks DIR, or --data-dir DIR")
    return collect_pairs(images, masks, cfg.mask_suffix)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, loader: DataLoader, device: torch.device, dtype: torch.dtype | None,
                  channels_last: bool) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Probabilities (S, S) float32, masks (S, S) uint8 and ids for every item of ``loader``."""
    model.eval()
    probs, masks, ids = [], [], []
    for x, y, batch_ids in loader:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        p = torch.sigmoid(logits.float()).cpu().numpy()[:, 0]
        probs += list(p)
        masks += list(y.numpy()[:, 0].astype(np.uint8))
        ids += list(batch_ids)
    return probs, masks, ids


def validation_metrics(probs: list[np.ndarray], masks: list[np.ndarray], threshold: float = 0.5) -> dict[str, float]:
    rows, pooled = [], np.zeros(4, dtype=np.int64)
    for p, m in zip(probs, masks):
        pred = p >= threshold
        rows.append(image_metrics(pred, m))
        pooled += confusion(pred, m)
    return aggregate(rows, tuple(int(v) for v in pooled))


RESUME_OVERRIDES = ("epochs", "device", "workers", "push_to_hub", "max_steps_per_epoch")


def resume_config(path: str | Path, overrides: dict[str, Any], state: dict[str, Any] | None = None) -> TrainConfig:
    """The checkpoint's own settings, with only ``RESUME_OVERRIDES`` taken from ``overrides``
    (None = keep), continuing in the checkpoint's run folder wherever the command is run from."""
    state = state or load_last(path)
    values = {k: v for k, v in state["config"].items() if not k.startswith("_")}
    values.update({k: v for k, v in overrides.items() if k in RESUME_OVERRIDES and v is not None})
    run_dir = find_checkpoint(path).resolve().parent.parent
    values.update(output_dir=str(run_dir.parent), run_name=run_dir.name, resume=str(path))
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def fit(cfg: TrainConfig) -> RunResult:
    """Train DS-AttentionUNet as ``cfg`` says and return where everything was written."""
    t_start = time.time()
    resume_state = load_last(cfg.resume) if cfg.resume else None
    if resume_state is not None:
        # the run continues in its own folder with its own settings; only the epoch count may grow
        cfg = resume_config(cfg.resume, {"epochs": cfg.epochs, "push_to_hub": cfg.push_to_hub}, resume_state)
    # absolute data paths in the saved config let --resume work from any folder
    for key in ("images", "masks", "data_dir", "split_file"):
        if getattr(cfg, key):
            setattr(cfg, key, str(Path(getattr(cfg, key)).resolve()))
    _seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    dtype = autocast_dtype(device, cfg.amp)
    channels_last = cfg.channels_last and device.type != "mps"

    # ---- output folders, laid out as the research code did ----
    run_name = cfg.run_name or f"unet_isic_{datetime.now():%Y%m%d_%H%M%S}"
    cfg.run_name = run_name
    run_dir = Path(cfg.output_dir) / run_name
    models_dir, logs_dir, vis_dir = run_dir / "models", run_dir / "logs", run_dir / "visualizations"
    for d in (models_dir, logs_dir, vis_dir / "epochs"):
        d.mkdir(parents=True, exist_ok=True)

    # ---- data: pair, split, load ----
    pairs = _resolve_pairs(cfg)
    if cfg.debug or cfg.limit:
        pairs = pairs[: cfg.limit or DEBUG_PAIRS]
    by_id = {p.id: p for p in pairs}
    if resume_state is not None:
        split = resume_state["config"]["_split"]
    elif cfg.split_file:
        split = load_split(cfg.split_file, list(by_id))
    else:
        split = make_split(list(by_id), cfg.val_fraction, cfg.test_fraction, cfg.seed)
    save_split(split, run_dir / "split.json")
    for name, ids in split.items():
        atomic_write_text(run_dir / f"{name}_ids.txt", "".join(f"{i}\n" for i in ids))
    model_kwargs = {"inference_img_size": cfg.img_size, **cfg.model}
    model = DSAttentionUNet(**model_kwargs)
    mean, std = model.preprocess_mean, model.preprocess_std
    log.info("data: %d train / %d val / %d test pairs; decoding at %d px", len(split["train"]),
             len(split["val"]), len(split["test"]), cfg.img_size)
    train_ds = LesionDataset([by_id[i] for i in split["train"]], cfg.img_size,
                             train_transform(cfg.img_size, cfg.augment), mean, std)
    val_ds = LesionDataset([by_id[i] for i in split["val"] or split["train"][:8]], cfg.img_size, None, mean, std)
    loader_gen = torch.Generator()
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_ds) > cfg.batch_size,
                              num_workers=cfg.workers, generator=loader_gen, persistent_workers=cfg.workers > 0)
    val_loader = DataLoader(val_ds, batch_size=max(cfg.batch_size, 16), shuffle=False, num_workers=0)

    # ---- model, optimiser, schedule ----
    model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    log.info("model: DSAttentionUNet, %.2f M parameters, device %s, autocast %s", model.num_parameters() / 1e6,
             device, dtype)
    loss_fn = get_loss(cfg.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_loader) if cfg.max_steps_per_epoch is None else min(len(train_loader), cfg.max_steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, epochs=cfg.epochs,
                                                    steps_per_epoch=steps_per_epoch, pct_start=0.15)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    start_epoch, best_score, history = 0, -1.0, []
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if resume_state["scheduler"]["total_steps"] != scheduler.total_steps:
            # more epochs than the run was planned with: keep the optimiser state, rebuild the schedule
            log.warning("resuming with --epochs %d (was %d): learning-rate schedule restarted over the remaining steps",
                        cfg.epochs, resume_state["config"]["epochs"])
        else:
            scheduler.load_state_dict(resume_state["scheduler"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        start_epoch, best_score, history = resume_state["epoch"], resume_state["best_score"], resume_state["history"]
        set_rng_state(resume_state["rng"])
        log.info("resumed from %s at epoch %d (best val Dice %.4f)", cfg.resume, start_epoch, best_score)
    saved_cfg = {**cfg.to_dict(), "_split": split}
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump({k: v for k, v in saved_cfg.items() if k != "_split"}, sort_keys=False))

    # ---- epochs ----
    batch_log = open(logs_dir / "detailed_metrics.jsonl", "a")
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.time()
        # a per-epoch seed makes an epoch's shuffling and augmentation identical whether or not
        # the run was interrupted and resumed before it
        epoch_seed = cfg.seed * 1000 + epoch
        loader_gen.manual_seed(epoch_seed)
        torch.manual_seed(epoch_seed)
        train_ds.transform.set_random_seed(epoch_seed)
        model.train()
        running, n_seen = 0.0, 0
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   dynamic_ncols=True, mininterval=2.0)
        for step, (x, y, _) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                outputs = model(x)
            loss = supervised_loss(outputs, y, loss_fn, cfg.deep_supervision_decay)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            with torch.no_grad():
                final = outputs[0] if isinstance(outputs, tuple) else outputs
                pred = (final.float() > 0).float()
                inter = (pred * y).flatten(1).sum(1)
                denom = pred.flatten(1).sum(1) + y.flatten(1).sum(1)
                batch_dice = torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom)).mean().item()
            running += loss.item() * len(x)
            n_seen += len(x)
            bar.set_postfix(loss=f"{loss.item():.3f}", dice=f"{batch_dice:.3f}")
            batch_log.write(json.dumps({"epoch": epoch + 1, "step": step + 1, "loss": round(loss.item(), 5),
                                        "dice": round(batch_dice, 5), "lr": scheduler.get_last_lr()[0]}) + "\n")
        batch_log.flush()

        probs, masks, val_ids = predict_probs(model, val_loader, device, dtype, channels_last)
        val = validation_metrics(probs, masks)
        row = {"epoch": epoch + 1, "train_loss": running / max(n_seen, 1), "val_dice": val["dice_mean"],
               "val_iou": val["iou_mean"], "val_recall": val["recall_mean"], "val_precision": val["precision_mean"],
               "val_thresholded_jaccard": val["thresholded_jaccard"], "val_failure_rate": val["failure_rate"],
               "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - t_epoch, 1)}
        history.append(row)
        with open(logs_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        improved = val["dice_mean"] > best_score
        if improved:
            best_score = val["dice_mean"]
            save_best(models_dir / "best_model", model)
        save_last(models_dir / "last_checkpoint.pth", model, optimizer, scheduler, scaler, epoch + 1, best_score,
                  history, saved_cfg)
        log.info("epoch %d/%d  loss %.4f  val Dice %.4f IoU %.4f recall %.4f  (%.0fs)%s", epoch + 1, cfg.epochs,
                 row["train_loss"], row["val_dice"], row["val_iou"], row["val_recall"], row["seconds"],
                 "  * best" if improved else "")
        plot_history(history, vis_dir / "metrics_history.png")
        val_images = [val_ds.images[i] for i in range(min(cfg.sample_images, len(val_ds)))]
        save_epoch_samples(val_images, masks[: len(val_images)], probs[: len(val_images)],
                           vis_dir / "epochs" / f"epoch_{epoch + 1:03d}.png")
    batch_log.close()

    # ---- operating points: tune the threshold for recall on the validation part ----
    best = DSAttentionUNet.from_pretrained(models_dir / "best_model").to(device)
    if channels_last:
        best = best.to(memory_format=torch.channels_last)
    probs, masks, _ = predict_probs(best, val_loader, device, dtype, channels_last)
    points = operating_points(probs, masks)
    chosen = choose_threshold(points, cfg.recall_target)
    log.info("threshold %.2f: val recall %.4f precision %.4f (recall target %.2f)", chosen["threshold"],
             chosen["recall"], chosen["precision"], cfg.recall_target)
    tuned = DSAttentionUNet(**{**model_kwargs, "inference_threshold": chosen["threshold"],
                               "inference_operating_points": points})
    tuned.load_state_dict(best.float().cpu().state_dict())
    save_best(models_dir / "best_model", tuned)
    atomic_write_text(logs_dir / "operating_points.json",
                      json.dumps({"recall_target": cfg.recall_target, "chosen": chosen, "points": points}, indent=1))
    wall = time.time() - t_start
    return RunResult(run_dir, models_dir / "best_model", best_score, cfg.epochs, history, split,
                     chosen["threshold"], points, wall)
