"""Training figures: metric curves and per-epoch sample predictions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..utils.atomic import atomic_save


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and validation metrics per epoch as one PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o")
    axes[0].set(title="training loss", xlabel="epoch")
    for key in ("val_dice", "val_iou", "val_recall", "val_precision", "val_thresholded_jaccard"):
        axes[1].plot(epochs, [h[key] for h in history], marker=".", label=key.removeprefix("val_"))
    for key in ("ext_dice", "ext_recall"):
        if all(key in h for h in history):
            axes[1].plot(epochs, [h[key] for h in history], linestyle="--", marker=".", label=f"external {key[4:]}")
    axes[1].set(title="validation (threshold 0.5)", xlabel="epoch", ylim=(0, 1))
    axes[1].legend(loc="lower right", fontsize=8)
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def save_epoch_samples(images: list[np.ndarray], masks: list[np.ndarray], probs: list[np.ndarray], path: Path) -> None:
    """A grid, one row per sample: image | ground truth | probability | prediction at 0.5."""
    if not images:
        return
    rows = []
    for img, m, p in zip(images, masks, probs):
        gt = np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)
        heat = cv2.applyColorMap((p * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        pred = np.repeat(((p >= 0.5) * 255).astype(np.uint8)[..., None], 3, axis=2)
        rows.append(np.concatenate([img, gt, heat, pred], axis=1))
    grid = np.concatenate(rows, axis=0)
    ok, buf = cv2.imencode(".png", grid[..., ::-1])
    atomic_save(path, lambda tmp: tmp.write_bytes(buf.tobytes()))
