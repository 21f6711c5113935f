"""Download the official dataset archives: resumable, size- and checksum-checked, renamed into place.

An archive is fetched into ``<name>.part``; an interrupted download continues from the part's
length with an HTTP ``Range`` request (a server that ignores it sends the whole file again). The
size is checked against the server's ``Content-Length`` / ``Content-Range`` and the known size,
the SHA-256 against the known digest, and only then is the part renamed to ``<name>``: a file
with the archive's own name is always complete. ``LESIONSEG_DATA_BASE_URL`` (or ``base_url``)
serves the same file names from another address (a mirror, or a test server).

Sizes and digests of the official files are recorded where known; where they are None the size
is still checked against what the server announces, and the digest is logged for the record.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

BASE_URL_ENV = "LESIONSEG_DATA_BASE_URL"
PARTS = ("training", "validation", "test")
_ISIC = "https://isic-challenge-data.s3.amazonaws.com"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One official file: the name it is saved under, its address, which part of the data it is,
    and its size in bytes and SHA-256 where known."""

    name: str
    url: str
    part: str = "training"
    size: int | None = None
    sha256: str | None = None


def _isic(year: int, *names: tuple[str, str]) -> list[Archive]:
    return [Archive(n, f"{_ISIC}/{year}/{n}", part) for part, n in names]


# The one table of official archives (images + masks of each part).
DATASETS: dict[str, list[Archive]] = {
    "isic2016": _isic(2016, ("training", "ISBI2016_ISIC_Part1_Training_Data.zip"),
                      ("training", "ISBI2016_ISIC_Part1_Training_GroundTruth.zip"),
                      ("test", "ISBI2016_ISIC_Part1_Test_Data.zip"),
                      ("test", "ISBI2016_ISIC_Part1_Test_GroundTruth.zip")),
    "isic2017": _isic(2017, ("training", "ISIC-2017_Training_Data.zip"),
                      ("training", "ISIC-2017_Training_Part1_GroundTruth.zip"),
                      ("validation", "ISIC-2017_Validation_Data.zip"),
                      ("validation", "ISIC-2017_Validation_Part1_GroundTruth.zip"),
                      ("test", "ISIC-2017_Test_v2_Data.zip"),
                      ("test", "ISIC-2017_Test_v2_Part1_GroundTruth.zip")),
    "isic2018": _isic(2018, ("training", "ISIC2018_Task1-2_Training_Input.zip"),
                      ("training", "ISIC2018_Task1_Training_GroundTruth.zip"),
                      ("validation", "ISIC2018_Task1-2_Validation_Input.zip"),
                      ("validation", "ISIC2018_Task1_Validation_GroundTruth.zip"),
                      ("test", "ISIC2018_Task1-2_Test_Input.zip"),
                      ("test", "ISIC2018_Task1_Test_GroundTruth.zip")),
    # Harvard Dataverse, doi:10.7910/DVN/DBW86T (Tschandl et al.). The file's persistent id was
    # not verifiable from the machine this was written on; if it fails, the dataset page has it.
    "ham10000-masks": [Archive("HAM10000_segmentations_lesion_tschandl.zip",
                               "https://dataverse.harvard.edu/api/access/datafile/:persistentId"
                               "?persistentId=doi:10.7910/DVN/DBW86T/Y5HEUS")],
}
MANUAL_PAGES = {"isic2016": "https://challenge.isic-archive.com/data/#2016",
                "isic2017": "https://challenge.isic-archive.com/data/#2017",
                "isic2018": "https://challenge.isic-archive.com/data/#2018",
                "ham10000-masks": "https://doi.org/10.7910/DVN/DBW86T"}


class DownloadError(RuntimeError):
    """An archive that could not be fetched or verified; ``str()`` is one line saying what to do."""


class UnreachableError(DownloadError):
    """The server could not be reached at all (offline, name not found, connection refused)."""


class _Incomplete(Exception):
    """The connection ended before the announced length (the part file keeps what came)."""


def archives(dataset: str, parts: tuple[str, ...] = ("training",), base_url: str | None = None) -> list[Archive]:
    """The archives of ``dataset`` in ``parts``, their addresses moved to ``base_url`` (else
    ``$LESIONSEG_DATA_BASE_URL``) when given. KeyError for an unknown dataset."""
    base = base_url or os.environ.get(BASE_URL_ENV) or None
    chosen = [a for a in DATASETS[dataset] if a.part in parts]
    if base:
        chosen = [Archive(a.name, f"{base.rstrip('/')}/{a.name}", a.part, a.size, a.sha256) for a in chosen]
    return chosen


