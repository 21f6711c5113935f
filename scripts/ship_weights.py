#!/usr/bin/env python
"""Ship a finished training run as `weights/`: copy the model, record the recipe's results, write the card.

    python scripts/ship_weights.py outputs/isic2017_256_seed42 --recipe configs/isic2017_256

1. copies config.json + model.safetensors of the run's best model into weights/;
2. copies the split (ID lists) and training history into the recipe folder; re-measures the
   validation operating points on the masks users get (the model's clean-up applied, see
   lesionseg/postprocess.py) and applies the training's threshold rule to them (runs trained before
   the clean-up existed measured raw masks), writing operating_points.json and config.json;
3. runs `lesionseg evaluate` on the held-out test IDs, without and with flip TTA, without int8
   (--no-int8), in exact fp32 (--no-fast) and with raw masks (--no-cleanup), writing eval_test.json /
   eval_test_tta.json / eval_test_bf16.json / eval_test_fp32.json / eval_test_raw.json into the
   recipe folder (the card's numbers come from these);
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


def evaluate(weights: Path, data_dir: str, ids: Path, out: Path, tta: bool, exact: bool = False,
             raw: bool = False, int8: bool = True) -> None:
    cmd = [sys.executable, "-m", "lesionseg", "evaluate", "--weights", str(weights), "--data-dir", data_dir,
           "--ids", str(ids), "--json", str(out)] + (["--tta"] if tta else []) + (["--no-fast"] if exact else []) \
        + (["--no-cleanup"] if raw else []) + ([] if int8 else ["--no-int8"])
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def retune_threshold(weights: Path, data_dir: str, val_ids: Path, recall_target: float, out: Path) -> None:
    """Operating points on the validation images with the model's clean-up, the training's threshold
    rule (metrics.choose_threshold) applied to them; written into config.json and ``out``."""
    from lesionseg.data.io import load_image, load_mask
    from lesionseg.data.pairing import collect_pairs
    from lesionseg.evaluation import select_pairs
    from lesionseg.inference import Predictor
    from lesionseg.metrics import choose_threshold, operating_points

    pred = Predictor.from_weights(weights, device="cpu")
    root = ROOT / data_dir
    pairs = select_pairs(collect_pairs(root / "images", root / "masks"), val_ids.read_text().split())
    s = pred.img_size
    probs, masks = [], []
    for p in pairs:
        mask = load_mask(p.mask)
        if mask.shape != (s, s):
            raise SystemExit(f"{p.mask}: validation masks are expected at the model's {s} px")
        probs.append(pred.predict_batch([load_image(p.image)], sizes=[(s, s)])[0].lowres)
        masks.append(mask)
    points = operating_points(probs, masks, mask_fn=pred.cleanup.mask)
    chosen = choose_threshold(points, recall_target)
    config = json.loads((weights / "config.json").read_text())
    config.update(inference_threshold=chosen["threshold"], inference_operating_points=points,
                  inference_fill_holes=pred.cleanup.fill_holes,
                  inference_min_region_fraction=pred.cleanup.min_region_fraction)
    (weights / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    out.write_text(json.dumps({"recall_target": recall_target, "chosen": chosen, "points": points,
                               "cleanup": {"fill_holes": pred.cleanup.fill_holes,
                                           "min_region_fraction": pred.cleanup.min_region_fraction}},
                              indent=1) + "\n")
    print(f"threshold {chosen['threshold']:.2f}: validation recall {chosen['recall']:.4f}, "
          f"precision {chosen['precision']:.4f} (with clean-up)", flush=True)


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
    p.add_argument("--wall-note", default="", help="how the wall time was measured, if not alone on the machine")
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

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    history = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    split = json.loads((run / "split.json").read_text())
    data_dir = cfg.get("data_dir")
    retune_threshold(weights, data_dir, recipe / "val_ids.txt", cfg["recall_target"], recipe / "operating_points.json")
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test.json", tta=False)
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test_tta.json", tta=True)
    # the default path computes in bf16 (int8 convolutions below full resolution where the CPU has
    # int8 dot products); the bf16-only and exact fp32 numbers sit beside it
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test_bf16.json", tta=False, int8=False)
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test_fp32.json", tta=False, exact=True)
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test_raw.json", tta=False, raw=True)

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
        "wall_note": args.wall_note,
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
