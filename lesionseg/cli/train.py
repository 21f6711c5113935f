"""``lesionseg train`` / ``train_cli.py``: parse flags, then call :func:`lesionseg.training.fit`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..data.presets import AUGMENT_PRESETS, ZOOM_P
from ..losses import LOSSES
from ..models.encoders import ENCODERS
from ..training.config import SELECT_ON

log = logging.getLogger(__name__)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags, in both the research code's spelling (``--batch_size``) and hyphenated (``--batch-size``).

    Every default is None so that only flags actually given override the YAML config.
    """
    def both(name: str, **kw: Any) -> None:
        names = {f"--{name}", f"--{name.replace('_', '-')}"}
        p.add_argument(*sorted(names), dest=name, default=None, **kw)

    g = p.add_argument_group("data")
    both("images", metavar="DIR", help="folder of images (X.jpg)")
    both("masks", metavar="DIR", help="folder of masks (X_segmentation.png)")
    both("data_dir", metavar="DIR", nargs="+", action="extend",
         help="folder holding images/ + masks/ (e.g. made by `lesionseg data prepare`) or the official ISIC "
              "2018 folders; several folders train together (ids must be unique across them)")
    both("mask_suffix", metavar="S", help="mask file suffix (default _segmentation)")
    both("split_file", metavar="JSON", help="reuse a split.json of ID lists instead of a seeded split")
    both("val_fraction", type=float, metavar="F", help="validation share (default 0.1)")
    both("test_fraction", type=float, metavar="F", help="held-out test share (default 0.1)")
    both("limit", type=int, metavar="N", help="use only the first N pairs")
    p.add_argument("--debug", action="store_true", default=None, help="small subset (48 pairs) for a quick check")
    g = p.add_argument_group("optimisation")
    both("batch_size", type=int, metavar="N")
    both("epochs", type=int, metavar="N")
    both("lr", type=float, metavar="LR", help="OneCycleLR max learning rate (AdamW)")
    both("weight_decay", type=float, metavar="WD")
    both("img_size", type=int, metavar="PX", help="training size, a multiple of 16 (default 256)")
    both("loss", choices=list(LOSSES), help="loss (default bce_dice)")
    both("grad_clip", type=float, metavar="NORM")
    p.add_argument("--augment", dest="augment", action=argparse.BooleanOptionalAction, default=None,
                   help="albumentations augmentation (default on)")
    both("augment_preset", choices=list(AUGMENT_PRESETS),
         help="standard (the original recipe), robust (framing, colour constancy, blur, pen marks), "
              "framing (robust with closer crops) or zoom (robust with windows placed on the lesion, "
              "so that it fills the frame)")
    both("zoom_p", type=float, metavar="P",
         help=f"with --augment-preset zoom: the share of photos framed on the lesion (default {ZOOM_P})")
    both("encoder", choices=list(ENCODERS),
         help="encoder: unet (from scratch), mobilenet_v2 or efficientnet_lite0 (ImageNet)")
    both("encoder_weights", metavar="PATH|none",
         help="ImageNet file of a pretrained encoder (default: the installed extra; none: random init)")
    both("encoder_lr_scale", type=float, metavar="F",
         help="the encoder's learning rate as a fraction of --lr (default 1: one rate for the whole model)")
    both("ema_decay", type=float, metavar="D",
         help="validate, choose and save an exponential moving average of the weights, e.g. 0.998 (default 0: off)")
    g = p.add_argument_group("runtime")
    both("device", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--amp", dest="amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision: bf16 autocast on a CPU with native bf16 (fp32 elsewhere), bf16/fp16 on CUDA "
                        "(default on)")
    both("workers", type=int, metavar="N", help="DataLoader workers (default 0)")
    both("seed", type=int)
    both("output_dir", metavar="DIR", help="runs are written to DIR/<run_name> (default outputs)")
    both("run_name", metavar="NAME", help="default unet_isic_<timestamp>")
    both("resume", metavar="PATH", help="a run folder or its models/last_checkpoint.pth")
    both("max_steps_per_epoch", type=int, metavar="N", help="cap steps per epoch (smoke tests)")
    both("recall_target", type=float, metavar="R", help="default threshold: best precision with recall >= R (0.93)")
    both("external_dir", metavar="DIR",
         help="labelled images from outside the training data, scored every epoch (never trained on)")
    both("select_on", choices=list(SELECT_ON), help="best epoch by val Dice (default) or its mean with the external Dice")
    both("external_recall_target", type=float, metavar="R",
         help="with --external-dir, the default threshold also keeps external recall >= R (0.90)")
    both("push_to_hub", metavar="REPO_ID", help="publish the best model folder to the Hugging Face Hub")
    g = p.add_argument_group("fine-tuning")
    both("finetune", metavar="WEIGHTS",
         help="fine-tune these weights (a folder or Hub id; their config.json sets the model) on the new data in "
              "--data-dir, e.g. the app's saved corrections, mixed with --mix-data (learning rate: a tenth of the "
              "--config's or the default one unless --lr is given)")
    both("mix_data", metavar="DIR", nargs="+", action="extend",
         help="with --finetune: the original training data, split as the original run (--split-file or --seed) "
              "(default: --config's data_dir; none: the new data alone)")
    both("corrections_share", type=float, metavar="F",
         help="with --finetune: the new data's share of each epoch, by repeating it (default 0.2, at most 20x)")
    g = p.add_argument_group("click refiner")
    both("refiner_from", metavar="WEIGHTS",
         help="train the click refiner of these segmentation weights (a folder or Hub id) with simulated clicks; "
              "its best model ships as WEIGHTS/refiner/ (--push-to-hub REPO publishes it to REPO's refiner/)")
    both("max_clicks", type=int, metavar="N", help="clicks simulated per image in refiner training (default 3)")
    both("click_radius", type=int, metavar="PX", help="click disk radius at the model's size (default 5)")
    both("click_loss_weight", type=float, metavar="W",
         help="extra BCE weight on the pixels around the newest simulated click (default 1; 0 turns it off)")
    p.add_argument("--config", metavar="YAML", help="options file; flags given here override it")
    p.add_argument("--model", metavar="JSON", default=None, type=json.loads,
                   help='model constructor arguments as JSON, merged over the config file\'s model: (keys given '
                        'replace its), e.g. \'{"decoder_channels": [256,128,64,24]}\'')


