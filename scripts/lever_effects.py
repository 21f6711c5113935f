#!/usr/bin/env python
"""Does a lever separate from noise? Each lever's effect with a 95% interval over seeds and photos.

    python scripts/lever_effects.py            # rewrites the two tables in docs/generalization.md
    python scripts/lever_effects.py --print    # prints them instead

Reads ``configs/generalization/levers.yaml`` (which recorded runs test which lever, against which
runs of the recipe without it) and each run's ``eval_test.json`` / ``eval_external.json``
(``scripts/ablation.py record``). A lever's effect on a set is the mean over photos of (the photo's
Dice averaged over the lever's seeds) minus (the same over the baseline's seeds). Its interval is a
two-level bootstrap: each replicate draws each side's seeds with replacement, then the photos with
replacement (the same photos for both sides), so it widens with both the seed-to-seed spread and
the choice of photos. With two or three seeds a side the seed level is coarse and too narrow (a
bootstrap of n seeds gives their mean (n-1)/n of its variance, half with two): an interval that
only just excludes 0 is a lead worth more seeds, not a settled effect.

The last effect column reads the framing stress test (``scripts/framing_check.py``): external Dice
with the central half of each side of every photo, where the lesion fills the frame. Where every
run of both sides has its photos in its framing file (``per_image``, written since the files
kept them), that interval is the same two-level bootstrap as the others; where a file keeps the
run's mean only, it is over seeds only (each side's seeds drawn with replacement, or the pairs
with ``paired_seeds``), needs two runs a side and says "(seeds only)". It reads "-" where a run
has no framing file.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from doc_markers import write_between

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "configs" / "generalization"
LEVERS = RUNS / "levers.yaml"
DOC = ROOT / "docs" / "generalization.md"
SETS = (("own test", "eval_test.json"), ("external", "eval_external.json"))
BEGIN, END = "<!-- lever effects: scripts/lever_effects.py -->", "<!-- end of lever effects -->"
REPLICATES = 4000
READINGS = ("own-test Dice", "external Dice", "external recall", "centre-2x external Dice")  # the effects columns
FRAMING = ("external", "centre 2x")  # (set, framing) of the framing files' reading in the effects table


@dataclass
class Scores:
    """Per-photo metrics of one recipe's runs on one set: ``dice`` and ``recall`` are (seeds, photos)."""
    ids: list[str]
    dice: np.ndarray
    recall: np.ndarray
    precision: np.ndarray | None = None  # (seeds, photos), from the evaluation files only


def load_scores(runs: list[str], filename: str, folder: Path = RUNS) -> Scores:
    """The runs' per-photo Dice and recall from ``folder/<run>/<filename>``, photos in one order."""
    missing = [r for r in runs if not (folder / r / filename).is_file()]
    if missing:
        raise SystemExit(f"{folder}: no {filename} for {', '.join(missing)} "
                         "(record the runs with scripts/ablation.py record, or fix configs/generalization/levers.yaml)")
    dice, recall, precision, ids = [], [], [], None
    for run in runs:
        per_image = {p["id"]: p for p in json.loads((folder / run / filename).read_text())["per_image"]}
        if ids is None:
            ids = sorted(per_image)
        elif sorted(per_image) != ids:
            raise SystemExit(f"{folder / run / filename}: scored other photos than {runs[0]} "
                             "(evaluate both on the same split)")
        dice.append([per_image[i]["dice"] for i in ids])
        recall.append([per_image[i]["recall"] for i in ids])
        precision.append([per_image[i].get("precision", np.nan) for i in ids])
    return Scores(ids, np.asarray(dice, np.float64), np.asarray(recall, np.float64), np.asarray(precision, np.float64))


def _seed_means(values: np.ndarray, rng: np.random.Generator, replicates: int) -> np.ndarray:
    """(replicates, photos): per replicate, the photos' values averaged over seeds drawn with replacement."""
    seeds = rng.integers(0, len(values), size=(replicates, len(values)))
    return values[seeds].mean(axis=1)


