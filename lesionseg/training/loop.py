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
from torch.utils.data import DataLoader, Subset

from ..data.dataset import LesionDataset, seed_worker
from ..data.pairing import collect_pairs, resolve_data_dir
from ..data.split import save_split
from ..data.transforms import train_transform
from ..models.encoders import default_encoder_weights
from ..losses import get_loss
from ..models import DSAttentionUNet
from ..utils.atomic import atomic_write_text
from ..utils.cpu_isa import cpu_bf16_supported
from ..utils.devices import resolve_device
from .averaging import WeightAverage
from .checkpoint import load_last, save_best, save_last, set_rng_state
from .config import TrainConfig
from .distributed import Distributed
from .epoch import (Runtime, make_optimisation, predict_probs, seed_epoch, train_epoch, use_channels_last, validate,
                    validation_metrics)
from .finetune import init_from_weights, weights_architecture
from .plots import plot_history, save_epoch_samples
from .resume import RESUME_OVERRIDES, resume_config, truncate_logs
from .run_data import pairs_and_split
from .thresholds import tune_threshold

log = logging.getLogger(__name__)
RANK_SEED_STRIDE = 100_003  # per-process augmentation / dropout seeds: epoch seed + stride x rank
EXTERNAL_COLUMNS = (("dice", "dice_mean"), ("iou", "iou_mean"), ("recall", "recall_mean"),
                    ("precision", "precision_mean"), ("thresholded_jaccard", "thresholded_jaccard"),
                    ("failure_rate", "failure_rate"))