def run(args: argparse.Namespace) -> int:
    from ..training import build_config, load_yaml
    from ..training.distributed import setup
    from ..training.finetune import finetune_settings
    from ..training.loop import pick_device, resume_config
    from .common import EXIT_INPUT, EXIT_OK, EXIT_PUBLISH

    try:
        if args.resume:
            # a resumed run keeps its own settings; only the epoch count, device, workers and
            # publishing may be given again
            cfg = resume_config(args.resume, vars(args))
        else:
            file_values = load_yaml(args.config) if args.config else {}
            cfg = build_config(file_values, vars(args))
            if args.encoder:
                cfg.model = {**cfg.model, "encoder_name": args.encoder}
            if cfg.finetune:
                finetune_settings(cfg, file_values, vars(args))
        # under torchrun: join the process group (one line and exit 2 if its environment is half set)
        ctx = setup(pick_device(cfg.device))
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    try:
        code = _train(cfg, ctx)
        if code in (EXIT_OK, EXIT_PUBLISH):
            ctx.barrier()  # the other processes wait for rank 0's reports and publishing
        return code
    finally:
        ctx.close()


def _train(cfg: Any, ctx: Any) -> int:
    """Train, then (rank 0 only) write the test report and publish; the exit code."""
    from ..data.io import ImageLoadError
    from ..data.pairing import DataError
    from ..hub import PublishError, push_folder
    from ..training import fit
    from .common import EXIT_INPUT, EXIT_OK, EXIT_OUTPUT, EXIT_PUBLISH

    where = f"rank {ctx.rank}: " if ctx.enabled and not ctx.is_main else ""
    if cfg.refiner_from:
        return _train_refiner(cfg, ctx)
    try:
        result = fit(cfg, ctx)
    except (DataError, ImageLoadError, FileNotFoundError, ValueError) as e:
        print(f"error: {where}{e}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as e:
        print(f"error: {where}cannot write outputs: {e}", file=sys.stderr)
        return EXIT_OUTPUT
    if not ctx.is_main:
        return EXIT_OK
    from ..reporting import write_test_evaluation

    if result.split.get("test"):
        write_test_evaluation(result, cfg)
    _write_int8_calibration(result, cfg)
    print(f"best model: {result.best_model_dir} (val Dice {result.best_score:.4f}, threshold {result.threshold:.2f}); "
          f"run folder {result.run_dir}")
    if cfg.push_to_hub:
        try:
            push_folder(result.best_model_dir, cfg.push_to_hub)
        except PublishError as e:
            print(f"error: {e}; the run's outputs are saved in {result.run_dir}", file=sys.stderr)
            return EXIT_PUBLISH
    return EXIT_OK


def _write_int8_calibration(result: Any, cfg: Any, n_photos: int = 64) -> None:
    """The best model's int8 calibration (int8_calibration.json beside it) on up to ``n_photos``
    training photos, so that the weights as published run the OpenVINO path's int8 decoder
    convolutions. A failure is logged, never fatal: without the file they run in fp32."""
    from ..data.io import ImageLoadError
    from ..data.pairing import DataError
    from ..inference.calibration import CalibrationDisagrees, write_calibration
    from ..inference.cpu.qdq import CALIBRATION_NAME
    from ..inference.weights import load_model
    from ..training.run_data import resolve_pairs

    try:
        by_id = {p.id: p for p in resolve_pairs(cfg)}
        ids = [i for i in result.split.get("train", []) if i in by_id]
        photos = [by_id[i].image for i in ids[::max(1, len(ids) // n_photos)][:n_photos]]
        if not photos:
            return
        model = load_model(result.best_model_dir, device="cpu")
        print(write_calibration(model, photos, Path(result.best_model_dir) / CALIBRATION_NAME,
                                f"{len(photos)} photos of the run's training part"))
    except (CalibrationDisagrees, DataError, ImageLoadError, OSError, ValueError) as e:
        log.warning("no int8 calibration for %s (%s); its decoder convolutions run in fp32", result.best_model_dir,
                    str(e).splitlines()[0][:300])


def _train_refiner(cfg: Any, ctx: Any) -> int:
    """Train the click refiner (one process); the exit code."""
    from ..data.io import ImageLoadError
    from ..data.pairing import DataError
    from ..inference.weights import WeightsError
    from ..training.epoch import Runtime, use_channels_last
    from ..training.loop import autocast_dtype
    from ..training.refine import train_refiner
    from .common import EXIT_INPUT, EXIT_OK, EXIT_OUTPUT, EXIT_PUBLISH

    if ctx.enabled:
        print("error: the click refiner trains in one process; run it without torchrun", file=sys.stderr)
        return EXIT_INPUT
    dtype = autocast_dtype(ctx.device, cfg.amp)
    rt = Runtime(ctx.device, dtype, use_channels_last(cfg.channels_last, ctx.device, dtype))
    try:
        result = train_refiner(cfg, rt)
    except (DataError, ImageLoadError, WeightsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as e:
        print(f"error: cannot write outputs: {e}", file=sys.stderr)
        return EXIT_OUTPUT
    print(f"best refiner: {result.best_model_dir} (score {result.best_score:.4f}); run folder {result.run_dir}; "
          f"ship it as WEIGHTS/refiner/")
    if cfg.push_to_hub:
        from ..hub import PublishError, push_folder

        try:  # beside the model it refines, where Predictor.from_weights looks for it
            push_folder(result.best_model_dir, cfg.push_to_hub, path_in_repo="refiner",
                        commit_message="Upload lesionseg click refiner")
        except PublishError as e:
            print(f"error: {e}; the run's outputs are saved in {result.run_dir}", file=sys.stderr)
            return EXIT_PUBLISH
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train DS-AttentionUNet", description="Train DS-AttentionUNet on image/mask folders.")
    add_train_arguments(p)
    p.set_defaults(func=run)
