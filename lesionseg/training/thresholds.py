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


def tune_threshold(models_dir: Path, model_kwargs: dict[str, Any], val_loader: DataLoader, rt: Runtime,
                   recall_target: float, logs_dir: Path, ext_loader: DataLoader | None = None,
                   ext_recall_target: float = 0.9) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Pick the best model's threshold on the whole validation set (and, given ``ext_loader``, keep
    the external set's recall too) and save it into the model folder with the validation points."""
    best = DSAttentionUNet.from_pretrained(models_dir / "best_model").to(rt.device)
    if rt.channels_last:
        best = best.to(memory_format=torch.channels_last)
    mask_fn = cleanup_of(best).mask  # the masks users will get

    def points_of(loader: DataLoader) -> list[dict[str, float]]:
        probs, masks, _ = predict_probs(best, loader, rt.device, rt.dtype, rt.channels_last)
        return operating_points(probs, masks, mask_fn=mask_fn)

    points = points_of(val_loader)
    ext_points = points_of(ext_loader) if ext_loader is not None else None
    if ext_points is None:
        chosen = choose_threshold(points, recall_target)
    else:
        chosen = choose_joint_threshold(points, ext_points, recall_target, ext_recall_target)
    ext_at = next((p for p in ext_points or [] if p["threshold"] == chosen["threshold"]), None)
    log.info("threshold %.2f: val recall %.4f precision %.4f (recall target %.2f)%s", chosen["threshold"],
             chosen["recall"], chosen["precision"], recall_target,
             f"; external recall {ext_at['recall']:.4f} precision {ext_at['precision']:.4f} "
             f"(target {ext_recall_target:.2f})" if ext_at else "")
    tuned = DSAttentionUNet(**{**model_kwargs, "inference_threshold": chosen["threshold"],
                               "inference_operating_points": points})
    tuned.load_state_dict(best.float().cpu().state_dict())
    save_best(models_dir / "best_model", tuned)
    record = {"recall_target": recall_target, "chosen": chosen, "points": points}
    if ext_points is not None:
        record.update(external_recall_target=ext_recall_target, external_at_chosen=ext_at, external_points=ext_points)
    atomic_write_text(logs_dir / "operating_points.json", json.dumps(record, indent=1))
    return chosen, points
