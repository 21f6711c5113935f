"""Find the images and masks in dataset sources: official archives (ZIP) or their extracted folders.

Files are recognised by their names, not by the archive's name (a renamed download still works):

- masks: ``<id>_segmentation.<ext>`` in any case (ISIC 2017 / 2018 / HAM10000 ``_segmentation``,
  ISIC 2016 ``_Segmentation``), and PH2's ``IMDxxx_lesion.bmp``;
- images: any other image file, its stem the id (``ISIC_0000000.jpg``, PH2's ``IMDxxx.bmp``);
- ignored: the files the official archives carry beside them (ISIC 2017 ``*_superpixels.png``,
  ISIC 2018 Task 2 ``*_attribute_*.png``, PH2's ``IMDxxx_roi/`` folders, LICENSE / ATTRIBUTION /
  metadata text files and sheets, ``.DS_Store``);
- stray: everything else, listed with a one-line reason and left alone.

A folder's ``*.zip`` files are read as sources of their own, so the folder that ``lesionseg data
download`` filled can be passed as it is. ZIP members are read one at a time under the app's
archive rules (:class:`~lesionseg.data.archive.SafeZip`); nothing is extracted by its own name.
"""
from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..archive import SafeZip, UnsafeArchiveError, ZipLimits
from ..io import IMAGE_EXTENSIONS
from .manifest import FORMAT, MANIFEST_NAME

log = logging.getLogger(__name__)

# a dataset archive holds thousands of photos of up to ~30 MB and masks that compress very well
DATASET_ZIP_LIMITS = ZipLimits(max_files=200_000, max_total_bytes=200 * 1024 ** 3,
                               max_member_bytes=512 * 1024 ** 2, max_ratio=1000.0)

_MASK = re.compile(r"^(?P<id>.+?)_segmentation$", re.IGNORECASE)
_PH2_MASK = re.compile(r"^(?P<id>IMD\d+)_lesion$", re.IGNORECASE)
_ISIC_ID = re.compile(r"^ISIC_\d{7}$")
_ISIC_OTHER = re.compile(r"^ISIC_\d{7}_.+$")
_IGNORED_STEM = re.compile(r"_superpixels$|_attribute_", re.IGNORECASE)
_IGNORED_DIR = re.compile(r"_roi$", re.IGNORECASE)
_COMPANION_EXT = {".txt", ".csv", ".xlsx", ".xls", ".json", ".md", ".pdf", ".html", ".htm", ".rtf", ".yaml"}
_SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
HAM10000_IDS = range(24306, 34321)  # ISIC_0024306 ... ISIC_0034320


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: a ZIP member or a file under a folder."""

    source: str        # the archive or folder it came from, as given
    name: str          # member name, or path relative to the folder (POSIX separators)
    size: int          # bytes
    zip: SafeZip | None = field(default=None, compare=False, repr=False)
    info: zipfile.ZipInfo | None = field(default=None, compare=False, repr=False)

    @property
    def basename(self) -> str:
        return PurePosixPath(self.name).name

    @property
    def display(self) -> str:
        """How the file is named in messages and in the manifest: ``archive.zip:member`` or its path."""
        if self.zip is not None:
            return f"{os.path.basename(self.source)}:{self.name}"
        return str(Path(self.source) / self.name)

    def read(self) -> bytes:
        """The file's bytes (OSError or UnsafeArchiveError when it cannot be read)."""
        if self.zip is not None and self.info is not None:
            return self.zip.read(self.info)
        return (Path(self.source) / self.name).read_bytes()


def classify(name: str) -> tuple[str, str]:
    """(kind, detail) of a file by its name: ("image", id), ("mask", id), ("ignored", why) or
    ("stray", one-line reason)."""
    path = PurePosixPath(name)
    low = path.name.lower()
    if low in _SYSTEM_NAMES or path.name.startswith("."):
        return "ignored", "system file"
    if any(_IGNORED_DIR.search(part) for part in path.parts[:-1]):
        return "ignored", "PH2 region-of-interest folder"
    ext = path.suffix.lower()
    if ext == ".part":
        return "stray", "an incomplete download (run `lesionseg data download` again to finish it)"
    if ext == ".zip":
        return "stray", "an archive inside an archive (extract it, or pass it as its own --source)"
    if ext not in IMAGE_EXTENSIONS:
        if ext in _COMPANION_EXT:
            return "ignored", "licence, attribution or metadata file"
        return "stray", "not an image or mask (unknown file type), ignored"
    stem = path.stem
    if _IGNORED_STEM.search(stem):
        return "ignored", "superpixels or attribute mask"
    m = _MASK.match(stem) or _PH2_MASK.match(stem)
    if m:
        return "mask", _safe_id(m.group("id"))
    if _ISIC_OTHER.match(stem):
        return "stray", "not an image or mask name of a known layout (expected ISIC_nnnnnnn.jpg or " \
                        "ISIC_nnnnnnn_segmentation.png), ignored"
    return "image", _safe_id(stem)


def _safe_id(raw: str) -> str:
    """The id as a safe file-name part: letters, digits, ``._-`` (others become ``_``)."""
    return _UNSAFE_ID.sub("_", raw).strip("._")


