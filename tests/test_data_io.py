"""Safe image / mask reading: every format and mode to RGB uint8, every bad file to one ImageLoadError.

All files are made in tmp_path; none come from the real data.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from lesionseg.data.io import DEFAULT_MAX_PIXELS, ImageLoadError, load_image, load_mask, read_image_size

RGB = (200, 120, 40)


def _rgb_array(h: int = 6, w: int = 8) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.arange(w) * 30
    a[..., 1] = (np.arange(h) * 40)[:, None]
    a[..., 2] = 90
    return a


def assert_one_line_error(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert isinstance(err.value, ImageLoadError)
    assert "\n" not in msg
    assert path.name in msg
    return msg


# -- formats and modes ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs", [
    ("a.png", {}),
    ("a.bmp", {}),
    ("a.tif", {}),
    ("a.tiff", {"compression": "tiff_lzw"}),
    ("a.webp", {"lossless": True}),
])
def test_lossless_formats_round_trip_exactly(tmp_path, name, kwargs):
    a = _rgb_array()
    Image.fromarray(a).save(tmp_path / name, **kwargs)
    out = load_image(tmp_path / name)
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    np.testing.assert_array_equal(out, a)


def test_jpeg(tmp_path):
    Image.new("RGB", (9, 7), RGB).save(tmp_path / "a.jpg", quality=95)
    out = load_image(tmp_path / "a.jpg")
    assert out.shape == (7, 9, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - RGB).max() <= 3


def test_bytes_input(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb_array()).save(buf, format="PNG")
    np.testing.assert_array_equal(load_image(buf.getvalue()), _rgb_array())


def test_grayscale_becomes_three_equal_channels(tmp_path):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(g).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_rgba_transparent_areas_become_white(tmp_path):
    im = Image.new("RGBA", (2, 1), (255, 0, 0, 0))   # fully transparent red
    im.putpixel((1, 0), (0, 0, 255, 255))            # opaque blue
    im.save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), [[[255, 255, 255], [0, 0, 255]]])


def test_palette_image(tmp_path):
    im = Image.new("P", (3, 2))
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 9))
    im.putpixel((1, 0), 1)
    im.putpixel((2, 1), 2)
    im.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [255, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out[1, 2], [0, 200, 0])


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    a = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I;16")
    out = load_image(tmp_path / "d.png")
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    # value * 255 / 65535: clipping would give 255 for every non-zero value
    np.testing.assert_allclose(out[0, :, 0], [0, 1000 * 255 / 65535, 32768 * 255 / 65535, 255], atol=1)
    assert len(np.unique(out)) == 4


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (5, 4), (0, 0, 0, 0)).save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == (4, 5, 3)
    assert out.min() >= 250  # no ink is white


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (6, 4), RGB)  # 6 wide, 4 high as stored
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (6, 4, 3)
    assert read_image_size(tmp_path / "r.jpg") == (6, 4)  # header size is as stored


def test_png_named_jpg_is_read_by_content(tmp_path):
    Image.fromarray(_rgb_array()).save(tmp_path / "x.jpg", format="PNG")
    np.testing.assert_array_equal(load_image(tmp_path / "x.jpg"), _rgb_array())


def test_min_side_decodes_large_jpeg_at_reduced_scale(tmp_path):
    Image.new("RGB", (800, 600), RGB).save(tmp_path / "big.jpg")
    out = load_image(tmp_path / "big.jpg", min_side=256)
    assert out.shape == (300, 400, 3)  # 1/2 keeps both sides >= 256
    assert load_image(tmp_path / "big.jpg").shape == (600, 800, 3)


# -- bad files ------------------------------------------------------------------------------------

def _jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("loader", [load_image, load_mask])
def test_empty_file(tmp_path, loader):
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError) as err:
        loader(tmp_path / "e.jpg")
    assert "empty" in assert_one_line_error(err, tmp_path / "e.jpg")


@pytest.mark.parametrize("keep", [0.05, 0.6])
@pytest.mark.parametrize("loader", [load_image, load_mask])
def test_truncated_jpeg(tmp_path, keep, loader):
    data = _jpeg_bytes()
    path = tmp_path / "t.jpg"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageLoadError) as err:
        loader(path)
    assert_one_line_error(err, path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("patient notes, not a picture\n" * 10)
    with pytest.raises(ImageLoadError) as err:
        load_image(path)
    assert "not a readable image" in assert_one_line_error(err, path)


def test_directory(tmp_path):
    d = tmp_path / "folder.png"
    d.mkdir()
    with pytest.raises(ImageLoadError) as err:
        load_image(d)
    assert "directory" in assert_one_line_error(err, d)


def test_missing_file(tmp_path):
    path = tmp_path / "missing.jpg"
    with pytest.raises(ImageLoadError) as err:
        load_mask(path)
    assert "not found" in assert_one_line_error(err, path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can read files without read permission")
def test_unreadable_permissions(tmp_path):
    path = tmp_path / "locked.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(ImageLoadError) as err:
            load_image(path)
        assert "permission" in assert_one_line_error(err, path).lower()
    finally:
        path.chmod(0o644)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of width x height, built row by row (a few KB, never in memory)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    rows = (b"\x00" * (1 + (width + 7) // 8)) * 500
    idat = b"".join(comp.compress(rows) for _ in range(height // 500)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("loader", [load_image, load_mask, read_image_size])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, loader, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(20000, 20000))
    assert path.stat().st_size < 1_000_000
    assert struct.unpack(">II", path.read_bytes()[16:24]) == (20000, 20000)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("a 400 MP image was decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageLoadError) as err:
        loader(path)
    msg = assert_one_line_error(err, path)
    assert "megapixels" in msg and "400" in msg and "LESIONSEG_MAX_PIXELS" in msg
    assert DEFAULT_MAX_PIXELS == int(os.environ.get("LESIONSEG_MAX_PIXELS", 100_000_000))


def test_pixel_limit_is_a_parameter(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "a.png")
    with pytest.raises(ImageLoadError, match="megapixels"):
        load_image(tmp_path / "a.png", max_pixels=9_999)
    assert load_image(tmp_path / "a.png", max_pixels=10_000).shape == (100, 100, 3)


def test_error_is_a_value_error_with_path_and_problem(tmp_path):
    path = tmp_path / "e.png"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as err:
        load_image(path)
    assert err.value.path == str(path) and "empty" in err.value.problem


def test_bytes_errors_name_the_upload():
    with pytest.raises(ImageLoadError, match="^<upload>: "):
        load_image(b"GIF89a nonsense")


# -- masks ------------------------------------------------------------------------------------------

MASK = np.array([[0, 1, 1], [0, 0, 1]], np.uint8)


@pytest.mark.parametrize("scale, mode", [(255, "L"), (1, "L"), (255, "RGB"), (255, "RGBA"), (255, "LA"),
                                         (255, "1"), (255, "P")])
def test_load_mask_is_binary(tmp_path, scale, mode):
    Image.fromarray(MASK * scale).convert(mode).save(tmp_path / "m.png")
    out = load_mask(tmp_path / "m.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, MASK)


def test_load_mask_with_transparent_background(tmp_path):
    im = Image.new("RGBA", (3, 2), (255, 255, 255, 0))  # white but fully transparent
    for x, y in zip(*np.nonzero(MASK.T)):
        im.putpixel((int(x), int(y)), (255, 255, 255, 255))
    im.save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), MASK)


def test_load_mask_coloured_annotation(tmp_path):
    a = np.zeros((2, 3, 3), np.uint8)
    a[MASK == 1] = (255, 0, 0)  # red lesion drawn on black
    Image.fromarray(a).save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), MASK)


def test_load_mask_thresholds_soft_edges_at_128(tmp_path):
    Image.fromarray(np.array([[0, 127, 128, 255]], np.uint8)).save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), [[0, 0, 1, 1]])


def test_load_mask_16bit(tmp_path):
    Image.fromarray(np.array([[0, 65535, 1000, 40000]], np.uint16)).save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), [[0, 1, 0, 1]])


# -- fuzzing: hostile bytes raise ImageLoadError and nothing else ----------------------------------

def _seed_files() -> list[bytes]:
    a = _rgb_array(5, 7)
    out = []
    for fmt, kwargs in [("PNG", {}), ("JPEG", {"quality": 80}), ("BMP", {}), ("TIFF", {}), ("WEBP", {}),
                        ("GIF", {})]:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format=fmt, **kwargs)
        out.append(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(MASK * 255).save(buf, format="PNG")
    out.append(buf.getvalue())
    return out


SEEDS = _seed_files()


@st.composite
def hostile_bytes(draw) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile_bytes())
def test_fuzzed_bytes_raise_only_image_load_error(data):
    for loader in (load_image, load_mask):
        try:
            out = loader(data, max_pixels=4_000_000)
        except ImageLoadError as e:
            assert "\n" not in str(e)
            continue
        assert out.dtype == np.uint8
        if loader is load_image:
            assert out.ndim == 3 and out.shape[2] == 3
        else:
            assert out.ndim == 2 and set(np.unique(out)) <= {0, 1}
