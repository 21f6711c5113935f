"""Resuming a run: its own settings from the checkpoint, and logs cut back to what it holds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_write_text
from .checkpoint import find_checkpoint, load_last
from .config import TrainConfig

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


def truncate_logs(logs_dir: Path, history: list[dict[str, Any]], done_epochs: int) -> None:
    """Rewrite metrics.jsonl from the checkpoint's history and drop batch rows of unfinished epochs."""
    atomic_write_text(logs_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    detail = logs_dir / "detailed_metrics.jsonl"
    if detail.exists():
        keep = [line for line in detail.read_text().splitlines(keepends=True)
                if line.strip() and line.endswith("\n") and json.loads(line).get("epoch", 0) <= done_epochs]
        atomic_write_text(detail, "".join(keep))
