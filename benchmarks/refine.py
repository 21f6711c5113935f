"""Click-correction latency: one ``Predictor.refine`` call on a 12-megapixel dermatoscope photo.

    python -m benchmarks.refine            # 30 rounds
    python -m benchmarks.refine --quick    # 5 rounds

The photo (4288 x 2848 JPEG) is decoded once as the app does (``Predictor.load``: reduced-scale
JPEG decoding, the Prediction at the full size), predicted, and then, round-robin in one process:

- ``predict``: the plain prediction of the decoded photo (the model call every upload pays);
- ``refine, 1 click`` / ``refine, 3 clicks``: one refiner call with 1 or 3 clicks so far, the
  previous result given (what one click in the app computes) -- target <= 300 ms;
- ``refine + full-size mask``: the same and the 4288 x 2848 mask cut from it (what a download
  of the corrected mask adds);
- ``refine + screen overlay``: the same and the overlay at the app's screen size.

Writes benchmarks/results_refine.md (results_refine_avx2.md without native bf16) and a .json twin.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from PIL import Image  # noqa: E402

from conftest import draw_lesion  # noqa: E402
from lesionseg.inference.outputs import overlay  # noqa: E402
from lesionseg.inference.predictor import Predictor  # noqa: E402
from lesionseg.ui.views import DISPLAY_MAX_SIDE  # noqa: E402
from lesionseg.utils.sizes import fit_size, resize_rgb_to  # noqa: E402

from .common import DEFAULT_WEIGHTS, Settings, default_output, machine_info, other_load, time_interleaved  # noqa: E402

log = logging.getLogger("benchmarks.refine")
PHOTO_HW = (2848, 4288)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.refine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 rounds instead of 30")
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--output", type=Path, default=default_output("results_refine"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = Settings(quick=args.quick, weights=args.weights)
    pred = Predictor.from_weights(args.weights, device="cpu")
    if not pred.can_refine:
        print(f"error: {args.weights} has no click refiner (refiner/)", file=sys.stderr)
        return 2
    pred.warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.jpg"
        h, w = PHOTO_HW
        Image.fromarray(draw_lesion(h, w, seed=11)[0]).save(photo, quality=90)
        rgb, size = pred.load(photo)
    plain = pred.predict_batch([rgb], sizes=[size])[0]
    dh, dw = rgb.shape[0], rgb.shape[1]
    one = [(dw * 0.5, dh * 0.5, True)]
    three = one + [(dw * 0.1, dh * 0.1, False), (dw * 0.6, dh * 0.4, True)]
    screen = fit_size(*size, DISPLAY_MAX_SIDE)
    display = resize_rgb_to(rgb, screen)
    fns = {
        "predict": lambda: pred.predict_batch([rgb], sizes=[size])[0],
        "refine, 1 click": lambda: pred.refine(rgb, one, previous=plain),
        "refine, 3 clicks": lambda: pred.refine(rgb, three, previous=plain),
        "refine + full-size mask": lambda: pred.refine(rgb, three, previous=plain).mask,
        "refine + screen overlay": lambda: overlay(display, pred.refine(rgb, three, previous=plain).mask_at(screen)),
    }
    rounds = 5 if args.quick else 30
    timings = time_interleaved(fns, rounds)
    info = machine_info(settings)
    result = {"machine": info, "load": other_load(), "photo": f"{w}x{h} JPEG decoded to {dw}x{dh}",
              "runner": pred.refine_runner.name, "rounds": rounds, "timings": timings}
    lines = ["# Click-correction latency (`python -m benchmarks.refine`)", "",
             f"CPU: {info.get('cpu')}, {info.get('threads')} threads, {info.get('capability', '')}; "
             f"refiner path: {pred.refine_runner.name}; {other_load()}.", "",
             f"Photo: {result['photo']}; {rounds} rounds, round-robin in one process; target: one refine <= 300 ms.",
             "", "| step | median ms | min ms | ratio to predict |", "|---|---|---|---|"]
    base = timings["predict"]["median_ms"]
    for name, t in timings.items():
        lines.append(f"| {name} | {t['median_ms']:.1f} | {t['min_ms']:.1f} | {t['median_ms'] / base:.2f} |")
    args.output.write_text("\n".join(lines) + "\n")
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
