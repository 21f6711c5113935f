"""Mutation fuzzing of the image / mask readers: only ImageLoadError may escape.

Starts from valid files of every format the readers accept (JPEG baseline, progressive, EXIF,
CMYK; PNG 8/16-bit, palette, RGBA; TIFF single and multi-page; animated GIF; BMP; WebP) and flips
bits, overwrites, inserts, deletes, duplicates and truncates bytes, splices two files, or
corrupts one PNG chunk while keeping its CRC valid so the damage reaches the decoder. The
example count is bounded for CI (``LESIONSEG_FUZZ_EXAMPLES``, default 300).
"""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lesionseg.data.io import ImageLoadError, load_image, load_mask, read_image_size

EXAMPLES = int(os.environ.get("LESIONSEG_FUZZ_EXAMPLES", 300))
MAX_PIXELS = 1_000_000  # a mutated header may claim any size; keep each example cheap


def _img(h: int = 12, w: int = 16) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 15, yy * 20, (xx + yy) * 7], axis=2) % 256
    return Image.fromarray(a.astype(np.uint8))


def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    rgb = _img()
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [_img().convert("P"), _img().rotate(90).convert("P")]
    pal = rgb.convert("P")
    pal.info["transparency"] = 0
    return {
        "jpeg": _enc(rgb, "JPEG", quality=85),
        "jpeg_progressive": _enc(rgb, "JPEG", quality=85, progressive=True),
        "jpeg_exif": _enc(rgb, "JPEG", exif=exif.tobytes()),
        "jpeg_cmyk": _enc(rgb.convert("CMYK"), "JPEG"),
        "png": _enc(rgb, "PNG"),
        "png_16bit": _enc(Image.fromarray((np.arange(192, dtype=np.uint16) * 300).reshape(12, 16)), "PNG"),
        "png_palette_transparent": _enc(pal, "PNG"),
        "png_rgba": _enc(rgb.convert("RGBA"), "PNG"),
        "png_mask": _enc(Image.fromarray((np.arange(192).reshape(12, 16) % 3 == 0).astype(np.uint8) * 255), "PNG"),
        "tiff": _enc(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_pages": _enc(rgb, "TIFF", save_all=True, append_images=[_img().rotate(180)]),
        "gif_animated": _enc(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "bmp": _enc(rgb, "BMP"),
        "webp": _enc(rgb, "WEBP", quality=80),
    }


SEEDS = _seeds()


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(start, length) of each chunk's data in a PNG file."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((pos + 8, length))
        pos += 12 + length
    return out


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "duplicate", "truncate", "splice", "png_crc"]))
        n = len(data)
        if n == 0:
            break
        pos = draw(st.integers(0, n - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "duplicate":
            k = draw(st.integers(1, 128))
            data[pos:pos] = data[pos:pos + k]
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            data = data[:pos] + other[draw(st.integers(0, len(other) - 1)):]
        elif op == "png_crc" and data.startswith(b"\x89PNG"):
            chunks = [c for c in _png_chunks(bytes(data)) if c[1] > 0 and c[0] + c[1] + 4 <= len(data)]
            if chunks:
                start, length = draw(st.sampled_from(chunks))
                i = start + draw(st.integers(0, length - 1))
                data[i] = draw(st.integers(0, 255))
                crc = zlib.crc32(bytes(data[start - 4:start + length])) & 0xFFFFFFFF
                data[start + length:start + length + 4] = struct.pack(">I", crc)
    return bytes(data)


def _check(data: bytes) -> None:
    try:
        w, h = read_image_size(data, max_pixels=MAX_PIXELS)
        assert w >= 1 and h >= 1
    except ImageLoadError as e:
        assert "\n" not in str(e) and str(e).startswith("<upload>: ")
    try:
        img = load_image(data, max_pixels=MAX_PIXELS)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.size > 0
    except ImageLoadError as e:
        assert "\n" not in str(e) and str(e).startswith("<upload>: ")
    try:
        mask = load_mask(data, max_pixels=MAX_PIXELS)
        assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask).tolist()) <= {0, 1}
    except ImageLoadError as e:
        assert "\n" not in str(e) and str(e).startswith("<upload>: ")


def test_every_seed_is_valid() -> None:
    """The seeds themselves load, so the mutations start from real files of each format."""
    for name, data in SEEDS.items():
        assert load_image(data).shape[2] == 3, name
        assert load_mask(data).ndim == 2, name


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=mutated())
def test_mutated_files_raise_only_image_load_error(data: bytes) -> None:
    _check(data)


def test_mutated_file_on_disk_names_the_file(tmp_path) -> None:
    """The path door gives the same one-line errors, naming the file."""
    data = bytearray(SEEDS["png"])
    data[30] ^= 0xFF  # inside IHDR: CRC mismatch
    f = tmp_path / "mutant.png"
    f.write_bytes(bytes(data))
    for loader in (load_image, load_mask):
        try:
            loader(f)
        except ImageLoadError as e:
            assert str(e).startswith(str(f)) and "\n" not in str(e)
