"""scripts/lever_by_size.py: a lever's per-photo differences grouped by the lesion's size, read from
evaluation files and mask PNGs in the layout the recorded runs use."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from lever_by_size import by_size, find_lever  # noqa: E402

N = 8  # photos; lesion i covers a growing share of its photo


def _write_run(folder: Path, name: str, dice: list[float], precision: list[float]) -> None:
    rows = [{"id": f"ISIC_{i:07d}", "dice": d, "iou": d, "recall": 0.9, "precision": p}
            for i, (d, p) in enumerate(zip(dice, precision))]
    (folder / name).mkdir(parents=True)
    (folder / name / "eval_test.json").write_text(json.dumps({"n_images": N, "per_image": rows}))


@pytest.fixture
def records(tmp_path: Path) -> tuple[dict, Path, Path]:
    data = tmp_path / "data" / "isic2017_train_256"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(N):
        mask = np.zeros((40, 40), np.uint8)
        side = 4 + 4 * i  # 4 px to 32 px
        mask[:side, :side] = 255
        cv2.imwrite(str(data / "masks" / f"ISIC_{i:07d}_segmentation.png"), mask)
        cv2.imwrite(str(data / "images" / f"ISIC_{i:07d}.jpg"), np.full((40, 40, 3), 128, np.uint8))
    runs = tmp_path / "runs"
    base = [0.9] * N
    # the lever loses 0.4 on the smallest lesion and 0.02 on the next, in precision; gains 0.01 on the largest two
    lever = [0.5, 0.88, 0.9, 0.9, 0.9, 0.9, 0.91, 0.91]
    for seed in (1, 2):
        _write_run(runs, f"lever_seed{seed}", lever, lever)
        _write_run(runs, f"base_seed{seed}", base, base)
    config = {"baselines": {}, "levers": [
        {"lever": "the lever, against the same seeds", "runs": ["lever_seed1", "lever_seed2"],
         "against": ["base_seed1", "base_seed2"], "paired_seeds": True},
        {"lever": "the lever, against all seeds", "runs": ["lever_seed1"], "against": ["base_seed1"]}]}
    return config, runs, tmp_path / "data"


def test_the_loss_is_placed_on_the_smallest_lesions_and_named(records: tuple[dict, Path, Path]) -> None:
    config, runs, data = records
    text = by_size(find_lever(config, "same seeds"), config, "own test", data, worst=1, folder=runs)
    rows = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| 0.") or line.startswith("| all")]
    assert len(rows) == 5
    dice = [float(r[2]) for r in rows]
    # quartiles of two photos each: the smallest pair loses (0.5 + 0.88) / 2 - 0.9, the largest pair gains 0.01
    assert dice[0] == pytest.approx(-0.21, abs=1e-4) and dice[1] == pytest.approx(0.0, abs=1e-4)
    assert dice[3] == pytest.approx(0.01, abs=1e-4)
    assert dice[4] == pytest.approx((-0.4 - 0.02 + 0.02) / N, abs=1e-4)
    assert float(rows[0][4]) == pytest.approx(-0.21, abs=1e-4)  # the precision column follows the files
    # the one photo that loses most is the smallest lesion, and it holds all of the net loss and more
    assert "ISIC_0000000 (-0.400, lesion 0.010)" in text
    assert "together -0.0500 of the mean -0.0500, 100% of the loss" in text
    # photos that lose more than the net loss get no share, which would read over 100%
    three = by_size(find_lever(config, "same seeds"), config, "own test", data, worst=3, folder=runs)
    assert "(together -0.0525 of the mean -0.0500):" in three


def test_a_name_matching_several_levers_or_none_lists_them(records: tuple[dict, Path, Path]) -> None:
    config, _, _ = records
    with pytest.raises(SystemExit, match="2 levers match 'the lever'; narrow it down"):
        find_lever(config, "the lever")
    with pytest.raises(SystemExit, match="(?s)0 levers match 'zoom'; choose one.*against all seeds"):
        find_lever(config, "zoom")


def test_a_missing_mask_or_data_folder_is_one_clear_error(records: tuple[dict, Path, Path]) -> None:
    config, runs, data = records
    row = find_lever(config, "same seeds")
    (data / "isic2017_train_256" / "masks" / "ISIC_0000003_segmentation.png").unlink()
    with pytest.raises(SystemExit, match="no mask for 1 scored photos, e.g. ISIC_0000003"):
        by_size(row, config, "own test", data, folder=runs)
    with pytest.raises(SystemExit, match="data folder not found"):
        by_size(row, config, "own test", data / "elsewhere", folder=runs)


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "isic2017_train_256").is_dir(),
                    reason="../shared/data is absent: the committed records need their masks")
def test_the_command_reads_the_committed_records() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "lever_by_size.py"), "six seeds, each against",
                        "--set", "own test", "--worst", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| all | 200 |" in r.stdout and r.stdout.count("| 0.") == 4
