"""Training the click refiner, top to bottom: the segmentation model's outline, corrected by
simulated clicks (RITM's iterative training).

Per batch: the frozen segmentation model outlines the augmented photos (or, for a share of the
images, a synthetic bad outline: eroded, dilated, half missing, with a blob of skin, or empty, so
the refiner also sees the large errors that photos from other clinics cause). Then k clicks, k
drawn from 1..``max_clicks``: each goes to the current outline's larger error region (see
:func:`lesionseg.clicks.next_click`), and all but the last are followed by a refiner call without
gradients whose output becomes the next outline. The loss is taken on the last call. Validation
simulates ``max_clicks`` clicks from the segmentation model's own outline, each answered as
:meth:`Predictor.refine` answers it (the refiner's map merged around the newest click), and scores
the mean IoU after 1..``max_clicks`` clicks.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..clicks import Click, click_maps, iou, next_click, progressive_merge
from ..data.dataset import LesionDataset, seed_worker
from ..data.pairing import collect_pairs, resolve_data_dir
from ..data.split import save_split
from ..data.transforms import train_transform
from ..models.weights import load_model
from ..losses import get_loss, supervised_loss
from ..models.refiner import click_refiner_from
from ..utils.atomic import atomic_write_text
from .checkpoint import save_best
from .config import TrainConfig
from .epoch import Runtime, make_optimisation, seed_epoch
from .run_data import pairs_and_split

log = logging.getLogger(__name__)
CORRUPT_SHARE = 0.4  # share of training outlines replaced by a synthetic bad outline


@dataclass
class RefineResult:
    run_dir: Path
    best_model_dir: Path
    best_score: float
    history: list[dict[str, Any]]
    wall_seconds: float


def corrupt_outline(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible bad outline of reference mask ``gt`` (S, S) {0, 1}: (S, S) float32 probabilities."""
    s = gt.shape[0]
    m = gt.astype(np.uint8).copy()
    kind = int(rng.integers(5))
    if kind in (0, 1):  # too tight / too loose
        k = int(rng.integers(3, max(4, s // 12)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        m = cv2.erode(m, kernel) if kind == 0 else cv2.dilate(m, kernel)
    elif kind == 2 and m.any():  # a part of the lesion missed, cut by a random line through it
        ys, xs = np.nonzero(m)
        cy, cx = ys.mean(), xs.mean()
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[:s, :s]
        m = m * (((xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)) < rng.uniform(-0.3, 0.3) * np.sqrt(m.sum()))
        m = m.astype(np.uint8)
    elif kind == 3:  # a blob of skin (or a pen mark) outlined too
        centre = (int(rng.integers(s)), int(rng.integers(s)))
        axes = (int(rng.integers(s // 16, s // 4)), int(rng.integers(s // 16, s // 4)))
        cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    else:  # nothing found
        m[:] = 0
    return np.clip(cv2.GaussianBlur(m.astype(np.float32), (0, 0), 2.0), 0.0, 1.0)


def refiner_input(x: torch.Tensor, prev: np.ndarray, clicks: list[list[Click]], radius: int) -> torch.Tensor:
    """(B, 3, S, S) normalised photos, (B, S, S) previous probabilities, clicks on the S grid
    -> (B, 6, S, S) refiner input (the layout :meth:`Predictor.refine` builds)."""
    s = x.shape[-1]
    extra = np.stack([np.concatenate([p[None], click_maps(c, s, radius)]) for p, c in zip(prev, clicks)])
    return torch.cat([x, torch.from_numpy(extra.astype(np.float32))], dim=1)


def add_clicks(prev: np.ndarray, gts: np.ndarray, clicks: list[list[Click]], threshold: float,
               rng: np.random.Generator | None) -> None:
    """Append each image's next simulated click (in place); where the outline is already exact, a
    click on the lesion (or, with no lesion, on the skin) keeps every image's click count equal."""
    for p, g, c in zip(prev, gts, clicks):
        click = next_click(p >= threshold, g, rng)
        if click is None:
            ys, xs = np.nonzero(g if g.any() else ~g)
            k = len(ys) // 2 if rng is None else int(rng.integers(len(ys)))
            click = Click(float(xs[k]), float(ys[k]), bool(g.any()))
        c.append(click)


def click_focus_loss(outputs: torch.Tensor | tuple[torch.Tensor, ...], y: torch.Tensor, clicks: list[list[Click]],
                     radius: int) -> torch.Tensor:
    """BCE of the final logits (B, 1, S, S) against ``y`` over the pixels within 3 click radii of
    the newest click only: what the progressive merge keeps of the refiner's answer is the region
    around that click, so that is where the answer has to be right first."""
    final = outputs[0] if isinstance(outputs, tuple) else outputs
    s = final.shape[-1]
    focus = torch.from_numpy(np.stack([click_maps(c[-1:], s, 3 * radius).sum(0, keepdims=True) for c in clicks]))
    focus = focus.to(final.device)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(final.float(), y, reduction="none")
    return (bce * focus).sum() / focus.sum().clamp_min(1.0)


def _probs(model: torch.nn.Module, x: torch.Tensor, rt: Runtime) -> np.ndarray:
    model.eval()
    with torch.no_grad(), rt.autocast():
        return torch.sigmoid(model(rt.to_input(x)).float())[:, 0].cpu().numpy()


def click_scores(base: torch.nn.Module, refiner: torch.nn.Module, loader: DataLoader, n_clicks: int,
                 threshold: float, radius: int, rt: Runtime) -> dict[str, float]:
    """Mean IoU after 0..n_clicks deterministic simulated clicks from ``base``'s outline (S x S)."""
    ious = []
    for x, y, _ in loader:
        gts = y[:, 0].numpy() > 0.5
        prev = _probs(base, x, rt)
        rows = [[iou(p >= threshold, g)] for p, g in zip(prev, gts)]
        clicks: list[list[Click]] = [[] for _ in range(len(x))]
        for _ in range(n_clicks):
            add_clicks(prev, gts, clicks, threshold, None)
            new = _probs(refiner, refiner_input(x, prev, clicks, radius), rt)
            # scored as Predictor.refine answers a click: merged around the newest click
            prev = np.stack([progressive_merge(p, q, c[-1], threshold) for p, q, c in zip(prev, new, clicks)])
            for row, p, g in zip(rows, prev, gts):
                row.append(iou(p >= threshold, g))
        ious += rows
    curve = np.mean(np.asarray(ious), axis=0)
    return {f"miou@{k}": float(v) for k, v in enumerate(curve)}


def fit_refiner(cfg: TrainConfig, rt: Runtime, pairs_by_id: dict, split: dict[str, list[str]],
                run_dir: Path, loader_fn: Callable[[LesionDataset], DataLoader]) -> RefineResult:
    """Train the click refiner of ``cfg.refiner_from`` on ``split["train"]``; see the module doc."""
    t0 = time.time()
    base = load_model(cfg.refiner_from, device=rt.device).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    config = dict(base._hub_mixin_config)
    refiner = click_refiner_from(base, config, cfg.click_radius).to(rt.device)
    threshold, radius, s = float(base.inference_threshold), int(cfg.click_radius), int(base.inference_img_size)
    if s != cfg.img_size:
        raise ValueError(f"{cfg.refiner_from} works at {s} px; train its refiner with --img-size {s}")
    mean, std = base.preprocess_mean, base.preprocess_std
    train_ds = LesionDataset([pairs_by_id[i] for i in split["train"]], s,
                             train_transform(s, cfg.augment, cfg.augment_preset, cfg.zoom_p), mean, std)
    val_ds = LesionDataset([pairs_by_id[i] for i in split["val"] or split["train"][:8]], s, None, mean, std)
    scored = {"val": loader_fn(val_ds)}
    if cfg.external_dir:
        ext = collect_pairs(*resolve_data_dir(cfg.external_dir), cfg.mask_suffix)
        scored["ext"] = loader_fn(LesionDataset(ext, s, None, mean, std))
    gen = torch.Generator()
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                              num_workers=cfg.workers, generator=gen, worker_init_fn=seed_worker)
    loss_fn = get_loss(cfg.loss)
    optimizer, scheduler, scaler, steps = make_optimisation(refiner, cfg.lr, cfg.weight_decay, cfg.epochs,
                                                            len(train_loader), cfg.max_steps_per_epoch, rt.dtype)
    models_dir, logs_dir = run_dir / "models", run_dir / "logs"
    for d in (models_dir, logs_dir):
        d.mkdir(parents=True, exist_ok=True)
    (logs_dir / "metrics.jsonl").unlink(missing_ok=True)  # an earlier run in this folder: not this one's rows
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log.info("click refiner of %s: %d train / %d val pairs, up to %d clicks, %.2f M parameters",
             cfg.refiner_from, len(train_ds), len(val_ds), cfg.max_clicks, refiner.num_parameters() / 1e6)
    best, history = -1.0, []
    for epoch in range(cfg.epochs):
        t_epoch = time.time()
        seed = cfg.seed * 1000 + epoch
        seed_epoch(seed, gen, train_ds)
        rng = np.random.default_rng(seed)
        running, seen = 0.0, 0
        bar = tqdm(train_loader, total=steps, desc=f"refiner epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   mininterval=2.0, dynamic_ncols=True)
        for step, (x, y, _) in enumerate(bar):
            if step >= steps:
                break
            gts = y[:, 0].numpy() > 0.5
            prev = _probs(base, x, rt)
            for i in np.flatnonzero(rng.random(len(x)) < CORRUPT_SHARE):
                prev[i] = corrupt_outline(gts[i], rng)
            clicks: list[list[Click]] = [[] for _ in range(len(x))]
            k = int(rng.integers(1, cfg.max_clicks + 1))
            for it in range(k):
                add_clicks(prev, gts, clicks, 0.5, rng)
                if it < k - 1:
                    prev = _probs(refiner, refiner_input(x, prev, clicks, radius), rt)
            refiner.train()
            with rt.autocast():
                outputs = refiner(rt.to_input(refiner_input(x, prev, clicks, radius)))
            loss = supervised_loss(outputs, y.to(rt.device), loss_fn, cfg.deep_supervision_decay)
            if cfg.click_loss_weight > 0:
                loss = loss + cfg.click_loss_weight * click_focus_loss(outputs, y.to(rt.device), clicks, radius)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(refiner.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            running, seen = running + loss.item() * len(x), seen + len(x)
            bar.set_postfix(loss=f"{loss.item():.3f}", clicks=k)
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": running / max(seen, 1)}
        for name, loader in scored.items():
            row.update({f"{name}_{k}": v for k, v in click_scores(base, refiner, loader, cfg.max_clicks,
                                                                   threshold, radius, rt).items()})
        parts = [np.mean([row[f"{n}_miou@{k}"] for k in range(1, cfg.max_clicks + 1)])
                 for n in (("val", "ext") if cfg.select_on == "val+external" and "ext" in scored else ("val",))]
        row.update(score=float(np.mean(parts)), seconds=round(time.time() - t_epoch, 1))
        history.append(row)
        with open(logs_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        improved = row["score"] > best
        if improved:
            best = row["score"]
            save_best(models_dir / "best_model", refiner)
        log.info("refiner epoch %d/%d  loss %.4f  val mIoU %s%s  (%.0fs)%s", epoch + 1, cfg.epochs, row["train_loss"],
                 " ".join(f"{row[f'val_miou@{k}']:.3f}" for k in range(cfg.max_clicks + 1)),
                 ("  external " + " ".join(f"{row[f'ext_miou@{k}']:.3f}" for k in range(cfg.max_clicks + 1)))
                 if "ext" in scored else "", row["seconds"], "  * best" if improved else "")
    return RefineResult(run_dir, models_dir / "best_model", best, history, time.time() - t0)


def train_refiner(cfg: TrainConfig, rt: Runtime) -> RefineResult:
    """Pair and split the data as the model's training does (:func:`run_data.pairs_and_split`),
    then :func:`fit_refiner`."""
    by_id, split, _ = pairs_and_split(cfg)
    run_dir = Path(cfg.output_dir) / (cfg.run_name or f"refiner_{time.strftime('%Y%m%d_%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_split(split, run_dir / "split.json")

    def loader_fn(ds: LesionDataset) -> DataLoader:
        return DataLoader(ds, batch_size=max(cfg.batch_size, 16), shuffle=False, num_workers=0)

    return fit_refiner(cfg, rt, by_id, split, run_dir, loader_fn)
