"""The model card's section on the click refiner (weights/refiner/), from what ship_refiner.py recorded."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _row(label: str, r: dict[str, Any]) -> str:
    m, f = r["miou"], r["failure_rate"]
    return (f"| {label} | {r['n_images']} | " + " | ".join(f"{v:.3f}" for v in m) +
            f" | {f[0]:.1%} -> {f[-1]:.1%} | {r['noc@85']:.2f} | {r['noc@90']:.2f} |")


def refiner_section(recipe: Path, weights: Path) -> str | None:
    """Markdown for the card, or None where the weights have no refiner or nothing was recorded."""
    folder = recipe / "refiner"
    info = _read(folder / "run_info.json")
    test, ext = _read(folder / "eval_clicks_test.json"), _read(folder / "eval_clicks_external.json")
    if not (weights / "refiner" / "config.json").is_file() or not (info and test and ext):
        return None
    config = json.loads((weights / "refiner" / "config.json").read_text())
    n = test["n_clicks"]
    head = ("| model, set | images | " + " | ".join(f"mIoU {k} click{'s' if k != 1 else ''}" for k in range(n + 1)) +
            f" | IoU < 0.65, 0 -> {n} clicks | NoC@85 | NoC@90 |")
    rows = [head, "|" + "---|" * (n + 6), _row(f"shipped (seed {info['seed']}), own test part", test),
            _row(f"shipped (seed {info['seed']}), external", ext)]
    for name, label in (("eval_clicks_test_disk.json", "own test part"), ("eval_clicks_external_disk.json", "external")):
        r = _read(folder / name)
        if r:
            rows.append(_row(f"naive baseline (a disk of 5% of the shorter side per click), {label}", r))
    for d in sorted((folder / "other_seeds").glob("*")):
        o_info = _read(d / "run_info.json") or {}
        for name, label in (("eval_clicks_test.json", "own test part"), ("eval_clicks_external.json", "external")):
            r = _read(d / name)
            if r:
                rows.append(_row(f"seed {o_info.get('seed', '?')}, {label}", r))
    table = "\n".join(rows)
    radius, side = config.get("click_radius", 5), config["inference_img_size"]
    return f"""## Click refiner (`refiner/`)

A second DS-AttentionUNet, loaded beside the model by `Predictor.from_weights`, corrects an
outline from a clinician's clicks (`Predictor.refine`, the app's click modes). Its input is the
photo plus three channels: the outline being corrected (probabilities) and disks of {radius} px
(at {side} px) at the positive and at the negative clicks. It starts as a copy of the model above
with zero weights on the new channels and is fine-tuned with RITM-style iterative click
simulation: the model's own outline of the augmented photo (or, for 40% of the images, a
synthetic bad outline: too tight, too loose, half missing, a blob of skin, empty), then 1 to
{info['max_clicks']} clicks, each in the larger error region, all but the last followed by a
refiner call without gradients; the loss adds a BCE on the pixels around the newest click. Its
answer to a click replaces the outline only in the connected region it changed that holds the
click (FocalClick's progressive merge).

- Recipe: `{info['command']}`: {info['epochs']} epochs of {info['steps_per_epoch']} steps, batch
  {info['batch_size']}, max LR {info['lr']}, {info['wall_minutes']} min on {info['hardware']} (2 cores,
  beside another seed's run). Best epoch ({info['best_epoch']}) by the validation part's mean IoU
  after 1 to {info['max_clicks']} clicks alone: the external set chose nothing.
- Evaluation: `lesionseg evaluate --clicks {n}` at each mask's own resolution, from the model's own
  outline at the default threshold; the next click at the point farthest inside the larger error
  region (RITM's protocol), every call through `Predictor.refine`. Own test part: the 200 held-out
  images; external: `isic2018_extra_256c` (144 images).

{table}

NoC@85 / NoC@90: mean number of clicks to reach IoU 0.85 / 0.90, counted as {n} where not reached
within {n} clicks. The outline after a click is the refiner's probability map at the threshold of
the outline it corrects, with the model's clean-up (a region holding a positive click is never
dropped, a hole holding a negative click never filled).
"""
