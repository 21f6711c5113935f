"""``lesionseg data prepare`` / ``lesionseg data download``: the official data, ready to train on.

``prepare`` turns the official archives (or their extracted folders) into ``images/`` +
``masks/`` + ``ids.txt`` + ``manifest.json`` (:mod:`lesionseg.data.prepare`); ``download``
fetches the official archives. Exit codes as every command (common.py): 0 done, 1 some files or
archives were not prepared / downloaded (each listed in one line) while the rest were, 2 bad
arguments or nothing usable, 3 the output cannot be written.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from ..data.prepare import RESIZE_MODES, PrepareError, Settings, prepare
from ..data.prepare.download import BASE_URL_ENV, DATASETS, MANUAL_PAGES, PARTS, DownloadError, \
    UnreachableError, archives, download_archive
from ..data.prepare.manifest import PROBLEMS_NAME
from .common import EXIT_INPUT, EXIT_OK, EXIT_OUTPUT, EXIT_PARTIAL, ensure_writable_dir, error, positive_int

log = logging.getLogger("lesionseg.data")
SHOWN_PROBLEMS = 20


def _int_in(text: str, low: int, high: int, what: str) -> int:
    try:
        value = positive_int(text)
    except argparse.ArgumentTypeError:
        value = 0
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
    return value


def size_arg(text: str) -> int | None:
    """argparse type: a side in pixels (>= 16), or ``none`` for full size."""
    if text.lower() in ("none", "full"):
        return None
    return _int_in(text, 16, 1 << 16, "size must be a whole number of pixels >= 16 (use e.g. 256, 384, 512 or none)")


def quality_arg(text: str) -> int:
    """argparse type: a JPEG quality from 50 to 100."""
    return _int_in(text, 50, 100, "JPEG quality must be a whole number from 50 to 100")


def parts_arg(text: str) -> tuple[str, ...]:
    parts = PARTS if text == "all" else tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {bad or text!r}; use {','.join(PARTS)} or all")
    return parts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download and prepare training data",
                       description="Download the official archives and prepare them into the layout "
                                   "train / evaluate / predict read (images/ + masks/).")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True
    pp = dsub.add_parser("prepare", help="official archives or folders -> images/ + masks/ + manifest",
                         description="Prepare ISIC 2016 / 2017 / 2018, HAM10000 and PH2 archives (or their "
                                     "extracted folders; several at once) into OUTPUT/images/<id>.jpg, "
                                     "OUTPUT/masks/<id>_segmentation.png, ids.txt and manifest.json. "
                                     "A repeated or interrupted run does only what is missing.")
    pp.add_argument("--source", "--sources", dest="sources", nargs="+", action="extend", required=True,
                    metavar="PATH", help="ZIP archives and/or folders: images and ground truth (repeatable)")
    pp.add_argument("--output", "--output-dir", "--output_dir", dest="output", required=True, metavar="DIR",
                    help="the prepared folder (new, empty, or prepared before with the same settings)")
    pp.add_argument("--size", type=size_arg, default=256, metavar="PX|none",
                    help="output side in pixels, e.g. 256, 384, 512; none keeps the full size (default 256)")
    pp.add_argument("--resize", choices=RESIZE_MODES, default="squash",
                    help="squash: whole photo to a square (default, as ../shared/data/isic2017_train_256); "
                         "crop: centred square; pad: whole photo on a black square")
    pp.add_argument("--jpeg-quality", "--jpeg_quality", dest="jpeg_quality", type=quality_arg, default=95,
                    metavar="Q", help="JPEG quality of the images (default 95)")
    pp.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                    help="pairs converted side by side (default: one per CPU)")
    pp.set_defaults(func=run_prepare)
    dp = dsub.add_parser("download", help="fetch the official archives (resumable, checked)",
                         description="Download the official archives of a dataset into --to; an interrupted "
                                     "download continues where it stopped. Then: lesionseg data prepare "
                                     "--source DIR --output OUT.")
    dp.add_argument("dataset", choices=list(DATASETS), help="which data set")
    dp.add_argument("--to", required=True, metavar="DIR", help="folder for the archives")
    dp.add_argument("--parts", type=parts_arg, default=("training",), metavar="LIST",
                    help=f"comma-separated from {','.join(PARTS)}, or all (default training)")
    dp.add_argument("--base-url", "--base_url", dest="base_url", default=None, metavar="URL",
                    help=f"fetch the same file names from this address instead (a mirror; ${BASE_URL_ENV})")
    dp.add_argument("--retries", type=int, default=3, metavar="N",
                    help="times to continue a download whose connection ended (default 3)")
    dp.set_defaults(func=run_download)


def _progress_bar(unit: str, desc: str, **kw) -> tuple[Callable[[int, int | None], None], Callable[[], None]]:
    """(update(done, total), close()) of a tqdm bar on stderr, shown only on a terminal."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, disable=None, **kw)
        bar.update(done - bar.n)

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


