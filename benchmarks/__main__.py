"""``python -m benchmarks [--quick] [--output FILE]``: run every section and write the results."""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# a fresh inductor cache: torch.compile's reported start-up cost is a cold compile, as users meet it
_INDUCTOR_CACHE = None if "TORCHINDUCTOR_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="lesionseg-inductor-")
if _INDUCTOR_CACHE:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _INDUCTOR_CACHE

import lesionseg  # noqa: E402,F401  (before torch: its OpenMP spin setting, lesionseg/__init__.py)
import torch  # noqa: E402

from .common import DEFAULT_DATA, DEFAULT_WEIGHTS, Settings, default_output, machine_info  # noqa: E402

log = logging.getLogger("benchmarks")
SECTIONS = ("photo", "forward", "forward_alloc", "peak", "peers", "e2e", "throughput", "training", "gpu")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a few iterations per figure (CI smoke run)")
    ap.add_argument("--output", type=Path, default=default_output(),
                    help="Markdown results file (default benchmarks/results.md, or results_avx2.md where torch's "
                         "kernels are capped below AVX-512, e.g. ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2); "
                         "a .json twin is written beside it")
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights folder (default weights/)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ISIC folder with images/ and masks/")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile candidates")
    return ap.parse_args(argv)


def _guarded(name: str, fn: Callable[[], dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """Run one section; a failure becomes a note and an empty section instead of losing the rest."""
    t = time.perf_counter()
    log.info("section %s ...", name)
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - report and carry on
        traceback.print_exc()
        notes.append(f"section {name} failed: {type(e).__name__}: {e}")
        out = {"rows": [], "failed": True}
    log.info("section %s done in %.1f s", name, time.perf_counter() - t)
    return out


def run(settings: Settings) -> dict[str, Any]:
    """Every section, in order; returns the results dict the report renders."""
    from .allocator import allocator_neutral_section
    from .e2e import e2e_section, throughput_section
    from .forward import forward_section, peak_section, peers_section, photo_section
    from .gpu import gpu_section
    from .training import training_section

    torch.set_num_threads(settings.threads)
    notes: list[str] = []
    res: dict[str, Any] = {"machine": machine_info(settings), "notes": notes}
    # first, in a process that has run nothing else, as a user's process predicting photos would be:
    # the forward section leaves compiled graphs and ONNX Runtime sessions behind that skew it
    res["photo"] = _guarded("photo", lambda: photo_section(settings), notes)
    res["forward"] = _guarded("forward", lambda: forward_section(settings), notes)
    if res["forward"].get("failed"):
        raise SystemExit("the forward section failed; nothing else is meaningful without the model")
    # a quick run leaves out the child process of 1b: tests/test_benchmarks.py runs that section on its own
    res["forward_alloc"] = ({"skipped": "not run with --quick"} if settings.quick
                            else _guarded("forward_alloc", lambda: allocator_neutral_section(settings), notes))
    res["peak"] = _guarded("peak", lambda: peak_section(settings, res["forward"]), notes)
    res["peers"] = _guarded("peers", lambda: peers_section(settings, res["forward"]), notes)
    res["e2e"] = _guarded("e2e", lambda: e2e_section(settings), notes)
    res["throughput"] = _guarded("throughput", lambda: throughput_section(settings), notes)
    res["training"] = _guarded("training", lambda: training_section(settings), notes)
    res["gpu"] = _guarded("gpu", lambda: gpu_section(settings), notes)
    from .report import recorded

    res["peer_accuracy"] = recorded("peer_accuracy.json")  # trained on a lent GPU: recorded, not re-measured
    if not res["gpu"].get("available"):
        res["gpu_recorded"] = recorded("results_gpu.json")
    res["forward"].pop("model", None)
    res["machine"]["other_load_after"] = machine_info(settings)["other_load"]
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    warnings.filterwarnings("ignore", category=UserWarning)
    settings = Settings(quick=args.quick, weights=args.weights, data=args.data,
                        threads=args.threads or torch.get_num_threads(), compile=args.compile)
    if not (settings.weights / "config.json").is_file():
        print(f"benchmarks: no weights at {settings.weights} (pass --weights FOLDER)", file=sys.stderr)
        return 2
    t = time.perf_counter()
    try:
        res = run(settings)
    finally:
        if _INDUCTOR_CACHE:
            shutil.rmtree(_INDUCTOR_CACHE, ignore_errors=True)
    res["machine"]["wall_s"] = round(time.perf_counter() - t, 1)
    from .report import render

    from lesionseg.utils.atomic import atomic_write_text

    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, render(res, args.output))
    atomic_write_text(args.output.with_suffix(".json"), json.dumps(res, indent=1, default=str) + "\n")
    print(f"results: {args.output} ({res['machine']['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