def effect(lever: np.ndarray, against: np.ndarray, rng: np.random.Generator,
           replicates: int = REPLICATES, paired_seeds: bool = False) -> tuple[float, float, float]:
    """Mean paired difference of (seeds, photos) arrays and its 95% two-level bootstrap interval.

    ``paired_seeds``: row i of both arrays comes from the same seed (the lever's run i and its
    baseline's run i share data order and augmentation), so each replicate draws the seeds once for
    both sides; the interval then counts the spread of the per-seed differences."""
    if lever.shape[1] != against.shape[1]:
        raise ValueError(f"{lever.shape[1]} photos against {against.shape[1]}")
    point = float((lever.mean(axis=0) - against.mean(axis=0)).mean())
    if paired_seeds:
        if len(lever) != len(against):
            raise ValueError(f"paired seeds need as many runs a side, got {len(lever)} against {len(against)}")
        diff = _seed_means(lever - against, rng, replicates)
    else:
        diff = _seed_means(lever, rng, replicates) - _seed_means(against, rng, replicates)
    photos = rng.integers(0, lever.shape[1], size=(replicates, lever.shape[1]))
    boot = np.take_along_axis(diff, photos, axis=1).mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return point, float(lo), float(hi)


def framing_means(runs: list[str], aliases: dict[str, str], folder: Path = RUNS) -> np.ndarray | None:
    """(runs,) mean Dice of each run at :data:`FRAMING` from ``folder/framing/<run>.json`` (or the
    file ``aliases`` names for it, e.g. the shipped weights' ``shipped.json``); None where one lacks it."""
    values = []
    for run in runs:
        path = folder / "framing" / f"{aliases.get(run, run)}.json"
        if not path.is_file():
            return None
        values.append(json.loads(path.read_text())[FRAMING[0]][FRAMING[1]]["dice_mean"])
    return np.asarray(values, np.float64)


def framing_scores(runs: list[str], aliases: dict[str, str], folder: Path = RUNS) -> Scores | None:
    """The runs' per-photo external Dice and recall at :data:`FRAMING` from their framing files, photos
    in one order; None where a file is missing or keeps means only, or the runs scored other photos."""
    dice, recall, ids = [], [], None
    for run in runs:
        path = folder / "framing" / f"{aliases.get(run, run)}.json"
        if not path.is_file():
            return None
        rows = json.loads(path.read_text()).get("per_image", {}).get(FRAMING[0], {}).get(FRAMING[1])
        if not rows:
            return None
        per_image = {r["id"]: r for r in rows}
        if ids is None:
            ids = sorted(per_image)
        elif sorted(per_image) != ids:
            return None
        dice.append([per_image[i]["dice"] for i in ids])
        recall.append([per_image[i]["recall"] for i in ids])
    return Scores(ids, np.asarray(dice, np.float64), np.asarray(recall, np.float64))


def seed_effect(lever: np.ndarray, against: np.ndarray, rng: np.random.Generator,
                replicates: int = REPLICATES, paired_seeds: bool = False) -> tuple[float, float, float]:
    """Difference of the means of two (seeds,) arrays and its 95% bootstrap interval over seeds
    (:func:`effect` with one photo). ValueError with fewer than two runs a side."""
    if min(len(lever), len(against)) < 2:
        raise ValueError(f"a seed-level interval needs two runs a side, got {len(lever)} against {len(against)}")
    return effect(lever[:, None], against[:, None], rng, replicates, paired_seeds)


def _framing_cell(runs: list[str], against: list[str], config: dict, folder: Path, rng: np.random.Generator,
                  replicates: int, paired: bool) -> tuple[str, tuple[float, float, float] | None]:
    """(cell text, interval or None) of the centre-2x external Dice effect."""
    aliases = config.get("framing_files", {})
    photos = framing_scores(runs, aliases, folder), framing_scores(against, aliases, folder)
    if photos[0] is not None and photos[1] is not None and photos[0].ids == photos[1].ids:
        interval = effect(photos[0].dice, photos[1].dice, rng, replicates, paired)
        return _cell(*interval), interval
    mine, theirs = framing_means(runs, aliases, folder), framing_means(against, aliases, folder)
    if mine is None or theirs is None:
        return "-", None
    if min(len(mine), len(theirs)) < 2:
        return f"{mine.mean() - theirs.mean():+.4f} (no interval: one run)", None
    interval = seed_effect(mine, theirs, rng, replicates, paired)
    return _cell(*interval) + " (seeds only)", interval


