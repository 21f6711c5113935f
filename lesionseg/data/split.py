"""Deterministic train / validation / test splits saved as ID lists."""
from __future__ import annotations

import json
import random
from pathlib import Path

from .pairing import DataError

SPLITS = ("train", "val", "test")


def make_split(ids: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Shuffle sorted IDs with ``seed`` and cut them; the same inputs always give the same split."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must be in [0, 1)")
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n > 2 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n > 3 else 0
    val, test, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
    if not train:
        raise DataError(f"only {n} pairs: nothing left to train on after the validation/test split")
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def save_split(split: dict[str, list[str]], path: str | Path) -> None:
    from ..utils.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(split, indent=1) + "\n")


def load_split(path: str | Path, available: list[str]) -> dict[str, list[str]]:
    """Read a split JSON ({"train": [...], "val": [...], "test": [...]}) and check its IDs exist."""
    p = Path(path)
    try:
        split = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: cannot read split file ({e})") from None
    if not isinstance(split, dict) or "train" not in split:
        raise DataError(f"{p}: split file must be a JSON object with keys {list(SPLITS)}")
    unknown = sorted(set(split) - set(SPLITS))
    if unknown:
        raise DataError(f"{p}: unknown split keys {unknown}; valid: {list(SPLITS)}")
    parts = [split.get(k, []) for k in SPLITS]
    if not all(isinstance(v, list) and all(isinstance(i, str) for i in v) for v in parts):
        raise DataError(f"{p}: each of {list(SPLITS)} must be a list of IDs")
    seen: dict[str, str] = {}
    repeated = []
    for k in SPLITS:
        for i in split.get(k, []):
            if i in seen:
                repeated.append(f"{i} ({seen[i]}/{k})")
            seen[i] = k
    if repeated:
        # an ID in both train and val would leak validation images into training
        raise DataError(f"{p}: {len(repeated)} IDs appear more than once, e.g. {repeated[:5]} "
                        "(train, val and test must not overlap)")
    have = set(available)
    missing = [i for k in SPLITS for i in split.get(k, []) if i not in have]
    if missing:
        raise DataError(f"{p}: {len(missing)} split IDs have no image/mask pair, e.g. {missing[:5]}")
    return {k: list(split.get(k, [])) for k in SPLITS}
