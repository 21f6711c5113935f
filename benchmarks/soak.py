#!/usr/bin/env python
"""Soak test of the app: many concurrent API users, good and bad files, memory watched.

    python benchmarks/soak.py            # 20 users x 10 images, at most 20 minutes
    python benchmarks/soak.py --quick    # 20 users x 3 images, at most 8 minutes

Starts ``python app.py`` on a free loopback port (tests/app_server.py) and warms it up with all
users at once sending ``--warmup-images`` photos each (so imports, caches, thread pools and
allocator arenas at this concurrency are the base). Then ``--users`` gradio_client users run at
once, ``--rounds`` times; each sends ``--images`` photos: about two thirds as single-image
``/segment`` calls, the rest in one ``/batch`` call; every fourth user also sends a bad file
(empty, truncated, text named .jpg, decompression bomb) on its own and inside its batch. No new
request starts after ``--max-seconds``; the run then stops by itself. Reports failed good
requests (goal 0), bad files answered with a one-line message (goal all), latencies, and the
server's peak RSS and RSS growth after warm-up (goal < 200 MB); writes
benchmarks/results_soak.md. Exit code 1 when a goal is missed. ``--env MALLOC_ARENA_MAX=2``
runs the app with extra environment (allocator experiments).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from app_server import AppServer  # noqa: E402
from bad_inputs import IMAGE_CASES, build_images, photo  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "isic2017_train_256" / "images"
BAD_IDS = ("empty", "truncated_jpeg", "text_named_jpg", "png_bomb")
GROWTH_GOAL_MB = 200.0


@dataclass
class Tally:
    """Outcomes of all users, filled from their threads under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    good_ok: int = 0
    good_failed: list[str] = field(default_factory=list)
    bad_answered: int = 0
    bad_unanswered: list[str] = field(default_factory=list)
    single_s: list[float] = field(default_factory=list)
    batch_s: list[float] = field(default_factory=list)
    requests: int = 0
    not_sent: int = 0


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """Resident memory of ``pid`` (VmRSS now, VmHWM = peak) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def photos(folder: Path, n: int) -> list[Path]:
    """``n`` ISIC photos from the shared data when present, else generated 1024 x 768 JPEGs."""
    if DATA.is_dir():
        files = sorted(DATA.glob("*.jpg"))[:n]
        if len(files) == n:
            return files
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        Image.fromarray(photo(768, 1024, seed=i)).save(folder / f"gen{i:03d}.jpg", quality=90)
        out.append(folder / f"gen{i:03d}.jpg")
    return out


def bad_message(exc: Exception | None, status: str | None, name: str) -> bool:
    """A bad file was answered with a one-line message naming it (an AppError or a ⚠️ status)."""
    text = str(exc) if exc is not None else (status or "")
    ok_form = type(exc).__name__ == "AppError" if exc is not None else text.startswith("⚠️")
    return ok_form and name in text and "Traceback" not in text


def user(url: str, k: int, good: list[Path], bad: list[Path], tally: Tally, deadline: float) -> None:
    """One client: singles, then one batch (good + its bad file), stopping at ``deadline``."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    n_single = max(1, round(len(good) * 2 / 3))
    for i, path in enumerate(good[:n_single] + bad):
        if time.monotonic() > deadline:
            with tally.lock:
                tally.not_sent += len([p for p in good[i:] if p not in bad])
            return
        t0, exc, status = time.monotonic(), None, None
        try:
            status = client.predict(handle_file(path), 0.5, None, api_name="/segment")[5]
        except Exception as e:  # noqa: BLE001 - counted below
            exc = e
        dt = time.monotonic() - t0
        with tally.lock:
            tally.requests += 1
            if path in bad:
                if bad_message(exc, status, path.name):
                    tally.bad_answered += 1
                else:
                    tally.bad_unanswered.append(f"user {k} {path.name}: {exc or status}")
            elif exc is None and status and path.name in status and "⚠️" not in status:
                tally.good_ok += 1
                tally.single_s.append(dt)
            else:
                tally.good_failed.append(f"user {k} {path.name}: {exc or status}")
    batch = good[n_single:] + bad
    if not batch:
        return
    if time.monotonic() > deadline:
        with tally.lock:
            tally.not_sent += len(good[n_single:])
        return
    t0 = time.monotonic()
    try:
        _, table, _, _ = client.predict(None, [handle_file(p) for p in batch], "Balanced", api_name="/batch")
        rows = {r[0]: r[-1] for r in table["data"]}
    except Exception as e:  # noqa: BLE001
        rows = {p.name: f"request failed: {e}" for p in batch}
    dt = time.monotonic() - t0
    with tally.lock:
        tally.requests += 1
        tally.batch_s.append(dt)
        for p in batch:
            row = rows.get(p.name, "missing row")
            if p in bad:
                if row.startswith("error:") and "\n" not in row and "Traceback" not in row:  # row named p
                    tally.bad_answered += 1
                else:
                    tally.bad_unanswered.append(f"user {k} batch {p.name}: {row}")
            elif row == "ok":
                tally.good_ok += 1
            else:
                tally.good_failed.append(f"user {k} batch {p.name}: {row}")


