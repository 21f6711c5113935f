"""The default threshold of a trained model, tuned for recall on validation data after training."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..metrics import choose_threshold, operating_points
from ..models import DSAttentionUNet
from ..postprocess import cleanup_of
from ..utils.atomic import atomic_write_text
from .checkpoint import save_best
from .epoch import Runtime, predict_probs

log = logging.getLogger(__name__)


def choose_joint_threshold(val_points: list[dict[str, float]], ext_points: list[dict[str, float]],
                           recall_target: float, ext_recall_target: float) -> dict[str, float]:
    """The validation point with the best precision whose recall reaches ``recall_target`` while
    the external set's recall at the same threshold reaches ``ext_recall_target``; where no
    threshold meets both, the one that misses them least. Points of both lists share thresholds."""
    ext_recall = {p["threshold"]: p["recall"] for p in ext_points}
    ok = [p for p in val_points if p["recall"] >= recall_target and ext_recall[p["threshold"]] >= ext_recall_target]
    if ok:
        return max(ok, key=lambda p: (p["precision"], p["threshold"]))
    return max(val_points, key=lambda p: (min(p["recall"] - recall_target,
                                              ext_recall[p["threshold"]] - ext_recall_target), -p["threshold"]))


def choose_default(val_points: list[dict[str, float]], ext_points: list[dict[str, float]] | None,
                   recall_target: float, ext_recall_target: float = 0.9,
                   fixed: float | None = None) -> dict[str, float]:
    """The validation point of a model's default threshold: at ``fixed`` where the recipe fixes it
    (a threshold of the points' grid, chosen over several seeds: scripts/threshold_rules.py),
    else the most precise one meeting the recall targets (``choose_joint_threshold`` with external
    points, ``choose_threshold`` without). A fixed threshold that misses a target on these points
    is kept, with a warning: one seed's curve is what the recipe's threshold smooths over."""
    if fixed is None:
        return (choose_joint_threshold(val_points, ext_points, recall_target, ext_recall_target) if ext_points
                else choose_threshold(val_points, recall_target))
    chosen = next((p for p in val_points if abs(p["threshold"] - fixed) < 1e-9), None)
    if chosen is None:
        raise ValueError(f"default threshold {fixed} is not one of the operating points' thresholds; valid: "
                         + ", ".join(f"{p['threshold']:.2f}" for p in val_points))
    ext_at = next((p for p in ext_points or [] if abs(p["threshold"] - fixed) < 1e-9), None)
    if chosen["recall"] < recall_target or (ext_at is not None and ext_at["recall"] < ext_recall_target):
        log.warning("the recipe's default threshold %.2f misses a recall target on this model: validation "
                    "%.4f (target %.2f)%s", fixed, chosen["recall"], recall_target,
                    f", external {ext_at['recall']:.4f} (target {ext_recall_target:.2f})" if ext_at else "")
    return chosen


def tune_threshold(models_dir: Path, model_kwargs: dict[str, Any], val_loader: DataLoader, rt: Runtime,
                   recall_target: float, logs_dir: Path, ext_loader: DataLoader | None = None,
                   ext_recall_target: float = 0.9,
                   fixed: float | None = None) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Pick the best model's threshold on the whole validation set (and, given ``ext_loader``, keep
    the external set's recall too; ``fixed``: the recipe's threshold instead, see ``choose_default``)
    and save it into the model folder with the validation points."""
    best = DSAttentionUNet.from_pretrained(models_dir / "best_model").to(rt.device)
    if rt.channels_last:
        best = best.to(memory_format=torch.channels_last)
    mask_fn = cleanup_of(best).mask  # the masks users will get

    def points_of(loader: DataLoader) -> list[dict[str, float]]:
        probs, masks, _ = predict_probs(best, loader, rt.device, rt.dtype, rt.channels_last)
        return operating_points(probs, masks, mask_fn=mask_fn)

    points = points_of(val_loader)
    ext_points = points_of(ext_loader) if ext_loader is not None else None
    chosen = choose_default(points, ext_points, recall_target, ext_recall_target, fixed)
    ext_at = next((p for p in ext_points or [] if p["threshold"] == chosen["threshold"]), None)
    log.info("threshold %.2f%s: val recall %.4f precision %.4f (recall target %.2f)%s", chosen["threshold"],
             " (fixed by the recipe)" if fixed is not None else "",
             chosen["recall"], chosen["precision"], recall_target,
             f"; external recall {ext_at['recall']:.4f} precision {ext_at['precision']:.4f} "
             f"(target {ext_recall_target:.2f})" if ext_at else "")
    tuned = DSAttentionUNet(**{**model_kwargs, "inference_threshold": chosen["threshold"],
                               "inference_operating_points": points})
    tuned.load_state_dict(best.float().cpu().state_dict())
    save_best(models_dir / "best_model", tuned)
    record = {"recall_target": recall_target, "chosen": chosen, "points": points, "fixed_threshold": fixed}
    if ext_points is not None:
        record.update(external_recall_target=ext_recall_target, external_at_chosen=ext_at, external_points=ext_points)
    atomic_write_text(logs_dir / "operating_points.json", json.dumps(record, indent=1))
    return chosen, points
