"""The prepared folder's records: ``manifest.json``, ``ids.txt`` and ``problems.txt``.

``manifest.json`` holds the settings the folder was made with (size, resize mode, JPEG quality),
the lesionseg version, the sources read, and per id: where the image and mask came from (archive
member or path, bytes, SHA-256), the photo's size, and the written files with their SHA-256. A
later run skips an id whose record names the same source files (name and byte size) and whose
outputs are still there with the recorded SHA-256, so an interrupted or repeated run redoes only
what is missing. Every file is written atomically and only when its content changes: a run with
nothing to do rewrites nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...utils.atomic import atomic_write_text
from .convert import Settings

MANIFEST_NAME, IDS_NAME, PROBLEMS_NAME = "manifest.json", "ids.txt", "problems.txt"
FORMAT = "lesionseg-prepared/1"
MASK_SUFFIX = "_segmentation"
_SETTING_KEYS = ("size", "resize", "jpeg_quality")


class ManifestError(ValueError):
    """A prepared folder that cannot be continued; ``str()`` is one line naming the file and the fix."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file, None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def output_names(ident: str) -> tuple[str, str]:
    """The image and mask paths of ``ident``, relative to the prepared folder."""
    return f"images/{ident}.jpg", f"masks/{ident}{MASK_SUFFIX}.png"


def source_record(display: str, name: str, size: int, sha256: str) -> dict[str, Any]:
    return {"file": display, "name": name, "bytes": size, "sha256": sha256}


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


@dataclass
class Manifest:
    """The records of one prepared folder (see the module docstring)."""

    folder: Path
    settings: dict[str, Any]
    version: str
    sources: list[dict[str, str]] = field(default_factory=list)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: str | os.PathLike, settings: Settings) -> "Manifest":
        """The folder's manifest, or a new one for an empty or new folder. ManifestError when the
        folder holds other files, a broken manifest, or was prepared with other settings."""
        from ... import __version__

        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if folder.exists() and not folder.is_dir():
            raise ManifestError(f"{folder}: is a file, not a folder (choose another --output)")
        if not path.exists():
            if folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
                raise ManifestError(f"{folder}: not empty and not a prepared folder (no {MANIFEST_NAME}); "
                                    "choose a new or empty --output folder")
            return cls(folder, settings.as_dict(), __version__)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            found = {k: data["settings"][k] for k in _SETTING_KEYS}
            items, sources = dict(data["items"]), list(data.get("sources", []))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ManifestError(f"{path}: unreadable manifest ({type(e).__name__}: {e}); delete the folder "
                                "to prepare it again, or choose another --output".replace("\n", " ")) from None
        wanted = {k: settings.as_dict()[k] for k in _SETTING_KEYS}
        if found != wanted:
            def show(s: dict[str, Any]) -> str:
                return f"--size {s['size'] or 'none'} --resize {s['resize']} (JPEG quality {s['jpeg_quality']})"
            raise ManifestError(f"{path}: this folder was prepared with {show(found)}, not {show(wanted)}; "
                                "use the same settings to continue it, or choose another --output")
        return cls(folder, data["settings"], __version__, sources, items)

    def add_source(self, path: str, layout: str) -> None:
        record = {"path": path, "layout": layout}
        if record not in self.sources:
            self.sources.append(record)

    def is_done(self, ident: str, image_name: str, image_bytes: int, mask_name: str, mask_bytes: int) -> bool:
        """True when ``ident`` was made from these source files and both outputs are intact."""
        item = self.items.get(ident)
        if not item:
            return False
        same = (item["image"]["name"], item["image"]["bytes"], item["mask"]["name"], item["mask"]["bytes"]) == \
               (image_name, image_bytes, mask_name, mask_bytes)
        out = item["output"]
        return same and all(sha256_file(self.folder / out[k]) == out[f"{k}_sha256"] for k in ("image", "mask"))

    def to_json(self) -> str:
        data = {"format": FORMAT, "lesionseg_version": self.version, "settings": self.settings,
                "sources": self.sources, "count": len(self.items),
                "items": {k: self.items[k] for k in sorted(self.items)}}
        return json.dumps(data, indent=1) + "\n"

    def store(self, problems: list[str] | None = None) -> bool:
        """Write manifest.json and ids.txt (and problems.txt when ``problems`` is given; removed
        when empty), each only if its content changed. True when anything was written."""
        self.folder.mkdir(parents=True, exist_ok=True)
        wrote = _write_if_changed(self.folder / MANIFEST_NAME, self.to_json())
        wrote |= _write_if_changed(self.folder / IDS_NAME, "".join(f"{i}\n" for i in sorted(self.items)))
        if problems is not None:
            path = self.folder / PROBLEMS_NAME
            if problems:
                wrote |= _write_if_changed(path, "".join(f"{p}\n" for p in problems))
            elif path.exists():
                path.unlink()
                wrote = True
        return wrote
