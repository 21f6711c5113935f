"""Checkpoints: the resumable last checkpoint and the best model as a Hub folder, both atomic."""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models import DSAttentionUNet
from ..utils.atomic import DIR_MODE, FILE_MODE, atomic_save


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(tuple(state["python"]) if not isinstance(state["python"], tuple) else state["python"])


def save_last(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
              scaler: Any, epoch: int, best_score: float, history: list[dict], config: dict,
              average: dict[str, Any] | None = None) -> None:
    """Everything ``--resume`` needs: weights, optimiser, scheduler, scaler, epoch, RNG, history, and
    the weight average's state where the run keeps one (``--ema-decay``)."""
    state = {
        "format": "lesionseg-checkpoint-v1",
        "model": model.state_dict(),
        "model_config": dict(model._hub_mixin_config) if hasattr(model, "_hub_mixin_config") else {},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "best_score": best_score,
        "history": history,
        "config": config,
        "rng": rng_state(),
        **({"average": average} if average is not None else {}),
    }
    atomic_save(path, lambda tmp: torch.save(state, tmp))


def find_checkpoint(path: str | Path) -> Path:
    """A run folder, its models/ folder or the file itself -> the last_checkpoint.pth path."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "models" / "last_checkpoint.pth", p / "last_checkpoint.pth"):
            if cand.exists():
                return cand
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no last_checkpoint.pth to resume from (pass the run folder or the file)")
    return p


def load_last(path: str | Path) -> dict[str, Any]:
    """Load a last checkpoint written by :func:`save_last` (our own file; still weights_only)."""
    p = find_checkpoint(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated or foreign files raise many types
        raise ValueError(f"{p}: not a readable lesionseg checkpoint ({type(e).__name__}: {e})".replace("\n", " ")) from None
    if not isinstance(state, dict) or state.get("format") != "lesionseg-checkpoint-v1":
        raise ValueError(f"{p}: not a lesionseg training checkpoint")
    return state


def save_best(folder: Path, model: DSAttentionUNet, model_card: str | None = None) -> None:
    """Write the Hub folder (config.json, model.safetensors, README.md) and swap it into place."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        os.chmod(tmp, DIR_MODE)
        for f in tmp.iterdir():
            os.chmod(f, FILE_MODE)
        if model_card is not None:
            (tmp / "README.md").write_text(model_card)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
