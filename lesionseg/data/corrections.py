"""Clinicians' corrected outlines saved as training data, in the project's data layout.

A corrections folder is an ordinary data folder (``images/`` + ``masks/``, see
:mod:`lesionseg.data.pairing`) plus one JSON sidecar per saved correction::

    DIR/images/<id>.jpg                the photo as shown in the app (JPEG, quality 95, 4:4:4)
    DIR/masks/<id>_segmentation.png    the corrected mask, 8-bit {0, 255}, the photo's size
    DIR/corrections/<id>.json          what was corrected and how (clicks, strokes, threshold, ...)

The three files are written in that order, each complete under a hidden temporary name and then
hard-linked to its final name, which fails instead of overwriting. The sidecar comes last and is
the commit record: a save cut short (a crash, a full disk) leaves an image, or an image and its
mask, without a sidecar, and every reader of a corrections folder (training, evaluation,
:func:`list_corrections`) takes only the ids that have one. An id, once any of its files exists,
is never reused, so two concurrent saves (two clinicians, two app workers) get two ids.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..utils.atomic import atomic_create_bytes
from .pairing import DEFAULT_MASK_SUFFIX, DataError, Pair

log = logging.getLogger(__name__)

SIDECAR_DIR = "corrections"
FORMAT = "lesionseg-correction-v1"
JPEG_QUALITY = 95  # as `lesionseg data prepare`; 4:4:4 chroma keeps the lesion border's colour edge
MAX_ID_LENGTH = 100
MAX_ATTEMPTS = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CorrectionRecord:
    """The files of one saved correction."""
    id: str
    image: Path
    mask: Path
    sidecar: Path


def _paths(folder: Path, ident: str) -> CorrectionRecord:
    return CorrectionRecord(ident, folder / "images" / f"{ident}.jpg",
                            folder / "masks" / f"{ident}{DEFAULT_MASK_SUFFIX}.png",
                            folder / SIDECAR_DIR / f"{ident}.json")


def is_corrections_folder(folder: str | Path) -> bool:
    """Whether ``folder`` was written by :func:`save_correction` (it has a ``corrections/`` folder)."""
    return (Path(folder) / SIDECAR_DIR).is_dir()


def sanitize_id(image_id: str) -> str:
    """A caller's id as a file name: letters, digits and ``._-`` only (anything else becomes ``_``),
    no leading dot (hidden files are ignored as data), at most 100 characters; "" if nothing is left."""
    return _UNSAFE.sub("_", str(image_id)).strip("._-")[:MAX_ID_LENGTH].rstrip("._-")


def _check_inputs(rgb: Any, mask: Any, meta: Any) -> np.ndarray:
    """The mask as {0, 255} uint8 after checking both arrays and ``meta``; ValueError otherwise."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"the photo must be an (H, W, 3) uint8 RGB array, got "
                         f"{getattr(rgb, 'shape', type(rgb).__name__)} {getattr(rgb, 'dtype', '')}".rstrip())
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype not in (np.uint8, np.bool_):
        raise ValueError(f"the mask must be an (H, W) uint8 array of {{0, 1}} or {{0, 255}}, got "
                         f"{getattr(mask, 'shape', type(mask).__name__)} {getattr(mask, 'dtype', '')}".rstrip())
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the photo is {rgb.shape[1]}x"
                         f"{rgb.shape[0]} (width x height); pass the mask at the photo's size")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"the photo is empty ({rgb.shape[1]}x{rgb.shape[0]})")
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    values = np.unique(mask)
    if mask.dtype == np.bool_ or set(values.tolist()) <= {0, 1}:
        return mask.astype(np.uint8) * np.uint8(255)
    if set(values.tolist()) <= {0, 255}:
        return mask
    raise ValueError(f"the mask must hold {{0, 1}} or {{0, 255}}, got values {values[:8].tolist()}"
                     f"{' ...' if len(values) > 8 else ''}")


def _jsonable(value: Any) -> Any:
    """``json.dumps`` fallback for what the app's meta holds: numpy values, dataclasses (clicks), paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (Path, datetime)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _encode(rgb: np.ndarray, mask255: np.ndarray) -> tuple[bytes, bytes]:
    # encoded in memory: the files are then created whole by atomic_create_bytes
    jpeg_buf, png_buf = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(jpeg_buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    Image.fromarray(mask255).save(png_buf, "PNG")
    return jpeg_buf.getvalue(), png_buf.getvalue()


def _candidates(base: str):
    yield base
    for n in range(2, MAX_ATTEMPTS + 1):
        yield f"{base}_{n}"


def _taken(folder: Path, ident: str) -> bool:
    """Any file of ``ident`` already there, in any image format (pairing matches by stem)."""
    return (any((folder / "images").glob(f"{ident}.*")) or any((folder / "masks").glob(f"{ident}_*"))
            or (folder / SIDECAR_DIR / f"{ident}.json").exists())


def _claim(folder: Path, base: str, image: bytes, mask: bytes, sidecar_of) -> CorrectionRecord:
    """Write the three files under the first free id from ``base``; a name taken by another save
    midway rolls back this attempt's files and tries the next id."""
    for ident in _candidates(base):
        if _taken(folder, ident):
            continue
        rec, written = _paths(folder, ident), []
        try:
            for path, data in ((rec.image, image), (rec.mask, mask), (rec.sidecar, sidecar_of(ident))):
                atomic_create_bytes(path, data)
                written.append(path)
            return rec
        except BaseException as e:
            for path in written:
                path.unlink(missing_ok=True)
            if not isinstance(e, FileExistsError):
                raise
            # another save took a name of this id between the check and the write: next id
    raise OSError(f"{folder}: ids {base} to {base}_{MAX_ATTEMPTS} are all taken; pass another image_id")


