#!/usr/bin/env python
"""Framing stress test: how a model holds up when the lesion fills the frame or is cut by its edge.

    python scripts/framing_check.py weights outputs/gen/lite0_nofull_robust_e12_seed42 ...

The failures seen on independent ISIC photos are mostly framing: lesions that fill the frame or
touch its border, outlined only at their darkest core. The project's own test part is framed like
its training images, so this re-frames each image of the test part and of the external set and
scores the model on the re-framed photo against the mask cut the same way:

- ``as given``: the image itself;
- ``centre 1.5x`` / ``centre 2x``: the central 1/1.5 or 1/2 of each side (a closer framing: the
  lesion fills more of the frame, or leaves it);
- ``edge 1.5x``: a window of 1/1.5 of each side placed so that the lesion's centre lies a quarter
  of the window from its left edge (the lesion is cut by the left border when it is wide).

Each crop goes through ``Predictor.predict`` (exact fp32, so models compare without a CPU path's
rounding), at each model's own threshold, and is scored at the crop's resolution with the same
per-image metrics as ``lesionseg evaluate`` (failures: IoU < 0.65). Writes
``configs/generalization/framing/<name>.json`` per model (each set's means per framing, and the
external set's Dice and recall per photo under ``per_image``) and prints a Markdown table;
``--table`` prints the tables of the files already written (docs/generalization.md quotes them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lesionseg.data.io import load_image, load_mask  # noqa: E402
from lesionseg.data.pairing import Pair, collect_pairs  # noqa: E402
from lesionseg.evaluation import MetricAccumulator, select_pairs  # noqa: E402
from lesionseg.inference.predictor import Predictor  # noqa: E402
from lesionseg.inference.wide_view import wide_view_arg  # noqa: E402
from lesionseg.utils.atomic import atomic_write_text  # noqa: E402

OUT = ROOT / "configs" / "generalization" / "framing"
DATA = ROOT.parent / "shared" / "data"
SHIPPED = "shipped (weights/)"  # the name of weights/ in the results; its file is shipped.json
# (label, zoom, where): zoom 1 is the image as given
FRAMINGS = [("as given", 1.0, "centre"), ("centre 1.5x", 1.5, "centre"), ("centre 2x", 2.0, "centre"),
            ("edge 1.5x", 1.5, "edge")]
COLUMNS = ("dice_mean", "recall_mean", "precision_mean", "failure_rate")


def framing_box(mask: np.ndarray, zoom: float, where: str) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a window of 1/``zoom`` of each side of ``mask`` (H, W) {0, 1}.

    where: "centre" (the image's centre) or "edge" (the lesion's centroid a quarter of the window
    from its left edge, and centred vertically, both clipped to the image; the image's centre for
    an empty mask)."""
    if zoom < 1.0:
        raise ValueError(f"zoom must be >= 1, got {zoom}")
    if where not in ("centre", "edge"):
        raise ValueError(f"where must be 'centre' or 'edge', got {where!r}")
    h, w = mask.shape[:2]
    wh, ww = max(1, round(h / zoom)), max(1, round(w / zoom))
    ys, xs = np.nonzero(mask)
    if where == "centre" or not len(ys):
        y0, x0 = (h - wh) // 2, (w - ww) // 2
    else:
        y0 = int(round(ys.mean() - wh / 2))
        x0 = int(round(xs.mean() - ww / 4))
    y0, x0 = min(max(y0, 0), h - wh), min(max(x0, 0), w - ww)
    return y0, y0 + wh, x0, x0 + ww


def score_framings(predictor: Predictor, pairs: Sequence[Pair],
                   framings: Sequence[tuple[str, float, str]] = FRAMINGS) -> dict[str, dict]:
    """{framing label: evaluation dict (as ``lesionseg evaluate``'s)} of ``predictor`` on ``pairs``."""
    accs = {label: MetricAccumulator(predictor.threshold) for label, _, _ in framings}
    for p in pairs:
        rgb, target = load_image(p.image), load_mask(p.mask)
        if rgb.shape[:2] != target.shape:
            raise ValueError(f"{p.image}: image {rgb.shape[:2]} and mask {target.shape} differ in size")
        for label, zoom, where in framings:
            y0, y1, x0, x1 = framing_box(target, zoom, where)
            accs[label].add(p.id, predictor.predict(rgb[y0:y1, x0:x1]).mask, target[y0:y1, x0:x1])
    return {label: acc.result() for label, acc in accs.items()}


def evaluation_sets(data: Path) -> dict[str, list[Pair]]:
    """{"test", "external", "val": pairs}: the committed split's held-out parts of
    ``data``/isic2017_train_256 and the whole external set ``data``/isic2018_extra_256c.
    FileNotFoundError naming the missing folders."""
    train, external = data / "isic2017_train_256", data / "isic2018_extra_256c"
    missing = [str(d) for d in (train, external) if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"data folder(s) not found: {', '.join(missing)} (pass --data)")
    ids = {s: (ROOT / "configs" / "isic2017_256" / f"{s}_ids.txt").read_text().split() for s in ("test", "val")}
    own = collect_pairs(train / "images", train / "masks", strict=False)
    return {"test": select_pairs(own, ids["test"]), "external": collect_pairs(external / "images", external / "masks"),
            "val": select_pairs(own, ids["val"])}


def model_folder(path: Path) -> Path:
    """A weights folder itself, or a training run's best model."""
    best = path / "models" / "best_model"
    return best if best.is_dir() else path


