#!/usr/bin/env python
"""Near-duplicate photos across the committed split: does the own test part overstate?

    python scripts/near_duplicates.py                  # writes configs/generalization/near_duplicates.json
    python scripts/near_duplicates.py --sheet out.png  # also a contact sheet of the closest pairs (not to commit)
    python scripts/near_duplicates.py --table          # own-test metrics of every recorded run, split in two

The ISIC archive holds several photos of one lesion (another visit, zoom, rotation or light). A
random split puts some of them on both sides, so a test photo can be a near copy of a training
photo, and the own test part then measures memory as well as transfer. This finds, for every
photo of the validation and test parts and of the external set, its most similar training photo:
the cosine similarity of ImageNet MobileNetV2 features (global mean of the stride-32 map; not the
fine-tuned encoder, so the measure does not depend on what a model learned), the maximum over the
eight flips and quarter turns of the query. The external set, drawn from outside the 2,000 photos,
gives the similarity that unrelated photos reach. The archive numbers the photos of one lesion
consecutively, so a photo counts as having a near duplicate in training when its most similar
training photo lies within ``NEIGHBOUR`` ISIC numbers of it or is more similar than ``--cutoff``
(the contact sheet is how both were checked by eye; the external set gives the chance rate).

``--table`` reads the per-image rows of each ``configs/generalization/*/eval_test.json`` and prints
the own-test Dice, recall and failures on the photos with and without a near duplicate.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "configs" / "generalization" / "near_duplicates.json"
SPLIT = ROOT / "configs" / "isic2017_256" / "split.json"
NEIGHBOUR = 3


def isic_number(image_id: str) -> int:
    """'ISIC_0012756' -> 12756."""
    return int(image_id.rsplit("_", 1)[-1])


def flagged(image_id: str, row: dict, cutoff: float) -> bool:
    """A near duplicate in training: the most similar training photo is a neighbour in the archive or above the cutoff."""
    near = abs(isic_number(image_id) - isic_number(row["nearest_train"])) <= NEIGHBOUR
    return near or row["similarity"] > cutoff


def flagged_ids(result: dict, part: str = "test") -> set[str]:
    """The ids of ``part`` that have a near duplicate in training, by the result's own cutoff."""
    return {i for i, r in result["parts"][part].items() if flagged(i, r, result["cutoff"])}


def features(paths: list[Path], batch: int = 32) -> np.ndarray:
    """(N, 8, 320) L2-normalised ImageNet MobileNetV2 features of each photo in its 8 orientations."""
    import torch

    from lesionseg.data.io import load_image
    from lesionseg.models.encoders import MobileNetV2Encoder, default_encoder_weights

    enc = MobileNetV2Encoder(stem_channels=0, norm_groups=1, activation="relu")
    enc.load_imagenet(default_encoder_weights("mobilenet_v2"))
    enc.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            x = torch.from_numpy(np.stack([load_image(p) for p in paths[i:i + batch]])).permute(0, 3, 1, 2)
            x = (x.float() / 255 - mean) / std
            views = []
            for flip in (False, True):
                xf = x.flip(-1) if flip else x
                for k in range(4):
                    f = enc(torch.rot90(xf, k, (-2, -1)))[-1].mean((-2, -1))
                    views.append(torch.nn.functional.normalize(f, dim=1))
            out.append(torch.stack(views, 1).numpy())
    return np.concatenate(out)


