#!/usr/bin/env python
"""Check ``lesionseg data prepare`` from outside the project: are the written masks where the
photos' own masks say, and are the written images aligned with them?

Give it full-resolution photos and masks in an official layout (ISIC 2018 Task 1: the two zips
or their extracted folders; any layout ``data prepare`` reads works):

    python scripts/check_prepare_alignment.py --source ISIC2018_Task1-2_Training_Input.zip \
        ISIC2018_Task1_Training_GroundTruth.zip --size 256 --resize all --limit 200

For each resize mode it runs ``python -m lesionseg data prepare`` into a temporary folder (or
checks a folder prepared before, ``--prepared DIR``), then re-derives every expected output
with PIL alone, from the original files, by its own route (crop or paste on a square, then a
bilinear resize, then the 128 cut for masks), never calling project code:

- mask agreement: IoU of the written mask with the re-derived one (boundary pixels may differ
  by the filter; a misplaced mask loses a band along its whole outline);
- image alignment: the mean absolute difference of the written image to the re-derived one at
  the 3x3 one-pixel shifts; an aligned image fits best unshifted.

Exit 0 when every image passes (mask IoU >= --min-iou for lesions of at least 400 px, and the
image fits best unshifted), 1 otherwise with the failing ids listed. Only the manifest's record
of where each id came from is read from the prepared folder, besides the outputs themselves.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
MODES = ("squash", "crop", "pad")
MIN_AREA = 400  # lesions smaller than this (px at the output size) are too small for a stable IoU


def original_bytes(record: str, sources: list[Path]) -> bytes:
    """The bytes of a manifest ``file`` entry: ``archive.zip:member`` or a path."""
    if ":" in record and not Path(record).exists():
        archive, member = record.split(":", 1)
        for s in sources:
            for z in ([s] if s.is_file() else sorted(s.rglob("*.zip"))):
                if z.name == archive:
                    with zipfile.ZipFile(z) as zf:
                        return zf.read(member)
        raise FileNotFoundError(f"{archive}: not among the sources")
    return Path(record).read_bytes()


def expected(img: Image.Image, mode: str, size: int | None, fill: int | tuple) -> Image.Image:
    """The photo (or mask) as prepare should write it, derived with PIL only: the centred square
    (crop: of the short side; pad: of the long side, the photo pasted on ``fill``), then a bilinear
    resize to ``size`` (None: no resize)."""
    w, h = img.size
    if mode == "crop":
        side = min(w, h)
        img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    elif mode == "pad":
        side = max(w, h)
        canvas = Image.new(img.mode, (side, side), fill)
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    return img.resize((size, size), Image.Resampling.BILINEAR) if size else img


def binary(mask: Image.Image) -> Image.Image:
    a = np.asarray(mask.convert("L"))
    cut = 1 if a.max() <= 1 else 128
    return Image.fromarray(np.where(a >= cut, 255, 0).astype(np.uint8))


def best_shift(out: np.ndarray, ref: np.ndarray) -> tuple[tuple[int, int], float]:
    """The (dy, dx) in -1..1 at which ``out`` fits ``ref`` best (mean abs difference inside a
    2-pixel margin), and that difference at (0, 0)."""
    m = 2
    core = out[m:-m, m:-m].astype(float)
    diffs = {(dy, dx): np.abs(core - ref[m + dy:ref.shape[0] - m + dy, m + dx:ref.shape[1] - m + dx]).mean()
             for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    return min(diffs, key=diffs.get), diffs[(0, 0)]


def check(prepared: Path, sources: list[Path], limit: int | None, min_iou: float) -> tuple[list[dict], list[str]]:
    manifest = json.loads((prepared / "manifest.json").read_text())
    mode, size = manifest["settings"]["resize"], manifest["settings"]["size"]
    rows, failed = [], []
    for ident in sorted(manifest["items"])[:limit]:
        item = manifest["items"][ident]
        photo = ImageOps.exif_transpose(Image.open(io.BytesIO(original_bytes(item["image"]["file"], sources))))
        mask = binary(Image.open(io.BytesIO(original_bytes(item["mask"]["file"], sources))))
        want_mask = np.asarray(binary(expected(mask, mode, size, 0))) > 0
        out_mask = np.asarray(Image.open(prepared / item["output"]["mask"]).convert("L")) > 127
        union = (want_mask | out_mask).sum()
        iou = float((want_mask & out_mask).sum() / union) if union else 1.0
        ref = np.asarray(expected(photo.convert("RGB"), mode, size, (0, 0, 0)), float)
        out_img = np.asarray(Image.open(prepared / item["output"]["image"]).convert("RGB"), float)
        shift, mad = best_shift(out_img.mean(axis=2), ref.mean(axis=2))
        ok = (iou >= min_iou or want_mask.sum() < MIN_AREA) and shift == (0, 0)
        rows.append({"id": ident, "mode": mode, "photo": f"{photo.size[0]}x{photo.size[1]}", "mask_iou": round(iou, 4),
                     "image_mad": round(float(mad), 2), "best_shift": shift, "ok": ok})
        if not ok:
            failed.append(f"{ident} ({mode}): mask IoU {iou:.3f}, image fits best shifted by {shift}")
    return rows, failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", nargs="+", required=True, type=Path, help="the original archives or folders")
    p.add_argument("--prepared", type=Path, default=None, help="check this prepared folder instead of preparing")
    p.add_argument("--size", default="256", help="size for data prepare (default 256)")
    p.add_argument("--resize", default="all", help="squash, crop, pad or all (default all)")
    p.add_argument("--limit", type=int, default=None, help="check only the first N ids")
    p.add_argument("--min-iou", type=float, default=0.95, help="mask IoU needed (default 0.95)")
    p.add_argument("--json", type=Path, default=None, help="write every row here")
    args = p.parse_args(argv)
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folders = [args.prepared] if args.prepared else []
        for mode in ([] if args.prepared else MODES if args.resize == "all" else [args.resize]):
            out = Path(tmp) / mode
            cmd = [sys.executable, "-m", "lesionseg", "data", "prepare", "--source", *map(str, args.source),
                   "--output", str(out), "--size", args.size, "--resize", mode]
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if r.returncode not in (0, 1):
                print(f"data prepare failed ({r.returncode}): {r.stderr.strip()[-2000:]}", file=sys.stderr)
                return 2
            folders.append(out)
        for folder in folders:
            r, f = check(folder, args.source, args.limit, args.min_iou)
            rows += r
            failed += f
            ious = [x["mask_iou"] for x in r]
            print(f"{r[0]['mode'] if r else folder}: {len(r)} images, mask IoU min {min(ious, default=0):.4f} / "
                  f"median {float(np.median(ious)) if ious else 0:.4f}, image fits best unshifted in "
                  f"{sum(x['best_shift'] == (0, 0) for x in r)}/{len(r)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    for line in failed:
        print(f"FAILED {line}")
    print("all aligned" if rows and not failed else f"{len(failed)} of {len(rows)} failed")
    return 0 if rows and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