def save_correction(folder: str | Path, rgb: np.ndarray, mask: np.ndarray, meta: dict,
                    image_id: str | None = None) -> CorrectionRecord:
    """Save a photo and its corrected mask as a training pair in ``folder`` (created if missing).

    ``rgb``: (H, W, 3) uint8; ``mask``: (H, W) uint8 {0, 1} or {0, 255} (or bool); ``meta``: what
    the app knows of the correction (clicks, strokes, threshold, model id, ...), JSON-serialisable
    (numpy values and dataclasses are converted). ``image_id``: the id to save under, made safe as
    a file name (:func:`sanitize_id`); default ``corr_<UTC time>_<content hash>``. An id already in
    ``folder`` is never overwritten: ``_2``, ``_3``, ... is appended instead.

    ValueError for bad arrays or meta (one line, naming both sizes for a size mismatch); OSError
    when ``folder`` cannot be written.
    """
    folder = Path(folder)
    mask255 = _check_inputs(rgb, mask, meta)
    saved = datetime.now(timezone.utc)
    digest = hashlib.sha256(rgb.tobytes() + mask255.tobytes()).hexdigest()[:8]
    base = sanitize_id(image_id) if image_id is not None else ""
    base = base or f"corr_{saved:%Y%m%dT%H%M%S}Z_{digest}"
    image_bytes, mask_bytes = _encode(rgb, mask255)
    h, w = mask255.shape
    area = int(np.count_nonzero(mask255))
    record = {"format": FORMAT, "saved_utc": saved.isoformat(timespec="seconds").replace("+00:00", "Z"),
              "width": w, "height": h, "mask_area_px": area, "mask_area_fraction": round(area / (w * h), 6),
              "image_sha256": hashlib.sha256(image_bytes).hexdigest(),
              "mask_sha256": hashlib.sha256(mask_bytes).hexdigest(), "meta": meta}
    try:
        json.dumps(meta, default=_jsonable)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta is not JSON-serialisable ({e})") from None

    def sidecar_of(ident: str) -> bytes:
        rec = _paths(folder, ident)
        body = {"id": ident, "image": rec.image.relative_to(folder).as_posix(),
                "mask": rec.mask.relative_to(folder).as_posix(), **record}
        return (json.dumps(body, indent=1, default=_jsonable) + "\n").encode("utf-8")

    try:
        for sub in ("images", "masks", SIDECAR_DIR):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        rec = _claim(folder, base, image_bytes, mask_bytes, sidecar_of)
    except OSError as e:
        if e.strerror is None:
            raise
        where = f": {e.filename}" if e.filename else ""
        err = OSError(f"{folder}: cannot save the correction ({e.strerror}{where}); "
                      "choose a writable corrections folder")
        err.errno = e.errno  # str() stays the one line; callers can still tell a full disk (ENOSPC)
        raise err from None
    log.info("correction saved: %s (%dx%d, lesion %d px)", rec.image, w, h, area)
    return rec


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable correction sidecar, skipped (%s)", path, type(e).__name__)
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        log.warning("%s: not a lesionseg correction sidecar (format %r), skipped", path,
                    data.get("format") if isinstance(data, dict) else None)
        return None
    return data


def list_corrections(folder: str | Path) -> list[CorrectionRecord]:
    """The complete corrections in ``folder`` (sidecar, photo and mask all there), sorted by id;
    [] for a folder that does not exist. Saves still running or cut short are left out."""
    folder = Path(folder)
    out = []
    for path in sorted((folder / SIDECAR_DIR).glob("*.json")) if (folder / SIDECAR_DIR).is_dir() else []:
        if path.name.startswith("."):
            continue
        rec = _paths(folder, path.stem)
        data = _read_sidecar(path)
        if data is None:
            continue
        if data.get("id") != rec.id or not (rec.image.is_file() and rec.mask.is_file()):
            log.warning("%s: its photo or mask is missing (or the id differs), skipped", path)
            continue
        out.append(rec)
    return out


def correction_pairs(folder: str | Path) -> list[Pair]:
    """The image/mask pairs of a corrections folder, for training and evaluation: its complete
    corrections only (see :func:`list_corrections`); DataError when there are none."""
    folder = Path(folder)
    records = list_corrections(folder)
    done = {r.id for r in records}
    unfinished = sorted(p.name for sub in ("images", "masks") if (folder / sub).is_dir()
                        for p in (folder / sub).iterdir() if p.is_file() and not p.name.startswith(".")
                        and p.stem.removesuffix(DEFAULT_MASK_SUFFIX) not in done)
    if unfinished:
        log.warning("%s: %d file(s) without a correction sidecar left out (a save running or cut short; "
                    "delete them if no save is running): %s", folder, len(unfinished), ", ".join(unfinished[:5]))
    if not records:
        raise DataError(f"{folder}: no saved corrections (complete ones have {SIDECAR_DIR}/<id>.json, "
                        "images/<id>.jpg and masks/<id>_segmentation.png); save some in the app first")
    return [Pair(r.id, r.image, r.mask) for r in records]
