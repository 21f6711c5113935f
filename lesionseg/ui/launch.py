"""Command line of the app (``python app.py --help``), model loading and the server start.

Nothing here builds the interface: ``app.py`` does, with :func:`parse_args`,
:func:`load_predictor_or_exit` and :func:`launch`.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Sequence

from ..data.io import is_image_file
from ..inference.weights import WEIGHTS_ENV
from ..inference.wide_view import wide_view_arg
from ..utils.argtypes import positive_int

AUTH_ENV = "LESIONSEG_AUTH"
CORRECTIONS_ENV = "LESIONSEG_CORRECTIONS_DIR"
MAX_EXAMPLES = 60
PROG = "lesionseg app"


@dataclass
class LaunchConfig:
    """Everything the app needs from its command line."""

    weights: str | None = None
    revision: str | None = None
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: list[tuple[str, str]] | None = None
    max_queue: int = 64
    concurrency: int = 1
    max_upload_mb: int = 200
    examples: list[str] = field(default_factory=list)
    examples_dir: str | None = None
    tta: bool = False
    wide_view: float | None = None
    allow_pickle: bool = False
    threads: int | None = None
    corrections_dir: str | None = None


def parse_auth_pairs(text: str, where: str) -> list[tuple[str, str]]:
    """``"user:password"`` (several separated by commas or new lines; # comments) -> [(user, password)].

    Raises ValueError naming ``where`` for an entry without ``:`` or with an empty user or password.
    """
    pairs = []
    for raw in text.replace(",", "\n").splitlines():
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"{where}: expected USER:PASSWORD, got an entry without "
                             f"{'a user' if sep and not user.strip() else 'a password' if sep else ':'}")
        pairs.append((user.strip(), password))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python app.py",
        description="Skin-lesion segmentation app (research software, not for diagnosis). "
                    "Opens http://127.0.0.1:7860 by default.")
    m = p.add_argument_group("model")
    m.add_argument("--weights", "--model_path", dest="weights", metavar="DIR_OR_REPO_ID",
                   help=f"model folder (config.json + model.safetensors) or Hugging Face Hub repo id "
                        f"(default: ${WEIGHTS_ENV}, else the bundled weights/)")
    m.add_argument("--revision", help="Hub branch, tag or commit (with a repo id)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    m.add_argument("--tta", dest="tta", action="store_true", default=False,
                   help="flip test-time augmentation in the single view and the Batch tab, as lesionseg --tta "
                        "(4 forward passes per photo; adds the uncertainty map)")
    m.add_argument("--no-tta", dest="tta", action="store_false",
                   help="plain prediction (the default; kept for older command lines)")
    m.add_argument("--wide-view", type=wide_view_arg, default=None, metavar="F",
                   help="a second, zoomed-out look at photos whose outline touches the border, as lesionseg "
                        "--wide-view (default: the weights' own setting; 0 turns it off)")
    m.add_argument("--allow-pickle", action="store_true",
                   help="also load .pth checkpoints (weights only; only files you trust)")
    m.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for the model (default: PyTorch's choice; 1 on a busy shared machine)")
    s = p.add_argument_group("server")
    s.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on; 0.0.0.0 for the local network (default: 127.0.0.1)")
    s.add_argument("--port", type=positive_int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                   help="port (default: 7860)")
    s.add_argument("--share", action="store_true", help="also create a temporary public gradio.live link")
    s.add_argument("--auth", action="append", metavar="USER:PASSWORD",
                   help=f"require a login (repeatable; or ${AUTH_ENV}=USER:PASSWORD[,USER:PASSWORD])")
    s.add_argument("--auth-file", metavar="FILE", help="file of USER:PASSWORD lines")
    s.add_argument("--max-queue", type=positive_int, default=64, help="queued requests before refusing (64)")
    s.add_argument("--concurrency", type=positive_int, default=1,
                   help="requests processed at once per action (1)")
    s.add_argument("--max-upload-mb", type=positive_int, default=200, help="largest upload per file in MB (200)")
    s.add_argument("--examples", metavar="DIR", help="a folder of your own photos to show as clickable examples")
    s.add_argument("--corrections-dir", metavar="DIR", default=os.environ.get(CORRECTIONS_ENV) or None,
                   help="turn on 'Save correction': corrected outlines are saved here as training data "
                        f"(images/ + masks/, created if missing; default: ${CORRECTIONS_ENV}, else off)")
    return p


def corrections_folder(value: str) -> str:
    """``value`` as an absolute folder, created if missing; ValueError (one line) when it cannot be
    created or written to."""
    folder = Path(value).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--corrections-dir {value}: cannot be created ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--corrections-dir {value}: not writable; choose a folder you can write to")
    return str(folder)


def parse_args(argv: Sequence[str] | None = None) -> LaunchConfig:
    """Parse ``argv`` (default ``sys.argv[1:]``); bad values exit 2 with a one-line message."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    auth: list[tuple[str, str]] = []
    try:
        for entry in ns.auth or []:
            auth += parse_auth_pairs(entry, "--auth")
        if ns.auth_file:
            try:
                text = Path(ns.auth_file).expanduser().read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"--auth-file {ns.auth_file}: cannot be read ({type(e).__name__})") from None
            file_pairs = parse_auth_pairs(text, f"--auth-file {ns.auth_file}")
            if not file_pairs:
                raise ValueError(f"--auth-file {ns.auth_file}: no USER:PASSWORD line")
            auth += file_pairs
        if not auth and os.environ.get(AUTH_ENV):
            auth = parse_auth_pairs(os.environ[AUTH_ENV], f"${AUTH_ENV}")
    except ValueError as e:
        parser.error(str(e))
    examples: list[str] = []
    if ns.examples:
        folder = Path(ns.examples).expanduser().resolve()
        if not folder.is_dir():
            parser.error(f"--examples {ns.examples}: not a folder")
        examples = [str(f) for f in sorted(folder.iterdir()) if f.is_file() and is_image_file(f)][:MAX_EXAMPLES]
        if not examples:
            parser.error(f"--examples {ns.examples}: no images (.jpg, .png, ...) in this folder")
    corrections = None
    if ns.corrections_dir:
        try:
            corrections = corrections_folder(ns.corrections_dir)
        except ValueError as e:
            parser.error(str(e))
    return LaunchConfig(weights=ns.weights or None, revision=ns.revision,
                        device=ns.device, host=ns.host, port=ns.port, share=ns.share, auth=auth or None,
                        max_queue=ns.max_queue, concurrency=ns.concurrency, max_upload_mb=ns.max_upload_mb,
                        examples=examples, examples_dir=str(Path(ns.examples).expanduser().resolve())
                        if ns.examples else None, tta=ns.tta, wide_view=ns.wide_view, allow_pickle=ns.allow_pickle, threads=ns.threads,
                        corrections_dir=corrections)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``lesionseg app: error: message`` (one line) to stderr and exit with ``code``."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


