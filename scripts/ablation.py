#!/usr/bin/env python
"""Record training runs of the generalization ablation and render its table.

    python scripts/ablation.py record outputs/gen/mbv2_robust_seed42 [RUN ...] [--note "retrained alone on ..."]
    python scripts/ablation.py table            # rewrites the table in docs/generalization.md
    python scripts/ablation.py view mbv2_nofull_robust_e12_seed43 weights --wide-view 1.5

``record`` evaluates each run's best model (its own tuned threshold, the default inference path)
with ``lesionseg evaluate`` on the held-out test IDs of the committed split and on the run's
external validation folder, into ``configs/generalization/<run>/eval_test.json`` and
``eval_external.json``, with ``run_info.json`` (encoder, augmentation, epochs, seed, threshold).
``view`` evaluates the weights of a recorded run the same way with another inference setting
(``--wide-view F``) into ``configs/generalization/<record>_wide<F>/``, with the record's
``run_info.json`` and a note. ``table`` renders those, beside the models already in ``BASELINES``, between the markers of
docs/generalization.md. Every number in the table comes from these files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from doc_markers import write_between
from ship_weights import ROOT, evaluate  # the same evaluate call as the shipped model's

OUT = ROOT / "configs" / "generalization"
DOC = ROOT / "docs" / "generalization.md"
SPLIT_IDS = ROOT / "configs" / "isic2017_256" / "test_ids.txt"
EXTERNAL = "../shared/data/isic2018_extra_256c"
OWN_DATA = "../shared/data/isic2017_train_256"  # the split's folder, for runs recorded without their config
# recipe folders of models recorded elsewhere: (label, folder holding eval_test.json + eval_external.json)
BASELINES = [("shipped before the ImageNet encoder: unet, standard, 39 epochs (GPU), seed 42",
              ROOT / "configs" / "isic2017_256" / "previous" / "unet_gpu_e39_seed42")]
COLUMNS = [("Dice", "dice_mean"), ("IoU", "iou_mean"), ("recall", "recall_mean"), ("precision", "precision_mean"),
           ("thr. Jaccard", "thresholded_jaccard"), ("failures", "failure_rate")]
BEGIN, END = "<!-- ablation table: scripts/ablation.py table -->", "<!-- end of ablation table -->"


def record(run: Path, note: str = "") -> None:
    sys.path.insert(0, str(ROOT))
    from lesionseg.data.presets import ZOOM_P

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    best = run / "models" / "best_model"
    out = OUT / run.name
    out.mkdir(parents=True, exist_ok=True)
    data_dir = os.path.relpath(cfg["data_dir"], ROOT)
    external = os.path.relpath(cfg["external_dir"], ROOT) if cfg.get("external_dir") else EXTERNAL
    evaluate(best, data_dir, SPLIT_IDS, out / "eval_test.json", tta=False)
    evaluate(best, external, None, out / "eval_external.json", tta=False)
    history = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    model_cfg = json.loads((best / "config.json").read_text())
    info = {"run": run.name, "encoder": model_cfg.get("encoder_name", "unet"),
            "augment_preset": cfg.get("augment_preset", "standard"), "epochs": len(history), "seed": cfg["seed"],
            "lr": cfg["lr"], "full_res_channels": model_cfg["decoder_channels"][-1],
            "decoder_channels": model_cfg["decoder_channels"],
            "norm_groups": model_cfg.get("norm_groups", 8),
            "full_resolution_stage": model_cfg.get("full_resolution_stage", True),
            "select_on": cfg.get("select_on", "val"), "threshold": model_cfg["inference_threshold"],
            "best_epoch": max(history, key=lambda h: h.get("score", h["val_dice"]))["epoch"],
            "wall_minutes": round(sum(h["seconds"] for h in history) / 60, 1)}
    for key, off in (("ema_decay", 0.0), ("encoder_lr_scale", 1.0), ("zoom_p", ZOOM_P)):  # training levers, kept where turned on
        if cfg.get(key, off) != off:
            info[key] = cfg[key]
    if note:  # e.g. the machine, for a rerun of a recipe already in the table
        info["note"] = note
    (out / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"recorded {run.name} -> {out.relative_to(ROOT)}")


def _wide_view(text: str) -> float:
    """argparse type of ``--wide-view`` (lesionseg's own check, imported only when the option is given)."""
    sys.path.insert(0, str(ROOT))
    from lesionseg.inference.wide_view import wide_view_arg

    return wide_view_arg(text)


def record_view(name: str, weights: Path, wide_view: float) -> None:
    """The recorded run ``name`` (whose best model is ``weights``) evaluated with the wide view."""
    source = OUT / name
    info = json.loads((source / "run_info.json").read_text())
    out = OUT / f"{name}_wide{wide_view:g}"
    out.mkdir(parents=True, exist_ok=True)
    evaluate(weights, OWN_DATA, SPLIT_IDS, out / "eval_test.json", tta=False,
             wide_view=wide_view)
    evaluate(weights, EXTERNAL, None, out / "eval_external.json", tta=False, wide_view=wide_view)
    note = f"with the wide view at inference (--wide-view {wide_view:g})"
    info.update(run=out.name, note=f"{info['note']}, {note}" if info.get("note") else note)
    (out / "run_info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"recorded {name} with the wide view -> {out.relative_to(ROOT)}")


def _row(label: str, test: dict, ext: dict) -> str:
    cells = [f"{test[k]:.4f} / {ext[k]:.4f}" for _, k in COLUMNS]
    return f"| {label} | {test['threshold']:.2f} | " + " | ".join(cells) + " |"


def table() -> str:
    sys.path.insert(0, str(ROOT))
    # the decoder an ImageNet encoder gets when no decoder_channels are given
    from lesionseg.models.ds_attention_unet import MOBILENET_DECODER_CHANNELS as IMAGENET_DECODER

    lines = ["| model (encoder, augmentation, epochs, seed) | threshold | "
             + " | ".join(f"{name} (test / external)" for name, _ in COLUMNS) + " |",
             "| --- | --- |" + " --- |" * len(COLUMNS)]
    for label, folder in BASELINES:
        test, ext = folder / "eval_test.json", folder / "eval_external.json"
        if test.is_file() and ext.is_file():
            lines.append(_row(label, json.loads(test.read_text()), json.loads(ext.read_text())))
    # recorded runs only (framing/ holds scripts/framing_check.py's results)
    for folder in sorted(f.parent for f in OUT.glob("*/run_info.json")):
        info = json.loads((folder / "run_info.json").read_text())
        best = f" (best {info['best_epoch']})" if "best_epoch" in info else ""  # an ensemble has none
        label = (f"{info['encoder']}{' (ImageNet)' if info['encoder'] != 'unet' else ''}, {info['augment_preset']}, "
                 f"{info['epochs']} epochs{best}, seed {info['seed']}")
        if not info.get("full_resolution_stage", True):
            label += ", no full-resolution stage (decoder ends at 1/2)"
        elif info.get("full_res_channels", 16) != 16:  # runs recorded before the width varied had 16
            label += f", {info['full_res_channels']} channels at full resolution"
        if info.get("norm_groups", 8) != 8:
            label += f", {info['norm_groups']} GroupNorm groups"
        coarse = info.get("decoder_channels", [])[:-1]  # the finest stage is labelled above
        if info["encoder"] != "unet" and coarse and coarse != list(IMAGENET_DECODER[:len(coarse)]):
            label += f", decoder {'-'.join(map(str, info['decoder_channels']))} channels"
        if "encoder_lr_scale" in info:
            label += f", encoder learning rate x{info['encoder_lr_scale']:g}"
        if "zoom_p" in info:
            label += f", lesion windows on {info['zoom_p']:g} of the photos"
        if "ema_decay" in info:
            label += f", weight EMA {info['ema_decay']:g}"
        if info.get("note"):
            label += f", {info['note']}"
        if info.get("members"):  # scripts/seed_ensemble.py
            label = f"mean of {len(info['members'])} seeds: {label}"
        lines.append(_row(label, json.loads((folder / "eval_test.json").read_text()),
                          json.loads((folder / "eval_external.json").read_text())))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("runs", type=Path, nargs="+")
    r.add_argument("--note", default="", help="appended to the runs' table label, e.g. where they trained")
    v = sub.add_parser("view", help="a recorded run's weights with the wide view")
    v.add_argument("record", help="a folder name under configs/generalization/ with run_info.json")
    v.add_argument("weights", type=Path, help="that run's best model (a weights folder)")
    v.add_argument("--wide-view", type=_wide_view, required=True, metavar="F")
    sub.add_parser("table")
    args = p.parse_args()
    if args.cmd == "record":
        for run in args.runs:
            record(run.resolve(), args.note)
        return 0
    if args.cmd == "view":
        if not (OUT / args.record / "run_info.json").is_file():
            p.error(f"{OUT / args.record}: no run_info.json (record the run first)")
        record_view(args.record, args.weights.resolve(), args.wide_view)
        return 0
    if not write_between(DOC, BEGIN, END, table()):
        return 2
    print(f"wrote the table into {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
