"""The preparation engine: official archives or folders in, the project's data layout out.

``prepare(sources, output, settings)`` writes

    output/images/<id>.jpg               the photo, transformed (see convert.py)
    output/masks/<id>_segmentation.png   its mask, the same transform, {0, 255}
    output/ids.txt                       the prepared ids, sorted, one a line
    output/manifest.json                 settings, sources, and per id its source files and SHA-256
    output/problems.txt                  one line per file that was not prepared (absent when none)

Images without a mask, masks without an image, unreadable files, masks of another size, stray
files and unreadable archives are listed (one line each) and the rest is prepared. Every file is
written atomically; the manifest is saved as the work goes on, so an interrupted run continues
where it stopped and a repeated run rewrites nothing.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ...utils.atomic import atomic_write_bytes
from ..archive import UnsafeArchiveError
from .convert import PairError, Settings, convert_pair
from .manifest import Manifest, ManifestError, output_names, sha256_bytes, source_record
from .sources import Catalog, SourceFile, scan_sources

log = logging.getLogger(__name__)

CHECKPOINT_ITEMS, CHECKPOINT_SECONDS = 100, 10.0


class PrepareError(ValueError):
    """Nothing could be prepared as asked; ``str()`` is one line naming the file and what to do."""


@dataclass
class PrepareReport:
    """What a run did: ids ``written`` now, ids ``unchanged`` (already prepared), ``problems``
    (one line each), files ``ignored`` as expected, and the folder's ``total`` of prepared ids."""

    output: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: int = 0
    total: int = 0

    def summary(self) -> str:
        return (f"{len(self.written)} pairs prepared, {len(self.unchanged)} already done, "
                f"{len(self.problems)} problem(s), {self.ignored} files ignored; {self.total} pairs in {self.output}")


def _pairing_problems(catalog: Catalog) -> list[str]:
    images, masks = set(catalog.images), set(catalog.masks)
    out = [f"image without mask: {catalog.images[i].display}" for i in sorted(images - masks)]
    out += [f"mask without image: {catalog.masks[i].display}" for i in sorted(masks - images)]
    if catalog.images and not masks:
        out.append("no masks found in the sources: pass the ground-truth archive or folder too "
                   "(e.g. ISIC2018_Task1_Training_GroundTruth.zip)")
    return out


def _remove_leftovers(output: Path) -> None:
    """Temporary files of atomic writes cut short by a kill (``.<name>.<random>.tmp.<ext>``)."""
    for sub in ("images", "masks"):
        folder = output / sub
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and ".tmp" in p.name:
                    p.unlink(missing_ok=True)


def _prepare_one(ident: str, image: SourceFile, mask: SourceFile, image_data: bytes, mask_data: bytes,
                 layout: str, output: Path, settings: Settings) -> dict[str, Any]:
    """Convert one pair, write its two files atomically, return its manifest record (worker thread)."""
    conv = convert_pair(image_data, mask_data, image.display, mask.display, settings)
    image_rel, mask_rel = output_names(ident)
    atomic_write_bytes(output / image_rel, conv.image)
    atomic_write_bytes(output / mask_rel, conv.mask)
    return {
        "layout": layout,
        "image": source_record(image.display, image.basename, image.size, sha256_bytes(image_data)),
        "mask": source_record(mask.display, mask.basename, mask.size, sha256_bytes(mask_data)),
        "width": conv.source_size[0], "height": conv.source_size[1],
        "output": {"image": image_rel, "image_sha256": sha256_bytes(conv.image),
                   "mask": mask_rel, "mask_sha256": sha256_bytes(conv.mask),
                   "width": conv.size[0], "height": conv.size[1]},
    }


def prepare(sources: Iterable[str | os.PathLike], output: str | os.PathLike, settings: Settings = Settings(),
            jobs: int | None = None, on_progress: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Prepare every image/mask pair in ``sources`` (ZIP archives or folders) into ``output``.

    ``jobs``: pairs converted side by side (default: one per CPU). ``on_progress(done, total)``
    is called after each pair of this run. Raises PrepareError for a source that does not exist
    or an output folder that cannot be continued; OSError when the output cannot be written.
    """
    output = Path(output)
    try:
        manifest = Manifest.open(output, settings)
    except ManifestError as e:
        raise PrepareError(str(e)) from None
    try:
        catalog = scan_sources(sources, exclude=output)
    except FileNotFoundError as e:
        raise PrepareError(str(e)) from None
    report = PrepareReport(output, ignored=catalog.ignored)
    report.problems = catalog.problems + _pairing_problems(catalog)
    for src, layout in catalog.layouts.items():
        manifest.add_source(str(Path(src).resolve()), layout)
    ids = sorted(set(catalog.images) & set(catalog.masks))
    todo = []
    for i in ids:
        img, msk = catalog.images[i], catalog.masks[i]
        if manifest.is_done(i, img.basename, img.size, msk.basename, msk.size):
            report.unchanged.append(i)
        else:
            todo.append(i)
    manifest.store()  # an interrupted first run leaves a folder that can be continued
    _remove_leftovers(output)
    if report.unchanged:
        log.info("%d pairs already prepared in %s; %d to do", len(report.unchanged), output, len(todo))
    try:
        _run(todo, catalog, manifest, report, settings, jobs or os.cpu_count() or 1, on_progress)
    finally:
        catalog.close()
        report.total = len(manifest.items)
        manifest.store(report.problems)
    return report


def _run(todo: list[str], catalog: Catalog, manifest: Manifest, report: PrepareReport, settings: Settings,
         jobs: int, on_progress: Callable[[int, int], None] | None) -> None:
    """Read each pair on this thread (archives are read in order), convert and write in ``jobs``
    threads, record results in input order, and save the manifest every so often."""
    pending: deque[tuple[str, Future]] = deque()
    last_save, since_save, done = time.monotonic(), 0, 0

    def finish(ident: str, fut: Future) -> None:
        nonlocal last_save, since_save, done
        try:
            manifest.items[ident] = fut.result()
            report.written.append(ident)
        except PairError as e:
            report.problems.append(f"skipped: {e}")
            _forget(manifest, ident)
        since_save, done = since_save + 1, done + 1
        if on_progress:
            on_progress(done, len(todo))
        if since_save >= CHECKPOINT_ITEMS or time.monotonic() - last_save > CHECKPOINT_SECONDS:
            manifest.store()
            last_save, since_save = time.monotonic(), 0

    pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="prepare")
    try:
        for ident in todo:
            image, mask = catalog.images[ident], catalog.masks[ident]
            try:
                image_data, mask_data = image.read(), mask.read()
            except (OSError, UnsafeArchiveError) as e:
                failed: Future = Future()  # reported in its turn, like a pair that fails to convert
                failed.set_exception(PairError(f"unreadable file: {e}".replace("\n", " ")))
                pending.append((ident, failed))
                continue
            pending.append((ident, pool.submit(_prepare_one, ident, image, mask, image_data, mask_data,
                                               catalog.layouts.get(image.source, ""), manifest.folder, settings)))
            while len(pending) >= 2 * jobs:
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _forget(manifest: Manifest, ident: str) -> None:
    """Drop an id that can no longer be prepared from its sources, with its old outputs."""
    if manifest.items.pop(ident, None) is not None:
        for rel in output_names(ident):
            (manifest.folder / rel).unlink(missing_ok=True)