def load_predictor_or_exit(config: LaunchConfig):
    """Load the model once; bad weights or device: one-line error and exit 2, no traceback."""
    import torch

    from ..inference import Predictor, WeightsError

    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        predictor = Predictor.from_weights(config.weights, revision=config.revision, device=config.device,
                                           tta=config.tta, allow_pickle=config.allow_pickle,
                                           wide_view=config.wide_view)
    except (WeightsError, ValueError, OSError) as e:
        fail(str(e))
    predictor.warm_up()  # the first photo should not wait for the fast path's trace
    return predictor


READY = "ready at"


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def launch(demo, config: LaunchConfig) -> None:  # demo: gr.Blocks
    """Queue and start the server, print ``lesionseg app: ready at URL`` and serve until Ctrl-C / SIGTERM.

    A failed ``--share`` (closed network) leaves the local server running with a clear message.
    """
    import signal

    demo.queue(max_size=config.max_queue, default_concurrency_limit=config.concurrency)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # stop like Ctrl-C: temp files are removed
    try:
        demo.launch(server_name=config.host, server_port=config.port, share=config.share, auth=config.auth,
                    max_file_size=f"{config.max_upload_mb}mb", show_error=False, prevent_thread_lock=True,
                    allowed_paths=[config.examples_dir] if config.examples_dir else None,
                    run_history=False, enable_monitoring=False, mcp_server=False, ssr_mode=False,
                    footer_links=["api", "settings"], auth_message="lesionseg: please log in.")
    except OSError as e:  # port in use, address not available
        fail(f"cannot start the server on {config.host}:{config.port} ({e})")
    except KeyboardInterrupt:
        demo.close()
        raise SystemExit(130) from None
    if config.share and not getattr(demo, "share_url", None):
        print(f"{PROG}: no public share link could be created (the network looks closed); "
              f"the app keeps running locally at {demo.local_url}", file=sys.stderr, flush=True)
    print(f"{PROG}: {READY} {demo.local_url}" + (f" and {demo.share_url}" if getattr(demo, "share_url", None) else ""),
          flush=True)
    demo.block_thread()
