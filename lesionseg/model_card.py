"""Render ``weights/README.md`` (the model card) from the recipe folder's committed outputs.

Every number comes from files written by ``lesionseg evaluate`` / ``lesionseg train``, never typed
by hand: ``python -m lesionseg.model_card --recipe configs/isic2017_256 --weights weights``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .utils.atomic import atomic_write_text

ROWS = [("Dice", "dice_mean", "dice_std"), ("IoU (Jaccard)", "iou_mean", "iou_std"),
        ("Recall (sensitivity)", "recall_mean", "recall_std"), ("Precision", "precision_mean", "precision_std"),
        ("Specificity", "specificity_mean", "specificity_std"), ("Accuracy", "accuracy_mean", "accuracy_std")]


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _std(result: dict, key: str) -> float | None:
    if key in result:
        return result[key]
    metric = key.removesuffix("_std")
    vals = [r[metric] for r in result.get("per_image", [])]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    return (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5


def metrics_table(results: dict[str, dict]) -> str:
    """One column per evaluation (e.g. plain, flip TTA); rows are mean ± SD and the ISIC aggregates."""
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for label, mean_key, std_key in ROWS:
        cells = []
        for r in results.values():
            sd = _std(r, std_key)
            cells.append(f"{r[mean_key]:.4f} ± {sd:.4f}" if sd is not None else f"{r[mean_key]:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, key in [("Thresholded Jaccard (ISIC)", "thresholded_jaccard"),
                       ("Failure rate (IoU < 0.65)", "failure_rate"),
                       ("Pooled Dice (all pixels)", "pooled_dice"), ("Pooled IoU (all pixels)", "pooled_iou")]:
        lines.append(f"| {label} | " + " | ".join(f"{r[key]:.4f}" for r in results.values()) + " |")
    lines.append("| Images / threshold | " + " | ".join(f"{r['n_images']} / {r['threshold']:.2f}" for r in results.values()) + " |")
    return "\n".join(lines)


def operating_points_table(points: list[dict], default: float) -> str:
    lines = ["| threshold | recall | precision | Dice | |", "| --- | --- | --- | --- | --- |"]
    for p in points:
        mark = "**default**" if abs(p["threshold"] - default) < 1e-9 else ""
        lines.append(f"| {p['threshold']:.2f} | {p['recall']:.4f} | {p['precision']:.4f} | {p.get('dice', float('nan')):.4f} | {mark} |")
    return "\n".join(lines)


SPREAD_KEYS = [("Dice", "dice_mean"), ("IoU", "iou_mean"), ("recall", "recall_mean"),
               ("precision", "precision_mean"), ("thresholded Jaccard", "thresholded_jaccard"),
               ("failure rate", "failure_rate")]


def seed_spread_section(recipe: Path, run: dict, shipped: dict, seeds: list[tuple[dict, dict]]) -> str:
    """The shipped run beside the same recipe trained with other seeds, on the same held-out images."""
    columns = {f"seed {run.get('seed', '?')} (shipped)": shipped}
    notes = []
    for info, result in seeds:
        name = f"seed {info.get('seed', '?')}"
        columns[name] = result
        diffs = ", ".join(f"{label} {result[key] - shipped[key]:+.4f}" for label, key in SPREAD_KEYS)
        notes.append(f"- {name}: `{info.get('command', '')}`, {info.get('epochs', '?')} epochs, "
                     f"{info.get('wall_minutes', '?')} min{' on ' + info['hardware'] if info.get('hardware') else ''}, best validation Dice {info.get('best_val_dice_at_0.5', float('nan')):.4f} "
                     f"(shipped run: {run.get('best_val_dice_at_0.5', float('nan')):.4f}); its own tuned threshold "
                     f"{result['threshold']:.2f}. Difference from the shipped run: {diffs}.")
    return f"""## Run-to-run spread

The same split trained again with another seed (initialisation, shuffling and augmentation
differ; the recipe is the shipped one unless its epochs below differ), with its own threshold
tuned by the same rule and evaluated the same way on the same held-out test images
(`{recipe.as_posix()}/other_seeds/*/eval_test.json`):

{chr(10).join(notes)}

