"""Segmentation losses from logits, and deep-supervision weighting in one place.

All losses take logits (B, 1, H, W) and binary targets (B, 1, H, W) and return a scalar. Soft
overlap terms are computed per image and averaged, so a small lesion counts as much as a large one.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

EPS = 1.0


def _soft_counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    tp = (p * t).sum(1)
    fp = (p * (1 - t)).sum(1)
    fn = ((1 - p) * t).sum(1)
    return tp, fp, fn


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = EPS) -> torch.Tensor:
    """1 - soft Dice, per image, averaged. An empty mask predicted empty costs 0."""
    tp, fp, fn = _soft_counts(logits, target)
    return (1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth)).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return bce_loss(logits, target) + dice_loss(logits, target)


def tversky_index(logits: torch.Tensor, target: torch.Tensor, alpha: float, beta: float,
                  smooth: float = EPS) -> torch.Tensor:
    """Per-image Tversky index TP / (TP + alpha FP + beta FN); beta > alpha favours recall."""
    tp, fp, fn = _soft_counts(logits, target)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def tversky_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7) -> torch.Tensor:
    return (1 - tversky_index(logits, target, alpha, beta)).mean()


def focal_tversky_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7,
                       gamma: float = 0.75) -> torch.Tensor:
    """(1 - TI) ** gamma (Abraham & Khan, 2019); gamma < 1 pushes harder on images still far off."""
    return ((1 - tversky_index(logits, target, alpha, beta)).clamp_min(0) ** gamma).mean()


def combined_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + Dice + Focal-Tversky, the research code's composite loss."""
    return bce_loss(logits, target) + dice_loss(logits, target) + focal_tversky_loss(logits, target)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "dice": dice_loss,
    "bce_dice": bce_dice_loss,
    "tversky": tversky_loss,
    "focal_tversky": focal_tversky_loss,
    "combined": combined_loss,
}


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}") from None


def deep_supervision_weights(n_outputs: int, decay: float = 0.5) -> list[float]:
    """Weights for (final, aux_1, ..., aux_k): 1, decay, decay**2, ... normalised to sum to 1."""
    w = [decay ** i for i in range(n_outputs)]
    s = sum(w)
    return [v / s for v in w]


def supervised_loss(outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    decay: float = 0.5) -> torch.Tensor:
    """Loss over the final output and any deep-supervision outputs, weighted by ``decay`` per level."""
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, target)
    weights = deep_supervision_weights(len(outputs), decay)
    return sum(w * loss_fn(o, target) for w, o in zip(weights, outputs))
