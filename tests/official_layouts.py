"""Tiny archives and folders in the official dataset layouts, built at test time from synthetic photos.

Each builder writes what the official download holds (same archive names, folders inside, file
names, companion files) with a few small synthetic photos (40x30 to 120x90 px, a dark ellipse on
skin tone) and returns ``(sources, ids)``: the paths to pass to ``lesionseg data prepare`` and
the ids that should come out. Nothing here comes from real data.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from conftest import draw_lesion

SIZES = [(30, 40), (90, 120), (45, 60), (60, 50), (72, 96)]  # (height, width)


def photo(i: int) -> tuple[np.ndarray, np.ndarray]:
    """The i-th synthetic photo (RGB uint8) and its {0, 255} mask."""
    h, w = SIZES[i % len(SIZES)]
    return draw_lesion(h, w, seed=i)


def encode(a: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def isic_pair(ids: list[str], image_dir: str, mask_dir: str, mask_suffix: str = "_segmentation",
              start: int = 0) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(image members, mask members) of an ISIC-style pair of archives."""
    images, masks = {}, {}
    for k, ident in enumerate(ids):
        rgb, mask = photo(start + k)
        images[f"{image_dir}/{ident}.jpg"] = encode(rgb, "JPEG")
        masks[f"{mask_dir}/{ident}{mask_suffix}.png"] = encode(mask, "PNG")
    return images, masks


def isic2016(root: Path) -> tuple[list[Path], list[str]]:
    ids = [f"ISIC_{i:07d}" for i in range(3)]
    imgs, masks = isic_pair(ids, "ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth",
                            "_Segmentation")
    return [write_zip(root / "ISBI2016_ISIC_Part1_Training_Data.zip", imgs),
            write_zip(root / "ISBI2016_ISIC_Part1_Training_GroundTruth.zip", masks)], ids


def isic2017(root: Path) -> tuple[list[Path], list[str]]:
    ids = [f"ISIC_{i:07d}" for i in range(3)]
    imgs, masks = isic_pair(ids, "ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth")
    for ident in ids:  # the superpixel files that share the images' folder
        imgs[f"ISIC-2017_Training_Data/{ident}_superpixels.png"] = encode(np.zeros((8, 8, 3), np.uint8), "PNG")
    imgs["ISIC-2017_Training_Data/ISIC-2017_Training_Data_metadata.csv"] = b"image_id,age_approximate,sex\n"
    return [write_zip(root / "ISIC-2017_Training_Data.zip", imgs),
            write_zip(root / "ISIC-2017_Training_Part1_GroundTruth.zip", masks)], ids


def isic2018_members(part: str = "Training", ids: list[str] | None = None,
                     start: int = 0) -> dict[str, dict[str, bytes]]:
    """{archive name: members} of one ISIC 2018 Task 1 part (Training, Validation or Test)."""
    ids = ids or [f"ISIC_{i:07d}" for i in range(start, start + 3)]
    image_dir, mask_dir = f"ISIC2018_Task1-2_{part}_Input", f"ISIC2018_Task1_{part}_GroundTruth"
    imgs, masks = isic_pair(ids, image_dir, mask_dir, start=start)
    for folder, members in ((image_dir, imgs), (mask_dir, masks)):
        members[f"{folder}/LICENSE.txt"] = b"CC-BY-NC\n"
        members[f"{folder}/ATTRIBUTION.txt"] = b"ISIC Archive\n"
    return {f"{image_dir}.zip": imgs, f"{mask_dir}.zip": masks}


def isic2018(root: Path) -> tuple[list[Path], list[str]]:
    sources, ids = [], []
    for part, start in (("Training", 0), ("Validation", 10)):
        for name, members in isic2018_members(part, start=start).items():
            sources.append(write_zip(root / name, members))
        ids += [f"ISIC_{i:07d}" for i in range(start, start + 3)]
    return sources, ids


def ham10000(root: Path) -> tuple[list[Path], list[str]]:
    ids = [f"ISIC_{24306 + i:07d}" for i in range(4)]
    parts: list[dict[str, bytes]] = [{}, {}]
    masks = {}
    for k, ident in enumerate(ids):
        rgb, mask = photo(20 + k)
        parts[k % 2][f"{ident}.jpg"] = encode(rgb, "JPEG")  # the image archives hold bare files
        masks[f"HAM10000_segmentations_lesion_tschandl/{ident}_segmentation.png"] = encode(mask, "PNG")
    sources = [write_zip(root / "HAM10000_images_part_1.zip", parts[0]),
               write_zip(root / "HAM10000_images_part_2.zip", parts[1]),
               write_zip(root / "HAM10000_segmentations_lesion_tschandl.zip", masks)]
    (root / "HAM10000_metadata.csv").write_bytes(b"lesion_id,image_id,dx\n")
    return sources, ids


def ph2(root: Path) -> tuple[list[Path], list[str]]:
    """PH2's extracted folder (it ships as a .rar): nested BMP folders, ROI folders, txt and xlsx."""
    ids = ["IMD002", "IMD003", "IMD004"]
    base = "PH2Dataset/PH2 Dataset images"
    files = {"PH2Dataset/PH2_dataset.txt": b"|| Name || Histological Diagnosis ||\n",
             "PH2Dataset/PH2_dataset.xlsx": b"PK\x03\x04 not really a sheet"}
    for k, ident in enumerate(ids):
        rgb, mask = photo(30 + k)
        files[f"{base}/{ident}/{ident}_Dermoscopic_Image/{ident}.bmp"] = encode(rgb, "BMP")
        files[f"{base}/{ident}/{ident}_lesion/{ident}_lesion.bmp"] = encode(mask, "BMP")
        files[f"{base}/{ident}/{ident}_roi/{ident}_R1_Label4.bmp"] = encode(mask, "BMP")
    return [write_tree(root / "PH2Dataset_extracted", files)], ids


LAYOUTS: dict[str, Callable[[Path], tuple[list[Path], list[str]]]] = {
    "isic2016": isic2016, "isic2017": isic2017, "isic2018": isic2018, "ham10000": ham10000, "ph2": ph2,
}
