"""The fast PNG writer (lesionseg/inference/png.py) must be lossless and readable by standard decoders."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from lesionseg.inference import outputs, png

pytestmark = pytest.mark.skipif(not png.available(), reason="isal is not installed (pip install -r requirements.txt)")


def _decode_cv2(data: bytes) -> np.ndarray:
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert a is not None, "OpenCV could not decode the PNG"
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_BGR2RGB if a.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return a


def _decode_pil(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.format == "PNG"
        return np.asarray(im)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (9, 1, 3), (33, 65, 3), (40, 30, 4), (17, 23)])
@pytest.mark.parametrize("content", ["noise", "gradient"])
@pytest.mark.parametrize("up", [True, False])
def test_round_trip_is_exact_in_two_decoders(shape, content, up):
    rng = np.random.default_rng(sum(shape))
    if content == "noise":  # every byte value and wrap-around of the Up filter occurs
        a = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        a = (np.indices(shape).sum(axis=0) * 7 % 256).astype(np.uint8)
    data = png.encode_png(a, up=up)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(_decode_cv2(data), a)
    np.testing.assert_array_equal(_decode_pil(data), a)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_every_level_is_lossless(level, real_photo):
    data = png.encode_png(real_photo, level=level)
    np.testing.assert_array_equal(_decode_pil(data), real_photo)


def test_smaller_than_opencv_on_a_photo(real_photo):
    ours = outputs.encode_png(real_photo)
    ok, theirs = cv2.imencode(".png", cv2.cvtColor(real_photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    assert len(ours) < len(theirs)
    np.testing.assert_array_equal(_decode_cv2(ours), real_photo)


@pytest.mark.parametrize("values", [(0, 1), (0, 7), (3, 255)])
def test_masks_are_written_unfiltered_as_0_and_255(values, tmp_path):
    """Any nonzero value is lesion; masks take ISA-L without the row filter (their runs compress best)."""
    rng = np.random.default_rng(values[1])
    m = np.where(rng.random((37, 53)) > 0.5, values[1], values[0]).astype(np.uint8)
    m[10:30, 5:45] = values[1]  # a solid region among the noise
    path = outputs.save_mask_png(tmp_path / "m.png", m)
    want = np.where(m != 0, 255, 0).astype(np.uint8)
    for decode in (_decode_cv2, _decode_pil):
        np.testing.assert_array_equal(decode(path.read_bytes()), want)
    assert path.read_bytes() == png.encode_png(want, up=False)


def test_rejects_what_png_cannot_hold():
    with pytest.raises(ValueError, match="cannot encode"):
        png.encode_png(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="cannot encode"):
        png.encode_png(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="cannot encode"):
        png.encode_png(np.zeros((0, 4, 3), np.uint8))


def test_outputs_fall_back_to_opencv_without_isal(monkeypatch, real_photo, tmp_path):
    monkeypatch.setattr(png, "isal_zlib", None)
    assert png.encode_png(real_photo) is None
    path = outputs.save_png(tmp_path / "x.png", real_photo)
    np.testing.assert_array_equal(_decode_pil(path.read_bytes()), real_photo)


@pytest.fixture
def real_photo(real_data_dir) -> np.ndarray:
    """A real dermoscopy image at 1024 x 768 (the size the batch benchmark uses)."""
    bgr = cv2.imread(str(sorted((real_data_dir / "images").iterdir())[0]))
    return np.ascontiguousarray(cv2.cvtColor(cv2.resize(bgr, (1024, 768)), cv2.COLOR_BGR2RGB))
