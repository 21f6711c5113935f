"""The default path's masks against exact fp32 on every image of the test part and the external set.

    python -m benchmarks.agreement                    # benchmarks/results_agreement.md (+ .json)
    scripts/as_avx2.sh python -m benchmarks.agreement  # results_agreement_avx2.md
    LESIONSEG_OPENVINO=0 scripts/as_avx2.sh python -m benchmarks.agreement   # the path without OpenVINO

``Predictor.from_weights(weights).predict(rgb).mask`` (the clean-up applied, at the image's size)
against the same with ``fast=False``, per image: Dice mean and minimum, and how many images fall
under 0.99 and under 0.95 (the issue's bar for any CPU path: mean >= 0.99, none under 0.95).
Section 1 of ``python -m benchmarks`` checks 20 images; this covers all of them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lesionseg.data.io import load_image  # noqa: E402
from lesionseg.inference import Predictor  # noqa: E402
from lesionseg.metrics import image_metrics  # noqa: E402

from .common import ROOT, Settings, default_output, machine_info, write_results  # noqa: E402
from .forward import describe  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = {"own test part (configs/isic2017_256/test_ids.txt)": (DATA / "isic2017_train_256" / "images",
                                                              ROOT / "configs" / "isic2017_256" / "test_ids.txt"),
        "external set (isic2018_extra_256c)": (DATA / "isic2018_extra_256c" / "images", None)}


def measure(weights: Path) -> dict[str, Any]:
    fast = Predictor.from_weights(weights, device="cpu")
    exact = Predictor.from_weights(weights, device="cpu", fast=False)
    rows = []
    for name, (images, ids_file) in SETS.items():
        if not images.is_dir():
            rows.append({"set": name, "skipped": f"{images} not found"})
            continue
        ids = ids_file.read_text().split() if ids_file else None
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png")
                       and (ids is None or p.stem in ids))
        dice = []
        for f in files:
            rgb = load_image(f)
            dice.append(image_metrics(fast.predict(rgb).mask, exact.predict(rgb).mask)["dice"])
        d = np.asarray(dice)
        worst = [files[i].stem for i in np.argsort(d)[:3]]
        rows.append({"set": name, "images": len(d), "dice_mean": float(d.mean()), "dice_min": float(d.min()),
                     "under_0.99": int((d < 0.99).sum()), "under_0.95": int((d < 0.95).sum()), "worst": worst})
    return {"machine": machine_info(Settings()), "path": describe(fast), "weights": str(weights), "rows": rows,
            "openvino_env": os.environ.get("LESIONSEG_OPENVINO", "")}


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# Default path vs exact fp32, every image", "",
             f"Run {m['date']}: `python -m benchmarks.agreement` on {m['cpu']}, {m['cores']} cores; CPU capability: "
             f"{m['capability']}{' (' + m['isa_caps'] + ')' if m.get('isa_caps', 'none') != 'none' else ''}.", "",
             f"Path: {res['path']}{' (LESIONSEG_OPENVINO=' + res['openvino_env'] + ')' if res.get('openvino_env') else ''}"
             f" (`{res['weights']}`). Masks after the clean-up, at each image's size, "
             "`Predictor.predict` against `fast=False`.", "",
             "| set | images | Dice mean | Dice min | under 0.99 | under 0.95 | worst three |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['set']} | skipped: {r['skipped']} | | | | | |")
        else:
            lines.append(f"| {r['set']} | {r['images']} | {r['dice_mean']:.4f} | {r['dice_min']:.4f} | "
                         f"{r['under_0.99']} | {r['under_0.95']} | {', '.join(r['worst'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=ROOT / "weights")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    res = measure(args.weights)
    write_results(args.output or default_output("results_agreement"), render(res), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