{metrics_table(columns)}
"""


def previous_runs_section(recipe: Path) -> str:
    """Earlier recipes kept for comparison (``<recipe>/previous/*``): e.g. the shorter CPU recipe."""
    runs = [(d.name, _read(d / "run_info.json") or {}, _read(d / "eval_test.json"))
            for d in sorted((recipe / "previous").glob("*")) if (d / "eval_test.json").is_file()]
    if not runs:
        return ""
    notes = [f"- `{name}`: `{info.get('command', '?')}`, {info.get('epochs', '?')} epochs, "
             f"{info.get('wall_minutes', '?')} min{' on ' + info['hardware'] if info.get('hardware') else ''}; "
             f"its own tuned threshold {result['threshold']:.2f}." for name, info, result in runs]
    return f"""## Earlier recipes on the same split

Runs of the shorter recipe that fits a 2-core CPU without a GPU (`configs/isic2017_256.yaml`,
20 epochs), evaluated the same way on the same held-out test images
(`{recipe.as_posix()}/previous/*/eval_test.json`); the first was the shipped model before this one:

{chr(10).join(notes)}

{metrics_table({name: result for name, _, result in runs})}
"""


def cleanup_bullet(config: dict) -> str:
    fill = config.get("inference_fill_holes", True)
    frac = config.get("inference_min_region_fraction", 0.1)
    if not fill and not frac:
        return ""
    what = " and ".join(w for w in ("holes in the lesion are filled" if fill else "",
                                    f"separate regions under {frac:.0%} of the largest one are dropped" if frac else "")
                        if w)
    return f"""
- **Mask clean-up**: {what}, judged on the {config['inference_img_size']} px probability map
  (`inference_fill_holes`, `inference_min_region_fraction` in `config.json`; `--no-cleanup` gives
  raw masks). The operating points and the threshold are measured on the cleaned masks."""


def render(recipe: Path, weights: Path) -> str:
    config = json.loads((weights / "config.json").read_text())
    run = _read(recipe / "run_info.json") or {}
    evals = {name: r for name, r in [("held-out test", _read(recipe / "eval_test.json")),
                                     ("held-out test + flip TTA", _read(recipe / "eval_test_tta.json")),
                                     ("held-out test, bf16 only (--no-int8)", _read(recipe / "eval_test_bf16.json")),
                                     ("held-out test, exact fp32 (--no-fast)", _read(recipe / "eval_test_fp32.json")),
                                     ("held-out test, raw masks (--no-cleanup)", _read(recipe / "eval_test_raw.json"))]
             if r}
    seeds = [(_read(d / "run_info.json") or {}, _read(d / "eval_test.json"))
             for d in sorted((recipe / "other_seeds").glob("seed*")) if (d / "eval_test.json").is_file()]
    th = config["inference_threshold"]
    chosen = next((p for p in config.get("inference_operating_points", []) if abs(p["threshold"] - th) < 1e-9), None)
    n_params = run.get("parameters")
    parts = [f"""---
library_name: lesionseg
pipeline_tag: image-segmentation
license: apache-2.0
datasets:
- isic-2017-task1
tags:
- medical-imaging
- dermoscopy
- skin-lesion-segmentation
- attention-unet
- isic
- pytorch_model_hub_mixin
---

# DS-AttentionUNet for skin-lesion segmentation (lesionseg)

A U-Net with additive attention gates on every skip connection, deep supervision (auxiliary heads
on three decoder stages, used only in training) and GroupNorm, trained from scratch by lesionseg's
own `train_cli.py`. It outlines the lesion in a dermoscopic photo; it does not diagnose.

- Architecture: encoder channels {config['encoder_channels']}, decoder channels {config['decoder_channels']},
  GroupNorm ({config['norm_groups']} groups), {config['activation']}{f', {n_params / 1e6:.2f} M parameters' if n_params else ''}.
- Input: RGB resized to {config['inference_img_size']}×{config['inference_img_size']}, ImageNet mean/std; the
  mask is resized back to the photo's own resolution.
- **Default threshold {th:.2f}**, stored in `config.json` (`inference_threshold`), chosen on the
  validation part as the highest-precision threshold whose recall reaches {run.get('recall_target', 0.93)}""" +
        (f" (validation recall {chosen['recall']:.4f}, precision {chosen['precision']:.4f})." if chosen else ".") +
        cleanup_bullet(config)]
    parts.append(f"""
## Training data and split

{run.get('data', 'ISIC 2017 Challenge Part 1 training set (2,000 dermoscopic images with lesion masks), squash-resized to 256×256.')}
Split with seed {run.get('seed', '?')}: {run.get('n_train', '?')} training, {run.get('n_val', '?')} validation
(model selection and threshold), {run.get('n_test', '?')} held-out test images never used for training or
tuning. The ID lists are in the recipe folder `{recipe.as_posix()}/` of the lesionseg repository
(`split.json`, `val_ids.txt`, `test_ids.txt`).

## Training recipe

```
{run.get('command', 'python train_cli.py --config configs/isic2017_256.yaml')}
```

{run.get('recipe_summary', '')}
Epochs: {run.get('epochs', '?')}; wall time {run.get('wall_minutes', '?')} min on {run.get('hardware', '?')}{
    f"; {run['wall_note']}" if run.get('wall_note') else ''}.
""")
    if evals:
        parts.append(f"""## Results on the held-out test part

Per-image mean ± SD at each mask's own resolution, default threshold, computed by
`lesionseg evaluate` (outputs committed as `{recipe.as_posix()}/eval_test*.json`). The first column is
the default path: on a CPU, bf16 where it has bf16 instructions, with the 3x3 convolutions below full
resolution in int8 where it has int8 dot products (the operating points below were measured on the
bf16 path). The bf16-only and exact fp32 columns show how much of a difference that makes: images
whose IoU lies right at the 0.65 failure line, or with a second region near the clean-up's 10%
cut-off, can flip between them.

{metrics_table(evals)}
""")
    if seeds and "held-out test" in evals:
        parts.append(seed_spread_section(recipe, run, evals["held-out test"], seeds))
    previous = previous_runs_section(recipe)
    if previous:
        parts.append(previous)
    if config.get("inference_operating_points"):
        parts.append(f"""## Operating points (validation part, per-image means)

{operating_points_table(config['inference_operating_points'], th)}

In screening, missing lesion tissue costs more than outlining a little extra skin, so the default
favours recall. The app offers this threshold as "Screening: high recall".
""")
    parts.append("""## Intended use

Decision support for outlining a skin lesion in a dermoscopic image, for clinicians and the
engineers who support them. **Not a diagnosis** and not a medical device: the outline and the
measurements derived from it must be reviewed by a clinician.

## Limitations

- Dermoscopy only: trained on dermoscopic images; clinical (macroscopic) photos, histology and
  other modalities are out of scope.
- Trained at 256 px on images squash-resized from their originals: fine border detail of large
  photos is interpolated from a 256×256 prediction.
- Skin types and devices: the ISIC 2017 archive images come mostly from fair-skinned patients
  (Fitzpatrick I–III) and a limited set of dermatoscopes and clinics; performance on darker skin,
  other devices, heavy hair, ink markings, rulers and vignetting is less certain.
- One lesion per image is the training assumption; multiple lesions, lesions filling the frame and
  very small lesions are the usual failures (see the worst cases in the training report).
- Trained from scratch on 1,600 images; no external pre-training.

## Citations

- Codella et al., "Skin lesion analysis toward melanoma detection: a challenge at the 2017 ISBI",
  ISBI 2018, arXiv:1710.05006 (ISIC 2017 data; research / non-commercial licence).
- Oktay et al., "Attention U-Net: Learning where to look for the pancreas", MIDL 2018, arXiv:1804.03999.
- Ronneberger et al., "U-Net: Convolutional networks for biomedical image segmentation", MICCAI 2015.
- Wu & He, "Group Normalization", ECCV 2018. Lee et al., "Deeply-supervised nets", AISTATS 2015.
- Abraham & Khan, "A novel focal Tversky loss function ...", ISBI 2019.
""")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the model card (README.md) into a weights folder.")
    p.add_argument("--recipe", type=Path, default=Path("configs/isic2017_256"))
    p.add_argument("--weights", type=Path, default=Path("weights"))
    args = p.parse_args(argv)
    atomic_write_text(args.weights / "README.md", render(args.recipe, args.weights))
    print(f"wrote {args.weights / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