def run_prepare(args: argparse.Namespace) -> int:
    try:
        ensure_writable_dir(args.output)
    except OSError as e:
        error(f"{args.output}: output folder is not writable ({e.strerror or e})")
        return EXIT_OUTPUT
    update, close = _progress_bar("pair", "prepare")
    try:
        report = prepare(args.sources, args.output, Settings(args.size, args.resize, args.jpeg_quality),
                         jobs=args.jobs, on_progress=update)
    except PrepareError as e:
        error(str(e))
        return EXIT_INPUT
    except OSError as e:
        error(f"{args.output}: cannot write ({e.strerror or e}); run the same command again to finish")
        return EXIT_OUTPUT
    finally:
        close()
    for line in report.problems[:SHOWN_PROBLEMS]:
        print(f"  {line}", file=sys.stderr)
    if len(report.problems) > SHOWN_PROBLEMS:
        print(f"  ... and {len(report.problems) - SHOWN_PROBLEMS} more", file=sys.stderr)
    listed = f" (listed in {report.output / PROBLEMS_NAME})" if report.problems else ""
    print(report.summary() + listed)
    if not report.total:
        error(f"no image/mask pairs found in {', '.join(map(str, args.sources))}: pass the image archive and "
              "its ground-truth archive (or their folders) together")
        return EXIT_INPUT
    print(f"train on it: lesionseg train --data-dir {report.output}")
    return EXIT_PARTIAL if report.problems else EXIT_OK


def run_download(args: argparse.Namespace) -> int:
    chosen = archives(args.dataset, args.parts, args.base_url)
    if not chosen:
        error(f"{args.dataset} has no {','.join(args.parts)} archives; see {MANUAL_PAGES[args.dataset]}")
        return EXIT_INPUT
    try:
        ensure_writable_dir(args.to)
    except OSError as e:
        error(f"{args.to}: folder is not writable ({e.strerror or e})")
        return EXIT_OUTPUT
    failed = 0
    for archive in chosen:
        update, close = _progress_bar("B", archive.name, unit_scale=True, unit_divisor=1024)
        try:
            path = download_archive(archive, args.to, retries=max(0, args.retries), on_bytes=update)
            print(f"{path}")
        except DownloadError as e:
            error(str(e))
            failed += 1
            if isinstance(e, UnreachableError):  # the next archives live on the same server
                rest = chosen[chosen.index(archive) + 1:]
                failed += len(rest)
                if rest:
                    print(f"not tried: {', '.join(a.name for a in rest)}", file=sys.stderr)
                break
        except OSError as e:
            error(f"{args.to}: cannot write {archive.name} ({e.strerror or e})")
            return EXIT_OUTPUT
        finally:
            close()
    if failed:
        print(f"{failed} of {len(chosen)} archives not downloaded (official page: {MANUAL_PAGES[args.dataset]})",
              file=sys.stderr)
        return EXIT_PARTIAL
    print(f"next: lesionseg data prepare --source {args.to} --output DIR")
    return EXIT_OK
