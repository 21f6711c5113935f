"""Load a trained DS-AttentionUNet from a local folder or a Hugging Face Hub repo, safely.

A weights source is a folder holding ``config.json`` (the model's constructor arguments) and
``model.safetensors``, or a Hub repo id whose files are the same two. Nothing is ever unpickled
unless the caller passes ``allow_pickle=True`` (and even then only with ``weights_only=True``).
Every failure raises :class:`WeightsError` with a one-line message naming the source and the fix.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from .ds_attention_unet import DSAttentionUNet
from ..utils.devices import resolve_device

log = logging.getLogger(__name__)

# the checkout's weights/ folder: the model ships with the repository (and the Space), not inside
# the Python package, so an installed package needs --weights or $LESIONSEG_WEIGHTS
DEFAULT_WEIGHTS: Path = Path(__file__).resolve().parents[2] / "weights"
WEIGHTS_ENV = "LESIONSEG_WEIGHTS"
CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class WeightsError(ValueError):
    """Weights that cannot be used; ``str()`` is one line naming the source and what to do."""


def default_weights_source() -> str:
    """``$LESIONSEG_WEIGHTS`` if set, else the repository's ``weights/`` folder."""
    return os.environ.get(WEIGHTS_ENV) or str(DEFAULT_WEIGHTS)


def weights_source(source: str | os.PathLike | None = None) -> str:
    """The weights source every command and the app use: ``source`` if given, else the default."""
    return default_weights_source() if source is None or str(source) == "" else str(source)


def local_weights_folder(source: str | os.PathLike | None = None) -> Path | None:
    """The local folder a weights source names (a folder, or the folder of a weights file), or None
    for a Hub repo id."""
    path = Path(weights_source(source)).expanduser()
    if not path.exists():
        return None
    return path if path.is_dir() else path.parent


def _constructor_args() -> set[str]:
    params = inspect.signature(DSAttentionUNet.__init__).parameters
    return {n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _read_config(path: Path, source: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{source}: {path.name} is not readable JSON ({type(e).__name__}: {e})"
                           .replace("\n", " ") + " (re-export the weights with lesionseg export)") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{source}: {path.name} must be a JSON object of DSAttentionUNet arguments, "
                           f"got {type(config).__name__}")
    unknown = sorted(set(config) - _constructor_args())
    if unknown:
        raise WeightsError(f"{source}: {path.name} is not a DSAttentionUNet config (unknown keys: "
                           f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}); "
                           "pass weights saved by lesionseg train / export")
    return config


def _build(config: dict[str, Any], source: str) -> DSAttentionUNet:
    try:
        return DSAttentionUNet(**config)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{source}: config.json has invalid values ({e})".replace("\n", " ")) from None


def _one_line(e: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(e).split())
    return msg if len(msg) <= limit else msg[:limit] + " ..."


def _load_safetensors(model: DSAttentionUNet, file: Path, source: str) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(file), device="cpu")
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ... for a corrupt/truncated file
        raise WeightsError(f"{source}: {file.name} is corrupt or truncated ({_one_line(e)}); "
                           "re-download or re-export it") from None
    _load_state(model, state, source, file.name)


def _load_state(model: DSAttentionUNet, state: dict[str, torch.Tensor], source: str, fname: str) -> None:
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise WeightsError(f"{source}: {fname} does not match config.json: tensors {'; '.join(parts)} "
                           "(config.json and weights come from different models)")
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise WeightsError(f"{source}: {fname} does not match config.json: {len(bad)} tensor shape(s) differ, "
                           f"e.g. {bad[0]} (file vs config); config.json and weights come from different models")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{source}: cannot load {fname} ({_one_line(e)})") from None


def _load_pickle(model: DSAttentionUNet, file: Path, source: str) -> None:
    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...
        raise WeightsError(f"{source}: {file.name} cannot be loaded as a weights-only checkpoint "
                           f"({_one_line(e, 200)})") from None
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{source}: {file.name} holds no state_dict (expected a dict of tensors or "
                           "{'model': state_dict})")
    _load_state(model, obj, source, file.name)


