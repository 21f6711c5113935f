#!/usr/bin/env python
"""Record another seed's run of the recipe for the model card's run-to-run spread.

    python scripts/record_seed_run.py outputs/isic2017_256_gpu_seed43 --config configs/isic2017_256_gpu.yaml

The run must use the shipped split (``--split-file configs/isic2017_256/split.json``) so both runs are
measured on the same held-out images. Writes ``<recipe>/other_seeds/seed<N>/``: ``eval_test.json``
(``lesionseg evaluate`` on the held-out test IDs at that run's own threshold, re-tuned with the
clean-up exactly as ship_weights.py does for the shipped model),
``eval_external.json`` (the run's external validation folder, if it had one),
``training_history.jsonl`` and ``run_info.json``; then re-renders ``weights/README.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from ship_weights import ROOT, evaluate, render_card, retune_threshold  # same steps as the shipped model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="training run folder (outputs/<run>)")
    p.add_argument("--recipe", type=Path, default=ROOT / "configs/isic2017_256")
    p.add_argument("--weights", type=Path, default=ROOT / "weights")
    p.add_argument("--hardware", default=None, help="where it trained, for the card (e.g. 'NVIDIA H200')")
    p.add_argument("--config", type=Path, default=ROOT / "configs/isic2017_256_gpu.yaml",
                   help="the recipe YAML the run was trained with (named in the recorded command)")
    args = p.parse_args()

    run, recipe = args.run.resolve(), args.recipe.resolve()
    shipped_split = json.loads((recipe / "split.json").read_text())
    run_split = json.loads((run / "split.json").read_text())
    if {k: sorted(v) for k, v in run_split.items()} != {k: sorted(v) for k, v in shipped_split.items()}:
        print(f"{run}: trained on another split than {recipe / 'split.json'}; rerun it with "
              f"--split-file {recipe / 'split.json'}", file=sys.stderr)
        return 2
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    out = recipe / "other_seeds" / f"seed{cfg['seed']}"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        best = Path(tmp)
        for name in ("config.json", "model.safetensors"):
            shutil.copy2(run / "models" / "best_model" / name, best / name)
        data_dir = os.path.relpath(cfg["data_dir"], ROOT)
        external = os.path.relpath(cfg["external_dir"], ROOT) if cfg.get("external_dir") else None
        retune_threshold(best, data_dir, recipe / "val_ids.txt", cfg["recall_target"], best / "points.json",
                         external, cfg.get("external_recall_target", 0.9))
        evaluate(best, data_dir, recipe / "test_ids.txt", out / "eval_test.json", tta=False)
        if external:
            evaluate(best, external, None, out / "eval_external.json", tta=False)
        threshold = json.loads((best / "config.json").read_text())["inference_threshold"]

    shutil.copy2(run / "logs" / "metrics.jsonl", out / "training_history.jsonl")
    history = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    config = args.config.resolve()
    recipe_yaml = yaml.safe_load(config.read_text())
    recipe_epochs = recipe_yaml["epochs"]
    epochs_flag = f" --epochs {cfg['epochs']}" if cfg["epochs"] != recipe_epochs else ""  # an earlier recipe
    info = {"seed": cfg["seed"], "epochs": len(history), "wall_minutes": round(sum(h["seconds"] for h in history) / 60, 1),
            "best_val_dice_at_0.5": max(h["val_dice"] for h in history), "threshold": threshold,
            "command": f"python train_cli.py --config {config.relative_to(ROOT).as_posix()}"
                       + ("" if recipe_yaml.get("split_file") else
                          f" --split-file {(recipe / 'split.json').relative_to(ROOT).as_posix()}")
                       + f" --seed {cfg['seed']} --run-name {run.name}{epochs_flag}",
            **({"hardware": args.hardware} if args.hardware else {})}
    (out / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    render_card(recipe, args.weights.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
