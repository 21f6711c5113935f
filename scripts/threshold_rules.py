#!/usr/bin/env python
"""Is the default threshold a property of the recipe or of the seed? Threshold rules across seeds.

    python scripts/threshold_rules.py weights --name RUN outputs/gen/RUN2 ...  # measures, stores, prints
    python scripts/threshold_rules.py          # rewrites the table in docs/generalization.md from the stored points
    python scripts/threshold_rules.py --print                      # prints it instead

Training's rule (``choose_joint_threshold`` in lesionseg/training/thresholds.py) picks, for one
trained seed, the most precise threshold whose recall reaches 0.93 on the validation part and 0.90
on the external set. Seeds of one recipe are calibrated differently (their recall curves are
offset from each other, and each falls slowly with the threshold), so they land far apart. This
measures each model's operating points (per-image mean recall, precision and Dice
at thresholds 0.05, 0.10, ..., 0.95, on the masks users get: the model's clean-up applied, exact
fp32) on the validation part, the external set and the own test part, stores them in
``configs/generalization/thresholds/<name>.json`` (every file there is one seed of one recipe: the
robust 12-epoch recipe shipped before the tenth's windows on the lesion), and compares three
rules, each the same choice on different points:

- ``own``: the seed's own points (what training does);
- ``pooled``: the points averaged over all seeds: one threshold for the recipe;
- ``others``: the points averaged over the other seeds: the threshold a recipe default fixed before
  this seed was trained would give it (leave one seed out: the check of ``pooled`` on a new seed).

``others`` leaves out the seed, not the photos: the external set still chose its threshold, so the
external recall it reads stays optimistic. The own test part is never used to choose; its columns
show what each choice gives on photos no rule has seen.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from doc_markers import write_between  # noqa: E402

OUT = ROOT / "configs" / "generalization" / "thresholds"
DATA = ROOT.parent / "shared" / "data"
DOC = ROOT / "docs" / "generalization.md"
BEGIN, END = "<!-- threshold rules: scripts/threshold_rules.py -->", "<!-- end of threshold rules -->"
SETS = ("val", "external", "test")
RECIPE = ROOT / "configs" / "isic2017_256_mbv2_nofull.yaml"  # the shipped recipe: its recall targets
RULES = ("own", "pooled", "others")


def mean_points(docs: Sequence[dict], part: str) -> list[dict[str, float]]:
    """The operating points of ``part`` averaged over ``docs`` (each a stored model), threshold by threshold."""
    ths = [p["threshold"] for p in docs[0][part]]
    if any([p["threshold"] for p in d[part]] != ths for d in docs):
        raise ValueError(f"the models' {part} points use different thresholds")
    return [{"threshold": t, **{k: float(np.mean([d[part][i][k] for d in docs])) for k in ("recall", "precision", "dice")}}
            for i, t in enumerate(ths)]


def choose(docs: Sequence[dict]) -> float:
    """Training's threshold rule on the points of ``docs`` averaged (one doc: that model's own)."""
    import yaml

    from lesionseg.training.thresholds import choose_joint_threshold
    recipe = yaml.safe_load(RECIPE.read_text())
    return choose_joint_threshold(mean_points(docs, "val"), mean_points(docs, "external"),
                                  recipe["recall_target"], recipe["external_recall_target"])["threshold"]


def rule_thresholds(docs: Sequence[dict]) -> dict[str, list[float]]:
    """{rule: the threshold it gives each of ``docs``, in order} (``others`` needs two docs or more)."""
    pooled = choose(docs)
    out = {"own": [choose([d]) for d in docs], "pooled": [pooled] * len(docs)}
    if len(docs) > 1:
        out["others"] = [choose([o for j, o in enumerate(docs) if j != i]) for i in range(len(docs))]
    return out


def at(doc: dict, part: str, threshold: float) -> dict[str, float]:
    """``doc``'s point of ``part`` at ``threshold``."""
    return next(p for p in doc[part] if abs(p["threshold"] - threshold) < 1e-9)


