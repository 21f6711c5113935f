#!/usr/bin/env python
"""Ship a finished click-refiner run as `weights/refiner/` and record what it was measured at.

    python scripts/ship_refiner.py outputs/refiner_mbv2_seed42 --other outputs/refiner_mbv2_seed43

1. copies config.json + model.safetensors of the run's best refiner into weights/refiner/;
2. runs `lesionseg evaluate --clicks 3` (RITM protocol through Predictor.refine) on the held-out
   test IDs and on the external set, writing eval_clicks_test.json / eval_clicks_external.json into
   configs/isic2017_256/refiner/ with the run's history and run_info.json;
   and the naive baseline (a disk painted at each click) into eval_clicks_*_disk.json;
3. does the same for every --other run (another seed) with a temporary weights folder, into
   refiner/other_seeds/<run name>/, so the card can show the run-to-run spread;
4. re-renders weights/README.md (scripts/model_card.py, which adds the refiner's section).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from ship_weights import cpu_name  # noqa: E402

RECIPE = ROOT / "configs" / "isic2017_256"
DATA = "../shared/data/isic2017_train_256"
EXTERNAL = "../shared/data/isic2018_extra_256c"


def evaluate_clicks(weights: Path, data_dir: str, ids: Path | None, out: Path, clicks: int,
                    method: str = "refiner") -> None:
    cmd = [sys.executable, "-m", "lesionseg", "evaluate", "--weights", str(weights), "--data-dir", data_dir,
           "--clicks", str(clicks), "--click-method", method, "--json", str(out)] + (["--ids", str(ids)] if ids else [])
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def record(run: Path, weights: Path, dest: Path, clicks: int) -> None:
    """Evaluate ``weights`` (holding the run's refiner) and keep the run's history and settings in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    evaluate_clicks(weights, DATA, RECIPE / "test_ids.txt", dest / "eval_clicks_test.json", clicks)
    evaluate_clicks(weights, EXTERNAL, None, dest / "eval_clicks_external.json", clicks)
    history = (run / "logs" / "metrics.jsonl").read_text()
    (dest / "training_history.jsonl").write_text(history)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    rows = [json.loads(line) for line in history.splitlines() if line.strip()]
    best = max(rows, key=lambda r: r["score"])
    info = {"run": run.name, "seed": cfg.get("seed"), "epochs": len(rows), "best_epoch": best["epoch"],
            "steps_per_epoch": cfg.get("max_steps_per_epoch"), "batch_size": cfg.get("batch_size"),
            "lr": cfg.get("lr"), "max_clicks": cfg.get("max_clicks"), "click_radius": cfg.get("click_radius"),
            "wall_minutes": round(sum(r["seconds"] for r in rows) / 60, 1), "hardware": cpu_name(),
            "command": f"python train_cli.py --config configs/refiner_mbv2.yaml --seed {cfg.get('seed')}"}
    (dest / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="the refiner run folder to ship")
    p.add_argument("--other", type=Path, nargs="*", default=[], help="other seeds' run folders (measured only)")
    p.add_argument("--weights", type=Path, default=ROOT / "weights")
    p.add_argument("--clicks", type=int, default=3)
    args = p.parse_args(argv)
    best = args.run / "models" / "best_model"
    target = args.weights / "refiner"
    tmp = args.weights / ".refiner.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(best / name, tmp / name)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    print(f"shipped {best} -> {target}")
    dest = RECIPE / "refiner"
    record(args.run, args.weights, dest, args.clicks)
    # the naive baseline the refiner has to beat, by the same protocol from the same outlines
    evaluate_clicks(args.weights, DATA, RECIPE / "test_ids.txt", dest / "eval_clicks_test_disk.json", args.clicks,
                    "disk")
    evaluate_clicks(args.weights, EXTERNAL, None, dest / "eval_clicks_external_disk.json", args.clicks, "disk")
    for other in args.other:
        with tempfile.TemporaryDirectory() as d:
            w = Path(d) / "weights"
            w.mkdir()
            for name in ("config.json", "model.safetensors"):
                shutil.copy2(args.weights / name, w / name)
            shutil.copytree(other / "models" / "best_model", w / "refiner")
            record(other, w, dest / "other_seeds" / other.name, args.clicks)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "model_card.py")], check=True, cwd=ROOT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
