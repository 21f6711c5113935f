"""Render ``weights/README.md`` (the model card) from the recipe folder's committed outputs.

Every number comes from files written by ``lesionseg evaluate`` / ``lesionseg train``, never typed
by hand: ``python scripts/model_card.py --recipe configs/isic2017_256 --weights weights``.
"""
from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from lesionseg.utils.atomic import atomic_write_text

from framing_check import card_sentence  # scripts/ is on sys.path when a script here runs
from near_duplicates import card_sentence as duplicates_sentence
from refiner_card import refiner_section
from seed_card import seed_spread_section

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


EXTERNAL_NAME = "isic2018_extra_256c"
EXTERNAL_TEXT = f"""
**External validation set**: `{EXTERNAL_NAME}`, 144 ISIC 2018 Task 1 images that are in none of the
ISIC 2017 sets, centre-cropped to a square before resizing (lesions look larger and touch the border
more often than in the training data). Never trained on; it chose the epoch (mean of validation and
external Dice) and the default threshold (recall kept on both), so its numbers below are optimistic.
"""

def previous_runs_section(recipe: Path) -> str:
    """Earlier shipped models and recipes kept for comparison (``<recipe>/previous/*``), on the
    held-out test part and, where they were evaluated there, the external validation set."""
    runs = [(d.name, _read(d / "run_info.json") or {}, _read(d / "eval_test.json"), _read(d / "eval_external.json"))
            for d in sorted((recipe / "previous").glob("*")) if (d / "eval_test.json").is_file()]
    if not runs:
        return ""
    notes = [f"- `{name}`: `{info.get('command', '?')}`, {info.get('epochs', '?')} epochs, "
             f"{info.get('wall_minutes', '?')} min{' on ' + info['hardware'] if info.get('hardware') else ''}; "
             f"its own tuned threshold {result['threshold']:.2f}." for name, info, result, _ in runs]
    columns: dict[str, dict] = {}
    for name, _, result, ext in runs:
        columns[name] = result
        if ext:
            columns[f"{name}, external"] = ext
    return f"""## Earlier recipes on the same split

Earlier shipped models and recipes, evaluated the same way on the same held-out test images
(`{recipe.as_posix()}/previous/*/eval_test.json`, and `eval_external.json` where they were scored on
the external set), each at its own tuned threshold:

{chr(10).join(notes)}

{metrics_table(columns)}
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


def wide_view_bullet(config: dict) -> str:
    factor = config.get("inference_wide_view", 0)
    if not factor:
        return ""
    return f"""
- **Wide view**: where the outline touches the photo's border, the model looks a second time at the
  photo shrunk {factor:g}x inside a margin of its own median colour, and the two probability maps are
  combined by their maximum where the second outline still reaches the border (a lesion cut by
  the frame rather than an outline leaking along a dark corner); `inference_wide_view` in
  `config.json`, `--wide-view 0` turns it off. Photos whose outline stays inside the frame get
  one model call as before."""


def framing_lines(weights: Path) -> str:
    """The framing stress test's sentence as continuation lines of a Limitations bullet, or ""."""
    sentence = card_sentence(weights).strip()
    return "\n" + textwrap.fill(sentence, 98, initial_indent="  ", subsequent_indent="  ") if sentence else ""


def duplicates_lines(recipe: Path) -> str:
    """The own test part's near duplicates as continuation lines of a Limitations bullet, or ""."""
    sentence = duplicates_sentence(_read(recipe / "eval_test.json"))
    return "\n" + textwrap.fill(sentence, 98, initial_indent="  ", subsequent_indent="  ") if sentence else ""


