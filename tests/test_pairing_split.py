"""Image/mask pairing, data-folder layouts and deterministic splits."""
from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from PIL import Image

from lesionseg.data.pairing import DATA_DIR_LAYOUTS, DataError, collect_pairs, pair_files, resolve_data_dir
from lesionseg.data.split import load_split, make_split, save_split


# -- pairing ----------------------------------------------------------------------------------------

def test_isic_naming_pairs_every_image(make_dataset):
    root = make_dataset(3)
    report = pair_files(root / "images", root / "masks")
    assert report.problems() == []
    assert [p.id for p in report.pairs] == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
    p = report.pairs[1]
    assert p.image == root / "images" / "ISIC_0000001.jpg"
    assert p.mask == root / "masks" / "ISIC_0000001_segmentation.png"


def test_custom_mask_suffix(make_dataset):
    root = make_dataset(2, mask_suffix="_mask")
    assert [p.id for p in collect_pairs(root / "images", root / "masks", mask_suffix="_mask")] == \
        ["ISIC_0000000", "ISIC_0000001"]
    # with the default suffix the masks do not match
    with pytest.raises(DataError, match="image without mask: ISIC_0000000.jpg"):
        collect_pairs(root / "images", root / "masks")


def test_masks_named_like_their_images(make_dataset):
    root = make_dataset(2, mask_suffix="")
    pairs = collect_pairs(root / "images", root / "masks", mask_suffix="")
    assert [p.mask.name for p in pairs] == ["ISIC_0000000.png", "ISIC_0000001.png"]
    # the default suffix also accepts masks without it
    assert len(collect_pairs(root / "images", root / "masks")) == 2


def test_hidden_and_non_image_files_are_ignored(make_dataset):
    root = make_dataset(2)
    (root / "images" / ".DS_Store").write_bytes(b"junk")
    (root / "images" / "._ISIC_0000000.jpg").write_bytes(b"macOS resource fork")
    (root / "images" / "LICENSE.txt").write_text("licence")
    (root / "masks" / "Thumbs.db").write_bytes(b"junk")
    assert len(collect_pairs(root / "images", root / "masks")) == 2


@pytest.mark.parametrize("images_name, masks_name", DATA_DIR_LAYOUTS)
def test_resolve_data_dir_layouts(tmp_path, images_name, masks_name):
    (tmp_path / images_name).mkdir()
    (tmp_path / masks_name).mkdir()
    assert resolve_data_dir(tmp_path) == (tmp_path / images_name, tmp_path / masks_name)


def test_resolve_data_dir_official_isic2018_names(tmp_path):
    (tmp_path / "ISIC2018_Task1-2_Training_Input").mkdir()
    (tmp_path / "ISIC2018_Task1_Training_GroundTruth").mkdir()
    images, masks = resolve_data_dir(tmp_path)
    assert images.name == "ISIC2018_Task1-2_Training_Input"
    assert masks.name == "ISIC2018_Task1_Training_GroundTruth"


