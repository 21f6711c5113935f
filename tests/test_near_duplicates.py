"""scripts/near_duplicates.py: the nearest training photo over eight orientations, the flag, and the
committed result matching the committed split."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from near_duplicates import (OUT, SPLIT, card_sentence, features, flagged, flagged_ids,  # noqa: E402
                             isic_number, nearest, split_table)

DATA = ROOT.parent / "shared" / "data"


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_nearest_finds_a_turned_copy_and_leaves_self_out() -> None:
    rng = np.random.default_rng(0)
    train = _unit(rng, 6, 8, 16)
    query = _unit(rng, 2, 8, 16)
    query[1, 5] = train[3, 0]  # one orientation of query 1 is training photo 3 upright
    best, idx = nearest(query, train)
    assert idx[1] == 3 and best[1] == pytest.approx(1.0)
    assert best[0] < 0.99
    self_best, self_idx = nearest(train, train, exclude_self=True)
    assert (self_idx != np.arange(6)).all() and (self_best < 0.99).all()
    plain_best, plain_idx = nearest(train, train)
    assert (plain_idx == np.arange(6)).all() and plain_best == pytest.approx(np.ones(6))


def test_flag_by_archive_neighbour_or_similarity() -> None:
    assert isic_number("ISIC_0012756") == 12756
    assert flagged("ISIC_0000010", {"nearest_train": "ISIC_0000013", "similarity": 0.5}, 0.9)
    assert not flagged("ISIC_0000010", {"nearest_train": "ISIC_0000014", "similarity": 0.9}, 0.9)
    assert flagged("ISIC_0000010", {"nearest_train": "ISIC_0005000", "similarity": 0.91}, 0.9)


def test_committed_result_covers_the_committed_split() -> None:
    result = json.loads(OUT.read_text())
    split = json.loads(SPLIT.read_text())
    for part in ("train", "val", "test"):
        assert sorted(result["parts"][part]) == sorted(split[part])
        train = set(split["train"])
        assert all(r["nearest_train"] in train for r in result["parts"][part].values())
    assert all(i not in train for i in result["parts"]["external"])
    n_flagged = len(flagged_ids(result))
    table = split_table(result)
    assert f"(n={n_flagged}) / none (n={200 - n_flagged})" in table
    assert "| mbv2_nofull_robust_e12_seed43 |" in table


def test_card_sentence_scores_the_photos_without_a_near_copy(tmp_path: Path) -> None:
    result = {"cutoff": 0.9, "parts": {"test": {
        "ISIC_0000010": {"nearest_train": "ISIC_0000012", "similarity": 0.7},  # archive neighbour
        "ISIC_0000100": {"nearest_train": "ISIC_0009000", "similarity": 0.95},  # above the cutoff
        "ISIC_0000200": {"nearest_train": "ISIC_0009000", "similarity": 0.8},
        "ISIC_0000300": {"nearest_train": "ISIC_0009000", "similarity": 0.8}}}}
    path = tmp_path / "near.json"
    path.write_text(json.dumps(result))
    dice = {"ISIC_0000010": 1.0, "ISIC_0000100": 1.0, "ISIC_0000200": 0.8, "ISIC_0000300": 0.6}
    rows = {"per_image": [{"id": i, "dice": d} for i, d in dice.items()]}
    sentence = card_sentence(rows, path)
    assert sentence.startswith("2 of the 4 held-out test photos (50%)")
    assert "test Dice is 0.7000 (0.8500 with them)" in sentence
    # another split, no per-image rows or no file: no sentence rather than a wrong one
    assert card_sentence({"per_image": rows["per_image"][:3]}, path) == ""
    assert card_sentence({"dice_mean": 0.85}, path) == ""
    assert card_sentence(rows, tmp_path / "absent.json") == ""


@pytest.mark.skipif(not (DATA / "isic2017_train_256" / "images").is_dir(),
                    reason="../shared/data/isic2017_train_256 not present (runs in CI)")
def test_features_match_a_turned_and_flipped_photo(tmp_path: Path) -> None:
    from PIL import Image

    src = DATA / "isic2017_train_256" / "images" / "ISIC_0000000.jpg"
    other = DATA / "isic2017_train_256" / "images" / "ISIC_0000001.jpg"
    turned = tmp_path / "turned.png"  # lossless, so only the orientation differs
    Image.open(src).transpose(Image.Transpose.ROTATE_90).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(turned)
    f = features([src, other, turned])
    assert f.shape[:2] == (3, 8)
    assert np.linalg.norm(f, axis=-1) == pytest.approx(np.ones((3, 8)), abs=1e-4)
    best, idx = nearest(f[2:], f[:2])
    assert idx[0] == 0 and best[0] > 0.999
    assert nearest(f[1:2], f[:1])[0][0] < best[0] - 0.05
