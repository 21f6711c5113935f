"""One end-to-end case in a fresh process: JPEG file in, full-resolution mask PNG out.

Run by :mod:`benchmarks.e2e` as ``python -m benchmarks.e2e_worker --image F --mode ours|baseline``;
prints one JSON line with latencies and memory. A process of its own per case makes the peak RSS
(``VmHWM``) that of this case alone: interpreter + torch + model + one image's buffers.

Modes: ``ours`` is the project path (``Predictor.predict_file``: reduced-scale JPEG decoding, the
Predictor's default backend, mask written by ``save_png``); ``baseline`` is the research code's
way (full-resolution decode, fp32 eager NCHW, same mask writer).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path



def _path(pred) -> str:
    return "onnx" if pred.backend == "onnx" else pred.runner.name

def _rss_mb(field: str = "VmRSS") -> float:
    """Current (VmRSS) or peak (VmHWM) resident memory of this process in MB from /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", required=True)
    ap.add_argument("--mode", choices=("ours", "baseline"), default="ours")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--backend", default="torch")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from lesionseg.data.io import load_image, read_image_size
    from lesionseg.inference import Predictor
    from lesionseg.inference.outputs import save_mask_png

    if args.mode == "ours":
        pred = Predictor.from_weights(args.weights, device="cpu", backend=args.backend)
    else:
        pred = Predictor.from_weights(args.weights, device="cpu", fast=False)
    rss_loaded = _rss_mb()
    out = Path(tempfile.mkdtemp(prefix="lesionseg-e2e-")) / "mask.png"

    def once() -> tuple[int, int]:
        if args.mode == "ours":
            _, p = pred.predict_file(args.image)
        else:
            rgb = load_image(args.image)  # full-resolution decode
            w, h = read_image_size(args.image)
            p = pred.predict_batch([rgb], sizes=[(h, w)])[0]
        save_mask_png(out, p.mask)
        return p.mask.shape

    times, shape = [], None
    for i in range(args.iters + 1):  # the first call warms up (allocator, oneDNN kernels)
        t = time.perf_counter()
        shape = once()
        if i:
            times.append((time.perf_counter() - t) * 1e3)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) parent process
    result = {"median_ms": statistics.median(times), "min_ms": min(times), "n": len(times),
              "rss_loaded_mb": rss_loaded, "peak_rss_mb": _rss_mb("VmHWM"),
              "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "mask_shape": list(shape), "png_bytes": out.stat().st_size,
              "path": _path(pred)}
    out.unlink()
    os.rmdir(out.parent)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
