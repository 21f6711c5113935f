"""Safe image and mask reading: content-sniffed, size-limited, always RGB uint8 / binary uint8.

Every failure raises :class:`ImageLoadError`, a one-line message naming the file, the problem
and what to do; no other exception escapes these functions for bad file content.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_PIXELS_ENV = "LESIONSEG_MAX_PIXELS"
# 100 MP covers a 12,000 x 8,000 camera; a 20,000 x 20,000 bomb (400 MP) is refused unread.
BUILTIN_MAX_PIXELS = 100_000_000

# We do our own, clearer pixel check before decoding.
Image.MAX_IMAGE_PIXELS = None


class ImageLoadError(ValueError):
    """An input file that cannot be used as an image or mask; ``str()`` is a one-line message."""

    def __init__(self, path: str | os.PathLike | None, problem: str, fix: str = ""):
        self.path = str(path) if path is not None else "<upload>"
        self.problem = problem
        msg = f"{self.path}: {problem}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """``max_pixels`` if given, else ``$LESIONSEG_MAX_PIXELS`` read now (so ``--max-pixels`` and a
    changed environment apply), else 100 MP. An unparsable or non-positive value means 100 MP."""
    if max_pixels is not None:
        return int(max_pixels)
    try:
        value = int(os.environ.get(MAX_PIXELS_ENV, BUILTIN_MAX_PIXELS))
    except ValueError:
        return BUILTIN_MAX_PIXELS
    return value if value > 0 else BUILTIN_MAX_PIXELS


# the limit at import time; the loaders read the environment again at each call
DEFAULT_MAX_PIXELS = max_pixels_limit()


def _open(source: str | os.PathLike | bytes, max_pixels: int | None) -> Image.Image:
    name = None if isinstance(source, bytes) else source
    max_pixels = max_pixels_limit(max_pixels)
    if not isinstance(source, bytes):
        p = Path(source)
        if p.is_dir():
            raise ImageLoadError(p, "is a directory, not an image file", "pass an image file")
        if not p.exists():
            raise ImageLoadError(p, "file not found", "check the path")
        if not p.is_file():
            raise ImageLoadError(p, "is not a regular file (a pipe, socket or device)", "pass an image file")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise ImageLoadError(p, f"cannot be read ({e.strerror or e})", "check file permissions") from None
    else:
        data = source
    if len(data) == 0:
        raise ImageLoadError(name, "empty file (0 bytes)", "re-export or re-copy the image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not a readable image (unknown or corrupt format)",
                             f"use one of {', '.join(IMAGE_EXTENSIONS)}") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for hostile bytes
        raise ImageLoadError(name, f"not a readable image ({type(e).__name__})",
                             f"use one of {', '.join(IMAGE_EXTENSIONS)}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageLoadError(name, f"{w}x{h} = {w * h / 1e6:.0f} megapixels exceeds the limit of "
                                   f"{max_pixels / 1e6:g} MP",
                             "downscale it, or raise the limit with LESIONSEG_MAX_PIXELS or --max-pixels")
    if w < 1 or h < 1:
        raise ImageLoadError(name, f"has an invalid size {w}x{h}")
    return img


def _decode(img: Image.Image, name: str | os.PathLike | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except Exception as e:  # noqa: BLE001 - truncated and corrupt data raise OSError, SyntaxError, ...
        raise ImageLoadError(name, f"truncated or corrupt image data ({type(e).__name__}: {e})".replace("\n", " "),
                             "re-export or re-copy the image") from None
    return img


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F) -> RGB uint8 (H, W, 3)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = a.max() if a.size else 0
        # 16-bit and float data: rescale the stored range to 8 bits instead of clipping it
        scale = 255.0 / (65535.0 if hi > 255 and img.mode.startswith("I") and hi <= 65535 else max(hi, 1.0))
        a = np.clip(a * scale, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # composite transparent areas on white, as a viewer shows them
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_image_size(path: str | os.PathLike | bytes, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) from the header only, after the same checks as :func:`load_image`."""
    return _open(path, max_pixels).size


def decode_image(source: str | os.PathLike | bytes, max_pixels: int | None = None,
                 min_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image once: (RGB uint8 (h, w, 3) with EXIF orientation applied, full size (H, W) as displayed).

    ``min_side``: for JPEGs, let the decoder skip detail the model will not use by decoding at a
    reduced scale (1/2, 1/4, 1/8) that keeps both sides at least ``min_side``; the array is then
    smaller than the full size, which comes from the same open file (header size, turned when the
    EXIF orientation turned the picture). Multi-page files (GIF, TIFF) yield their first frame.
    """
    name = None if isinstance(source, bytes) else source
    img = _open(source, max_pixels)
    w, h = img.size
    if min_side and img.format == "JPEG":
        scale = max(1, min(w, h) // min_side)
        if scale >= 2:
            img.draft("RGB", (w // scale, h // scale))
    img = _decode(img, name)
    before = img.size
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the picture
        pass
    turned = img.size != before  # exif_transpose swapped width and height (orientations 5-8)
    return _to_rgb(img), ((w, h) if turned else (h, w))


def load_image(source: str | os.PathLike | bytes, max_pixels: int | None = None,
               min_side: int | None = None) -> np.ndarray:
    """Read an image file (or its bytes) as RGB uint8 of shape (H, W, 3), EXIF orientation applied.

    ``min_side``: reduced-scale JPEG decoding, see :func:`decode_image` (which also returns the
    full size).
    """
    return decode_image(source, max_pixels, min_side)[0]


def load_mask(source: str | os.PathLike | bytes, max_pixels: int | None = None) -> np.ndarray:
    """Read a mask as uint8 {0, 1} of shape (H, W).

    Works for {0, 255}, {0, 1} and RGB / palette masks: a mask whose maximum is 1 is taken as
    {0, 1}; otherwise pixels at or above 128 (on the brightest channel) are lesion. Transparent
    pixels of masks with an alpha channel are background.
    """
    name = None if isinstance(source, bytes) else source
    img = _decode(_open(source, max_pixels), name)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # alpha is not a lesion channel (an opaque RGBA mask would be all lesion): transparent
        # pixels are background, opaque ones keep their colour
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    elif img.mode not in ("1", "L", "RGB") and not img.mode.startswith(("I", "F")):
        img = img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV: read as displayed colours
    a = np.asarray(img)
    if a.ndim == 3:
        a = a.max(axis=2)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        a = a / 257.0 if a.max() > 255 else a
    if a.size and a.max() <= 1:
        return (a > 0).astype(np.uint8)
    return (a >= 128).astype(np.uint8)


def public_message(err: BaseException, name: str) -> str:
    """The error's one-line message with the file's path (as the error names it) replaced by ``name``:
    what a user may see about a file without learning where it was stored."""
    msg = " ".join(str(err).split())
    path = getattr(err, "path", None)
    if path and path != name:
        msg = msg.replace(str(path), name)
    return msg


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
