"""What the wide view (lesionseg/inference/wide_view.py) costs per photo, and how often it is paid.

    python -m benchmarks.wide_view [--factor 1.5] [--quick]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.wide_view

1. How often: the share of the external set's and the own test part's images (256 px, as
   ``lesionseg evaluate`` sees them) whose plain outline touches the border enough for the second
   model call, and the share where the wide view is kept.
2. What it costs: two 1024x768 photos (ISIC images upscaled): the external image with the largest
   border contact that keeps the wide view, and one whose outline stays inside the frame.
   ``Predictor.predict(rgb).mask`` on the default path with the wide view at ``--factor`` and with
   ``wide_view=0``, round-robin in one process; medians and the median of the paired ratios.
Writes benchmarks/results_wide_view.md (results_wide_view_avx2.md without native bf16) and a .json twin.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lesionseg.data.io import load_image  # noqa: E402
from lesionseg.inference.predictor import Predictor  # noqa: E402
from lesionseg.inference.wide_view import border_fraction, wide_view_arg  # noqa: E402

from .common import Settings, default_output, machine_info, time_interleaved, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _images(folder: Path, ids: list[str] | None = None) -> list[tuple[str, np.ndarray]]:
    files = sorted((folder / "images").glob("*.jpg"))
    if ids is not None:
        keep = set(ids)
        files = [f for f in files if f.stem in keep]
    return [(f.stem, load_image(f)) for f in files]


def how_often(pred: Predictor, sets: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, dict[str, Any]]:
    """Per set: images, how many took the second call, how many kept it."""
    out = {}
    for name, images in sets.items():
        calls0, kept = pred.calls, 0
        for _, rgb in images:
            kept += pred.predict(rgb).lowres_wide is not None
        extra = pred.calls - calls0 - len(images)
        out[name] = {"images": len(images), "second_call": extra, "kept": kept}
    return out


def measure(settings: Settings, factor: float) -> dict[str, Any]:
    weights = settings.weights
    wide = Predictor.from_weights(weights, device="cpu", wide_view=factor)
    plain = Predictor.from_weights(weights, device="cpu", wide_view=0)
    external = _images(DATA / "isic2018_extra_256c")
    test_ids = (ROOT / "configs" / "isic2017_256" / "test_ids.txt").read_text().split()
    test = _images(DATA / "isic2017_train_256", test_ids)
    if not external or not test:
        raise SystemExit(f"no images under {DATA}: this benchmark needs ../shared/data")
    often = how_often(wide, {"external set": external, "own test part": test})
    # the photos: the external image that keeps the wide view with the most border contact, and one inside the frame
    scored = [(border_fraction(plain.predict(rgb).lowres >= plain.threshold), i, rgb) for i, rgb in external]
    touching = next(s for s in sorted(scored, key=lambda s: -s[0]) if wide.predict(s[2]).lowres_wide is not None)
    inside = next(s for s in scored if s[0] == 0.0)
    photos = {"outline touches the border": touching, "outline inside the frame": inside}
    rows = []
    for label, (frac, image_id, rgb) in photos.items():
        big = cv2.resize(rgb, (1024, 768), interpolation=cv2.INTER_CUBIC)
        calls = {"plain": lambda b=big: plain.predict(b).mask, "wide": lambda b=big: wide.predict(b).mask}
        timed = time_interleaved(calls, settings.iters(40, 2), warmup=settings.iters(5, 1))
        took = wide.predict(big).lowres_wide is not None
        rows.append({"photo": label, "image": image_id, "border_fraction": frac, "wide_view_kept": took,
                     "plain_ms": timed["plain"]["median_ms"], "wide_ms": timed["wide"]["median_ms"],
                     "ratio": 1.0 / timed["wide"]["paired_speedup"]})
    return {"machine": machine_info(settings), "weights": os.path.relpath(weights, ROOT), "factor": wide.wide_view,
            "runner": wide.runner.name, "how_often": often, "rows": rows}


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"# The wide view per photo ({'bf16 path' if m['bf16_native'] else 'AVX2 path'})", "",
             f"Run {m['date']}: `{m['isa_caps'] + ' ' if m['isa_caps'] != 'none' else ''}"
             f"python -m benchmarks.wide_view`. Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads; "
             f"CPU capability: {m['capability']}; {m['other_load']}; torch {m['torch']}. Weights `{res['weights']}` "
             f"with the wide view at zoom-out factor {res['factor']:g} (`--factor`), default path: {res['runner']}.", "",
             "How often the second model call is made (images as `lesionseg evaluate` sees them):", "",
             "| set | images | second call | wide view kept |", "| --- | --- | --- | --- |"]
    for name, r in res["how_often"].items():
        lines.append(f"| {name} | {r['images']} | {r['second_call']} ({r['second_call'] / r['images']:.0%}) | "
                     f"{r['kept']} ({r['kept'] / r['images']:.0%}) |")
    lines += ["", "What it costs: a 1024x768 photo (the image upscaled), `Predictor.predict(rgb).mask` with the "
              "wide view and with `wide_view=0`, round-robin; medians, and the median of the paired "
              "ratios (wide / plain).", "",
              "| photo | image | border covered by the plain outline | wide view kept | plain (ms) | wide (ms) | "
              "wide / plain |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        lines.append(f"| {r['photo']} | {r['image']} | {r['border_fraction']:.0%} | {'yes' if r['wide_view_kept'] else 'no'} | "
                     f"{r['plain_ms']:.1f} | {r['wide_ms']:.1f} | {r['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--factor", type=wide_view_arg, default=1.5, help="the wide view's zoom-out factor (1.5)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    if not args.factor:
        p.error("--factor 0 has no wide view to measure")
    res = measure(Settings(quick=args.quick), args.factor)
    write_results(args.output or default_output("results_wide_view"), render(res), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
