"""Importing lesionseg before torch shortens the spin of torch's idle OpenMP threads (lesionseg/__init__.py).

Measured as the CPU time a process burns while its main thread sleeps right after a parallel torch
op: that is the spinning of torch's worker thread, counted in spins, not wall time, so a busy
machine changes it little."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

IDLE_CPU = """
import os, time{first}
import torch
torch.set_num_threads(2)
x = torch.randn(512, 512)
idle = []
for _ in range(9):
    torch.sigmoid(x * 2.0)  # large enough to run on both threads
    c0 = time.process_time(); time.sleep(0.05); idle.append(time.process_time() - c0)
print(sorted(idle)[len(idle) // 2] * 1e3, os.environ.get("GOMP_SPINCOUNT"))
"""


def _idle_cpu_ms(first: str = "", **env: str) -> tuple[float, str]:
    """(median CPU ms burnt in 50 ms of sleep after a torch op, GOMP_SPINCOUNT seen by the child)."""
    full = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", IDLE_CPU.format(first=first)], env={**full, **env}, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    ms, spin = out.stdout.split()
    return float(ms), spin


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for torch's worker thread to spin on")
def test_lesionseg_first_cuts_the_idle_spin_of_torch_threads() -> None:
    plain, spin_plain = _idle_cpu_ms()
    ours, spin_ours = _idle_cpu_ms("\nimport lesionseg")
    assert spin_plain == "None" and spin_ours == "30000"
    if plain < 1.0:
        pytest.skip(f"torch's threads spin only {plain:.2f} ms here: nothing to shorten")
    assert ours < plain / 4, (ours, plain)


def test_a_spin_count_set_by_the_user_is_kept() -> None:
    _, spin = _idle_cpu_ms("\nimport lesionseg", GOMP_SPINCOUNT="300000")
    assert spin == "300000"
