"""Accuracy beside speed: train a peer model with our recipe on our split and score it on our test part.

    python -m benchmarks.peer_training --model smp_unet_resnet34 --epochs 20 --output peer.json
    python -m benchmarks.peer_training --model ours --epochs 20 --output ours.json

Issue 5 asks whether DS-AttentionUNet is faster than ``Unet("resnet34")`` *at equal or better
Dice on the held-out split*. Latency alone (section 3) does not answer that, so this trains either
model under exactly the recipe of ``configs/isic2017_256.yaml``: the same split file, augmentation,
loss (over the deep-supervision heads where the model has them), AdamW + OneCycleLR, batch size,
epochs, mixed precision, best epoch by validation Dice, threshold chosen on validation by the
training's recall rule with the mask clean-up, then the 200 held-out test images. The loop is the
training package's own epoch function; only the model differs. No pretrained encoder is used (no
downloads here): both start from random weights.

``--weights DIR`` scores a finished ``train_cli.py`` run (its ``best_model``) the same way.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lesionseg.data.dataset import LesionDataset, seed_worker  # noqa: E402
from lesionseg.data.pairing import collect_pairs, resolve_data_dir  # noqa: E402
from lesionseg.data.split import load_split  # noqa: E402
from lesionseg.data.transforms import train_transform  # noqa: E402
from lesionseg.losses import get_loss  # noqa: E402
from lesionseg.metrics import choose_threshold, operating_points  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402
from lesionseg.postprocess import NO_CLEANUP, MaskCleanup  # noqa: E402
from lesionseg.training.config import TrainConfig, build_config, load_yaml  # noqa: E402
from lesionseg.training.epoch import (Runtime, make_optimisation, predict_probs, seed_epoch, train_epoch,  # noqa: E402
                                      use_channels_last, validation_metrics)
from lesionseg.training.loop import autocast_dtype, pick_device  # noqa: E402

from .common import ROOT  # noqa: E402

log = logging.getLogger("benchmarks.peer_training")
MODELS = ("ours", "smp_unet_resnet34")
RECIPE = ROOT / "configs" / "isic2017_256.yaml"
SPLIT = ROOT / "configs" / "isic2017_256" / "split.json"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build_model(name: str, cfg: TrainConfig) -> torch.nn.Module:
    """A freshly initialised model by name (see MODELS)."""
    torch.manual_seed(cfg.seed)
    if name == "ours":
        return DSAttentionUNet(inference_img_size=cfg.img_size, **cfg.model)
    if name == "smp_unet_resnet34":
        from .peers import smp_unet_resnet34

        return smp_unet_resnet34()
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")


def test_scores(model: torch.nn.Module, val_loader: DataLoader, test_loader: DataLoader, rt: Runtime,
                recall_target: float, cleanup: MaskCleanup = MaskCleanup()) -> dict[str, Any]:
    """Threshold tuned on validation (cleaned masks, the training's rule), then test metrics:
    cleaned and raw masks at that threshold, and raw masks at 0.5."""
    probs, masks, _ = predict_probs(model, val_loader, rt.device, rt.dtype, rt.channels_last)
    points = operating_points(probs, masks, mask_fn=cleanup.mask)
    chosen = choose_threshold(points, recall_target)
    t = chosen["threshold"]
    probs, masks, ids = predict_probs(model, test_loader, rt.device, rt.dtype, rt.channels_last)
    keys = ("dice_mean", "iou_mean", "recall_mean", "precision_mean", "thresholded_jaccard", "failure_rate")

    def scored(mask_fn, threshold: float) -> dict[str, float]:
        cut = [mask_fn(p, threshold).astype(np.float32) for p in probs]
        m = validation_metrics(cut, masks, threshold=0.5)
        return {k: round(float(m[k]), 5) for k in keys}

    return {"val_threshold": chosen, "n_test": len(ids),
            "test_cleaned": scored(cleanup.mask, t), "test_raw": scored(NO_CLEANUP.mask, t),
            "test_raw_at_0.5": scored(NO_CLEANUP.mask, 0.5)}


def _runtime(cfg: TrainConfig) -> Runtime:
    device = pick_device(cfg.device)
    dtype = autocast_dtype(device, cfg.amp)
    return Runtime(device, dtype, use_channels_last(cfg.channels_last, device, dtype))


def _placed(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    model = model.to(rt.device)
    return model.to(memory_format=torch.channels_last) if rt.channels_last else model


def _datasets(cfg: TrainConfig, split_file: Path, model: torch.nn.Module
              ) -> tuple[LesionDataset, LesionDataset, LesionDataset]:
    """Train / val / test parts, normalised as ``model`` expects (ImageNet statistics for the peers)."""
    mean = list(getattr(model, "preprocess_mean", IMAGENET_MEAN))
    std = list(getattr(model, "preprocess_std", IMAGENET_STD))
    images, masks = resolve_data_dir(cfg.data_dir)
    by_id = {p.id: p for p in collect_pairs(images, masks, cfg.mask_suffix)}
    split = load_split(split_file, list(by_id))
    if cfg.limit:
        split = {k: v[: cfg.limit] for k, v in split.items()}
    part = lambda name, tf: LesionDataset([by_id[i] for i in split[name]], cfg.img_size, tf, mean, std)  # noqa: E731
    return part("train", train_transform(cfg.img_size, cfg.augment)), part("val", None), part("test", None)


def train_and_score(name: str, cfg: TrainConfig, split_file: Path = SPLIT) -> dict[str, Any]:
    """Train ``name`` with ``cfg``'s recipe and return its history and test scores (JSON-friendly)."""
    t0 = time.time()
    rt = _runtime(cfg)
    device, dtype = rt.device, rt.dtype
    model = _placed(build_model(name, cfg), rt)
    train_ds, val_ds, test_ds = _datasets(cfg, split_file, model)
    gen = torch.Generator()
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_ds) > cfg.batch_size,
                              num_workers=cfg.workers, generator=gen, worker_init_fn=seed_worker,
                              pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_ds, batch_size=32, num_workers=0)
    test_loader = DataLoader(test_ds, batch_size=32, num_workers=0)
    params = sum(p.numel() for p in model.parameters())
    loss_fn = get_loss(cfg.loss)
    optimizer, scheduler, scaler, steps = make_optimisation(model, cfg.lr, cfg.weight_decay, cfg.epochs,
                                                            len(train_loader), cfg.max_steps_per_epoch, dtype)
    history, best, best_state = [], -1.0, None
    for epoch in range(cfg.epochs):
        t = time.time()
        seed = cfg.seed * 1000 + epoch
        seed_epoch(seed, gen, train_ds)
        loss_sum, n = train_epoch(model, train_loader, steps, optimizer, scheduler, scaler, loss_fn,
                                  cfg.deep_supervision_decay, cfg.grad_clip, rt, f"{name} {epoch + 1}", None, epoch + 1)
        train_s = time.time() - t
        probs, masks, _ = predict_probs(model, val_loader, rt.device, rt.dtype, rt.channels_last)
        val = validation_metrics(probs, masks)
        history.append({"epoch": epoch + 1, "train_loss": round(loss_sum / max(n, 1), 5),
                        "val_dice": round(val["dice_mean"], 5), "train_s": round(train_s, 2),
                        "seconds": round(time.time() - t, 2)})
        if val["dice_mean"] > best:
            best, best_state = val["dice_mean"], copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        log.info("%s epoch %d/%d loss %.4f val Dice %.4f (%.1f s)", name, epoch + 1, cfg.epochs,
                 history[-1]["train_loss"], val["dice_mean"], history[-1]["seconds"])
    model.load_state_dict(best_state)
    scores = test_scores(model, val_loader, test_loader, rt, cfg.recall_target)
    return {"model": name, "parameters": params, "epochs": cfg.epochs, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "autocast": str(dtype), "best_val_dice_at_0.5": round(best, 5), **scores, "history": history,
            "median_epoch_s": float(np.median([h["seconds"] for h in history])), "wall_s": round(time.time() - t0, 1)}


