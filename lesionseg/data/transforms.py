"""albumentations pipelines. Training and inference share ``normalize`` so preprocessing matches."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402


def train_transform(img_size: int, augment: bool = True) -> A.Compose:
    """Augmentations suited to dermoscopy: a lesion has no up or down, devices differ in colour,
    zoom and sharpness, and hair / vignetting are common. Input images are already ``img_size``."""
    if not augment:
        return A.Compose([A.Resize(img_size, img_size)])
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(scale=(0.75, 1.25), translate_percent=(-0.08, 0.08), rotate=(-30, 30), shear=(-8, 8),
                 border_mode=cv2.BORDER_REFLECT_101, p=0.7),
        A.RandomResizedCrop(size=(img_size, img_size), scale=(0.6, 1.0), ratio=(0.8, 1.25), p=0.3),
        A.Resize(img_size, img_size),
        A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.2, hue=0.04, p=0.7),
        A.OneOf([
            A.GaussianBlur(blur_limit=(3, 5)),
            A.GaussNoise(std_range=(0.02, 0.06)),
            A.ImageCompression(quality_range=(50, 90)),
        ], p=0.3),
        A.CLAHE(clip_limit=2.0, p=0.1),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.03, 0.08), hole_width_range=(0.03, 0.08),
                        fill=0, p=0.1),
    ])


def normalize(rgb: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W), scaled to [0, 1] then standardised per channel."""
    x = rgb.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB image to size x size; INTER_AREA when shrinking avoids aliasing."""
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    interp = cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)
