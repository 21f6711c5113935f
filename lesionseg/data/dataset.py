"""In-memory segmentation dataset: pairs are decoded and resized once, augmented per sample."""
from __future__ import annotations

import logging
from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .io import ImageLoadError, load_image, load_mask
from .pairing import DataError, Pair
from .transforms import normalize, resize_rgb

log = logging.getLogger(__name__)


class LesionDataset(Dataset):
    """Image/mask pairs at ``img_size``; items are (image (3, S, S) float32, mask (1, S, S) float32, id).

    Decoding once up front (small training images fit in memory) keeps the CPU busy with the model,
    not with JPEG decoding every epoch, and surfaces every unreadable file before the first epoch.
    """

    def __init__(self, pairs: Sequence[Pair], img_size: int, transform: A.Compose | None,
                 mean: list[float], std: list[float]):
        self.ids = [p.id for p in pairs]
        self.transform, self.mean, self.std = transform, mean, std
        self.images = np.empty((len(pairs), img_size, img_size, 3), np.uint8)
        self.masks = np.empty((len(pairs), img_size, img_size), np.uint8)
        errors = []
        for i, p in enumerate(pairs):
            try:
                img = load_image(p.image, min_side=img_size)
                mask = load_mask(p.mask)
            except ImageLoadError as e:
                errors.append(str(e))
                continue
            self.images[i] = resize_rgb(img, img_size)
            self.masks[i] = cv2.resize(mask, (img_size, img_size), interpolation=cv2.INTER_NEAREST)
        if errors:
            raise DataError(f"{len(errors)} unreadable file(s):\n  " + "\n  ".join(errors[:20]))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        img, mask = self.images[i], self.masks[i]
        if self.transform is not None:
            out = self.transform(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        x = torch.from_numpy(normalize(img, self.mean, self.std))
        y = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
        return x, y, self.ids[i]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's augmentation its own seed.

    Forked workers inherit the main process's albumentations RNG, so without this every worker
    would draw the same augmentation parameters in the same order. torch seeds worker k with
    base + k, base drawn from the loader's generator, which the training loop seeds per epoch:
    an epoch's augmentations stay reproducible, and differ between workers.
    """
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset if info is not None else None
    dataset = getattr(dataset, "dataset", dataset)  # a Subset wraps the dataset
    if getattr(dataset, "transform", None) is not None:
        dataset.transform.set_random_seed(torch.initial_seed() % 2**32)