def render(recipe: Path, weights: Path) -> str:
    config = json.loads((weights / "config.json").read_text())
    run = _read(recipe / "run_info.json") or {}
    evals = {name: r for name, r in [("held-out test", _read(recipe / "eval_test.json")),
                                     (f"external ({EXTERNAL_NAME})", _read(recipe / "eval_external.json")),
                                     ("external + flip TTA", _read(recipe / "eval_external_tta.json")),
                                     ("held-out test + flip TTA", _read(recipe / "eval_test_tta.json")),
                                     ("held-out test, no int8 (--no-int8)", _read(recipe / "eval_test_no_int8.json")),
                                     ("held-out test, bf16 only (--no-int8)", _read(recipe / "eval_test_bf16.json")),
                                     ("held-out test, exact fp32 (--no-fast)", _read(recipe / "eval_test_fp32.json")),
                                     ("held-out test, raw masks (--no-cleanup)", _read(recipe / "eval_test_raw.json")),
                                     ("held-out test, plain view (--wide-view 0)", _read(recipe / "eval_test_plain.json")),
                                     ("external, plain view (--wide-view 0)", _read(recipe / "eval_external_plain.json"))]
             if r}
    seed_dirs = [d for d in sorted((recipe / "other_seeds").glob("seed*")) if (d / "eval_test.json").is_file()]
    seeds = [(_read(d / "run_info.json") or {}, _read(d / "eval_test.json")) for d in seed_dirs]
    seeds_ext = [_read(d / "eval_external.json") for d in seed_dirs]
    points_file = _read(recipe / "operating_points.json") or {}
    ext_at = points_file.get("external_at_chosen")
    pretrained = config.get("encoder_name", "unet") != "unet"  # an ImageNet encoder (BatchNorm)
    pretrained_note = ("; a pretrained (BatchNorm) encoder runs in fp32, and beside it the default path now "
                       "leaves int8 off, so for this model the bf16-only column is the default" if pretrained else "")
    evaluated = run.get("evaluated_runner")  # recorded by ship_weights; earlier recipes: by their files
    if evaluated == "OpenVinoRunner" or (evaluated is None and (recipe / "eval_test_no_int8.json").is_file()):
        path_note = ("the CPU fast path as evaluated: OpenVINO in fp32 with the decoder's 3x3 convolutions below "
                     "its coarsest stage in int8\n(from the weights' `int8_calibration.json`). The no-int8 and exact")
    else:
        path_note = ("the CPU fast path as evaluated: bf16 where the CPU has bf16 instructions, with the 3x3 "
                     "convolutions\nbelow full resolution in int8 where it has int8 dot products"
                     f"{pretrained_note}. The bf16-only and exact")
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
on the decoder stages, used only in training) and GroupNorm in the decoder, {
    "with an ImageNet-pretrained MobileNetV2 encoder fine-tuned" if pretrained else "trained from scratch"} by lesionseg's
own `train_cli.py`. It outlines the lesion in a dermoscopic photo; it does not diagnose.

- Architecture: encoder `{config.get('encoder_name', 'unet')}`{
    (" (MobileNetV2 features tapped at strides 2-32 under a full-resolution conv stem; BatchNorm inside the "
     "encoder as pretrained)" if config.get('full_resolution_stage', True) else
     " (MobileNetV2 features tapped at strides 2-32; no full-resolution stage: the decoder ends at 1/2 and its "
     "logits are upsampled bilinearly; BatchNorm inside the encoder as pretrained)") if pretrained else ""}, encoder channels {config['encoder_channels']}, decoder channels {config['decoder_channels']},
  GroupNorm ({config['norm_groups']} groups), {config['activation']}{f', {n_params / 1e6:.2f} M parameters' if n_params else ''}.
- Input: RGB resized to {config['inference_img_size']}×{config['inference_img_size']}, ImageNet mean/std; the
  mask is resized back to the photo's own resolution.
- **Default threshold {th:.2f}**, stored in `config.json` (`inference_threshold`), chosen on the
  validation part as the highest-precision threshold whose recall reaches {run.get('recall_target', 0.93)}""" +
        (f" (validation recall {chosen['recall']:.4f}, precision {chosen['precision']:.4f})" if chosen else "") +
        (f"\n  while the external validation set's recall at it stays >= {points_file['external_recall_target']} "
         f"(external recall {ext_at['recall']:.4f}, precision {ext_at['precision']:.4f})." if ext_at else ".") +
        cleanup_bullet(config) + wide_view_bullet(config)]
    parts.append(f"""
## Training data and split

{run.get('data', 'ISIC 2017 Challenge Part 1 training set (2,000 dermoscopic images with lesion masks), squash-resized to 256×256.')}
Training seed {run.get('seed', '?')}; the committed split: {run.get('n_train', '?')} training, {run.get('n_val', '?')} validation
(model selection and threshold), {run.get('n_test', '?')} held-out test images never used for training or
tuning. The ID lists are in the recipe folder `{recipe.as_posix()}/` of the lesionseg repository
(`split.json`, `val_ids.txt`, `test_ids.txt`).
{EXTERNAL_TEXT if run.get('external_dir') else ''}
## Training recipe

