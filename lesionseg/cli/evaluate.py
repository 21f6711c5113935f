"""``lesionseg evaluate``: score trained weights on image/mask pairs; table on stdout, JSON file."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..data.io import ImageLoadError
from ..data.pairing import DEFAULT_MASK_SUFFIX, DataError, collect_dir_pairs, collect_pairs, resolve_data_dir
from ..data.split import SPLITS
from ..inference.weights import WeightsError
from ..utils.atomic import atomic_write_text
from .common import EXIT_INPUT, EXIT_OK, EXIT_OUTPUT, add_model_args, error, load_predictor

log = logging.getLogger("lesionseg.evaluate")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="metrics of trained weights on labelled images",
                              description="Dice, IoU, recall, precision, specificity, accuracy, ISIC "
                                          "thresholded Jaccard and pooled scores, per image and overall.")
    p.add_argument("--images", default=None, help="folder of images")
    p.add_argument("--masks", default=None, help="folder of masks")
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None, nargs="+", action="extend",
                   metavar="DIR", help="folder holding images/ and masks/ (made by `lesionseg data prepare`, or an "
                                       "ISIC layout) instead of --images/--masks; several folders are scored together")
    p.add_argument("--mask-suffix", "--mask_suffix", dest="mask_suffix", default=DEFAULT_MASK_SUFFIX,
                   help=f"mask file name = image id + suffix (default {DEFAULT_MASK_SUFFIX!r})")
    p.add_argument("--ids", default=None, help="evaluate only these ids: a text file (one id per line) or a "
                                               "split JSON with --split")
    p.add_argument("--split", default="test", choices=SPLITS, help="split to use when --ids is a JSON (default test)")
    p.add_argument("--json", default=None, help="write the full result (with per-image rows) to this file")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=8)
    p.add_argument("--clicks", type=int, default=None, metavar="N",
                   help="click-correction evaluation instead: mean IoU after 0..N simulated clicks through the "
                        "weights' click refiner, NoC@85 / NoC@90 (RITM protocol)")
    p.add_argument("--click-method", choices=["refiner", "disk"], default="refiner",
                   help="with --clicks: the refiner (default), or the naive baseline it has to beat: a disk of 5%% of "
                        "the shorter side painted in or out at each click")
    add_model_args(p)
    p.set_defaults(func=run)


def read_ids(path: str | Path, split: str = "test") -> list[str]:
    """Ids from a text file (one per line, ``#`` comments) or from ``split`` of a split JSON."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read id list ({e})") from None
    if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(split), list):
            keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else "-"
            raise DataError(f"{p}: split JSON has no list {split!r} (keys: {keys})")
        ids = [str(i) for i in obj[split]]
    else:
        ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        ids = [i for i in ids if i]
    if not ids:
        raise DataError(f"{p}: no ids found" + (f" in split {split!r}" if p.suffix.lower() == ".json" else ""))
    return ids


def _folders(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(images, masks) folder pairs to score: one per --data-dir, or --images + --masks."""
    if args.data_dir:
        return [resolve_data_dir(d) for d in args.data_dir]
    if not (args.images and args.masks):
        raise DataError("pass --images DIR and --masks DIR, or --data-dir DIR [DIR ...]")
    return [(Path(args.images), Path(args.masks))]


def _evaluate_clicks(predictor, args: argparse.Namespace, ids: list[str] | None) -> dict:
    from ..evaluation import select_pairs
    from ..evaluation_clicks import evaluate_clicks

    if not predictor.can_refine and args.click_method == "refiner":
        raise ValueError(f"{predictor.source or 'the weights'}: no click refiner (refiner/ beside config.json) "
                         "to evaluate --clicks with; train one with train_cli.py --refiner-from WEIGHTS")
    pairs = (collect_dir_pairs(args.data_dir, args.mask_suffix, strict=ids is None) if args.data_dir
             else collect_pairs(args.images, args.masks, args.mask_suffix, strict=ids is None))
    return evaluate_clicks(predictor, select_pairs(pairs, ids), args.clicks, args.threshold, args.click_method)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate, evaluate_pairs, format_table, select_pairs

    try:
        folders = _folders(args)
        ids = read_ids(args.ids, args.split) if args.ids else None
        for images_dir, masks_dir in folders:
            for kind, d in (("images", images_dir), ("masks", masks_dir)):
                if not d.is_dir():
                    raise DataError(f"{d}: {kind} folder not found")
    except DataError as e:
        error(str(e))
        return EXIT_INPUT
    if args.json:
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            error(f"{args.json}: cannot create its folder ({e.strerror or e})")
            return EXIT_OUTPUT
    try:
        predictor = load_predictor(args)
        if args.clicks is not None:
            result = _evaluate_clicks(predictor, args, ids)
        elif len(folders) == 1:
            result = evaluate(predictor, *folders[0], threshold=args.threshold, tta=args.tta,
                              mask_suffix=args.mask_suffix, ids=ids, batch_size=max(1, args.batch_size))
        else:
            pairs = select_pairs(collect_dir_pairs(args.data_dir, args.mask_suffix, strict=ids is None), ids)
            result = evaluate_pairs(predictor, pairs, threshold=args.threshold, tta=args.tta,
                                    batch_size=max(1, args.batch_size))
    except (WeightsError, DataError, ImageLoadError, ValueError) as e:
        error(str(e))
        return EXIT_INPUT
    if args.clicks is not None:
        from ..evaluation_clicks import format_clicks_table
        print(format_clicks_table(result))
    else:
        print(format_table(result))
    if args.json:
        try:
            atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        except OSError as e:
            error(f"{args.json}: cannot write results ({e.strerror or e})")
            return EXIT_OUTPUT
        print(f"results: {args.json}")
    return EXIT_OK
