"""The bad-input matrix: every hostile or odd input built as real files in a temporary folder.

Each :class:`ImageCase` writes one file (or folder) and says what every door (CLI, Predictor, app)
must do with it: work (``ok``, with the upright mask size ``shape``) or refuse it with a one-line
message that names the file and contains ``needle``. Mask-set and weights builders follow the
same idea for ``evaluate`` / ``train`` and for model loading.
"""
from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

Builder = Callable[[Path], None]


def photo(h: int = 40, w: int = 50, seed: int = 0) -> np.ndarray:
    """A dermoscopy-like RGB uint8 image: skin tone with a dark off-centre ellipse (asymmetric)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - 0.4 * h) / (0.25 * h + 0.5)) ** 2 + ((xx - 0.6 * w) / (0.2 * w + 0.5)) ** 2 <= 1
    img = np.empty((h, w, 3), np.float64)
    img[:] = (215, 165, 145)
    img[inside] = (100, 60, 40)
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid all-black 1-bit PNG of width x height: a few KB on disk, 400 MP once decoded."""
    comp = zlib.compressobj(9)
    rows = (b"\x00" * (1 + (width + 7) // 8)) * 500
    idat = b"".join(comp.compress(rows) for _ in range(height // 500)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(encode(Image.fromarray(photo(16, 16)), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def exif_rotated_jpeg(h: int = 40, w: int = 60, orientation: int = 6) -> bytes:
    """A w x h JPEG as stored, with EXIF orientation 6 (display rotated 90°: h wide, w high)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(photo(h, w)), "JPEG", quality=92, exif=exif.tobytes())


def _write(data: bytes | Callable[[], bytes]) -> Builder:
    return lambda p: p.write_bytes(data() if callable(data) else data)


def _save(make: Callable[[], Image.Image], fmt: str, **kwargs) -> Builder:
    return lambda p: make().save(p, format=fmt, **kwargs)


def _frames(fmt: str) -> Builder:
    def build(p: Path) -> None:
        frames = [Image.fromarray(photo(30, 36, seed=s)) for s in range(3)]
        if fmt == "GIF":
            frames = [f.convert("P") for f in frames]
        frames[0].save(p, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return build


def _truncated_jpeg(p: Path) -> None:
    data = encode(Image.fromarray(photo(120, 160)), "JPEG", quality=95)
    p.write_bytes(data[: len(data) // 2])


def _directory(p: Path) -> None:
    p.mkdir()
    (p / "inside.jpg").write_bytes(encode(Image.fromarray(photo()), "JPEG"))


@dataclass(frozen=True)
class ImageCase:
    """One input file: ``ok`` -> a mask of ``shape`` (H, W); else a message containing ``needle``."""

    id: str
    filename: str
    build: Builder
    ok: bool
    needle: str = ""
    shape: tuple[int, int] | None = None
    app: bool = True  # can be uploaded to the app (a directory cannot)


_rgb = lambda h=40, w=50: Image.fromarray(photo(h, w))  # noqa: E731

IMAGE_CASES: list[ImageCase] = [
    ImageCase("empty", "empty.jpg", _write(b""), False, "empty"),
    ImageCase("truncated_jpeg", "truncated.jpg", _truncated_jpeg, False, "truncated"),
    ImageCase("text_named_jpg", "notes.jpg", _write(b"patient notes, not a picture\n" * 20), False,
              "not a readable image"),
    ImageCase("png_named_jpg", "png_inside.jpg", _save(_rgb, "PNG"), True, shape=(40, 50)),
    ImageCase("one_pixel", "one_px.png", _save(lambda: _rgb(1, 1), "PNG"), True, shape=(1, 1)),
    ImageCase("three_pixels", "three_px.jpg", _save(lambda: _rgb(3, 3), "JPEG"), True, shape=(3, 3)),
    ImageCase("png_16bit", "sixteen_bit.png",
              _save(lambda: Image.fromarray(photo()[..., 0].astype(np.uint16) * 257), "PNG"), True, shape=(40, 50)),
    ImageCase("grayscale", "gray.jpg", _save(lambda: _rgb().convert("L"), "JPEG"), True, shape=(40, 50)),
    ImageCase("rgba", "rgba.png", _save(lambda: _rgb().convert("RGBA"), "PNG"), True, shape=(40, 50)),
    ImageCase("palette", "palette.png", _save(lambda: _rgb().convert("P"), "PNG"), True, shape=(40, 50)),
    ImageCase("cmyk_jpeg", "cmyk.jpg", _save(lambda: _rgb().convert("CMYK"), "JPEG"), True, shape=(40, 50)),
    ImageCase("animated_gif", "animated.gif", _frames("GIF"), True, shape=(30, 36)),
    ImageCase("multipage_tiff", "pages.tif", _frames("TIFF"), True, shape=(30, 36)),
    ImageCase("exif_rotated", "rotated.jpg", _write(exif_rotated_jpeg), True, shape=(60, 40)),
    ImageCase("huge_20000", "huge.jpg", _write(lambda: jpeg_claiming(20000, 20000)), False, "megapixels"),
    ImageCase("png_bomb", "bomb.png", _write(png_bomb), False, "megapixels"),
    ImageCase("directory", "folder.jpg", _directory, False, "directory", app=False),
]
GOOD = ImageCase("good", "good.jpg", _save(lambda: _rgb(48, 64), "JPEG", quality=95), True, shape=(48, 64))


def build_images(folder: Path, cases: list[ImageCase] = IMAGE_CASES, with_good: bool = True) -> dict[str, Path]:
    """Write every case (and :data:`GOOD`) into ``folder``; {case id: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for case in cases + ([GOOD] if with_good else []):
        path = folder / case.filename
        case.build(path)
        out[case.id] = path
    return out


# -- image / mask folders for evaluate and train --------------------------------------------------

def _mask(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 1
    return m


def labelled_set(root: Path, n: int = 4, size: tuple[int, int] = (40, 48), style: str = "255") -> Path:
    """``root/images/ISIC_000000i.jpg`` + ``root/masks/ISIC_000000i_segmentation.png``.

    style: "255" ({0, 255} gray), "01" ({0, 1} gray) or "rgb" (white lesion, RGB file).
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n):
        Image.fromarray(photo(h, w, seed=i)).save(root / "images" / f"ISIC_000000{i}.jpg", quality=95)
        m = _mask(h, w)
        img = {"255": Image.fromarray(m * 255), "01": Image.fromarray(m),
               "rgb": Image.fromarray(np.repeat(m[..., None] * 255, 3, axis=2))}[style]
        img.save(root / "masks" / f"ISIC_000000{i}_segmentation.png")
    return root


@dataclass(frozen=True)
class MaskCase:
    """A labelled folder built by ``build(root)``; ``ok`` or refused with ``needle`` naming ``culprit``."""

    id: str
    build: Callable[[Path], None]
    ok: bool
    needle: str = ""
    culprit: str = ""


def _bad_size(root: Path) -> None:
    labelled_set(root)
    Image.fromarray(_mask(20, 20) * 255).save(root / "masks" / "ISIC_0000002_segmentation.png")


def _missing_mask(root: Path) -> None:
    labelled_set(root)
    (root / "masks" / "ISIC_0000001_segmentation.png").unlink()


def _mask_without_image(root: Path) -> None:
    labelled_set(root)
    (root / "images" / "ISIC_0000003.jpg").unlink()


def _corrupt_mask(root: Path) -> None:
    labelled_set(root)
    (root / "masks" / "ISIC_0000000_segmentation.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")


def _empty(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)


MASK_CASES: list[MaskCase] = [
    MaskCase("masks_0_1", lambda r: labelled_set(r, style="01"), True),
    MaskCase("masks_rgb", lambda r: labelled_set(r, style="rgb"), True),
    MaskCase("mask_other_size", _bad_size, False, "20x20", "ISIC_0000002_segmentation.png"),
    MaskCase("missing_mask", _missing_mask, False, "image without mask", "ISIC_0000001.jpg"),
    MaskCase("mask_without_image", _mask_without_image, False, "mask without image", "ISIC_0000003_segmentation.png"),
    MaskCase("corrupt_mask", _corrupt_mask, False, "not a readable image", "ISIC_0000000_segmentation.png"),
    MaskCase("empty_folder", _empty, False, "no images found", "images"),
]


# -- weights ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightsCase:
    """``build(good_weights_dir, target_dir)`` returns the --weights value; refused with ``needle``."""

    id: str
    build: Callable[[Path, Path], str]
    needle: str


def _copy(good: Path, target: Path) -> Path:
    shutil.copytree(good, target)
    return target


def _other_arch(good: Path, target: Path) -> str:
    _copy(good, target)
    (target / "config.json").write_text(json.dumps({"architectures": ["ViTForImageClassification"],
                                                    "hidden_size": 768, "num_attention_heads": 12}))
    return str(target)


def _truncated(good: Path, target: Path) -> str:
    f = _copy(good, target) / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return str(target)


def pickled_weights(good: Path, target: Path) -> str:
    """config.json + best.pth (a pickled {"model": state_dict}) and no safetensors file."""
    import torch
    from safetensors.torch import load_file

    target.mkdir(parents=True)
    shutil.copy(good / "config.json", target / "config.json")
    torch.save({"model": load_file(str(good / "model.safetensors")), "epoch": 1}, target / "best.pth")
    return str(target)


WEIGHTS_CASES: list[WeightsCase] = [
    WeightsCase("missing_folder", lambda g, t: str(t / "nowhere"), "weights folder not found"),
    WeightsCase("other_architecture", _other_arch, "not a DSAttentionUNet config"),
    WeightsCase("truncated_safetensors", _truncated, "corrupt or truncated"),
    WeightsCase("pickle_refused", pickled_weights, "pickle"),
    WeightsCase("hub_offline_uncached", lambda g, t: "lesionseg-tests-nobody/not-a-cached-model", "not in the Hub cache"),
]