```
{run.get('command', 'python train_cli.py --config configs/isic2017_256.yaml')}
```

{run.get('recipe_summary', '')}
Epochs: {run.get('epochs', '?')}; wall time {run.get('wall_minutes', '?')} min on {run.get('hardware', '?')}{
    f"; {run['wall_note']}" if run.get('wall_note') else ''}.
""")
    if evals:
        parts.append(f"""## Results on the held-out test part{" and the external validation set" if ext_at else ""}

Per-image mean ± SD at each mask's own resolution, default threshold, computed by
`lesionseg evaluate` (outputs committed as `{recipe.as_posix()}/eval_*.json`). The first column is
{path_note}
fp32 columns show how much of a difference that makes: images
whose IoU lies right at the 0.65 failure line, or with a second region near the clean-up's 10%
cut-off, can flip between them.

{metrics_table(evals)}
""")
    if seeds and "held-out test" in evals:
        parts.append(seed_spread_section(recipe, run, evals["held-out test"], seeds,
                                         _read(recipe / "eval_external.json"), seeds_ext))
    previous = previous_runs_section(recipe)
    if previous:
        parts.append(previous)
    if config.get("inference_operating_points"):
        parts.append(f"""## Operating points (validation part, per-image means)

{operating_points_table(config['inference_operating_points'], th)}

In screening, missing lesion tissue costs more than outlining a little extra skin, so the default
favours recall. The app offers this threshold as "Screening: high recall".
""")
    refiner = refiner_section(recipe, weights)
    if refiner:
        parts.append(refiner)
    size = int(config["inference_img_size"]) // (1 if config.get("full_resolution_stage", True) else 2)
    parts.append("""## Intended use

Decision support for outlining a skin lesion in a dermoscopic image, for clinicians and the
engineers who support them. **Not a diagnosis** and not a medical device: the outline and the
measurements derived from it must be reviewed by a clinician.

## Limitations

- Dermoscopy only: trained on dermoscopic images; clinical (macroscopic) photos, histology and
  other modalities are out of scope.
- Trained at 256 px on images squash-resized from their originals: fine border detail of large
  photos is interpolated from a {detail} prediction.
- Skin types and devices: the ISIC 2017 archive images come mostly from fair-skinned patients
  (Fitzpatrick I–III) and a limited set of dermatoscopes and clinics; performance on darker skin,
  other devices, heavy hair, ink markings, rulers and vignetting is less certain.
- One lesion per image is the training assumption; multiple lesions, lesions filling the frame and
  very small lesions are the usual failures (see the worst cases in the training report).FRAMING
- ORIGIN; the external validation set is small (144 images) and, where it chose the epoch and
  threshold, its numbers are optimistic.DUPLICATES

## Citations

- Codella et al., "Skin lesion analysis toward melanoma detection: a challenge at the 2017 ISBI",
  ISBI 2018, arXiv:1710.05006 (ISIC 2017 data; research / non-commercial licence).
- Oktay et al., "Attention U-Net: Learning where to look for the pancreas", MIDL 2018, arXiv:1804.03999.
- Ronneberger et al., "U-Net: Convolutional networks for biomedical image segmentation", MICCAI 2015.
- Wu & He, "Group Normalization", ECCV 2018. Lee et al., "Deeply-supervised nets", AISTATS 2015.
- Abraham & Khan, "A novel focal Tversky loss function ...", ISBI 2019.
- Sandler et al., "MobileNetV2: Inverted residuals and linear bottlenecks", CVPR 2018.
- Finlayson & Trezzi, "Shades of gray and colour constancy", CIC 2004.
- Codella et al., "Skin lesion analysis toward melanoma detection 2018", arXiv:1902.03368, and
  Tschandl et al., "The HAM10000 dataset", Sci. Data 2018 (ISIC 2018 images of the external set).
""".replace("ORIGIN", "Fine-tuned on 1,600 images from an ImageNet encoder" if pretrained else
                                   "Trained from scratch on 1,600 images; no external pre-training")
                 .replace("{detail}", f"{size}×{size}")
                 .replace("FRAMING", framing_lines(weights))
                 .replace("DUPLICATES", duplicates_lines(recipe)))
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
