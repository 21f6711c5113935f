"""Architecture variants side by side: what each costs per photo, on both paths, and what it scores.

    python -m benchmarks.width --model shipped weights configs/isic2017_256 \\
        --model lean outputs/gen/mbv2_lean_robust_seed42/models/best_model configs/generalization/mbv2_lean_robust_seed42
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.width --model ...

Each ``--model LABEL WEIGHTS [EVAL_DIR]``: one 1024x768 photo (an ISIC image upscaled) through
``Predictor.predict(rgb).mask`` on the default path and with ``fast=False`` (exact fp32, eager), every
model's two paths round-robin in one process (section 1c's measure, for several models in one
run), so that each ratio shares the machine's state. ``EVAL_DIR`` holds ``eval_test.json`` and
``eval_external.json`` (``lesionseg evaluate`` output) whose Dice and failures are shown beside the
times. Writes benchmarks/results_width.md (results_width_avx2.md without native bf16) and a .json twin.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lesionseg.models.weights import load_model  # noqa: E402

from .common import Settings, default_output, machine_info, write_results  # noqa: E402
from .forward import describe, photo_1024, time_photo  # noqa: E402


def _norm_groups(model: torch.nn.Module) -> int:
    """The model's ``norm_groups``: the largest group count of its decoder's GroupNorms (each layer
    takes the largest divisor of its channels up to it)."""
    return max(m.num_groups for m in model.decoder.modules() if isinstance(m, torch.nn.GroupNorm))


def _accuracy(folder: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("test", "external"):
        f = folder / f"eval_{name}.json" if folder else None
        if f is not None and f.is_file():
            r = json.loads(f.read_text())
            out[name] = {"dice": r["dice_mean"], "failure_rate": r["failure_rate"], "threshold": r["threshold"]}
    return out


def measure(models: list[tuple[str, Path, Path | None]], settings: Settings) -> dict[str, Any]:
    """Times, ratios and mask agreement per model; see the module docstring."""
    rgb, source = photo_1024(settings)
    rows = []
    for label, weights, evals in models:
        model = load_model(weights)
        timed, agree, ours = time_photo(model, rgb, settings, folder=str(weights))
        rows.append({"label": label, "weights": str(weights), "evals": str(evals) if evals else None,
                     "path": describe(ours),
                     # from the model, not config.json: folders saved by older versions leave the defaults out
                     "encoder_channels": model.encoder_channels, "decoder_channels": model.decoder_channels,
                     "norm_groups": _norm_groups(model), "full_resolution_stage": model.full_resolution_stage,
                     "exact_ms": timed["exact"]["median_ms"],
                     "default_ms": timed["ours"]["median_ms"], "speedup": timed["ours"]["paired_speedup"],
                     "mask_dice_vs_exact": agree["ours"], "accuracy": _accuracy(evals)})
    return {"machine": machine_info(settings), "image": source, "rows": rows}


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"# Architecture variants per photo ({'bf16 path' if m['bf16_native'] else 'AVX2 path'})", "",
             f"Run {m['date']}: `{m['isa_caps'] + ' ' if m['isa_caps'] != 'none' else ''}"
             f"python -m benchmarks.width`. Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads; "
             f"CPU capability: {m['capability']}; {m['other_load']}; torch {m['torch']}.", "",
             f"One 1024x768 photo ({res['image']}, upscaled), `Predictor.predict(rgb).mask`, each model's two "
             "paths round-robin; medians, and the median of the paired ratios. Accuracy: `lesionseg evaluate` on the own test part / "
             "the external set at each model's own threshold.", "",
             "| model | channels at full resolution | GroupNorm groups | default path | default (ms) | exact fp32 (ms) "
             "| speedup (paired) | masks vs exact (Dice) | Dice test / external | failures test / external |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        acc = r["accuracy"]
        d = " / ".join(f"{acc[k]['dice']:.4f}" if k in acc else "-" for k in ("test", "external"))
        f = " / ".join(f"{acc[k]['failure_rate']:.1%}" if k in acc else "-" for k in ("test", "external"))
        full = ("none (decoder ends at 1/2)" if not r.get("full_resolution_stage", True)
                else f"{r['encoder_channels'][0]} + {r['decoder_channels'][-1]}" if r["encoder_channels"] else "-")
        lines.append(f"| {r['label']} | {full} | {r['norm_groups']} | {r['path']} | {r['default_ms']:.1f} | "
                     f"{r['exact_ms']:.1f} | {r['speedup']:.2f}x | {r['mask_dice_vs_exact']:.4f} | {d} | {f} |")
    lines += ["", "Models: " + "; ".join(f"{r['label']}: `{r['weights']}`" + (f" (accuracy from `{r['evals']}`)"
                                                                            if r.get("evals") else "")
                                    for r in res["rows"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", action="append", default=[], metavar="LABEL WEIGHTS [EVAL_DIR]")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="re-render the Markdown of a recorded .json (no measuring)")
    args = p.parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(render(json.loads(args.render.read_text())))
        return 0
    if not args.model:
        p.error("give at least one --model LABEL WEIGHTS [EVAL_DIR]")
    models = []
    for spec in args.model:
        if len(spec) not in (2, 3):
            p.error(f"--model takes LABEL WEIGHTS [EVAL_DIR], got {' '.join(spec)}")
        weights = Path(spec[1])
        if not (weights / "config.json").is_file():
            p.error(f"{weights}: no config.json; give a weights folder")
        models.append((spec[0], weights, Path(spec[2]) if len(spec) == 3 else None))
    res = measure(models, Settings(quick=args.quick))
    write_results(args.output or default_output("results_width"), render(res), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
