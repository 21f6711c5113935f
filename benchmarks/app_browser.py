#!/usr/bin/env python
"""Browser benchmark of the app: what a clinician waits for, measured in headless chromium.

    python benchmarks/app_browser.py            # 5 uploads, 10 slider moves, 100 batch photos
    python benchmarks/app_browser.py --quick    # 3 uploads, 5 slider moves, 20 batch photos

Starts ``python app.py`` on a free port (tests/app_server.py), then measures

- upload-to-overlay: a 4288 x 2848 JPEG set on the photo input until the overlay image shows
  (target: median <= 1.5 s); with ``--tta`` also until the flip-TTA views have followed,
- slider-to-update: a click on the threshold slider until the overlay image changes
  (target: median <= 150 ms),
- click-to-update: a click on the overlay (a refiner click with a refiner in the weights, a brush
  dab without) until the corrections line counts it and the overlay changes (target: <= 500 ms),
- batch: N ISIC-size photos dropped as a folder until the results ZIP is offered
  (target: 100 photos <= 60 s): the ISIC photos of ../shared/data/isic2017_train_256/images when
  present (256 px), and generated 1024 x 768 JPEGs,

and writes benchmarks/results_app.md (results_app_avx2.md where torch's kernels are capped below
AVX-512, e.g. with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, which the app inherits) with the
machine description and the CPU capability. Needs chromium
(/usr/bin/chromium) and Playwright for Python.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from app_server import AppServer  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ISIC_DIR = ROOT.parent / "shared" / "data" / "isic2017_train_256" / "images"
TARGETS = {"upload": 1.5, "slider": 0.150, "batch100": 60.0, "click": 0.500}
PHOTO_HW = (2848, 4288)  # a 12-megapixel dermatoscope camera's frame
TIMEOUT_MS = 900_000


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
                  .split()[1]) / 1024 ** 2
        mem_s = f"{mem:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        mem_s = "RAM unknown"
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    import torch

    from lesionseg.utils.cpu_isa import describe

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{platform.system()} {platform.machine()}, {cpu or 'unknown CPU'}, {os.cpu_count()} logical cores, "
            f"{mem_s}, GPU: {gpu}; CPU capability: {describe()}; load average at start (1/5/15 min): {load}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def weights_line() -> str:
    import hashlib

    w = ROOT / "weights" / "model.safetensors"
    src = os.environ.get("LESIONSEG_WEIGHTS")
    if src:
        return f"$LESIONSEG_WEIGHTS = {src}"
    if not w.is_file():
        return "weights/ (no model.safetensors)"
    digest = hashlib.sha256(w.read_bytes()).hexdigest()[:12]
    return f"weights/model.safetensors ({w.stat().st_size / 1e6:.1f} MB, sha256 {digest})"


def isic_photos(folder: Path, n: int) -> str | None:
    """Copy the first ``n`` ISIC photos into ``folder``; None when the data is absent or too small."""
    files = sorted(ISIC_DIR.glob("*.jpg"))[:n] if ISIC_DIR.is_dir() else []
    if len(files) < n:
        return None
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    with Image.open(files[0]) as im:
        return f"{n} ISIC 2017 training photos ({im.size[0]}x{im.size[1]} px, {ISIC_DIR.parent.name})"


def generated_photos(folder: Path, n: int) -> str:
    """``n`` synthetic 1024x768 JPEGs (the size of many ISIC originals)."""
    from PIL import Image

    from conftest import draw_lesion

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(draw_lesion(768, 1024, seed=100 + i)[0]).save(folder / f"photo_{i:03d}.jpg", quality=90)
    return f"{n} generated 1024x768 JPEGs"


def overlay_src(page) -> str:
    return page.evaluate("() => { const i = document.querySelector('#overlay img'); return i ? i.src : ''; }")


def wait_overlay_change(page, old: str) -> None:
    page.wait_for_function("(old) => { const i = document.querySelector('#overlay img');"
                           " return i && i.src && i.src !== old && i.complete; }", arg=old, timeout=TIMEOUT_MS)


def bench_upload(page, url: str, photo: Path, repeats: int, tta: bool) -> tuple[list[float], list[float]]:
    """(upload-to-first-overlay times, upload-to-TTA-views times (empty without ``tta``))."""
    times, tta_times = [], []
    for _ in range(repeats):
        page.goto(url)
        page.wait_for_selector("#photo input[type=file]", state="attached")
        t0 = time.perf_counter()
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        wait_overlay_change(page, "")
        times.append(time.perf_counter() - t0)
        if tta:
            page.wait_for_function("() => { const e = document.querySelector('#status'); const t = e ? e.innerText : '';"
                                   " return t.includes('flip TTA') && !t.includes('adding') && !t.includes('⚠'); }",
                                   timeout=TIMEOUT_MS)
            tta_times.append(time.perf_counter() - t0)
    return times, tta_times


def area_text(page) -> str:
    return page.evaluate("() => { const e = document.querySelector('#measurements');"
                         " const m = e && e.innerText.match(/Lesion area\\s+([^\\n]+)/); return m ? m[1] : ''; }")


def bench_slider(page, moves: int, settle: bool) -> list[float]:
    """Click the slider at 10 % or 90 % of its length, away from its value (far apart, so that even a very
    confident model's outline moves); time until the measurements and the overlay show the new
    threshold. ``settle``: first wait until the previous move's full-resolution downloads are
    written (a user looking at the result between moves)."""
    slider = page.locator("#threshold input[type=range]")
    box = slider.bounding_box()
    times = []
    for _ in range(moves):
        if settle:
            page.locator("#downloads a[download$='_mask.png']").wait_for(timeout=TIMEOUT_MS)
            time.sleep(0.3)
        old_area = area_text(page)
        t0 = time.perf_counter()
        current = float(page.locator("#threshold input[type=number]").input_value())
        frac = 0.9 if current < 0.5 else 0.1  # always a real move
        page.mouse.click(box["x"] + box["width"] * frac, box["y"] + box["height"] / 2)
        page.wait_for_function(
            "([oldArea]) => { const e = document.querySelector('#measurements');"
            " const m = e && e.innerText.match(/Lesion area\\s+([^\\n]+)/);"
            " const i = document.querySelector('#overlay img');"
            " return m && m[1] !== oldArea && i && i.complete; }",  # same picture = same URL: no src test
            arg=[old_area], timeout=TIMEOUT_MS)
        times.append(time.perf_counter() - t0)
    return times


def bench_clicks(page, n: int) -> list[float]:
    """Click on the overlay ``n`` times (the default mode: "Add lesion (+)" with a refiner, a dab of the
    brush without one) at points spread over it; time from the click until the corrections line
    counts it and the overlay shows a new, fully loaded picture."""
    times = []
    points = [(0.5, 0.5), (0.3, 0.4), (0.7, 0.6), (0.4, 0.7), (0.6, 0.3)]
    for k in range(n):
        fx, fy = points[k % len(points)]
        old = overlay_src(page)
        before = page.evaluate("() => document.querySelector('#corrections')?.innerText || ''")
        img = page.locator("#overlay img")
        box = img.bounding_box()
        t0 = time.perf_counter()
        img.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
        page.wait_for_function(
            "([old, before]) => { const c = document.querySelector('#corrections')?.innerText || '';"
            " const i = document.querySelector('#overlay img');"
            " return c !== before && i && i.src && i.src !== old && i.complete; }",
            arg=[old, before], timeout=TIMEOUT_MS)
        times.append(time.perf_counter() - t0)
    return times


def bench_batch(page, url: str, folder: Path) -> float:
    page.goto(url)
    page.get_by_role("tab", name="Batch", exact=True).click()
    page.wait_for_selector("#batch-folder input[type=file]", state="attached")
    t0 = time.perf_counter()
    page.locator("#batch-folder input[type=file]").set_input_files(str(folder))
    page.locator("#batch-zip a[download$='.zip']").wait_for(timeout=TIMEOUT_MS)
    return time.perf_counter() - t0


def fmt(v: float, unit: str = "s") -> str:
    return f"{v * 1000:.0f} ms" if unit == "ms" else f"{v:.2f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 uploads, 5 slider moves, 20 batch photos")
    ap.add_argument("--repeats", type=int, help="uploads of the 4288x2848 JPEG (5)")
    ap.add_argument("--moves", type=int, help="slider moves (10)")
    ap.add_argument("--batch", type=int, help="photos in the batch folder (100)")
    ap.add_argument("--threads", type=int, help="passed to app.py --threads")
    ap.add_argument("--tta", action="store_true", help="passed to app.py --tta (flip TTA in both tabs)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--out", type=Path, default=None,
                    help="report file (default benchmarks/results_app.md, results_app_avx2.md when capped to AVX2)")
    ap.add_argument("--note", default="", help="a line added to the report (e.g. what else ran)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    moves = args.moves or (5 if args.quick else 10)
    n_batch = args.batch or (20 if args.quick else 100)
    if args.out is None:
        from benchmarks.common import default_output

        args.out = default_output("results_app")
    if not Path(args.chromium).exists():
        print(f"chromium not found at {args.chromium}", file=sys.stderr)
        return 2

    from PIL import Image
    from playwright.sync_api import sync_playwright

    from conftest import draw_lesion

    desc = machine()
    work = Path(tempfile.mkdtemp(prefix="lesionseg-bench-"))
    try:
        h, w = PHOTO_HW
        photo = work / f"dermoscopy_{w}x{h}.jpg"
        Image.fromarray(draw_lesion(h, w, seed=11)[0]).save(photo, quality=90)
        batch_sets = [(what, folder) for what, folder in
                      ((isic_photos(work / "isic", n_batch), work / "isic"),
                       (generated_photos(work / "generated", n_batch), work / "generated")) if what]
        app_args = (["--threads", str(args.threads)] if args.threads else []) + (["--tta"] if args.tta else [])
        t_start = time.perf_counter()
        with AppServer(*app_args) as server, sync_playwright() as pw:
            startup = time.perf_counter() - t_start
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            print(f"app up in {startup:.1f} s; uploading {repeats} x {w}x{h} ...", flush=True)
            uploads, tta_views = bench_upload(page, server.url, photo, repeats, args.tta)
            print(f"uploads: {[round(t, 2) for t in uploads]}; moving the slider {moves} x ...", flush=True)
            sliders = bench_slider(page, moves, settle=True)
            rapid = bench_slider(page, moves, settle=False)
            print(f"slider: {[round(t, 3) for t in sliders]}, back-to-back {[round(t, 3) for t in rapid]}",
                  flush=True)
            clicks = bench_clicks(page, moves)
            print(f"clicks: {[round(t, 3) for t in clicks]}", flush=True)
            batches = []
            for what, folder in batch_sets:
                print(f"batch: {what} ...", flush=True)
                batches.append((what, bench_batch(page, server.url, folder)))
                print(f"batch: {batches[-1][1]:.1f} s", flush=True)
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    up_med, sl_med = statistics.median(uploads), statistics.median(sliders)
    from benchmarks.common import isa_caps

    caps = f"{isa_caps()} " if isa_caps() else ""
    ok = lambda v, t: "yes" if v <= t else "**no**"  # noqa: E731
    lines = [
        "# App benchmark (browser)",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `{caps}python benchmarks/app_browser.py"
        f"{' --quick' if args.quick else ''}{f' --threads {args.threads}' if args.threads else ''}"
        f"{' --tta' if args.tta else ''}`.",
        "",
        f"Machine: {desc}.",
        "",
        f"Weights: {weights_line()}.",
        "",
        f"App start-up (process start to first answer, model loaded): {startup:.1f} s.",
        "",
        "| measure | median | runs | target | met |",
        "|---|---|---|---|---|",
        f"| upload-to-overlay, {w}x{h} JPEG (the plain first outline{', flip TTA on' if args.tta else ''}) | "
        f"{fmt(up_med)} | "
        f"{', '.join(fmt(t) for t in uploads)} | <= 1.5 s | {ok(up_med, TARGETS['upload'])} |",
    ]
    if tta_views:
        lines.append(f"| upload-to-TTA-views (the flipped views follow the first outline) | "
                     f"{fmt(statistics.median(tta_views))} | {', '.join(fmt(t) for t in tta_views)} | | |")
    lines += [
        f"| slider-move-to-overlay-update (one move, previous downloads written) | {fmt(sl_med, 'ms')} | "
        f"{', '.join(fmt(t, 'ms') for t in sliders)} | <= 150 ms | {ok(sl_med, TARGETS['slider'])} |",
        f"| slider, back-to-back moves (the last move's downloads still pending) | "
        f"{fmt(statistics.median(rapid), 'ms')} | {', '.join(fmt(t, 'ms') for t in rapid)} | | |",
    ]
    lines.append(f"| click-on-overlay-to-updated-overlay (one refiner call, {moves} clicks one after another) | "
                 f"{fmt(statistics.median(clicks), 'ms')} | {', '.join(fmt(t, 'ms') for t in clicks)} | <= 500 ms | "
                 f"{ok(statistics.median(clicks), TARGETS['click'])} |")
    for what, secs in batches:
        per100 = secs * 100 / n_batch
        lines.append(f"| batch, folder of {what}: drop to ZIP offered | {fmt(secs)} ({fmt(per100)} per 100) | 1 | "
                     f"100 photos <= 60 s | {ok(per100, TARGETS['batch100'])} |")
    if args.note:
        lines += ["", args.note]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