def nearest(query: np.ndarray, train: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Best similarity over the query's 8 views against each training photo's upright view.

    query (Q, 8, C), train (T, 8, C) -> best similarity (Q,) and the index of that photo (Q,);
    ``exclude_self`` (query is train) leaves each photo's match with itself out.
    """
    sims = (query @ train[:, 0].T).max(1)  # (Q, 8, T) -> (Q, T)
    if exclude_self:
        np.fill_diagonal(sims, -1)
    return sims.max(1), sims.argmax(1)


def compute(cutoff: float) -> dict:
    split = json.loads(SPLIT.read_text())
    own = DATA / "isic2017_train_256" / "images"
    ext_dir = DATA / "isic2018_extra_256c" / "images"
    ext_ids = (DATA / "isic2018_extra_256c" / "ids.txt").read_text().split()
    train_ids = split["train"]
    train = features([own / f"{i}.jpg" for i in train_ids])
    result: dict = {"cutoff": cutoff, "parts": {}}
    queries = {"val": [own / f"{i}.jpg" for i in split["val"]], "test": [own / f"{i}.jpg" for i in split["test"]],
               "external": [ext_dir / f"{i}.jpg" for i in ext_ids]}
    ids = {"val": split["val"], "test": split["test"], "external": ext_ids}
    for part, paths in queries.items():
        best, idx = nearest(features(paths), train)
        result["parts"][part] = {i: {"nearest_train": train_ids[j], "similarity": round(float(s), 4)}
                                 for i, s, j in zip(ids[part], best, idx)}
    # training photos against each other: how many have a near copy inside training itself
    tbest, tidx = nearest(train, train, exclude_self=True)
    result["parts"]["train"] = {i: {"nearest_train": train_ids[j], "similarity": round(float(s), 4)}
                                for i, s, j in zip(train_ids, tbest, tidx)}
    return result


def summary(result: dict) -> str:
    cutoff = result["cutoff"]
    lines = [f"near duplicate in training: most similar training photo within {NEIGHBOUR} ISIC numbers, "
             f"or similarity above {cutoff}"]
    for part, rows in result["parts"].items():
        s = np.array([r["similarity"] for r in rows.values()])
        q = np.quantile(s, [0.5, 0.9, 0.99])
        near = sum(abs(isic_number(i) - isic_number(r["nearest_train"])) <= NEIGHBOUR for i, r in rows.items())
        both = sum(flagged(i, r, cutoff) for i, r in rows.items())
        lines.append(f"  {part:9s} n={len(s):4d}  neighbour {near:3d}  above cutoff {int((s > cutoff).sum()):3d}  "
                     f"flagged {both:3d} ({both / len(s):.1%})  "
                     f"similarity median {q[0]:.3f}  p90 {q[1]:.3f}  p99 {q[2]:.3f}  max {s.max():.3f}")
    return "\n".join(lines)


def contact_sheet(result: dict, path: str, part: str = "test", n: int = 24) -> None:
    """Query | nearest training photo, side by side, around and above the cutoff (for the eye only)."""
    from PIL import Image, ImageDraw

    own = DATA / "isic2017_train_256" / "images"
    rows = sorted(result["parts"][part].items(), key=lambda kv: -kv[1]["similarity"])
    cutoff = result["cutoff"]
    above = [r for r in rows if flagged(*r, cutoff)]
    below = [r for r in rows if not flagged(*r, cutoff)][:n - min(len(above), n // 2 + n // 4)]
    picks = above[:n - len(below)] + below
    sheet = Image.new("RGB", (4 * 260, 130 * ((len(picks) + 1) // 2)), "white")
    for k, (qid, r) in enumerate(picks):
        x0, y0 = (k % 2) * 520, (k // 2) * 130
        for j, name in enumerate((qid, r["nearest_train"])):
            sheet.paste(Image.open(own / f"{name}.jpg").resize((128, 128)), (x0 + j * 130, y0))
        ImageDraw.Draw(sheet).text((x0 + 262, y0 + 50), f"{qid}\n{r['nearest_train']}\n{r['similarity']:.3f}",
                                   fill="black")
    sheet.save(path)


def split_table(result: dict) -> str:
    test = result["parts"]["test"]
    dup = flagged_ids(result)
    lines = [f"| run (own test part) | Dice: near duplicate in training (n={len(dup)}) / none (n={len(test) - len(dup)}) "
             "| recall | failures | Dice: all 200 / none |", "| --- | --- | --- | --- | --- |"]
    for path in sorted((ROOT / "configs" / "generalization").glob("*/eval_test.json")):
        rows = json.loads(path.read_text()).get("per_image") or []
        if len(rows) != len(test):
            continue
        cells = []
        for key in ("dice", "recall"):
            a = np.mean([r[key] for r in rows if r["id"] in dup])
            b = np.mean([r[key] for r in rows if r["id"] not in dup])
            cells.append(f"{a:.4f} / {b:.4f}")
        fa = np.mean([r["iou"] < 0.65 for r in rows if r["id"] in dup])
        fb = np.mean([r["iou"] < 0.65 for r in rows if r["id"] not in dup])
        whole = np.mean([r["dice"] for r in rows])
        lines.append(f"| {path.parent.name} | {cells[0]} | {cells[1]} | {fa:.1%} / {fb:.1%} "
                     f"| {whole:.4f} / {np.mean([r['dice'] for r in rows if r['id'] not in dup]):.4f} |")
    return "\n".join(lines)


def card_sentence(eval_test: dict | None, path: Path = OUT) -> str:
    """The model card's sentence on the own test part's near duplicates, or "" without the files."""
    if not path.is_file() or not eval_test or not eval_test.get("per_image"):
        return ""
    result = json.loads(path.read_text())
    test = result["parts"]["test"]
    rows = eval_test["per_image"]
    if {r["id"] for r in rows} != set(test):
        return ""  # evaluated on another split
    dup = flagged_ids(result)
    rest = [r["dice"] for r in rows if r["id"] not in dup]
    return (f"{len(dup)} of the {len(rows)} held-out test photos ({len(dup) / len(rows):.0%}) have a near copy in "
            f"training, mostly the same lesion photographed again (`scripts/near_duplicates.py`); without them this model's test Dice "
            f"is {np.mean(rest):.4f} ({np.mean([r['dice'] for r in rows]):.4f} with them).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cutoff", type=float, default=None, help="similarity above which a photo counts as a near duplicate")
    ap.add_argument("--sheet", default=None, help="write a contact sheet PNG of the closest test pairs here")
    ap.add_argument("--table", action="store_true", help="split every recorded run's own-test metrics by the file written")
    args = ap.parse_args(argv)
    if args.table:
        print(split_table(json.loads(OUT.read_text())))
        return 0
    if not DATA.is_dir():
        print(f"error: {DATA} not found: the data folder must lie beside the project", file=sys.stderr)
        return 1
    if OUT.is_file() and args.cutoff is not None:
        result = json.loads(OUT.read_text())
        result["cutoff"] = args.cutoff
    else:
        result = compute(args.cutoff if args.cutoff is not None else 0.9)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result))
    if args.sheet:
        contact_sheet(result, args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
