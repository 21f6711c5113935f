#!/usr/bin/env python
"""Score a seed ensemble (the mean probability of several trained runs) beside the ablation's single runs.

    python scripts/seed_ensemble.py outputs/gen/mbv2_nofull_robust_e12_seed42 outputs/gen/mbv2_nofull_robust_e12_seed43

Each member is its run's best model on the exact fp32 path; the ensemble's probability map is the
mean of theirs, then the same clean-up, resizing and metrics as ``lesionseg evaluate``. Its
threshold is chosen by the rule training uses (``choose_joint_threshold``: the most precise
threshold whose recall reaches the recipe's ``recall_target`` on the validation part and its
``external_recall_target`` on the external set), on thresholds 0.10-0.70 in 0.05 steps (training's
grid runs 0.05-0.95; the thresholds outside this one miss the recall targets for these models). Writes
``configs/generalization/ensemble_<first run>+<n>/`` (``eval_test.json``, ``eval_external.json``,
``run_info.json`` with the members), which ``scripts/ablation.py table`` renders as a row.
Not a shipped path: the product runs one model, and an ensemble costs one forward pass per member.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesionseg.data.io import load_image, load_mask  # noqa: E402
from lesionseg.data.pairing import collect_pairs  # noqa: E402
from lesionseg.evaluation import MetricAccumulator, select_pairs  # noqa: E402
from lesionseg.inference.prediction import Prediction  # noqa: E402
from lesionseg.inference.predictor import Predictor  # noqa: E402
from lesionseg.training.thresholds import choose_joint_threshold  # noqa: E402

OUT = ROOT / "configs" / "generalization"
GRID = [round(t, 2) for t in np.arange(0.10, 0.71, 0.05)]


class MeanOfMembers:
    """(B, 3, S, S) normalised -> (B, 1, S, S) logits of the members' mean probability."""

    name = "mean of members (exact fp32)"

    def __init__(self, members: list[Predictor]):
        self.members = members

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m.runner(x)) for m in self.members]).mean(0).clamp(1e-6, 1 - 1e-6)
        return torch.log(p / (1 - p))


def score(ensemble: Predictor, pairs: list, thresholds: list[float]) -> dict[float, dict]:
    """{threshold: evaluation dict} of ``ensemble`` on ``pairs``, one forward pass per image."""
    accs = {t: MetricAccumulator(t) for t in thresholds}
    for p in pairs:
        target = load_mask(p.mask)
        pred = ensemble.predict_batch([load_image(p.image, min_side=ensemble.img_size * 2)], sizes=[target.shape])[0]
        for t, acc in accs.items():
            acc.add(p.id, Prediction(pred.lowres, pred.size, t, pred.cleanup).mask, target)
    return {t: acc.result() for t, acc in accs.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="training run folders (config.yaml, models/best_model)")
    args = ap.parse_args()
    if len(args.runs) < 2:
        ap.error("an ensemble needs two or more runs")
    cfg = yaml.safe_load((args.runs[0] / "config.yaml").read_text())
    members = [Predictor.from_weights(r / "models" / "best_model", device="cpu", fast=False) for r in args.runs]
    ensemble = Predictor.from_weights(args.runs[0] / "models" / "best_model", device="cpu", fast=False)
    ensemble.runner = MeanOfMembers(members)

    data, external = (ROOT / cfg["data_dir"]).resolve(), (ROOT / cfg["external_dir"]).resolve()
    split = json.loads((ROOT / cfg["split_file"]).read_text())
    train_pairs = collect_pairs(data / "images", data / "masks", strict=False)
    sets = {"val": select_pairs(train_pairs, split["val"]), "test": select_pairs(train_pairs, split["test"]),
            "external": collect_pairs(external / "images", external / "masks")}
    scores = {name: score(ensemble, pairs, GRID) for name, pairs in sets.items()}

    def points(name: str) -> list[dict[str, float]]:
        return [{"threshold": t, "recall": r["recall_mean"], "precision": r["precision_mean"]}
                for t, r in scores[name].items()]

    t = choose_joint_threshold(points("val"), points("external"), float(cfg.get("recall_target", 0.9)),
                               float(cfg.get("external_recall_target", 0.9)))["threshold"]
    out = OUT / f"ensemble_{args.runs[0].name}+{len(args.runs) - 1}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_test.json").write_text(json.dumps(scores["test"][t], indent=1) + "\n")
    (out / "eval_external.json").write_text(json.dumps(scores["external"][t], indent=1) + "\n")
    infos = [json.loads((OUT / r.name / "run_info.json").read_text()) for r in args.runs
             if (OUT / r.name / "run_info.json").is_file()]
    member = {k: v for k, v in (infos[0] if infos else {}).items()
              if k not in ("wall_minutes", "best_epoch", "select_on", "threshold")}  # one member's, not ours
    info = {**member, "run": out.name, "members": [r.name for r in args.runs],
            "seed": "+".join(str(i["seed"]) for i in infos) if infos else "?", "threshold": t,
            "threshold_rule": "choose_joint_threshold on val and external per-image means, 0.10-0.70 by 0.05"}
    (out / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    for name in ("test", "external"):
        r = scores[name][t]
        print(f"{name}: threshold {t:.2f} Dice {r['dice_mean']:.4f} IoU {r['iou_mean']:.4f} "
              f"recall {r['recall_mean']:.4f} thr. Jaccard {r['thresholded_jaccard']:.4f} failures {r['failure_rate']:.3f}")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
