"""Shared pieces of the benchmark suite: settings, machine description, timing, data, agreement."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lesionseg.utils import cpu_isa as cpu_capability

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "isic2017_train_256"
DEFAULT_WEIGHTS = ROOT / "weights"


@dataclass
class Settings:
    """What one run measures and how long it may take."""

    quick: bool = False
    weights: Path = DEFAULT_WEIGHTS
    data: Path = DEFAULT_DATA
    threads: int = field(default_factory=torch.get_num_threads)
    compile: bool = True  # try torch.compile (slow to start; skipped with --quick)

    def iters(self, full: int, quick: int = 2) -> int:
        """Timed iterations: ``full`` normally, ``quick`` with --quick."""
        return quick if self.quick else full


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info(settings: Settings) -> dict[str, Any]:
    """Everything needed to read the numbers: CPU, cores, threads, library versions, date."""
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni") if f in flags]
    try:
        import onnxruntime as ort  # noqa: PLC0415

        ort_version = ort.__version__
    except ImportError:
        ort_version = "not installed"
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "isa": ", ".join(isa) or "-",
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "threads": settings.threads,
        "capability": cpu_capability.describe(),
        "bf16_native": cpu_capability.cpu_bf16_supported(),
        "isa_caps": isa_caps() or "none",
        "cuda": torch.cuda.is_available(),
        "quick": settings.quick,
        "other_load": other_load(),
    }


def cpuid_masked() -> bool:
    """True inside ``scripts/as_avx2.sh``: CPUID reports an AVX2-only CPU to every library."""
    return "avx2_cpuid" in os.environ.get("LD_PRELOAD", "")


def isa_caps() -> str:
    """How this process is held below its chip's ISA, as a command prefix: ``scripts/as_avx2.sh``
    (CPUID masked for every library) and / or the caps ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA
    (torch's and oneDNN's kernels only); "" where none."""
    caps = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
            if os.environ.get(k)]
    return " ".join(caps + (["scripts/as_avx2.sh"] if cpuid_masked() else []))


def write_results(out: Path, markdown: str, res: dict[str, Any]) -> None:
    """``out`` (Markdown) and its .json twin; the Markdown is printed too."""
    out.write_text(markdown)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    print(markdown)


def default_output(stem: str = "results") -> Path:
    """benchmarks/<stem>.md where the CPU runs the bf16 path, else <stem>_avx2.md: the path without
    native bf16, as on an AVX2-only CPU or with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2."""
    native = cpu_capability.cpu_bf16_supported()
    return Path(__file__).with_name(f"{stem}.md" if native else f"{stem}_avx2.md")


def other_load() -> str:
    """Other busy python processes (a training run, tests) that would skew the numbers."""
    me, busy = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in (me, os.getppid()):
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            stopped = (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
        except (OSError, IndexError):
            continue
        if any(k in cmd for k in ("train_cli", "pytest", "lesionseg train")):
            busy.append(cmd[:60] + (" (stopped)" if stopped else ""))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"load avg {load:.2f}" + (f"; running: {'; '.join(busy)}" if busy else "")


def time_fn(fn: Callable[[], Any], iters: int, warmup: int = 2) -> dict[str, float]:
    """Median / min / mean wall time of ``fn()`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, iters)):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "mean_ms": statistics.fmean(times),
            "n": len(times)}


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is missing, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_interleaved(fns: dict[str, Callable[[], Any]], iters: int, warmup: int = 2,
                     block: int = 1) -> dict[str, dict[str, float]]:
    """Like :func:`time_fn` for several functions, run round-robin (``block`` calls of each per
    round, timed as their mean) so that drift in the machine's speed (other load, clocks) affects
    them all alike. ``block`` > 1 measures each path as a process that runs only it sees it: the
    first call after another path can find that path's threads still spinning (torch's OpenMP
    threads spin for a while after a parallel region before they sleep).

    Also counts minor page faults per call: memory that glibc handed back to the kernel after one
    call is faulted in again by the next (~1 us per 4 KiB page here), which shows as run-to-run
    swings of a path's latency that no change in its code explains."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    faults: dict[str, list[int]] = {k: [] for k in fns}
    for _ in range(max(1, iters)):
        for name, fn in fns.items():
            f0 = _minor_faults()
            t = time.perf_counter()
            for _ in range(max(1, block)):
                fn()
            times[name].append((time.perf_counter() - t) * 1e3 / max(1, block))
            faults[name].append((_minor_faults() - f0) // max(1, block))
    first = next(iter(times.values()))
    # paired: each round's ratio to the first function, then the median; robust to load that comes and goes
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "mean_ms": statistics.fmean(v), "n": len(v),
                "paired_speedup": statistics.median(a / b for a, b in zip(first, v)),
                "page_faults": statistics.median(faults[k])}
            for k, v in times.items()}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    a, b = a.astype(bool), b.astype(bool)
    denom = int(a.sum() + b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def real_images(settings: Settings, n: int = 20) -> tuple[list[np.ndarray], str]:
    """The first ``n`` ISIC images (RGB uint8) and where they came from; synthetic ones if absent."""
    from lesionseg.data.io import load_image

    folder = settings.data / "images"
    files = sorted(folder.glob("*.jpg"))[:n] if folder.is_dir() else []
    if files:
        return [load_image(f) for f in files], f"{len(files)} ISIC images ({folder})"
    return synthetic_images(n), f"{n} synthetic images (no data at {folder})"


def synthetic_images(n: int, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """Skin-toned images with a dark elliptic lesion, RGB uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.clip(np.array([205, 160, 140]) + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        c = tuple(int(v) for v in rng.uniform(0.3, 0.7, 2) * size)
        axes = tuple(int(v) for v in rng.uniform(0.1, 0.3, 2) * size)
        cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        img[mask > 0] = (img[mask > 0] * 0.45).astype(np.uint8)
        out.append(img)
    return out


def matmul_peak(dtype: torch.dtype, seconds: float, n: int = 2048) -> float:
    """Sustained GFLOP/s of an n x n matmul in ``dtype`` on this process's threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b, out=out)
    reps, start = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=out)
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and reps >= 3:
            break
    return 2.0 * n ** 3 * reps / elapsed / 1e9


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward (convolutions and matmuls; 2 per multiply-add) by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return int(counter.get_total_flops())


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
