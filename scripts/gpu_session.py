#!/usr/bin/env python
"""One lent-GPU session, prepared as a single command with a deadline (the lease is minutes long).

    python scripts/gpu_session.py --data .devdata/isic2017_train_256 --out "$OUT" --deadline-s 500

1. ``python -m benchmarks.gpu``: section 7 of the benchmarks (forward, peers, training steps), alone
   on the GPU so its timings are not shared with anything;
2. then, side by side on the one GPU (each run is launch-bound at batch 8, so they overlap well):
   - ``benchmarks.peer_training`` of DS-AttentionUNet and of smp ``Unet("resnet34")`` with the
     recipe's 20 epochs, seed 42: the equal-recipe accuracy comparison issue 5 asks for;
   - ``train_cli.py`` with the recipe at a longer schedule (epochs sized from step 1's measured step
     time to end before the deadline), seeds 42 and 43, and smp Unet(resnet34) at that length;
3. stops whatever is still running at the deadline, scores the long ``train_cli`` runs as the peers
   are scored, and packs results, logs and the runs (best model, logs, split; no optimiser
   checkpoint) into ``--out``: at most 8 files come back from a lent machine.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "configs/isic2017_256.yaml"
SPLIT = "configs/isic2017_256/split.json"
STEPS_PER_EPOCH = 200  # 1,600 training images / batch 8


def sh(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    print(f"+ {' '.join(cmd)}  > {log.name}", flush=True)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def stop(p: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if p.poll() is None:
            os.killpg(p.pid, sig)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


def long_epochs(step_ms: float | None, seconds: float, smoke: bool) -> int:
    """Epochs that fit ``seconds`` with five runs sharing the GPU (measured slow-down unknown: x2)."""
    if smoke:
        return 1
    per_epoch = STEPS_PER_EPOCH * (step_ms or 20.0) / 1e3 * 2.0 + 3.0  # + validation, plots, checkpoint
    return int(max(20, min(60, (seconds - 40) // per_epoch)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--deadline-s", type=float, default=500, help="seconds from start by which runs are stopped")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny runs on any device (checks the script)")
    args = ap.parse_args()
    t0 = time.time()
    out, runs, logs = args.out, Path("/tmp/lesionseg_gpu_runs"), Path("/tmp/lesionseg_gpu_logs")  # logs: one tar back
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    py = sys.executable
    small = ["--limit", "16", "--max-steps-per-epoch", "2"] if args.smoke else []

    # ---- 1. section 7, alone on the GPU ----
    bench = sh([py, "-m", "benchmarks.gpu", "--output", str(out / "results_gpu.json"), "--data", args.data]
               + (["--quick"] if args.smoke else []), logs / "bench.log", env)
    try:
        bench.wait(timeout=150)
    except subprocess.TimeoutExpired:
        stop(bench)
    step_ms = None
    try:
        rows = json.loads((out / "results_gpu.json").read_text())["gpu"]["train_rows"]
        step_ms = next(r["median_ms"] for r in rows if r["batch"] == 8 and r["variant"].startswith("bf16"))
    except (OSError, KeyError, StopIteration, ValueError):
        print("no step time from the benchmark; assuming 20 ms", flush=True)
    left = args.deadline_s - (time.time() - t0)
    epochs = long_epochs(step_ms, left, args.smoke)
    print(f"bf16 step at batch 8: {step_ms} ms; {left:.0f} s left: long runs get {epochs} epochs", flush=True)

    # ---- 2. the training runs, side by side ----
    short = "1" if args.smoke else "20"
    common = ["--data-dir", args.data, "--device", args.device, "--workers", "2"] + small
    procs = {
        "peer_ours_e20": sh([py, "-m", "benchmarks.peer_training", "--model", "ours", "--epochs", short, "--seed", "42",
                             "--output", str(out / "peer_ours_e20.json")] + common, logs / "peer_ours_e20.log", env),
        "peer_r34_e20": sh([py, "-m", "benchmarks.peer_training", "--model", "smp_unet_resnet34", "--epochs", short,
                            "--seed", "42", "--output", str(out / "peer_r34_e20.json")] + common,
                           logs / "peer_r34_e20.log", env),
        f"peer_r34_e{epochs}": sh([py, "-m", "benchmarks.peer_training", "--model", "smp_unet_resnet34", "--epochs",
                                   str(epochs), "--seed", "42", "--output", str(out / f"peer_r34_e{epochs}.json")]
                                  + common, logs / f"peer_r34_e{epochs}.log", env),
    }
    for seed in (42, 43):
        name = f"gpu_e{epochs}_seed{seed}"
        split = ["--limit", "48"] if args.smoke else ["--split-file", SPLIT]  # the smoke subset has its own split
        procs[name] = sh([py, "train_cli.py", "--config", RECIPE, "--seed", str(seed), "--epochs", str(epochs),
                          "--output-dir", str(runs), "--run-name", name] + common + split, logs / f"{name}.log", env)
    while any(p.poll() is None for p in procs.values()) and time.time() - t0 < args.deadline_s:
        time.sleep(2)
    status = {}
    for name, p in procs.items():
        status[name] = "finished" if p.poll() == 0 else ("stopped at the deadline" if p.poll() is None
                                                          else f"failed (exit {p.returncode})")
        stop(p)
    print(json.dumps(status, indent=1), flush=True)

    # ---- 3. score the long runs like the peers; pack ----
    for seed in (42, 43):
        name = f"gpu_e{epochs}_seed{seed}"
        best = runs / name / "models" / "best_model"
        # fit() finished (threshold tuned) even if the HTML report after it failed
        if (runs / name / "logs" / "operating_points.json").is_file() and (best / "model.safetensors").is_file():
            p = sh([py, "-m", "benchmarks.peer_training", "--weights", str(best), "--data-dir", args.data, "--device",
                    args.device, "--output", str(logs / f"scored_{name}.json")] + small[:2], logs / f"score_{name}.log", env)
            p.wait(timeout=120)
        with tarfile.open(out / f"{name}.tar.gz", "w:gz") as tar:
            if (runs / name).is_dir():
                tar.add(runs / name, arcname=name,
                        filter=lambda ti: None if ti.name.endswith(".pth") or "/visualizations/epochs" in ti.name else ti)
    (logs / "status.json").write_text(json.dumps({"status": status, "epochs_long": epochs, "step_ms": step_ms,
                                                  "wall_s": round(time.time() - t0, 1)}, indent=1))
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(logs, arcname="logs")
    print(f"done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
