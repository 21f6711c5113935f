"""What ``import lesionseg`` first does to the idle spin of torch's OpenMP threads (lesionseg/__init__.py).

    python -m benchmarks.thread_spin [--rounds 6] [--quick]

After each parallel region libgomp's worker threads spin ``GOMP_SPINCOUNT`` times before they
sleep; lesionseg sets 30000 (a tenth of libgomp's default) when it is imported before torch.
Measured as the CPU time a process burns while its main thread sleeps 50 ms right after one
parallel torch op: the worker thread's spinning. One process per setting, the two alternating,
``--rounds`` pairs; each process reports the median of 15 such sleeps. How long a spin lasts
depends on the CPU (the cost of its pause instruction), and a busy machine cuts the spin short
by taking the spinning thread's core, so run it on an idle machine. Writes
benchmarks/results_thread_spin.md (results_thread_spin_avx2.md without native bf16) and a .json twin.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import Settings, default_output, machine_info, other_load, write_results

ROOT = Path(__file__).resolve().parents[1]

IDLE_CPU = """
import os, time{first}
import torch
torch.set_num_threads(2)
x = torch.randn(512, 512)
idle = []
for _ in range({samples}):
    torch.sigmoid(x * 2.0)  # large enough to run on both threads
    c0 = time.process_time(); time.sleep(0.05); idle.append(time.process_time() - c0)
print(sorted(idle)[len(idle) // 2] * 1e3, os.environ.get("GOMP_SPINCOUNT"))
"""
SETTINGS = {"libgomp's default (torch imported alone)": "", "import lesionseg first": "\nimport lesionseg"}


def idle_cpu_ms(first: str = "", samples: int = 15, **env: str) -> tuple[float, str]:
    """(median CPU ms burnt in 50 ms of sleep after a torch op, GOMP_SPINCOUNT seen by the child).

    ``first``: lines run before ``import torch``; ``env``: extra environment of the child (an
    inherited GOMP_SPINCOUNT or OMP_NUM_THREADS is removed first).
    """
    full = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", IDLE_CPU.format(first=first, samples=samples)],
                         env={**full, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"idle-spin probe failed: {out.stderr[-2000:]}")
    ms, spin = out.stdout.split()
    return float(ms), spin


def measure(settings: Settings, rounds: int) -> dict[str, Any]:
    rows: dict[str, list[float]] = {name: [] for name in SETTINGS}
    spins: dict[str, str] = {}
    for _ in range(rounds):
        for name, first in SETTINGS.items():
            ms, spins[name] = idle_cpu_ms(first)
            rows[name].append(ms)
    plain, ours = rows.values()
    ratios = [p / o for p, o in zip(plain, ours) if o > 0]
    res = {"machine": {**machine_info(settings), "other_load": other_load()}, "rounds": rounds,
           "settings": {name: {"GOMP_SPINCOUNT": spins[name], "ms": rows[name],
                               "median_ms": statistics.median(rows[name])} for name in SETTINGS},
           "ratio_median": statistics.median(ratios) if ratios else None}
    return res


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# Idle spin of torch's OpenMP threads", "",
             f"Run {m['date']}: `{m['isa_caps'] + ' ' if m['isa_caps'] != 'none' else ''}"
             f"python -m benchmarks.thread_spin`. Machine: {m['cpu']}, {m['cores']} cores; ISA {m['isa']}; "
             f"{m['other_load']}; torch {m['torch']}.", "",
             f"CPU ms a process burns in 50 ms of sleep right after a parallel torch op (median of 15 per "
             f"process), {res['rounds']} processes per setting, alternating:", "",
             "| setting | GOMP_SPINCOUNT seen | median (ms) | each process (ms) |", "| --- | --- | --- | --- |"]
    for name, r in res["settings"].items():
        lines.append(f"| {name} | {r['GOMP_SPINCOUNT']} | {r['median_ms']:.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in r['ms'])} |")
    if res["ratio_median"] is not None:
        lines += ["", f"Median of the paired ratios (default / lesionseg first): {res['ratio_median']:.1f}x."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6, help="processes per setting (6)")
    p.add_argument("--quick", action="store_true", help="2 rounds")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    res = measure(Settings(quick=args.quick), 2 if args.quick else args.rounds)
    write_results(args.output or default_output("results_thread_spin"), render(res), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