def detect_layout(source: str, names: Iterable[str]) -> str:
    """Which official layout a source looks like, from its file names (and its own name):
    ``isic2016``, ``isic2017``, ``isic2018``, ``ham10000``, ``ph2`` or ``images/masks``."""
    names = list(names)
    text = " ".join([os.path.basename(source), *names[:50]])
    if re.search(r"IMD\d+_Dermoscopic_Image|PH2", text, re.IGNORECASE):
        return "ph2"
    if "HAM10000" in text.upper():
        return "ham10000"
    if "ISIC2018" in text.upper():
        return "isic2018"
    if "ISIC-2017" in text.upper() or any("_superpixels" in n for n in names):
        return "isic2017"
    if "ISBI2016" in text.upper() or any(PurePosixPath(n).stem.endswith("_Segmentation") for n in names):
        return "isic2016"
    ids = [PurePosixPath(n).stem[:12] for n in names if _ISIC_ID.match(PurePosixPath(n).stem[:12])]
    if ids and all(int(i[5:]) in HAM10000_IDS for i in ids):
        return "ham10000"
    return "images/masks"


@dataclass
class Catalog:
    """Everything found in the sources. ``images`` / ``masks``: id -> file (the first one found);
    ``problems``: one line each; ``ignored``: how many files were passed over as expected."""

    images: dict[str, SourceFile] = field(default_factory=dict)
    masks: dict[str, SourceFile] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    ignored: int = 0
    zips: list[SafeZip] = field(default_factory=list)

    def add(self, f: SourceFile) -> None:
        kind, detail = classify(f.name)
        if kind in ("ignored", "stray"):
            self.ignored += kind == "ignored"
            if kind == "stray":
                self.problems.append(f"stray file: {f.display}: {detail}")
            return
        table = self.images if kind == "image" else self.masks
        if not detail:
            self.problems.append(f"stray file: {f.display}: no usable id in its name, ignored")
        elif detail not in table:
            table[detail] = f
        elif table[detail].size == f.size:
            self.ignored += 1  # the same file twice (an archive and its extracted folder)
        else:
            self.problems.append(f"duplicate {kind} id {detail}: {f.display} differs from "
                                 f"{table[detail].display}; kept the first")

    def close(self) -> None:
        for z in self.zips:
            z.close()


def _is_prepared(folder: Path) -> bool:
    """A folder made by ``lesionseg data prepare`` (its manifest names the format): not read as
    data inside another source, where its resized copies would duplicate the originals."""
    try:
        with open(folder / MANIFEST_NAME, "rb") as f:
            found = FORMAT.encode() in f.read(200)
    except OSError:
        return False
    if found:
        log.info("%s: a prepared folder inside a source, not read (pass it as its own --source to use it)", folder)
    return found


def _folder_files(root: Path, exclude: Path | None) -> tuple[list[SourceFile], list[Path]]:
    """(files under ``root``, ZIP files found there), sorted; hidden folders and ``exclude`` skipped."""
    files, zips = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX"
                             and (exclude is None or (here / d).resolve() != exclude)
                             and not _is_prepared(here / d))
        for fn in sorted(filenames):
            p = here / fn
            if p.suffix.lower() == ".zip" and not fn.startswith("."):
                zips.append(p)
                continue
            try:
                size = p.stat().st_size
            except OSError:
                continue
            files.append(SourceFile(str(root), p.relative_to(root).as_posix(), size))
    return files, zips


def _zip_files(path: Path, catalog: Catalog) -> list[SourceFile]:
    try:
        z = SafeZip(path, DATASET_ZIP_LIMITS)
    except UnsafeArchiveError as e:
        hint = " (an incomplete download? fetch it again)" if "not a readable ZIP" in str(e) else ""
        catalog.problems.append(f"archive skipped: {e}{hint}")
        return []
    catalog.zips.append(z)
    return [SourceFile(str(path), name, info.file_size, z, info) for name, info in z.members]


def scan_sources(paths: Iterable[str | os.PathLike], exclude: str | os.PathLike | None = None) -> Catalog:
    """Catalog of the images and masks in ``paths`` (ZIP files or folders), in the order given.

    ``exclude``: a folder never to read (the output of the preparation). A path that does not
    exist raises FileNotFoundError; an unreadable archive is a problem line, not an error.
    Close the catalog (its open archives) when done.
    """
    catalog = Catalog()
    skip = Path(exclude).resolve() if exclude is not None else None
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            catalog.close()
            raise FileNotFoundError(f"{p}: source not found (pass the downloaded .zip files or their "
                                    "extracted folders)")
        pending = [p] if p.is_file() else []
        if p.is_file() and p.suffix.lower() != ".zip" and not zipfile.is_zipfile(p):
            catalog.problems.append(f"source skipped: {p}: neither a ZIP archive nor a folder")
            continue
        if p.is_dir():
            files, pending = _folder_files(p, skip)
            _add_source(catalog, str(p), files)
        for z in pending:
            _add_source(catalog, str(z), _zip_files(z, catalog))
    return catalog


def _add_source(catalog: Catalog, source: str, files: list[SourceFile]) -> None:
    if not files:
        return
    layout = detect_layout(source, (f.name for f in files))
    catalog.layouts[source] = layout
    before = (len(catalog.images), len(catalog.masks))
    for f in files:
        catalog.add(f)
    log.info("%s: %s layout, %d images and %d masks", source, layout, len(catalog.images) - before[0],
             len(catalog.masks) - before[1])
