"""Sections 4 and 5: end-to-end latency / peak RSS per JPEG, and ``lesionseg predict`` throughput.

Test photos are made by upscaling real ISIC images (bicubic) to camera sizes and saving them as
JPEG (quality 92) in a temporary folder; nothing is written into the repository.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .common import ROOT, Settings, real_images

E2E_SIZES = ((1024, 768), (4288, 2848))  # (width, height)


def make_jpeg(rgb: np.ndarray, size: tuple[int, int], path: Path, quality: int = 92) -> Path:
    """Upscale an RGB image to ``size`` = (width, height) and save it as a JPEG."""
    big = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
    ok = cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"cannot write {path}")
    return path


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _worker(settings: Settings, image: Path, mode: str, iters: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.e2e_worker", "--image", str(image), "--mode", mode,
           "--weights", str(settings.weights), "--iters", str(iters), "--threads", str(settings.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(settings), timeout=600)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def e2e_section(settings: Settings) -> dict[str, Any]:
    """Section 4: median latency and peak RSS, file in -> mask PNG out, ours vs baseline."""
    images, _ = real_images(settings, 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lesionseg-bench-") as tmp:
        for w, h in E2E_SIZES[-1:] if settings.quick else E2E_SIZES:  # --quick: the size the targets judge
            path = make_jpeg(images[0], (w, h), Path(tmp) / f"isic_{w}x{h}.jpg")
            for mode in ("baseline", "ours"):
                iters = settings.iters(15 if w * h < 4e6 else 10, 2)
                r = _worker(settings, path, mode, iters)
                rows.append({"case": f"{w}x{h} JPEG ({path.stat().st_size / 1e6:.1f} MB)", "mode": mode, **r})
    return {"rows": rows}


def throughput_section(settings: Settings) -> dict[str, Any]:
    """Section 5: ``lesionseg predict`` over a folder of 1024x768 JPEGs; images per second."""
    n = 12 if settings.quick else 200
    images, source = real_images(settings, 20)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lesionseg-batch-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(n):
            make_jpeg(images[i % len(images)], (1024, 768), src / f"ISIC_{i:07d}.jpg")
        modes = [("lesionseg predict (default)", []), ("lesionseg predict --outputs mask", ["--outputs", "mask"])]
        # the two main modes alternate for a few rounds (the median resists a noisy neighbour); fp32 once
        schedule = [m for _ in range(1 if settings.quick else 3) for m in modes]
        if not settings.quick:
            schedule.append(("lesionseg predict --no-fast (fp32)", ["--no-fast"]))
        runs: dict[str, list[dict[str, Any]]] = {}
        for k, (label, extra) in enumerate(schedule):
            out = Path(tmp) / f"out{k}"
            cmd = [sys.executable, "-m", "lesionseg", "predict", "--input_dir", str(src), "--output_dir", str(out),
                   "--weights", str(settings.weights), "--device", "cpu", *extra]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(settings), timeout=1200)
            wall = time.perf_counter() - t
            row: dict[str, Any] = {"mode": label, "images": n, "wall_s": wall}  # CLI's own thread choice
            m = re.search(r"(\d+) predicted.* in ([\d.]+) s", proc.stdout)
            if proc.returncode != 0 or not m:
                row["error"] = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]
            else:
                loop_s = float(m.group(2))
                row.update(loop_s=loop_s, images_per_s=int(m.group(1)) / loop_s, images_per_s_wall=n / wall,
                           outputs=len(list(out.glob("*.png"))))
            shutil.rmtree(out, ignore_errors=True)
            runs.setdefault(label, []).append(row)
        for label, rs in runs.items():
            ok = [r for r in rs if "error" not in r]
            if not ok:
                rows.append(rs[-1])
                continue
            ok.sort(key=lambda r: r["images_per_s"])
            row = dict(ok[len(ok) // 2], rounds=len(ok))
            row["range"] = f"{ok[0]['images_per_s']:.1f}-{ok[-1]['images_per_s']:.1f}" if len(ok) > 1 else ""
            rows.append(row)
    return {"rows": rows, "source": source}
