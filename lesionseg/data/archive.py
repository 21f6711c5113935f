"""Read the members of a ZIP (an upload, or a dataset archive) safely, refusing unsafe archives.

Nothing is ever extracted by the archive's own names: members are read as bytes with size
checks, and the caller writes them under names it chooses. An archive is refused as a whole
(:class:`UnsafeArchiveError`, one-line message) when any member

- has an absolute path, a drive letter or a ``..`` component (path traversal),
- is a symbolic link, or is encrypted,
- is larger than ``max_member_bytes``, or expands more than ``max_ratio`` times (zip bomb),

or when the archive holds more than ``max_files`` files or more than ``max_total_bytes`` once
uncompressed. Sizes are enforced while reading too, since the sizes in the directory can lie.
Directories, macOS resource forks (``__MACOSX/``, ``._name``) are skipped.

:func:`safe_zip_members` reads a whole (uploaded) archive into memory; :class:`SafeZip` checks the
directory the same way and then reads members one at a time, for dataset archives of many GB.
"""
from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafeArchiveError(ValueError):
    """An archive that is refused; ``str()`` is one line naming the archive and the reason."""


@dataclass(frozen=True)
class ZipLimits:
    """Limits for :func:`safe_zip_members`."""

    max_files: int = 2000
    max_total_bytes: int = 2 * 1024 ** 3
    max_member_bytes: int = 256 * 1024 ** 2
    max_ratio: float = 200.0
    ratio_min_bytes: int = 1024 ** 2  # small members may compress very well without harm


def _check_name(raw: str, archive: str) -> str | None:
    """Normalised member name, None for entries to skip; UnsafeArchiveError for unsafe names."""
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: refused, member name contains a NUL byte")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchiveError(f"{archive}: refused, member {raw!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: refused, member {raw!r} points outside the archive (..)")
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    return str(PurePosixPath(*parts))


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK((info.external_attr >> 16) & 0xFFFF)


class ZipMemberError(UnsafeArchiveError):
    """One member cannot be read (bad CRC, unsupported compression); the rest of the archive may be fine."""


class SafeZip:
    """An open ZIP whose directory passed the checks of the module docstring; members are read one
    at a time (so an archive larger than memory can be used), each with its size enforced while
    reading. ``members``: [(normalised name, ZipInfo)] of the regular files, in archive order.

    Raises UnsafeArchiveError for an unsafe archive or a file that is not a readable ZIP.
    """

    def __init__(self, zip_path: str | os.PathLike, limits: ZipLimits = ZipLimits()):
        self.archive = os.path.basename(os.fspath(zip_path))
        self.limits = limits
        self._read_total = 0
        try:
            self._zf = zipfile.ZipFile(zip_path)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise UnsafeArchiveError(f"{self.archive}: not a readable ZIP archive ({type(e).__name__})") from None
        try:
            self.members = self._check_directory()
        except UnsafeArchiveError:
            self._zf.close()
            raise

    def _check_directory(self) -> list[tuple[str, zipfile.ZipInfo]]:
        archive, limits = self.archive, self.limits
        chosen: list[tuple[str, zipfile.ZipInfo]] = []
        declared = 0
        for info in self._zf.infolist():
            name = _check_name(info.filename, archive)
            if _is_symlink(info):
                raise UnsafeArchiveError(f"{archive}: refused, member {info.filename!r} is a symbolic link")
            if name is None or info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise UnsafeArchiveError(f"{archive}: refused, member {info.filename!r} is encrypted")
            if info.file_size > limits.max_member_bytes:
                raise UnsafeArchiveError(f"{archive}: refused, member {info.filename!r} expands to "
                                         f"{info.file_size / 1e6:.0f} MB "
                                         f"(limit {limits.max_member_bytes / 1e6:.0f} MB)")
            if (info.file_size >= limits.ratio_min_bytes
                    and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
                raise UnsafeArchiveError(f"{archive}: refused, member {info.filename!r} expands "
                                         f"{info.file_size / max(info.compress_size, 1):.0f}x (zip bomb?)")
            declared += info.file_size
            chosen.append((name, info))
            if len(chosen) > limits.max_files:
                raise UnsafeArchiveError(f"{archive}: refused, more than {limits.max_files} files")
            if declared > limits.max_total_bytes:
                raise UnsafeArchiveError(f"{archive}: refused, expands to more than "
                                         f"{limits.max_total_bytes / 1e9:.1f} GB (zip bomb?)")
        return chosen

    def read(self, info: zipfile.ZipInfo) -> bytes:
        """The bytes of one member of ``members``. A member larger than its directory entry says
        (or than the limits) raises UnsafeArchiveError; one that cannot be read, ZipMemberError."""
        archive, limits = self.archive, self.limits
        buf = bytearray()
        try:
            with self._zf.open(info) as fh:
                while chunk := fh.read(_CHUNK):
                    buf += chunk
                    self._read_total += len(chunk)
                    if len(buf) > info.file_size or len(buf) > limits.max_member_bytes:
                        raise UnsafeArchiveError(f"{archive}: refused, member {info.filename!r} is larger "
                                                 "than its directory entry says (zip bomb?)")
                    if self._read_total > limits.max_total_bytes:
                        raise UnsafeArchiveError(f"{archive}: refused, expands to more than "
                                                 f"{limits.max_total_bytes / 1e9:.1f} GB (zip bomb?)")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
                RuntimeError, zlib.error) as e:
            raise ZipMemberError(f"{archive}: member {info.filename!r} cannot be read "
                                 f"({type(e).__name__}: {e})".replace("\n", " ")) from None
        return bytes(buf)

    def close(self) -> None:
        self._zf.close()

    def __enter__(self) -> "SafeZip":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def safe_zip_members(zip_path: str | os.PathLike, limits: ZipLimits = ZipLimits()) -> list[tuple[str, bytes]]:
    """[(member name, bytes)] of the regular files in ``zip_path``, in archive order.

    Raises UnsafeArchiveError for an unsafe archive (see the module docstring), a file that is not
    a readable ZIP, or a member that cannot be read (bad CRC, unsupported compression).
    """
    with SafeZip(zip_path, limits) as z:
        return [(name, z.read(info)) for name, info in z.members]
