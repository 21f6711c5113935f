"""albumentations pipelines. Training and inference share ``normalize`` so preprocessing matches."""
from __future__ import annotations

import functools
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402


from .presets import AUGMENT_PRESETS, ROBUST_PRESETS, ZOOM_P  # noqa: E402


def shades_of_gray(rgb: np.ndarray, power: float = 6.0) -> np.ndarray:
    """Shades of Gray colour constancy (Finlayson & Trezzi, 2004): scale each channel so that the
    image's Minkowski p-norm illuminant estimate becomes neutral grey. (H, W, 3) uint8 -> same."""
    x = rgb.astype(np.float32)
    illum = np.power(np.mean(np.power(x, power), axis=(0, 1)), 1.0 / power)
    gain = illum.mean() / np.maximum(illum, 1e-6)
    return np.clip(x * gain, 0, 255).astype(np.uint8)


class ShadesOfGray(A.ImageOnlyTransform):
    """Colour constancy as augmentation: the model sees each photo both as its camera saw it and
    with the illuminant removed, so another camera's colour cast matters less."""

    def __init__(self, power: float = 6.0, p: float = 0.5):
        super().__init__(p=p)
        self.power = power

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return shades_of_gray(img, self.power)


class ChannelGain(A.ImageOnlyTransform):
    """A random colour cast (per-channel gain), as another camera's white balance would give."""

    def __init__(self, limit: float = 0.15, p: float = 0.5):
        super().__init__(p=p)
        self.limit = limit

    def get_params(self) -> dict:
        return {"gain": np.array([self.py_random.uniform(1 - self.limit, 1 + self.limit) for _ in range(3)],
                                 np.float32)}

    def apply(self, img: np.ndarray, gain: np.ndarray = None, **params) -> np.ndarray:
        return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