def test_resolve_data_dir_errors(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        resolve_data_dir(tmp_path / "nope")
    (tmp_path / "images").mkdir()  # masks folder missing
    with pytest.raises(DataError, match="images/ \\+ masks/") as err:
        resolve_data_dir(tmp_path)
    assert "ISIC2018_Task1-2_Training_Input" in str(err.value)


def test_missing_or_empty_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images found"):
        pair_files(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(DataError, match="masks folder not found"):
        pair_files(tmp_path / "images", tmp_path / "nope")


def test_every_mismatch_is_reported_together(make_dataset):
    root = make_dataset(5)
    images, masks = root / "images", root / "masks"
    (masks / "ISIC_0000000_segmentation.png").unlink()                          # image without mask
    Image.new("L", (10, 10)).save(masks / "ISIC_0009999_segmentation.png")       # mask without image
    Image.new("L", (30, 20)).save(masks / "ISIC_0000002_segmentation.png")       # mask of another size
    (images / "ISIC_0000003.jpg").write_text("not an image")                     # unreadable image

    report = pair_files(images, masks)
    assert report.images_without_mask == ["ISIC_0000000.jpg"]
    assert report.masks_without_image == ["ISIC_0009999_segmentation.png"]
    assert [p.id for p in report.pairs] == ["ISIC_0000001", "ISIC_0000004"]
    assert len(report.bad_files) == 2

    with pytest.raises(DataError) as err:
        collect_pairs(images, masks)
    msg = str(err.value)
    assert msg.startswith("4 problem(s)")
    for name in ("ISIC_0000000.jpg", "ISIC_0009999_segmentation.png", "ISIC_0000002_segmentation.png",
                 "ISIC_0000003.jpg"):
        assert name in msg
    assert "30x20" in msg and "64x48" in msg

    # not strict: the good pairs are used and the problems logged
    assert [p.id for p in collect_pairs(images, masks, strict=False)] == ["ISIC_0000001", "ISIC_0000004"]


def test_long_problem_lists_are_shortened(make_dataset):
    root = make_dataset(1)
    for i in range(25):
        Image.new("L", (4, 4)).save(root / "masks" / f"orphan_{i:02d}_segmentation.png")
    with pytest.raises(DataError, match="and 5 more"):
        collect_pairs(root / "images", root / "masks")


def test_no_usable_pairs(make_dataset):
    root = make_dataset(1)
    (root / "masks" / "ISIC_0000000_segmentation.png").unlink()
    with pytest.raises(DataError, match="no usable image/mask pairs"):
        collect_pairs(root / "images", root / "masks", strict=False)


def test_real_data_pairs(real_data_dir):
    images, masks = resolve_data_dir(real_data_dir)
    report = pair_files(images, masks)
    assert report.problems() == []
    assert len(report.pairs) == 2000
    ids = (real_data_dir / "ids.txt").read_text().split()
    assert sorted(p.id for p in report.pairs) == sorted(ids)


# -- splits -----------------------------------------------------------------------------------------

IDS = [f"ISIC_{i:07d}" for i in range(100)]


def test_split_is_deterministic_disjoint_and_complete():
    a = make_split(IDS, 0.1, 0.1, seed=42)
    shuffled = IDS[:]
    random.Random(1).shuffle(shuffled)
    assert make_split(shuffled, 0.1, 0.1, seed=42) == a  # input order does not matter
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (80, 10, 10)
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
    assert sets[0] | sets[1] | sets[2] == set(IDS)
    assert all(a[k] == sorted(a[k]) for k in a)


def test_split_depends_on_seed():
    assert make_split(IDS, 0.1, 0.1, seed=1)["val"] != make_split(IDS, 0.1, 0.1, seed=2)["val"]


def test_split_is_stable_across_releases():
    """Changing this split would silently change which images earlier runs validated on."""
    s = make_split([f"ISIC_{i:07d}" for i in range(10)], 0.2, 0.2, seed=42)
    assert s["val"] == ["ISIC_0000003", "ISIC_0000007"]
    assert s["test"] == ["ISIC_0000002", "ISIC_0000008"]


def test_split_small_datasets():
    assert make_split(["a"], 0.1, 0.1, seed=0) == {"train": ["a"], "val": [], "test": []}
    s = make_split(["a", "b", "c"], 0.1, 0.1, seed=0)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (2, 1, 0)
    s = make_split(list("abcdef"), 0.1, 0.0, seed=0)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (5, 1, 0)


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (1.0, 0.0), (-0.1, 0.1)])
def test_split_invalid_fractions(val, test):
    with pytest.raises(DataError, match="fraction"):
        make_split(IDS, val, test, seed=0)


def test_save_and_load_split_round_trip(tmp_path):
    split = make_split(IDS, 0.1, 0.1, seed=7)
    path = tmp_path / "run" / "split.json"
    save_split(split, path)
    assert json.loads(path.read_text()) == split
    assert load_split(path, IDS) == split
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temporary file left


def test_load_split_with_unknown_ids_fails(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": IDS[:5] + ["ISIC_9999999"], "val": ["ISIC_8888888"], "test": []}))
    with pytest.raises(DataError, match="2 split IDs have no image/mask pair") as err:
        load_split(path, IDS)
    assert "ISIC_9999999" in str(err.value)


def test_load_split_bad_files(tmp_path):
    with pytest.raises(DataError, match="cannot read split file"):
        load_split(tmp_path / "missing.json", IDS)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read split file"):
        load_split(tmp_path / "bad.json", IDS)
    (tmp_path / "list.json").write_text(json.dumps(IDS))
    with pytest.raises(DataError, match="JSON object"):
        load_split(tmp_path / "list.json", IDS)


def test_load_split_refuses_overlapping_parts(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": IDS[:5], "val": IDS[4:6], "test": []}))
    with pytest.raises(DataError, match="ISIC_0000004 \\(train/val\\)"):
        load_split(path, IDS)
    path.write_text(json.dumps({"train": "ISIC_0000001", "val": []}))
    with pytest.raises(DataError, match="list of IDs"):
        load_split(path, IDS)


def test_load_split_fills_missing_parts(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": IDS[:3], "val": IDS[3:4]}))
    assert load_split(path, IDS) == {"train": IDS[:3], "val": IDS[3:4], "test": []}