def table(results: dict[str, dict[str, dict[str, dict]]]) -> str:
    """Markdown: one row per model and framing, cells *test / external*."""
    lines = ["| model | framing | Dice | recall | precision | failures |", "| --- | --- | --- | --- | --- | --- |"]
    for name, sets in results.items():
        for label in sets["test"]:
            cells = [" / ".join(f"{sets[s][label][c]:.4f}" for s in ("test", "external")) for c in COLUMNS]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def card_sentence(weights: Path, folder: Path = OUT) -> str:
    """The model card's words on framing: the shipped model's external-set scores at centre 2x
    against as given, from ``folder/shipped.json``; "" where that file is missing or was measured
    for other weights (its ``model_sha256`` is not ``weights/model.safetensors``'s)."""
    try:
        doc = json.loads((folder / "shipped.json").read_text())
        if doc.get("model_sha256") != file_sha256(weights / "model.safetensors"):
            return ""
        given, close = doc["external"]["as given"], doc["external"]["centre 2x"]
    except (OSError, ValueError, KeyError):
        return ""
    return (f" Re-framed so that the lesion fills more of the frame (the central half of each side of "
            f"the external set's images, `scripts/framing_check.py`), this model's Dice is "
            f"{close['dice_mean']:.3f}, recall {close['recall_mean']:.3f} and {close['failure_rate']:.1%} of "
            f"the images fail, against {given['dice_mean']:.3f}, {given['recall_mean']:.3f} and "
            f"{given['failure_rate']:.1%} as given.")


def saved_table(folder: Path, order: Sequence[str] = ()) -> str:
    """Markdown from the JSON files in ``folder``: per set, one row per model (those named in
    ``order`` first, in that order), one cell per framing: Dice / recall / failures."""
    docs = {d["model"]: d for d in (json.loads(f.read_text()) for f in sorted(folder.glob("*.json")))}
    names = [n for n in order if n in docs] + sorted(n for n in docs if n not in order)
    labels = [label for label, _, _ in FRAMINGS]
    out = []
    for s, title in (("external", "external set"), ("test", "own test part"), ("val", "own validation part")):
        have = [n for n in names if s in docs[n]]  # files written before the validation part was scored lack it
        if not have:
            continue
        out += [f"{title} (Dice / recall / failures):", "",
                "| model | threshold | " + " | ".join(labels) + " |",
                "| --- | --- | " + " | ".join("---" for _ in labels) + " |"]
        for n in have:
            cells = [" / ".join(f"{docs[n][s][label][c]:.3f}" for c in ("dice_mean", "recall_mean", "failure_rate"))
                     for label in labels]
            out.append(f"| {n} | {docs[n]['threshold']:.2f} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="*", help="weights folders or training run folders")
    ap.add_argument("--table", action="store_true", help="print the tables of the JSON files in --out and stop")
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding isic2017_train_256 and isic2018_extra_256c")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N images of each set")
    ap.add_argument("--out", type=Path, default=OUT, help="where the JSON files go")
    ap.add_argument("--wide-view", type=wide_view_arg, default=None, metavar="F",
                    help="the wide view's zoom-out factor (default: each model's own; 0: off); the results "
                         "are named <model>_wide<F> where it differs from the model's own")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error(f"--limit must be a positive number of images, got {args.limit}")
    if args.table and args.models:
        ap.error("--table prints the saved results; run the models without it first")
    if args.table:
        print(saved_table(args.out, [SHIPPED, "unet_gpu_e39_seed42"]), end="")
        return 0
    if not args.models:
        ap.error("name one or more models (or pass --table)")
    try:
        sets = {k: v[:args.limit] for k, v in evaluation_sets(args.data).items()}
    except FileNotFoundError as e:
        ap.error(str(e))
    results = {}
    for path in args.models:
        folder = model_folder(path)
        if not (folder / "config.json").is_file():
            ap.error(f"{path}: no config.json (pass a weights folder or a training run folder)")
        shipped = path.resolve() == (ROOT / "weights").resolve()
        predictor = Predictor.from_weights(folder, device="cpu", fast=False, wide_view=args.wide_view)
        own_factor = float(json.loads((folder / "config.json").read_text()).get("inference_wide_view", 0.0))
        suffix = "" if predictor.wide_view == own_factor else f"_wide{predictor.wide_view:g}"
        stem = ("shipped" if shipped else path.name) + suffix
        name = (SHIPPED if shipped else path.name) + suffix
        results[name] = {s: score_framings(predictor, pairs) for s, pairs in sets.items()}
        args.out.mkdir(parents=True, exist_ok=True)
        summary = {s: {label: {k: v for k, v in r.items() if k != "per_image"} for label, r in by.items()}
                   for s, by in results[name].items()}
        # the external set's photos too, so that a lever's framing effect can be drawn over photos
        # as well as seeds (scripts/lever_effects.py); the own parts barely move with framing
        photos = {label: [{k: row[k] for k in ("id", "dice", "recall")} for row in r["per_image"]]
                  for label, r in results[name]["external"].items()} if "external" in results[name] else {}
        doc = {"model": name, "folder": str(folder), "model_sha256": file_sha256(folder / "model.safetensors"),
               "threshold": predictor.threshold, "wide_view": predictor.wide_view,
               "framings": [list(f) for f in FRAMINGS], "images": {s: len(p) for s, p in sets.items()}, **summary,
               "per_image": {"external": photos}}
        atomic_write_text(args.out / f"{stem}.json", json.dumps(doc, indent=1) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