class PenMarks(A.ImageOnlyTransform):
    """Ink lines and ruler-like ticks drawn on the skin (the mask is unchanged), so that the outline
    learns not to follow the surgical-marker circles and rulers seen in clinic photos."""

    COLOURS = ((70, 40, 110), (40, 50, 120), (30, 30, 30), (20, 90, 60))

    def __init__(self, max_marks: int = 3, p: float = 0.2):
        super().__init__(p=p)
        self.max_marks = max_marks

    def get_params(self) -> dict:
        r = self.py_random
        marks = []
        for _ in range(r.randint(1, self.max_marks)):
            pts = np.array([[r.random(), r.random()] for _ in range(r.randint(2, 5))], np.float32)
            marks.append((pts, self.COLOURS[r.randrange(len(self.COLOURS))], r.randint(1, 4), r.random() < 0.3))
        return {"marks": marks}

    def apply(self, img: np.ndarray, marks: list = (), **params) -> np.ndarray:
        out = img.copy()
        h, w = img.shape[:2]
        for pts, colour, width, ticks in marks:
            xy = (pts * [w - 1, h - 1]).astype(np.int32)
            cv2.polylines(out, [xy], False, colour, width, cv2.LINE_AA)
            if ticks:  # a ruler: short perpendicular ticks along the first segment
                (x0, y0), (x1, y1) = xy[0], xy[1]
                n = max(2, int(np.hypot(x1 - x0, y1 - y0) // 8))
                dx, dy = (y1 - y0), -(x1 - x0)
                norm = max(np.hypot(dx, dy), 1.0)
                for t in np.linspace(0, 1, n):
                    cx, cy = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                    ex, ey = cx + 5 * dx / norm, cy + 5 * dy / norm
                    cv2.line(out, (int(cx), int(cy)), (int(ex), int(ey)), colour, 1, cv2.LINE_AA)
        return out


class LesionZoom(A.DualTransform):
    """A window centred on the lesion and about its size, resized back to the image's size: the
    lesion fills the frame or is cut on every side, the framing on which the independent ISIC sets
    fail (a frame-filling lesion outlined only at its darkest core). The random crops of the other
    presets rarely give it, since their windows are placed without regard to the lesion.

    ``scale``: the window's side as a multiple of the lesion's bounding-box side (below 1 the
    lesion is cut on every side); ``shift``: how far the window's centre strays from the box's, as
    a fraction of the window. An image without lesion pixels is left as it is."""

    def __init__(self, scale: tuple[float, float] = (0.5, 1.3), shift: float = 0.15, p: float = ZOOM_P):
        super().__init__(p=p)
        self.scale, self.shift = scale, shift

    @property
    def targets_as_params(self) -> list[str]:
        return ["mask"]

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        mask = data["mask"]
        h, w = mask.shape[:2]
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            return {"window": (0, 0, h, w)}
        r = self.py_random
        side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) * r.uniform(*self.scale)
        # at most a 3x zoom: beyond it the upsampled pixels are a blur no camera gives
        side = int(round(min(max(side, min(h, w) / 3), min(h, w))))
        cy = (ys.min() + ys.max()) / 2 + r.uniform(-self.shift, self.shift) * side
        cx = (xs.min() + xs.max()) / 2 + r.uniform(-self.shift, self.shift) * side
        # moved inside the image rather than padded: a padded edge is a framing no camera gives
        y0 = int(round(min(max(cy - side / 2, 0), h - side)))
        x0 = int(round(min(max(cx - side / 2, 0), w - side)))
        return {"window": (y0, x0, y0 + side, x0 + side)}

    def _crop(self, x: np.ndarray, window: tuple[int, int, int, int], interpolation: int) -> np.ndarray:
        y0, x0, y1, x1 = window
        h, w = x.shape[:2]
        return cv2.resize(x[y0:y1, x0:x1], (w, h), interpolation=interpolation)

    def apply(self, img: np.ndarray, window: tuple[int, int, int, int] = (0, 0, 0, 0), **params) -> np.ndarray:
        return self._crop(img, window, cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, window: tuple[int, int, int, int] = (0, 0, 0, 0),
                      **params) -> np.ndarray:
        return self._crop(mask, window, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "shift")


def train_transform(img_size: int, augment: bool = True, preset: str = "standard",
                    zoom_p: float = ZOOM_P) -> A.Compose:
    """Augmentations suited to dermoscopy: a lesion has no up or down, devices differ in colour,
    zoom and sharpness, and hair / vignetting are common. Input images are already ``img_size``.

    ``preset``: ``standard`` (the original recipe) or ``robust``, which adds what photos from other
    clinics differ in: framing (crops that zoom in until the lesion fills or leaves the frame, and
    aspect changes that undo or redo a squash-resize), colour constancy and colour casts, stronger
    blur and JPEG loss, and pen / ruler marks; ``framing`` is ``robust`` with closer crops (down to
    10% of the image's area instead of 25%, a little more often), for photos framed tighter still;
    ``zoom`` is ``robust`` with :class:`LesionZoom` before the random crop, a window placed on the
    lesion itself so that it fills the frame or is cut on every side, on ``zoom_p`` of the photos.
    """
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; valid: {', '.join(AUGMENT_PRESETS)}")
    if not augment:
        return A.Compose([A.Resize(img_size, img_size)])
    robust = preset in ROBUST_PRESETS
    # area range, probability of the zoom-in crop: the crops of scripts/framing_check.py lie at 0.44 and 0.25
    crop_scale, crop_p = {"standard": ((0.6, 1.0), 0.3), "robust": ((0.25, 1.0), 0.6),
                          "framing": ((0.1, 1.0), 0.7), "zoom": ((0.25, 1.0), 0.6)}[preset]
    geometric = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(scale=(0.75, 1.25), translate_percent=(-0.08, 0.08), rotate=(-30, 30), shear=(-8, 8),
                 border_mode=cv2.BORDER_REFLECT_101, p=0.7),
        *([LesionZoom(p=zoom_p)] if preset == "zoom" else []),
        A.RandomResizedCrop(size=(img_size, img_size), scale=crop_scale,
                            ratio=(0.6, 1.67) if robust else (0.8, 1.25), p=crop_p),
        A.Resize(img_size, img_size),
    ]
    if not robust:
        photometric = [
            A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.2, hue=0.04, p=0.7),
            A.OneOf([
                A.GaussianBlur(blur_limit=(3, 5)),
                A.GaussNoise(std_range=(0.02, 0.06)),
                A.ImageCompression(quality_range=(50, 90)),
            ], p=0.3),
        ]
    else:
        photometric = [
            A.OneOf([ShadesOfGray(p=1.0), ChannelGain(0.15, p=1.0)], p=0.5),
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8),
            A.RandomGamma(gamma_limit=(70, 140), p=0.3),
            A.OneOf([
                A.GaussianBlur(blur_limit=(3, 7)),
                A.GaussNoise(std_range=(0.02, 0.08)),
                A.ImageCompression(quality_range=(30, 90)),
                A.Downscale(scale_range=(0.35, 0.7)),
            ], p=0.4),
            PenMarks(p=0.15),
        ]
    return A.Compose(geometric + photometric + [
        A.CLAHE(clip_limit=2.0, p=0.1),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.03, 0.08), hole_width_range=(0.03, 0.08),
                        fill=0, p=0.1),
    ])


def _standardise(rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(H, W, 3) -> float32 (H, W, 3): the arithmetic of :func:`normalize`, element by element."""
    x = rgb.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return x


@functools.lru_cache(maxsize=8)
def _lookup_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(1, 256, 3) float32: :func:`_standardise` of every uint8 value, per channel."""
    values = np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 256, 1), 3, axis=2)
    return np.ascontiguousarray(_standardise(values, mean, std))


def normalize(rgb: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W), scaled to [0, 1] then standardised per channel.

    uint8 images go through a 256-entry table per channel holding the very same float32
    arithmetic, so the result is bit-identical and one pass over the pixels instead of four
    (it is part of every photo's latency)."""
    mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 == len(mean_t) == len(std_t):
        x = cv2.LUT(np.ascontiguousarray(rgb), _lookup_table(mean_t, std_t))
    else:
        x = _standardise(rgb, mean_t, std_t)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB image to size x size; INTER_AREA when shrinking avoids aliasing."""
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    interp = cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)