def run_round(url: str, users: int, good: list[Path], stride: int, n: int, bad: list[Path], tally: Tally,
              deadline: float) -> int:
    """All ``users`` at once, user k sending ``n`` of its ``stride`` photos (every 4th also a bad
    file); returns the number of users still running at the hard limit. Waits 5 s after."""
    threads = [threading.Thread(target=user, daemon=True,
                                args=(url, k, good[k * stride:k * stride + n],
                                      [bad[(k // 4) % len(bad)]] if k % 4 == 0 else [], tally, deadline))
               for k in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline + 600 - time.monotonic()))
    time.sleep(5)  # let the server settle, then measure what it kept
    return sum(t.is_alive() for t in threads)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 images per user, at most 8 minutes")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--images", type=int, default=None, help="good images per user (10; 3 with --quick)")
    ap.add_argument("--max-seconds", type=float, default=None, help="no new request after this (1200; 480 quick)")
    ap.add_argument("--weights", default=None, help="weights for the app (default: the app's default)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for the app, e.g. MALLOC_ARENA_MAX=2 (repeatable)")
    ap.add_argument("--warmup-images", type=int, default=2, help="images per user in the warm-up round (2)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole load N times on the same server: growth after round 1 tells a leak "
                         "from a plateau (default 1)")
    ap.add_argument("--output", type=Path, default=Path(__file__).with_name("results_soak.md"))
    args = ap.parse_args(argv)
    n_img = args.images or (3 if args.quick else 10)
    max_s = args.max_seconds or (480.0 if args.quick else 1200.0)

    tmp = Path(tempfile.mkdtemp(prefix="lesionseg-soak-"))
    good = photos(tmp / "photos", args.users * n_img)
    bad_paths = build_images(tmp / "bad", [c for c in IMAGE_CASES if c.id in BAD_IDS], with_good=False)
    bad = [bad_paths[i] for i in BAD_IDS]
    app_args = ["--threads", str(os.cpu_count() or 1)] + (["--weights", args.weights] if args.weights else [])
    tally, samples = Tally(), []
    env = dict(e.split("=", 1) for e in args.env)
    with AppServer(*app_args, env=env) as server:
        pid = server.proc.pid
        start = time.monotonic()
        deadline = start + max_s
        # warm-up: every user at once with a few images, so that lazy imports, caches, thread pools
        # and allocator arenas at this concurrency count as the base
        run_round(server.url, args.users, good, n_img, args.warmup_images, bad, Tally(), deadline)
        rss_warm = rss_mb(pid)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                samples.append(rss_mb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.monotonic()
        hung, round_rss = 0, []
        for _ in range(args.rounds):
            hung += run_round(server.url, args.users, good, n_img, n_img, bad, tally, deadline)
            round_rss.append(rss_mb(pid))
            if hung or time.monotonic() > deadline:
                break
        wall = time.monotonic() - start
        rss_end, rss_peak = rss_mb(pid), rss_mb(pid, "VmHWM")
        stop.set()
    expected_good = args.users * n_img * len(round_rss)
    growth = rss_end - rss_warm
    goals = {"no failed good request": not tally.good_failed and not hung
             and tally.good_ok + tally.not_sent == expected_good,
             "every bad file answered": not tally.bad_unanswered,
             f"RSS growth < {GROWTH_GOAL_MB:.0f} MB": growth < GROWTH_GOAL_MB}
    lines = [
        "# Soak test of the app (benchmarks/soak.py)", "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} · {platform.node()} · {os.cpu_count()} CPU cores · "
        f"Python {platform.python_version()} · mode {'quick' if args.quick else 'full'} · "
        f"weights {args.weights or 'app default'}" + (f" · env {' '.join(args.env)}" if args.env else ""), "",
        f"{args.users} concurrent gradio_client users × {n_img} good images "
        f"(~2/3 single /segment calls, the rest in one /batch call); every 4th user also sends a bad file "
        f"alone and in its batch. Wall time {wall:.0f} s (limit {max_s:.0f} s).", "",
        "| figure | value |", "| --- | --- |",
        f"| requests | {tally.requests} |",
        f"| good images segmented | {tally.good_ok} / {expected_good}"
        f"{f' ({tally.not_sent} not sent before the time limit)' if tally.not_sent else ''} |",
        f"| failed good requests | {len(tally.good_failed)}{' + %d users hung' % hung if hung else ''} |",
        f"| bad files answered with their message | {tally.bad_answered} / "
        f"{tally.bad_answered + len(tally.bad_unanswered)} |",
        f"| single /segment latency p50 / p95 | {pct(tally.single_s, 0.5):.1f} s / {pct(tally.single_s, 0.95):.1f} s |",
        f"| /batch latency p50 / max | {pct(tally.batch_s, 0.5):.1f} s / "
        f"{max(tally.batch_s, default=float('nan')):.1f} s |",
        f"| server RSS after warm-up | {rss_warm:.0f} MB |",
        f"| server peak RSS (VmHWM) | {rss_peak:.0f} MB |",
        f"| server RSS at the end | {rss_end:.0f} MB |",
        f"| RSS growth after warm-up | {growth:+.0f} MB (goal < {GROWTH_GOAL_MB:.0f} MB) |",
        f"| median RSS during the run | {statistics.median(samples) if samples else float('nan'):.0f} MB |",
        f"| RSS after each round | {', '.join(f'{r:.0f}' for r in round_rss)} MB |", "",
        "Goals: " + ", ".join(f"{name}: {'met' if ok else '**missed**'}" for name, ok in goals.items()), "",
    ]
    for title, items in (("Failed good requests", tally.good_failed), ("Unanswered bad files", tally.bad_unanswered)):
        if items:
            lines += [f"## {title}", ""] + [f"- {' '.join(str(i).split())[:300]}" for i in items[:20]] + [""]
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
