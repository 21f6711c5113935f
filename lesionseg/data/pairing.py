"""Match image files to mask files by ID and report every mismatch up front."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .io import IMAGE_EXTENSIONS, ImageLoadError, read_image_size

log = logging.getLogger(__name__)

DEFAULT_MASK_SUFFIX = "_segmentation"
# (images, masks) folder names inside a --data-dir, tried in order
DATA_DIR_LAYOUTS = [
    ("images", "masks"),
    ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
    ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
]


class DataError(ValueError):
    """A dataset that cannot be used as given; the message lists the offending files."""


@dataclass
class Pair:
    id: str
    image: Path
    mask: Path


@dataclass
class PairingReport:
    pairs: list[Pair] = field(default_factory=list)
    images_without_mask: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)
    bad_files: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = [f"image without mask: {p}" for p in self.images_without_mask]
        out += [f"mask without image: {p}" for p in self.masks_without_image]
        out += list(self.bad_files)
        return out


def resolve_data_dir(data_dir: str | Path) -> tuple[Path, Path]:
    """Find the images and masks folders inside ``data_dir`` (see ``DATA_DIR_LAYOUTS``)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (pass --data-dir DIR or --images DIR --masks DIR)")
    for img_name, mask_name in DATA_DIR_LAYOUTS:
        if (root / img_name).is_dir() and (root / mask_name).is_dir():
            return root / img_name, root / mask_name
    names = ", ".join(f"{a}/ + {b}/" for a, b in DATA_DIR_LAYOUTS)
    raise DataError(f"{root}: no images/masks folders found inside; expected one of: {names}")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def pair_files(images_dir: str | Path, masks_dir: str | Path, mask_suffix: str = DEFAULT_MASK_SUFFIX,
               check_sizes: bool = True) -> PairingReport:
    """Pair ``X.<ext>`` in ``images_dir`` with ``X<mask_suffix>.<ext>`` (or ``X.<ext>``) in ``masks_dir``.

    With ``check_sizes`` each pair's headers are read (not decoded) to catch unreadable files and
    masks of another size before any training starts.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for kind, d in (("images", images_dir), ("masks", masks_dir)):
        if not d.is_dir():
            raise DataError(f"{d}: {kind} folder not found (check --images / --masks / --data-dir)")
    images = _list_images(images_dir)
    if not images:
        raise DataError(f"{images_dir}: no images found (expected files ending in {', '.join(IMAGE_EXTENSIONS)})")
    masks: dict[str, Path] = {}
    for m in _list_images(masks_dir):
        stem = m.stem
        key = stem[: -len(mask_suffix)] if mask_suffix and stem.endswith(mask_suffix) else stem
        masks.setdefault(key, m)
    report, used = PairingReport(), set()
    for img in images:
        m = masks.get(img.stem)
        if m is None:
            report.images_without_mask.append(img.name)
            continue
        used.add(img.stem)
        if check_sizes:
            try:
                isize = read_image_size(img)
            except ImageLoadError as e:
                report.bad_files.append(str(e))
                continue
            try:
                msize = read_image_size(m)
            except ImageLoadError as e:
                report.bad_files.append(str(e))
                continue
            if isize != msize:
                report.bad_files.append(f"{m}: mask is {msize[0]}x{msize[1]} but its image {img.name} is "
                                        f"{isize[0]}x{isize[1]} (re-export the mask at the image's size)")
                continue
        report.pairs.append(Pair(img.stem, img, m))
    report.masks_without_image = sorted(masks[k].name for k in masks if k not in used)
    return report


def collect_pairs(images_dir: str | Path, masks_dir: str | Path, mask_suffix: str = DEFAULT_MASK_SUFFIX,
                  strict: bool = True) -> list[Pair]:
    """Pairs ready to use. ``strict``: any mismatch raises DataError listing them all (up to 20)."""
    report = pair_files(images_dir, masks_dir, mask_suffix)
    problems = report.problems()
    if problems and strict:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} problem(s) pairing {images_dir} with {masks_dir} "
                        f"(mask suffix {mask_suffix!r}):\n  {shown}{more}")
    for p in problems:
        log.warning("skipping: %s", p)
    if not report.pairs:
        raise DataError(f"no usable image/mask pairs in {images_dir} + {masks_dir} (mask suffix {mask_suffix!r})")
    return report.pairs


def _folder_pairs(folder: str | Path, mask_suffix: str, strict: bool) -> list[Pair]:
    from .corrections import correction_pairs, is_corrections_folder  # it imports this module

    if is_corrections_folder(folder):
        # only complete saves: the sidecar, written last, marks a correction as complete
        return correction_pairs(folder)
    return collect_pairs(*resolve_data_dir(folder), mask_suffix, strict)


def collect_dir_pairs(data_dirs: Sequence[str | Path], mask_suffix: str = DEFAULT_MASK_SUFFIX,
                      strict: bool = True) -> list[Pair]:
    """Pairs of one or several data folders (see :func:`resolve_data_dir`), folder by folder
    (``strict``: as :func:`collect_pairs`).

    A corrections folder (:mod:`lesionseg.data.corrections`) yields its complete corrections only.
    Ids must be unique across the folders: the same id twice (the same ISIC photo in two
    releases, or one folder given twice) raises DataError naming both folders, since a photo in
    both the training and the validation part would inflate the validation score.
    """
    pairs: list[Pair] = []
    where: dict[str, Path] = {}
    repeated: list[str] = []
    for d in data_dirs:
        folder_pairs = _folder_pairs(d, mask_suffix, strict)
        log.info("%s: %d image/mask pairs", d, len(folder_pairs))
        for p in folder_pairs:
            if p.id in where:
                repeated.append(f"{p.id} ({where[p.id]} and {d})")
            else:
                where[p.id] = Path(d)
                pairs.append(p)
    if repeated:
        raise DataError(f"{len(repeated)} id(s) are in more than one --data-dir folder, e.g. "
                        f"{'; '.join(repeated[:3])}: ids must be unique across folders (the same ISIC id is "
                        "the same photo); drop one folder, or prepare them into one with "
                        "`lesionseg data prepare --source A B --output DIR`, which keeps one copy of each")
    return pairs


def find_images_dir(folder: str | Path) -> Path | None:
    """The images folder of a data folder layout inside ``folder`` (a prepared folder's
    ``images/``), or None when ``folder`` is not one."""
    try:
        return resolve_data_dir(folder)[0]
    except DataError:
        return None