def render(docs: Sequence[dict]) -> str:
    """Markdown: one row per model and rule; closing each rule, the mean over models with the range."""
    rules = rule_thresholds(docs)
    cols = [("val", "recall"), ("external", "recall"), ("test", "recall"), ("external", "dice"), ("test", "dice")]
    lines = ["| model | rule | threshold | validation recall | external recall | own-test recall | external Dice "
             "| own-test Dice |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rule in (r for r in RULES if r in rules):
        for doc, t in zip(docs, rules[rule]):
            cells = [f"{at(doc, part, t)[k]:.4f}" for part, k in cols]
            lines.append(f"| {doc['model']} | {rule} | {t:.2f} | " + " | ".join(cells) + " |")
        ths = rules[rule]
        summary = [f"{min(ths):.2f}" if min(ths) == max(ths) else f"{min(ths):.2f}-{max(ths):.2f}"]
        for part, k in cols:
            v = [at(d, part, t)[k] for d, t in zip(docs, ths)]
            summary.append(f"{np.mean(v):.4f} ({min(v):.4f}-{max(v):.4f})")
        lines.append(f"| mean (range) of {len(docs)} | {rule} | " + " | ".join(summary) + " |")
    return "\n".join(lines) + "\n"


def load_docs(folder: Path = OUT) -> list[dict]:
    """Every model's stored points in ``folder``, by file name."""
    return [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]


def measure(folder: Path, name: str, sets: dict[str, list]) -> dict:
    """Operating points of the model in ``folder`` (a weights folder) on each set of pairs."""
    from lesionseg.data.io import load_image, load_mask
    from lesionseg.inference.predictor import Predictor
    from lesionseg.metrics import operating_points

    from framing_check import file_sha256

    predictor = Predictor.from_weights(folder, device="cpu", fast=False)
    doc: dict = {"model": name, "folder": str(folder), "model_sha256": file_sha256(folder / "model.safetensors"),
                 "weights_threshold": predictor.threshold, "images": {s: len(p) for s, p in sets.items()}}
    for part, pairs in sets.items():
        probs, masks = [], []
        for i in range(0, len(pairs), 16):
            chunk = pairs[i:i + 16]
            preds = predictor.predict_batch([load_image(p.image) for p in chunk])
            for p, pred in zip(chunk, preds):
                mask = load_mask(p.mask)
                if mask.shape != pred.lowres.shape:
                    raise ValueError(f"{p.mask}: mask {mask.shape} is not at the model's resolution "
                                     f"{pred.lowres.shape}; these sets are stored at 256 px")
                probs.append(pred.lowres)
                masks.append(mask)
        doc[part] = operating_points(probs, masks, mask_fn=predictor.cleanup.mask)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="*", help="weights folders or training run folders to measure")
    ap.add_argument("--name", action="append", default=[], help="the stored name of each model, in order "
                    "(default: the folder's name; weights/ needs one)")
    ap.add_argument("--print", action="store_true", help="print the table instead of writing it into the docs")
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding isic2017_train_256 and isic2018_extra_256c")
    ap.add_argument("--out", type=Path, default=OUT, help="where the JSON files go")
    ap.add_argument("--limit", type=int, default=None, help="measure only the first N images of each set")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error(f"--limit must be a positive number of images, got {args.limit}")
    if args.limit is not None and args.out.resolve() == OUT.resolve():
        ap.error("--limit measures part of each set: pass --out DIR so the committed points stay whole")
    if args.models:
        if args.name and len(args.name) != len(args.models):
            ap.error(f"--name given {len(args.name)} times for {len(args.models)} models")
        names = args.name or [m.resolve().name for m in args.models]
        if "weights" in names:
            ap.error("name the weights folder's model with --name (e.g. the run it was shipped from)")
        from framing_check import evaluation_sets, model_folder  # the same sets and folders as the framing check
        from lesionseg.utils.atomic import atomic_write_text
        try:
            sets = {k: v[:args.limit] for k, v in evaluation_sets(args.data).items()}
        except FileNotFoundError as e:
            ap.error(str(e))
        sets = {k: sets[k] for k in SETS}
        args.out.mkdir(parents=True, exist_ok=True)
        for path, name in zip(args.models, names):
            folder = model_folder(path)
            if not (folder / "config.json").is_file():
                ap.error(f"{path}: no config.json (pass a weights folder or a training run folder)")
            atomic_write_text(args.out / f"{name}.json", json.dumps(measure(folder, name, sets), indent=1) + "\n")
            print(f"measured {name}", file=sys.stderr)
    docs = load_docs(args.out)
    if not docs:
        ap.error(f"no stored points in {args.out}: measure models first")
    text = render(docs)
    if args.print or args.models:
        print(text, end="")
        return 0
    return 0 if write_between(DOC, BEGIN, END, text) else 1


if __name__ == "__main__":
    raise SystemExit(main())
