"""One image/mask pair to the prepared layout: one geometric transform for both, then JPEG and PNG.

The transform is planned once in the photo's full-size pixel coordinates (:func:`plan`) and
applied to the image and to its mask alike, so the two stay aligned at any size:

- ``squash``: the whole photo resized to size x size (the aspect ratio is not kept);
- ``crop``: the centred square of side min(W, H), resized;
- ``pad``: the centred square of side max(W, H), the photo in it and black around (mask 0), resized.

A JPEG photo is decoded at a reduced DCT scale that keeps at least twice the output size (much
faster for 10-24 MP photos); its source box is then scaled by exactly that factor, so the image
lands where its full-size mask does. Images are shrunk with an area (box) filter and enlarged
bicubically; masks are shrunk by area / enlarged bilinearly and cut again at 128 into {0, 255}.
"""
from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..io import ImageLoadError, decode_image, load_mask, public_message

RESIZE_MODES = ("squash", "crop", "pad")
JPEG_QUALITY = 95
MASK_THRESHOLD = 128
_EXIF_ORIENTATION = 0x0112


class PairError(ValueError):
    """A pair that cannot be prepared; ``str()`` is one line naming the file and the reason."""


@dataclass(frozen=True)
class Settings:
    """How a prepared folder is made; recorded in its manifest (``size`` None: full size)."""

    size: int | None = 256
    resize: str = "squash"
    jpeg_quality: int = JPEG_QUALITY

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize!r}; valid: {', '.join(RESIZE_MODES)}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be a positive number of pixels or none, got {self.size}")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mask_threshold": MASK_THRESHOLD,
                "filters": "image: area down, bicubic up; mask: area down, bilinear up, then >= 128"}


@dataclass(frozen=True)
class Geometry:
    """``box``: the source region (x0, y0, x1, y1 in full-size pixel-edge coordinates; it may reach
    outside the photo, which is then filled) that becomes the whole output of ``size`` (w, h)."""

    box: tuple[float, float, float, float]
    size: tuple[int, int]


@dataclass(frozen=True)
class Converted:
    image: bytes                 # JPEG
    mask: bytes                  # PNG, 8-bit {0, 255}
    source_size: tuple[int, int]  # (width, height) of the photo as displayed
    size: tuple[int, int]        # (width, height) written


def plan(width: int, height: int, size: int | None, mode: str) -> Geometry:
    """The transform of ``mode`` for a ``width`` x ``height`` photo to ``size`` (None: no resize)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; valid: {', '.join(RESIZE_MODES)}")
    if mode == "squash":
        return Geometry((0, 0, width, height), (size, size) if size else (width, height))
    # crop: the centred square of side min(W, H); pad: the centred square of side max(W, H)
    side = min(width, height) if mode == "crop" else max(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    if mode == "pad":
        x0, y0 = -((side - width) // 2), -((side - height) // 2)
    return Geometry((x0, y0, x0 + side, y0 + side), (size or side, size or side))


def _pad_to(img: Image.Image, box: tuple[float, ...], fill: Any) -> tuple[Image.Image, tuple[float, ...]]:
    """``img`` with ``fill`` around it as far as ``box`` reaches outside it, and the box moved with it."""
    x0, y0, x1, y1 = box
    left, top = math.ceil(max(0.0, -x0)), math.ceil(max(0.0, -y0))
    right, bottom = math.ceil(max(0.0, x1 - img.width)), math.ceil(max(0.0, y1 - img.height))
    if not (left or top or right or bottom):
        return img, box
    canvas = Image.new(img.mode, (img.width + left + right, img.height + top + bottom), fill)
    canvas.paste(img, (left, top))
    return canvas, (x0 + left, y0 + top, x1 + left, y1 + top)


def render(img: Image.Image, geo: Geometry, scale: float = 1.0, *, fill: Any = 0,
           shrink: Image.Resampling = Image.Resampling.BOX,
           enlarge: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Apply ``geo`` to ``img``, an image decoded at 1/``scale`` of the full size; where the box
    reaches outside the photo (pad), ``fill``."""
    img, (x0, y0, x1, y1) = _pad_to(img, tuple(c / scale for c in geo.box), fill)
    w, h = geo.size
    if (w, h) == (x1 - x0, y1 - y0) and float(x0).is_integer() and float(y0).is_integer():
        return img.crop((int(x0), int(y0), int(x1), int(y1)))  # no resampling: an exact copy
    smaller = w <= x1 - x0 and h <= y1 - y0
    return img.resize((w, h), shrink if smaller else enlarge, box=(x0, y0, x1, y1))


def _header(data: bytes) -> tuple[str | None, str | None, int]:
    """(format, mode, EXIF orientation) from the header; (None, None, 1) when unreadable (the
    decoder then reports why)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format, im.mode, int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 - decode_image gives the one-line reason
        return None, None, 1


def _scale(full: int, decoded: int) -> float:
    """The JPEG DCT scale (1, 2, 4 or 8) that turned ``full`` pixels into ``decoded`` (ceil(full / k))."""
    for k in (1, 2, 4, 8):
        if -(-full // k) == decoded:
            return float(k)
    return full / decoded


def convert_pair(image: bytes, mask: bytes, image_name: str, mask_name: str, settings: Settings) -> Converted:
    """Decode, check and transform one pair; PairError (one line) when it cannot be used."""
    fmt, mode, orientation = _header(image)
    # reduced-scale decoding only where the decoded pixels map to the full size by one factor
    min_side = 2 * settings.size if settings.size and orientation == 1 else None
    try:
        rgb, (h, w) = decode_image(image, min_side=min_side)
    except ImageLoadError as e:
        raise PairError(public_message(e, image_name)) from None
    try:
        m = load_mask(mask)
    except ImageLoadError as e:
        raise PairError(public_message(e, mask_name)) from None
    if m.shape != (h, w):
        turned = f" as displayed (EXIF orientation {orientation})" if orientation != 1 else ""
        raise PairError(f"{mask_name}: mask is {m.shape[1]}x{m.shape[0]} but its image {image_name} is "
                        f"{w}x{h}{turned} (re-export the mask at the image's size)")
    geo = plan(w, h, settings.size, settings.resize)
    sx, sy = _scale(w, rgb.shape[1]), _scale(h, rgb.shape[0])
    if sx != sy:
        raise PairError(f"{image_name}: decoded at an unexpected scale ({rgb.shape[1]}x{rgb.shape[0]} of {w}x{h})")
    out_mask = np.asarray(render(Image.fromarray(m * np.uint8(255)), geo, enlarge=Image.Resampling.BILINEAR))
    mask_png = _encode(".png", np.where(out_mask >= MASK_THRESHOLD, 255, 0).astype(np.uint8))
    if settings.size is None and settings.resize == "squash" and fmt == "JPEG" and mode == "RGB" and orientation == 1:
        jpeg = image  # full size, same pixels: keep the original JPEG rather than compress it again
    else:
        bgr = cv2.cvtColor(np.asarray(render(Image.fromarray(rgb), geo, sx)), cv2.COLOR_RGB2BGR)
        jpeg = _encode(".jpg", bgr, cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality,
                       cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
    return Converted(jpeg, mask_png, (w, h), geo.size)


def _encode(ext: str, pixels: np.ndarray, *params: int) -> bytes:
    """The file bytes of ``pixels`` (gray or BGR) in the format of ``ext``, made in memory."""
    ok, buf = cv2.imencode(ext, pixels, list(params))
    if not ok:
        raise PairError(f"cannot encode a {pixels.shape} image as {ext}")
    return buf.tobytes()
