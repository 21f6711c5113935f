#!/usr/bin/env python
"""Ship a finished training run as `weights/`: copy the model, record the recipe's results, write the card.

    python scripts/ship_weights.py outputs/isic2017_256_seed42 --recipe configs/isic2017_256

1. copies config.json + model.safetensors of the run's best model into weights/;
2. copies the split (ID lists), training history and operating points into the recipe folder;
3. runs `lesionseg evaluate` on the held-out test IDs, without and with flip TTA and in exact fp32
   (--no-fast), writing eval_test.json / eval_test_tta.json / eval_test_fp32.json into the recipe
   folder (the card's numbers come from these);
4. records run_info.json (command, epochs, wall time, hardware) and renders weights/README.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def evaluate(weights: Path, data_dir: str, ids: Path, out: Path, tta: bool, exact: bool = False) -> None:
    cmd = [sys.executable, "-m", "lesionseg", "evaluate", "--weights", str(weights), "--data-dir", data_dir,
           "--ids", str(ids), "--json", str(out)] + (["--tta"] if tta else []) + (["--no-fast"] if exact else [])
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def render_card(recipe: Path, weights: Path) -> None:
    """weights/README.md from the recipe folder's committed outputs (python -m lesionseg.model_card)."""
    subprocess.run([sys.executable, "-m", "lesionseg.model_card", "--recipe", str(recipe.relative_to(ROOT)),
                    "--weights", str(weights)], check=True, cwd=ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="training run folder (outputs/<run>)")
    p.add_argument("--recipe", type=Path, default=ROOT / "configs/isic2017_256")
    p.add_argument("--weights", type=Path, default=ROOT / "weights")
    p.add_argument("--command", default="python train_cli.py --config configs/isic2017_256.yaml")
    p.add_argument("--hardware", default=None, help="default: this machine's CPU and core count")
    args = p.parse_args()

    run, recipe, weights = args.run.resolve(), args.recipe.resolve(), args.weights.resolve()
    best = run / "models" / "best_model"
    recipe.mkdir(parents=True, exist_ok=True)
    weights.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(best / name, weights / name)
    for name in ("split.json", "val_ids.txt", "test_ids.txt"):
        shutil.copy2(run / name, recipe / name)
    shutil.copy2(run / "logs" / "metrics.jsonl", recipe / "training_history.jsonl")
    shutil.copy2(run / "logs" / "operating_points.json", recipe / "operating_points.json")

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    history = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    split = json.loads((run / "split.json").read_text())
    data_dir = cfg.get("data_dir")
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test.json", tta=False)
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test_tta.json", tta=True)
    # the default path computes in bf16 where the CPU has it; the exact fp32 numbers sit beside it
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test_fp32.json", tta=False, exact=True)

    from lesionseg.models import DSAttentionUNet

    n_params = DSAttentionUNet(**json.loads((weights / "config.json").read_text())).num_parameters()
    secs = sum(h["seconds"] for h in history)
    import os

    info = {
        "command": args.command,
        "date": date.today().isoformat(),
        "epochs": len(history),
        "wall_minutes": round(secs / 60, 1),
        "seconds_per_epoch_median": sorted(h["seconds"] for h in history)[len(history) // 2],
        "hardware": args.hardware or f"{cpu_name()}, {os.cpu_count()} cores, no GPU, bf16 autocast",
        "parameters": n_params,
        "seed": cfg["seed"],
        "recall_target": cfg["recall_target"],
        "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
        "best_val_dice_at_0.5": max(h["val_dice"] for h in history),
        "recipe_summary": (f"AdamW + OneCycleLR (max LR {cfg['lr']}, weight decay {cfg['weight_decay']}), batch "
                           f"{cfg['batch_size']}, {cfg['img_size']} px, loss `{cfg['loss']}` on the final output and "
                           f"the deep-supervision heads (weights halving per level), gradient clipping "
                           f"{cfg['grad_clip']}, albumentations flips / rotate90 / affine / random resized crop / "
                           f"colour-hue jitter / blur-noise-JPEG / CLAHE / coarse dropout, best epoch by "
                           f"validation Dice."),
    }
    (recipe / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    render_card(recipe, weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