def _hub_files(repo_id: str, revision: str | None) -> tuple[Path, Path]:
    """Download (or find in the cache) config.json and model.safetensors of a Hub repo."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    offline = bool(getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)())
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    paths = []
    for name in (CONFIG_NAME, SAFETENSORS_NAME):
        try:
            paths.append(Path(hf_hub_download(repo_id, name, revision=revision, library_name="lesionseg")))
        except RepositoryNotFoundError:
            raise WeightsError(f"{where}: not a local folder and no such Hub repo (or it is private: "
                               "run `hf auth login`)") from None
        except RevisionNotFoundError:
            raise WeightsError(f"{where}: the Hub repo has no revision {revision!r}") from None
        except LocalEntryNotFoundError:
            why = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
            raise WeightsError(f"{where}: not a local folder, and {name} is not in the Hub cache ({why}); "
                               "run once online or pass a local weights folder") from None
        except EntryNotFoundError:
            raise WeightsError(f"{where}: the Hub repo has no {name} (publish weights with "
                               "lesionseg train --push-to-hub or lesionseg export)") from None
        except (HfHubHTTPError, OSError, ValueError) as e:
            raise WeightsError(f"{where}: not a local folder, and downloading {name} from the Hub failed "
                               f"({_one_line(e, 200)}); run once online or pass a local weights folder") from None
    return paths[0], paths[1]


def _local_files(path: Path, source: str, allow_pickle: bool) -> tuple[Path | None, Path, bool]:
    """(config.json or None, weights file, is_pickle) for a local folder or file."""
    if path.is_file():
        folder, candidates = path.parent, [path]
    else:
        folder = path
        candidates = [folder / SAFETENSORS_NAME] + sorted(p for p in folder.iterdir()
                                                         if p.suffix.lower() in PICKLE_SUFFIXES)
    config = folder / CONFIG_NAME
    config_path = config if config.is_file() else None
    for file in candidates:
        if not file.is_file():
            continue
        if file.suffix == ".safetensors":
            return config_path, file, False
        if file.suffix.lower() in PICKLE_SUFFIXES:
            if not allow_pickle:
                raise WeightsError(f"{source}: only a pickle checkpoint ({file.name}) was found and pickles are "
                                   "not loaded by default (convert it with lesionseg export, or pass "
                                   "--allow-pickle if you trust the file)")
            return config_path, file, True
    raise WeightsError(f"{source}: no {SAFETENSORS_NAME} found (train a model with lesionseg train, or pass "
                       "--weights FOLDER or a Hub repo id)")


def load_model(source: str | Path | None = None, revision: str | None = None, device: str | torch.device = "cpu",
               allow_pickle: bool = False) -> DSAttentionUNet:
    """Build the model from ``config.json`` and load its weights strictly; eval mode, on ``device``.

    ``source``: a local folder (or a ``model.safetensors`` file inside one), a Hub repo id
    (``owner/name``), or None for :func:`default_weights_source`. ``revision`` applies to Hub repos.
    """
    dev = resolve_device(device)  # ValueError for a bad device name, before any loading
    src = weights_source(source)
    path = Path(src).expanduser()
    if path.exists():
        if revision:
            log.debug("%s is a local folder: ignoring revision %s", src, revision)
        config_path, file, is_pickle = _local_files(path, src, allow_pickle)
        if config_path is None and not is_pickle:
            raise WeightsError(f"{src}: {CONFIG_NAME} missing beside {file.name} (save weights with "
                               "model.save_pretrained or lesionseg export)")
    elif not isinstance(source, Path) and _REPO_ID.match(src) and not src.startswith((".", "~")):
        config_path, file = _hub_files(src, revision)
        is_pickle = False
    else:
        raise WeightsError(f"{src}: weights folder not found (train a model with lesionseg train, or pass "
                           "--weights FOLDER or a Hub repo id like owner/name)")

    if config_path is None:
        log.warning("%s: no %s; assuming the default DSAttentionUNet architecture", src, CONFIG_NAME)
        config: dict[str, Any] = {}
    else:
        config = _read_config(config_path, src)
    model = _build(config, src)
    if is_pickle:
        _load_pickle(model, file, src)
    else:
        _load_safetensors(model, file, src)
    model.eval()
    log.debug("loaded %s (%d parameters) on %s", src, model.num_parameters(), dev)
    return model.to(dev)


REFINER_FOLDER = "refiner"


def hub_extras_folder(source: str | Path | None, name: str, revision: str | None = None) -> Path | None:
    """For a Hub repo id: the local (cache) folder holding the repo's optional file ``name`` beside its
    weights (e.g. ``int8_calibration.json``), or None where the repo has none, it cannot be reached,
    or ``source`` is a local folder."""
    src = weights_source(source)
    if Path(src).expanduser().exists() or not _REPO_ID.match(src):
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(src, name, revision=revision, library_name="lesionseg")).parent
    except (EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        return None


def load_refiner(source: str | Path | None = None, revision: str | None = None,
                 device: str | torch.device = "cpu") -> DSAttentionUNet | None:
    """The click refiner shipped beside a model (``<source>/refiner/``: its own ``config.json`` and
    ``model.safetensors``), or None where the weights have none (older folders and repos).

    WeightsError when the folder is there but is not a click-conditioned model."""
    src = weights_source(source)
    path = Path(src).expanduser()
    if path.exists():
        folder = (path if path.is_dir() else path.parent) / REFINER_FOLDER
        if not folder.is_dir():
            return None
        model = load_model(folder, device=device)
    elif _REPO_ID.match(src):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            hf_hub_download(src, f"{REFINER_FOLDER}/{CONFIG_NAME}", revision=revision, library_name="lesionseg")
            file = hf_hub_download(src, f"{REFINER_FOLDER}/{SAFETENSORS_NAME}", revision=revision,
                                   library_name="lesionseg")
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None
        model = load_model(Path(file).parent, device=device)
    else:
        return None
    if not getattr(model, "click_conditioned", False):
        raise WeightsError(f"{src}: {REFINER_FOLDER}/config.json is not a click refiner (click_conditioned is not "
                           "true); train one with train_cli.py --refiner-from WEIGHTS or remove the folder")
    return model
