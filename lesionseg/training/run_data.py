"""The pairs a training run uses and how they are split, fine-tuning's mix of old and new data included.

A plain run pairs its folders (``--data-dir`` or ``--images`` / ``--masks``) and splits the ids
(``--split-file``, or the seeded split). A fine-tuning run (``--finetune``) does exactly that
with the *original* data (``--mix-data``), so that its test part is the original run's test part,
never trained on, and the fine-tuned model's test report compares with the original's. The new
data (``--data-dir``: clinicians' saved corrections, or any labelled folder) joins afterwards: a
seeded ``val_fraction`` share of it (one pair from 3 pairs on) to validation, the rest to
training, where each new pair is repeated to make up about ``corrections_share`` of every epoch.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..data.pairing import DataError, Pair, collect_dir_pairs, collect_pairs
from ..data.split import load_split, make_split
from .config import TrainConfig

log = logging.getLogger(__name__)
DEBUG_PAIRS = 48
# a few photos repeated more often than this per epoch are learnt by heart, not learnt from
MAX_REPEATS = 20

Split = dict[str, list[str]]


def resolve_pairs(cfg: TrainConfig) -> list[Pair]:
    """The pairs the split is drawn from: the training data, or a fine-tuning run's original data."""
    if cfg.finetune:
        return collect_dir_pairs(cfg.mix_dirs, cfg.mask_suffix) if cfg.mix_dirs else []
    if cfg.images and cfg.masks:
        return collect_pairs(Path(cfg.images), Path(cfg.masks), cfg.mask_suffix)
    if cfg.data_dirs:
        return collect_dir_pairs(cfg.data_dirs, cfg.mask_suffix)
    raise DataError("no data given: pass --images DIR --masks DIR, or --data-dir DIR [DIR ...]")


def correction_repeats(n_original: int, n_new: int, share: float) -> int:
    """How often each new training pair appears per epoch for the new data to make up about
    ``share`` of it: at least once, at most ``MAX_REPEATS`` times."""
    if n_original == 0 or n_new == 0:
        return 1
    return int(min(MAX_REPEATS, max(1, round(share / (1 - share) * n_original / n_new))))


def pairs_and_split(cfg: TrainConfig, saved_split: Split | None = None) -> tuple[dict[str, Pair], Split, list[str]]:
    """(pairs by id, the split, one epoch's training ids) of a run; ``saved_split``: a resumed
    run's own split, kept as it was."""
    pairs = resolve_pairs(cfg)
    if cfg.debug or cfg.limit:
        pairs = pairs[: cfg.limit or DEBUG_PAIRS]
    by_id = {p.id: p for p in pairs}
    if saved_split is not None:
        split = saved_split
    elif cfg.split_file:
        split = load_split(cfg.split_file, list(by_id))
    elif by_id:
        split = make_split(list(by_id), cfg.val_fraction, cfg.test_fraction, cfg.seed)
    else:  # fine-tuning on the new data alone
        split = {"train": [], "val": [], "test": []}
    if cfg.finetune:
        return _add_new_data(cfg, by_id, split, resumed=saved_split is not None)
    return by_id, split, split["train"]


def _add_new_data(cfg: TrainConfig, by_id: dict[str, Pair], split: Split,
                  resumed: bool) -> tuple[dict[str, Pair], Split, list[str]]:
    new = collect_dir_pairs(cfg.data_dirs, cfg.mask_suffix)
    clash = sorted(p.id for p in new if p.id in by_id)
    if clash:
        # the same id is the same photo: trained on, it could be one of the original test photos
        log.warning("%d new pair(s) have the id of an original pair and are left out (save them under other "
                    "ids to use them): %s", len(clash), ", ".join(clash[:5]))
    new = [p for p in new if p.id not in by_id]
    if not new:
        raise DataError(f"{', '.join(cfg.data_dirs)}: no new pairs left to fine-tune on (every id is also an id "
                        "of the --mix-data folders)")
    new_ids = {p.id for p in new}
    if not resumed:
        part = make_split(sorted(new_ids), cfg.val_fraction, 0.0, cfg.seed)
        split = {"train": sorted(split["train"] + part["train"]), "val": sorted(split["val"] + part["val"]),
                 "test": list(split["test"])}
    by_id = {**by_id, **{p.id: p for p in new}}
    new_train = [i for i in split["train"] if i in new_ids]
    old_train = [i for i in split["train"] if i not in new_ids]
    repeats = correction_repeats(len(old_train), len(new_train), cfg.corrections_share)
    n_epoch = len(old_train) + repeats * len(new_train)
    log.info("fine-tuning data: %d original + %d new training pairs, each new one %dx per epoch (%.0f%% of it); "
             "validation %d original + %d new; test %d original pairs, untouched", len(old_train), len(new_train),
             repeats, 100 * repeats * len(new_train) / max(n_epoch, 1), len(set(split["val"]) - new_ids),
             len(set(split["val"]) & new_ids), len(split["test"]))
    return by_id, split, old_train + new_train * repeats
