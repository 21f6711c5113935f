#!/usr/bin/env python
"""Where does a lever move the photos? Its per-photo differences grouped by the lesion's size.

    python scripts/lever_by_size.py "windows placed on the lesion, six seeds"
    python scripts/lever_by_size.py "windows placed on the lesion, six seeds" --set external --worst 5

Takes one row of ``configs/generalization/levers.yaml`` (the input of scripts/lever_effects.py;
the argument is a part of the row's name that matches it alone) and, for each photo of a set, the
mean over the lever's seeds minus the mean over its baseline's seeds of Dice, recall and
precision, from the recorded ``eval_test.json`` / ``eval_external.json``. The photos are grouped
by the share of the photo the ground-truth mask covers (quartiles), and the photos that lose most
are listed with their share of the whole difference: a lever that costs a few photos a lot is
a different problem from one that costs every photo a little.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

from lever_effects import LEVERS, ROOT, RUNS, SETS, _runs, load_scores

DATA = ROOT.parent / "shared" / "data"
SET_DATA = {"own test": "isic2017_train_256", "external": "isic2018_extra_256c"}


def find_lever(config: dict, name: str) -> dict:
    """The levers.yaml row whose name contains ``name``; an error lists the rows where none or several do."""
    rows = [row for row in config["levers"] if name in row["lever"]]
    if len(rows) != 1:
        which = rows or config["levers"]
        listed = "\n  ".join(row["lever"] for row in which)
        raise SystemExit(f"{LEVERS}: {len(rows)} levers match {name!r}; "
                         f"{'narrow it down' if rows else 'choose one'}:\n  {listed}")
    return rows[0]


def lesion_areas(ids: list[str], data_dir: Path) -> np.ndarray:
    """(photos,) the share of each photo its ground-truth mask covers, read from ``data_dir``'s masks."""
    sys.path.insert(0, str(ROOT))
    from lesionseg.data.io import load_mask
    from lesionseg.data.pairing import pair_files, resolve_data_dir

    if not data_dir.is_dir():
        raise SystemExit(f"{data_dir}: data folder not found (pass --data, the folder holding "
                         f"{' and '.join(SET_DATA.values())})")
    masks = {p.id: p.mask for p in pair_files(*resolve_data_dir(data_dir), check_sizes=False).pairs}
    missing = [i for i in ids if i not in masks]
    if missing:
        raise SystemExit(f"{data_dir}: no mask for {len(missing)} scored photos, e.g. {missing[0]} "
                         "(is --data the folder the runs were scored on?)")
    return np.asarray([load_mask(masks[i]).mean() for i in ids], np.float64)


def by_size(row: dict, config: dict, set_name: str, data: Path = DATA, worst: int = 5,
            folder: Path = RUNS) -> str:
    """A markdown table of the lever's mean differences per lesion-size quartile on one set, and
    a line naming the ``worst`` photos that lose most Dice with their share of the total."""
    filename = dict(SETS)[set_name]
    lever = load_scores(_runs(row["runs"], config.get("baselines", {})), filename, folder)
    base = load_scores(_runs(row["against"], config.get("baselines", {})), filename, folder)
    if lever.ids != base.ids:
        raise SystemExit(f"{set_name}: the lever's runs and their baseline scored other photos")
    diff = {k: getattr(lever, k).mean(axis=0) - getattr(base, k).mean(axis=0) for k in ("dice", "recall", "precision")}
    area = lesion_areas(lever.ids, data / SET_DATA[set_name])
    edges = np.quantile(area, [0.25, 0.5, 0.75])
    group = np.digitize(area, edges, right=True)
    bounds = [0.0, *edges, 1.0]
    lines = [f"{set_name} ({len(lever.ids)} photos), {row['lever']}:", "",
             "| lesion's share of the photo | photos | Dice | recall | precision |", "| --- | --- | --- | --- | --- |"]
    for g in range(4):
        sel = group == g
        lines.append(f"| {bounds[g]:.3f}-{bounds[g + 1]:.3f} | {int(sel.sum())} | "
                     + " | ".join(f"{diff[k][sel].mean():+.4f}" for k in ("dice", "recall", "precision")) + " |")
    lines.append(f"| all | {len(area)} | " + " | ".join(f"{diff[k].mean():+.4f}" for k in ("dice", "recall", "precision"))
                 + " |")
    order = np.argsort(diff["dice"])[:worst]
    mean, part = diff["dice"].mean(), diff["dice"][order].sum() / len(area)
    named = ", ".join(f"{lever.ids[j]} ({diff['dice'][j]:+.3f}, lesion {area[j]:.3f})" for j in order)
    # a share only where it can be read as one: a net loss that these photos do not exceed
    share = f", {part / mean:.0%} of the loss" if mean < 0 and part >= mean - 1e-12 else ""
    lines += ["", f"The {worst} photos that lose most Dice (together {part:+.4f} of the mean {mean:+.4f}{share}): "
                  f"{named}."]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lever", help="a part of the lever's name in levers.yaml that matches it alone")
    p.add_argument("--set", choices=[name for name, _ in SETS], action="append",
                   help="the set(s) to read (default: both)")
    p.add_argument("--worst", type=int, default=5, help="how many of the photos that lose most to name")
    p.add_argument("--data", type=Path, default=DATA, help="the folder holding " + " and ".join(SET_DATA.values()))
    args = p.parse_args()
    config = yaml.safe_load(LEVERS.read_text())
    row = find_lever(config, args.lever)
    print("\n\n".join(by_size(row, config, s, args.data, args.worst) for s in args.set or [n for n, _ in SETS]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