__all__ = ["RunResult", "fit", "pick_device", "predict_probs", "resume_config", "validation_metrics"]


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
    """The training device for ``--device`` (the library's one resolver; ValueError when unavailable)."""
    return resolve_device(name)


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 on CPUs where it is native and on recent GPUs; fp16 (with a scaler) on older GPUs; None
    (fp32) elsewhere: on an AVX2 CPU bf16 is emulated, slower than fp32 (see lesionseg.utils.cpu_isa)."""
    if not amp:
        return None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_supported() else None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _init_encoder(model: DSAttentionUNet, setting: str | None) -> None:
    """ImageNet initialisation of a pretrained encoder (``setting``: None = the installed file,
    ``"none"`` = random, else a path); an encoder trained from scratch ignores it."""
    if model.encoder_name == "unet" or (setting or "").lower() == "none":
        return
    path = Path(setting) if setting else default_encoder_weights(model.encoder_name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: encoder weights file not found (--encoder-weights PATH, or none)")
    model.load_encoder_weights(path)
    log.info("encoder %s initialised from %s", model.encoder_name, path)


def fit(cfg: TrainConfig, ctx: Distributed | None = None) -> RunResult:
    """Train DS-AttentionUNet as ``cfg`` says and return where everything was written.

    ``ctx``: this process's place in a torchrun job (:func:`distributed.setup`); None trains in
    one process on ``cfg.device``. Under torchrun every process trains on its share of each
    epoch and rank 0 alone writes files, logs and tunes the threshold.
    """
    t_start = time.time()
    resume_state = load_last(cfg.resume) if cfg.resume else None
    if resume_state is not None:
        # the run continues in its own folder with its own settings; only RESUME_OVERRIDES may change
        cfg = resume_config(cfg.resume, {k: getattr(cfg, k) for k in RESUME_OVERRIDES}, resume_state)
    # absolute data paths in the saved config let --resume work from any folder
    for key in ("images", "masks", "split_file", "external_dir"):
        if getattr(cfg, key):
            setattr(cfg, key, str(Path(getattr(cfg, key)).resolve()))
    cfg.set_data_dirs([str(Path(d).resolve()) for d in cfg.data_dirs])
    if cfg.mix_dirs:
        cfg.mix_data = [str(Path(d).resolve()) for d in cfg.mix_dirs]
    if cfg.finetune and Path(cfg.finetune).exists():  # a local folder; a Hub id stays as it is
        cfg.finetune = str(Path(cfg.finetune).resolve())
    _seed_everything(cfg.seed)
    ctx = ctx or Distributed(device=pick_device(cfg.device))
    main, device = ctx.is_main, ctx.device
    dtype = autocast_dtype(device, cfg.amp)
    channels_last = use_channels_last(cfg.channels_last, device, dtype)
    rt = Runtime(device, dtype, channels_last)

    # ---- output folders, laid out as the research code did (rank 0's timestamp names the run) ----
    run_name = ctx.broadcast(cfg.run_name or f"unet_isic_{datetime.now():%Y%m%d_%H%M%S}")
    cfg.run_name = run_name
    run_dir = Path(cfg.output_dir) / run_name
    models_dir, logs_dir, vis_dir = run_dir / "models", run_dir / "logs", run_dir / "visualizations"
    for d in (models_dir, logs_dir, vis_dir / "epochs") if main else ():
        d.mkdir(parents=True, exist_ok=True)

    # ---- data: pair, split, load (every process decodes the same data; the sampler shards it) ----
    by_id, split, train_ids = pairs_and_split(cfg, resume_state["config"]["_split"] if resume_state else None)
    if main:
        save_split(split, run_dir / "split.json")
        for name, ids in split.items():
            atomic_write_text(run_dir / f"{name}_ids.txt", "".join(f"{i}\n" for i in ids))
    if cfg.finetune and resume_state is None:
        cfg.model = weights_architecture(cfg.finetune)[0]  # the weights' architecture, whatever the config says
    model_kwargs = {"inference_img_size": cfg.img_size, **cfg.model}
    model = DSAttentionUNet(**model_kwargs)
    if resume_state is None and cfg.finetune:
        init_from_weights(model, cfg.finetune)
    elif resume_state is None:
        _init_encoder(model, cfg.encoder_weights)
    mean, std = model.preprocess_mean, model.preprocess_std
    log.info("data: %d train / %d val / %d test pairs; decoding at %d px", len(split["train"]),
             len(split["val"]), len(split["test"]), cfg.img_size)
    train_ds = LesionDataset([by_id[i] for i in train_ids], cfg.img_size,
                             train_transform(cfg.img_size, cfg.augment, cfg.augment_preset, cfg.zoom_p), mean, std)
    val_ds = LesionDataset([by_id[i] for i in split["val"] or split["train"][:8]], cfg.img_size, None, mean, std)
    loader_gen = torch.Generator()
    sampler = ctx.sampler(train_ds, cfg.seed)  # None in one process: the loader shuffles with loader_gen
    n_local = len(sampler) if sampler is not None else len(train_ds)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=n_local > cfg.batch_size, num_workers=cfg.workers, generator=loader_gen,
                              worker_init_fn=seed_worker)  # workers start afresh each epoch from its seed
    val_batch = max(cfg.batch_size, 16)
    val_loader = DataLoader(val_ds, batch_size=val_batch, shuffle=False, num_workers=0)
    def shard_of(ds: LesionDataset) -> DataLoader:
        return DataLoader(Subset(ds, ctx.shard(len(ds))) if ctx.enabled else ds, batch_size=val_batch,
                          shuffle=False, num_workers=0)

    shard_loader = shard_of(val_ds)
    ext_ds, ext_loader = None, None
    if cfg.external_dir:
        ext_ds = LesionDataset(collect_pairs(*resolve_data_dir(cfg.external_dir), cfg.mask_suffix), cfg.img_size,
                               None, mean, std)
        ext_loader = shard_of(ext_ds)
        log.info("external validation: %d pairs from %s (scored each epoch, never trained on)", len(ext_ds),
                 cfg.external_dir)

    # ---- model, optimiser, schedule ----
    model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    log.info("model: DSAttentionUNet, %.2f M parameters, device %s, autocast %s", model.num_parameters() / 1e6,
             device, dtype)
    if ctx.enabled:
        log.info("%d processes x batch %d = %d images per step, %d steps per epoch", ctx.world_size,
                 cfg.batch_size, ctx.world_size * cfg.batch_size, len(train_loader))
    loss_fn = get_loss(cfg.loss)
    optimizer, scheduler, scaler, steps_per_epoch = make_optimisation(
        model, cfg.lr, cfg.weight_decay, cfg.epochs, len(train_loader), cfg.max_steps_per_epoch, dtype,
        cfg.encoder_lr_scale)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
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
        if average is not None:
            average.load_state_dict(resume_state["average"])
        start_epoch, best_score, history = resume_state["epoch"], resume_state["best_score"], resume_state["history"]
        set_rng_state(resume_state["rng"])
        was = resume_state["config"].get("_world_size", 1)
        if was != ctx.world_size:
            log.warning("resuming a %d-process run with %d processes: the global batch and the data order change",
                        was, ctx.world_size)
        log.info("resumed from %s at epoch %d (best val Dice %.4f)", cfg.resume, start_epoch, best_score)
    train_model = ctx.wrap(model)  # DDP averages gradients; ``model`` stays the one to evaluate and save
    saved_cfg = {**cfg.to_dict(), "_split": split, **({"_world_size": ctx.world_size} if ctx.enabled else {})}
    if main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(
            {k: v for k, v in saved_cfg.items() if not k.startswith("_")}, sort_keys=False))

    if main:
        # the logs restart from what the checkpoint holds: on resume, a kill between a log line and
        # the checkpoint would repeat that epoch's rows; a fresh run in the folder of an earlier one
        # (the same --run-name) would append to its rows
        truncate_logs(logs_dir, history, start_epoch)

    # ---- epochs ----
    batch_log = open(logs_dir / "detailed_metrics.jsonl", "a") if main else None
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.time()
        # a per-epoch seed makes an epoch's shuffling and augmentation identical whether or not
        # the run was interrupted and resumed before it; each process augments with its own seed
        epoch_seed = cfg.seed * 1000 + epoch + RANK_SEED_STRIDE * ctx.rank
        if sampler is not None:
            sampler.set_epoch(epoch)
        seed_epoch(epoch_seed, loader_gen, train_ds)
        loss_sum, n_seen = train_epoch(train_model, train_loader, steps_per_epoch, optimizer, scheduler, scaler,
                                       loss_fn, cfg.deep_supervision_decay, cfg.grad_clip, rt,
                                       f"epoch {epoch + 1}/{cfg.epochs}", batch_log, epoch + 1,
                                       (lambda: average.update(model)) if average is not None else None)
        loss_sum, n_seen = ctx.sum([loss_sum, n_seen])

        chosen_model = average.module if average is not None else model  # what is validated, chosen and saved
        val, probs, masks = validate(chosen_model, shard_loader, rt, ctx)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_seen, 1), "val_dice": val["dice_mean"],
               "val_iou": val["iou_mean"], "val_recall": val["recall_mean"], "val_precision": val["precision_mean"],
               "val_thresholded_jaccard": val["thresholded_jaccard"], "val_failure_rate": val["failure_rate"],
               "lr": scheduler.get_last_lr()[-1]}
        score = val["dice_mean"]
        if ext_loader is not None:
            ext, _, _ = validate(chosen_model, ext_loader, rt, ctx)
            row.update({f"ext_{k}": ext[m] for k, m in EXTERNAL_COLUMNS})
            if cfg.select_on == "val+external":
                score = (val["dice_mean"] + ext["dice_mean"]) / 2
        row.update(score=score, seconds=round(time.time() - t_epoch, 1))
        history.append(row)
        improved = score > best_score
        best_score = max(best_score, score)
        if not main:
            continue
        with open(logs_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if improved:
            save_best(models_dir / "best_model", chosen_model)
        save_last(models_dir / "last_checkpoint.pth", model, optimizer, scheduler, scaler, epoch + 1, best_score,
                  history, saved_cfg, average.state_dict() if average is not None else None)
        log.info("epoch %d/%d  loss %.4f  val Dice %.4f IoU %.4f recall %.4f%s  (%.0fs)%s", epoch + 1, cfg.epochs,
                 row["train_loss"], row["val_dice"], row["val_iou"], row["val_recall"],
                 f"  external Dice {row['ext_dice']:.4f} recall {row['ext_recall']:.4f}" if ext_loader else "",
                 row["seconds"], "  * best" if improved else "")
        plot_history(history, vis_dir / "metrics_history.png")
        # rank 0's shard starts the validation set, so its first items are the set's first items
        val_images = [val_ds.images[i] for i in range(min(cfg.sample_images, len(probs)))]
        save_epoch_samples(val_images, masks[: len(val_images)], probs[: len(val_images)],
                           vis_dir / "epochs" / f"epoch_{epoch + 1:03d}.png")
    if batch_log is not None:
        batch_log.close()

    # ---- operating points: rank 0 tunes the threshold for recall on the validation part ----
    ext_full = DataLoader(ext_ds, batch_size=val_batch, shuffle=False, num_workers=0) if ext_ds is not None else None
    chosen, points = tune_threshold(models_dir, model_kwargs, val_loader, rt, cfg.recall_target, logs_dir,
                                    ext_full, cfg.external_recall_target) if main else (None, None)
    chosen, points = ctx.broadcast((chosen, points))  # the other processes wait here
    wall = time.time() - t_start
    return RunResult(run_dir, models_dir / "best_model", best_score, cfg.epochs, history, split,
                     chosen["threshold"], points, wall)
