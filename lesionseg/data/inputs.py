"""The images a batch is asked to segment: a folder's files, or uploaded files and ZIP archives.

Every input becomes one :class:`InputFile` with an ``id`` (the stem its outputs are named by), the
``name`` shown for it (the CSV's ``file`` column) and a ``path`` to decode, or a ``problem`` that
is reported in its row instead (a refused archive, a file that is not an image).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .archive import UnsafeArchiveError, ZipLimits, safe_zip_members
from .io import is_image_file

NOT_AN_IMAGE = "skipped: not an image file"


@dataclass
class InputFile:
    """One input. ``problem``: why it is not segmented (None: segment ``path``); ``skipped``: the
    problem is not an error (a file that is not an image among uploads)."""

    id: str
    name: str
    path: Path | None = None
    problem: str | None = None
    skipped: bool = False


def assign_ids(files: Sequence[Path]) -> list[str]:
    """File stems as ids; files sharing a stem (a.jpg, a.png) get the extension appended (a_jpg, a_png)."""
    stems = [f.stem for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{f.stem}_{f.suffix[1:].lower()}" if f.stem in dup else f.stem for f in files]


def folder_inputs(input_dir: Path, exclude_suffixes: tuple[str, ...] = ()) -> list[InputFile]:
    """Entries of ``input_dir`` named like images (sorted, hidden ones skipped), ids from their stems.

    Names ending in ``exclude_suffixes`` (a batch's own outputs, when they are written into the
    input folder) are left out. A folder named like an image is kept, so that it gets an error row
    instead of vanishing silently.
    """
    files = sorted(p for p in input_dir.iterdir() if (p.is_file() or p.is_dir()) and is_image_file(p)
                   and not p.name.startswith(".") and not p.name.endswith(exclude_suffixes or ("\0",)))
    return [InputFile(i, f.name, f) for i, f in zip(assign_ids(files), files)]


def _safe_part(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"
    return stem[:120]


def _unique(stem: str, used: set[str]) -> str:
    base, n = _safe_part(stem), 2
    out = base
    while out in used:
        out, n = f"{base}_{n}", n + 1
    used.add(out)
    return out


def upload_inputs(paths: Iterable[str | os.PathLike], work_dir: str | os.PathLike,
                  limits: ZipLimits = ZipLimits()) -> list[InputFile]:
    """Uploaded files and ZIP archives, one entry per file, in the order given.

    Archives are checked by :func:`safe_zip_members` and their members written into ``work_dir``
    under names chosen here, never the member's path. Ids are the files' stems made safe, unique
    among the files to segment.
    """
    work = Path(work_dir)
    items: list[InputFile] = []
    used: set[str] = set()
    for k, raw in enumerate(paths):
        p = Path(raw)
        if p.suffix.lower() == ".zip":
            try:
                members = safe_zip_members(p, limits)
            except UnsafeArchiveError as e:
                items.append(InputFile(_safe_part(p.stem), p.name, problem=str(e)))
                continue
            folder = work / f"zip{k:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for j, (member, data) in enumerate(members):
                shown, stem = f"{p.name}/{member}", Path(member).stem
                if not is_image_file(member):
                    items.append(InputFile(_safe_part(stem), shown, problem=NOT_AN_IMAGE, skipped=True))
                    continue
                target = folder / f"{j:05d}_{_safe_part(Path(member).name)}"  # our name, never the member's path
                target.write_bytes(data)
                items.append(InputFile(_unique(stem, used), shown, target))
        elif is_image_file(p):
            items.append(InputFile(_unique(p.stem, used), p.name, p))
        else:
            items.append(InputFile(_safe_part(p.stem), p.name, problem=NOT_AN_IMAGE, skipped=True))
    return items