def _total_from_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) of a ``Content-Range: bytes a-b/total`` (or ``bytes */total``) header."""
    m = re.match(r"bytes\s+(\d+|\*)(?:-\d+)?/(\d+|\*)", value or "")
    if not m:
        return None, None
    first, total = m.groups()
    return (None if first == "*" else int(first)), (None if total == "*" else int(total))


def _manual(url: str, dest: Path) -> str:
    return (f"download it by hand from {url} into {dest.parent}, then run "
            f"`lesionseg data prepare --source {dest.parent} --output DIR`")


def _fetch(url: str, tmp: Path, expected: int | None, timeout: float,
           on_bytes: Callable[[int, int | None], None] | None) -> int | None:
    """Append the rest of ``url`` to ``tmp`` (the ``.part`` file, renamed into place by the caller
    once checked); the file's total size as announced (None if not)."""
    offset = tmp.stat().st_size if tmp.exists() else 0
    headers = {"User-Agent": "lesionseg-data-download", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing after the part's end: complete already, or too long
            total = _total_from_range(e.headers.get("Content-Range"))[1]
            if total == offset:
                return total
            tmp.unlink()
            raise _Incomplete() from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; the file may have moved: {_manual(url, tmp)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise UnreachableError(f"cannot reach {url} ({reason}); offline or the server is down? "
                               f"{_manual(url, tmp)}") from None
    with resp:
        if resp.status == 206:
            first, total = _total_from_range(resp.headers.get("Content-Range"))
            if first != offset:
                tmp.unlink()
                raise _Incomplete()
        else:  # 200: the server sends the whole file
            offset, length = 0, resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected is not None and total is not None and total != expected:
            raise DownloadError(f"{url}: the server announces {total} bytes, expected {expected}: the file "
                                f"changed or the address is wrong; {_manual(url, tmp)}")
        done = offset
        try:
            with open(tmp, "ab" if offset else "wb") as f:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    if on_bytes:
                        on_bytes(done, total)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, http.client.HTTPException) as e:
            if isinstance(e, OSError) and not isinstance(e, (ConnectionError, TimeoutError)):
                raise  # the disk, not the network
            raise _Incomplete() from None
    if total is not None and done < total:
        raise _Incomplete()
    return total


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download_archive(archive: Archive, to: str | os.PathLike, retries: int = 3, timeout: float = 60.0,
                     on_bytes: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch ``archive`` into folder ``to`` (resuming its ``.part``), check it, rename it into place.

    An archive already there is kept as it is. Raises DownloadError (one line: the address, the
    problem, and how to get the file by hand); OSError when the folder cannot be written.
    """
    dest = Path(to) / archive.name
    if dest.is_file():
        log.info("%s: already downloaded", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total = None
    for attempt in range(retries + 1):
        try:
            total = _fetch(archive.url, part, archive.size, timeout, on_bytes)
            break
        except _Incomplete:
            have = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                raise DownloadError(f"{archive.url}: the connection ended after {have} bytes, {retries + 1} "
                                    f"times; run the same command again to continue from {part}") from None
            log.warning("%s: connection ended after %d bytes; continuing (%d/%d)", archive.name, have,
                        attempt + 1, retries)
    size, expected = part.stat().st_size, archive.size or total
    if expected is not None and size != expected:
        part.unlink()
        raise DownloadError(f"{archive.url}: got {size} bytes, expected {expected}; the partial file was "
                            "removed, run the command again")
    digest = sha256_of(part)
    if archive.sha256 and digest != archive.sha256.lower():
        part.unlink()
        raise DownloadError(f"{archive.url}: SHA-256 {digest[:16]}... does not match the expected "
                            f"{archive.sha256[:16]}...: the file is corrupt or has changed; it was removed, "
                            f"run the command again, or {_manual(archive.url, dest)}")
    os.replace(part, dest)
    log.info("%s: %d bytes, sha256 %s%s", dest, size, digest, "" if archive.sha256 else " (no known digest)")
    return dest
