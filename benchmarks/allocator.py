"""Section 1b: the forward comparison again with glibc's allocator told to keep freed memory.

With glibc's default malloc, memory freed at the end of one forward pass is often handed back to
the kernel and faulted in again by the next (section 1's "page faults / call"): the fp32 baseline,
with twice the bytes per activation, pays ~8,000 faults (~33 MB) per call, and the bf16 path pays
0 or ~3,000 depending on where its blocks landed in the heap. That is how each runs by default, but
part of the measured ratio is then the allocator's, not the inference path's. This check runs the
same two paths side by side in a child process whose malloc keeps freed memory
(``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``, see mallopt(3)), so neither faults and
the ratio is the compute paths' alone.

``python -m benchmarks.allocator --weights DIR [--iters N]`` is the child; it prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import Settings

# glibc's largest dynamic mmap threshold (32 MiB on 64-bit) and a trim threshold well above the
# working set of either path (the fp32 baseline peaks near 40 MB)
KEEP_FREED = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(256 * 2**20)}


def allocator_neutral_section(settings: Settings, timeout_s: float = 300) -> dict[str, Any]:
    """fp32 eager vs the Predictor's default path in a child with KEEP_FREED.

    Returns the child's timings, or ``{"skipped": why}`` off Linux or when the child fails."""
    if not sys.platform.startswith("linux"):
        return {"skipped": "glibc malloc tunables exist on Linux only"}
    env = {**os.environ, **KEEP_FREED, "OMP_NUM_THREADS": str(settings.threads)}
    cmd = [sys.executable, "-m", "benchmarks.allocator", "--weights", str(settings.weights),
           "--data", str(settings.data), "--iters", str(settings.iters(40, 6)), "--threads", str(settings.threads)]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"child failed ({proc.returncode}): {tail}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["env"] = " ".join(f"{k}={v}" for k, v in KEEP_FREED.items())
    return out


def _child(argv: list[str] | None = None) -> None:
    import copy

    import torch

    from lesionseg.inference import Predictor, load_model

    from .common import real_images, time_interleaved
    from .forward import batch_of, describe

    ap = argparse.ArgumentParser(prog="python -m benchmarks.allocator")
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(weights=args.weights, data=args.data, threads=args.threads)
    model = load_model(settings.weights)
    x = batch_of(real_images(settings, 1)[0], model)[:1].clone()
    base, ours = Predictor(model, fast=False), Predictor(copy.deepcopy(model), onnx_folder=str(settings.weights))
    # the heap grows over the first calls (faults) before it holds both paths' working sets
    timed = time_interleaved({"baseline": lambda: base._forward(x),  # noqa: SLF001 - the model call alone
                              "ours": lambda: ours._forward(x)}, args.iters, warmup=10)  # noqa: SLF001
    print(json.dumps({"baseline": timed["baseline"], "ours": timed["ours"], "ours_path": describe(ours),
                      "speedup": timed["ours"]["paired_speedup"]}))


if __name__ == "__main__":
    _child()