def _runs(spec: str | list[str], baselines: dict) -> list[str]:
    if isinstance(spec, str):
        if spec not in baselines:
            raise SystemExit(f"{LEVERS}: no baseline {spec!r} (choose from {', '.join(baselines)})")
        return baselines[spec]["runs"]
    return list(spec)


def _cell(point: float, lo: float, hi: float) -> str:
    return f"{point:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _verdict(intervals: list[tuple[float, float, float] | None], one_run: bool) -> str:
    """Which of :data:`READINGS` moved beyond the interval's noise (None: a reading with no interval)."""
    words = [f"{name} {'higher' if i[1] > 0 else 'lower'}"
             for name, i in zip(READINGS, intervals) if i is not None and (i[1] > 0 or i[2] < 0)]
    text = ", ".join(words) or "within noise"
    # one training run has no seed spread to draw from: its side's training noise is not in the interval
    return text + (" (one run on a side: training noise only partly counted)" if one_run else "")


def spread_table(config: dict, folder: Path = RUNS) -> str:
    """Each baseline recipe's Dice per seed and mean on both sets."""
    lines = ["| recipe | seeds | Dice own test: mean (per seed) | Dice external: mean (per seed) "
             "| recall external: mean (per seed) |", "| --- | --- | --- | --- | --- |"]
    for base in config["baselines"].values():
        runs = base["runs"]
        test, ext = (load_scores(runs, f, folder) for _, f in SETS)  # first: it names missing runs
        seeds = [json.loads((folder / r / "run_info.json").read_text())["seed"] for r in runs]

        def cell(values: np.ndarray) -> str:
            per = values.mean(axis=1)
            return f"{per.mean():.4f} ({', '.join(f'{v:.4f}' for v in per)})"
        lines.append(f"| {base['label']} | {', '.join(map(str, seeds))} | {cell(test.dice)} | {cell(ext.dice)} "
                     f"| {cell(ext.recall)} |")
    return "\n".join(lines)


def effects_table(config: dict, folder: Path = RUNS, replicates: int = REPLICATES) -> str:
    """One row a lever: its Dice effect on both sets, its external recall effect and its centre-2x
    external Dice effect (seed level), with intervals."""
    lines = ["| lever | runs against | Dice own test | Dice external | recall external "
             "| Dice external at centre 2x | reading |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for lever in config["levers"]:
        runs, against = _runs(lever["runs"], config["baselines"]), _runs(lever["against"], config["baselines"])
        # an inference setting on the same weights has no training noise to count
        one_run = min(len(runs), len(against)) == 1 and not lever.get("same_weights", False)
        paired = bool(lever.get("paired_seeds", False))
        rng = np.random.default_rng(0)  # a fixed stream per row: a row does not change when others are added
        intervals = []
        for _, filename in SETS:
            mine, theirs = load_scores(runs, filename, folder), load_scores(against, filename, folder)
            if mine.ids != theirs.ids:
                raise SystemExit(f"{lever['lever']}: {filename} scored other photos than its baseline")
            intervals.append(effect(mine.dice, theirs.dice, rng, replicates, paired))
        intervals.append(effect(mine.recall, theirs.recall, rng, replicates, paired))  # SETS ends with the external set
        cells = [_cell(*i) for i in intervals]
        framing, interval = _framing_cell(runs, against, config, folder, rng, replicates, paired)
        lines.append(f"| {lever['lever']} | {len(runs)} against {len(against)} | " + " | ".join(cells)
                     + f" | {framing} | {_verdict([*intervals, interval], one_run)} |")
    return "\n".join(lines)


def render(config: dict, folder: Path = RUNS, replicates: int = REPLICATES) -> str:
    return spread_table(config, folder) + "\n\n" + effects_table(config, folder, replicates)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--print", action="store_true", help="print the tables instead of writing them into the docs")
    args = p.parse_args()
    text = render(yaml.safe_load(LEVERS.read_text()))
    if args.print:
        print(text)
        return 0
    if not write_between(DOC, BEGIN, END, text):
        return 2
    print(f"wrote the lever effects into {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