def score_weights(weights: Path, cfg: TrainConfig, split_file: Path = SPLIT) -> dict[str, Any]:
    """Test scores of a saved DS-AttentionUNet folder, computed as for a trained peer."""
    rt = _runtime(cfg)
    model = _placed(DSAttentionUNet.from_pretrained(weights), rt)
    _, val_ds, test_ds = _datasets(cfg, split_file, model)
    scores = test_scores(model, DataLoader(val_ds, batch_size=32), DataLoader(test_ds, batch_size=32), rt,
                         cfg.recall_target)
    return {"model": "ours", "weights": str(weights), "parameters": model.num_parameters(), **scores}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.peer_training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS, default="smp_unet_resnet34")
    ap.add_argument("--weights", type=Path, help="score this saved model folder instead of training")
    ap.add_argument("--config", type=Path, default=RECIPE, help="recipe YAML (default configs/isic2017_256.yaml)")
    ap.add_argument("--split-file", type=Path, default=SPLIT)
    ap.add_argument("--data-dir", help="default: the recipe's")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--device", default=None)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--limit", type=int, help="first N IDs of each part (smoke runs)")
    ap.add_argument("--max-steps-per-epoch", type=int)
    ap.add_argument("--output", type=Path, required=True, help="JSON file to write")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    overrides = {"epochs": args.epochs, "seed": args.seed, "device": args.device, "workers": args.workers,
                 "limit": args.limit, "max_steps_per_epoch": args.max_steps_per_epoch, "data_dir": args.data_dir}
    cfg = build_config(load_yaml(args.config), overrides)
    if cfg.data_dir and not Path(cfg.data_dir).is_absolute() and not Path(cfg.data_dir).exists():
        cfg.data_dir = str(ROOT / cfg.data_dir)
    try:
        out = score_weights(args.weights, cfg, args.split_file) if args.weights else train_and_score(args.model, cfg,
                                                                                                     args.split_file)
    except ImportError as e:
        print(f"peer_training: {e.name or e} is not installed; install the benchmark extras: "
              "pip install -r requirements-bench.txt", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"peer_training: {e}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    c = out["test_cleaned"]
    print(f"{out['model']}: test Dice {c['dice_mean']:.4f} IoU {c['iou_mean']:.4f} TJ {c['thresholded_jaccard']:.4f} "
          f"at threshold {out['val_threshold']['threshold']:.2f} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
