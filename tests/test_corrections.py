"""Clinicians' corrections as training data: saved by lesionseg.data.corrections, read back by the
pairing code, and the shipped model fine-tuned on them with the real command line."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import draw_lesion
from lesionseg.cli.main import main
from lesionseg.data.corrections import correction_pairs, list_corrections, save_correction
from lesionseg.data.pairing import DataError, collect_dir_pairs
from lesionseg.data.split import make_split

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights"


def lesion(seed: int, size: tuple[int, int] = (96, 128)) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic photo and its {0, 1} mask."""
    rgb, mask255 = draw_lesion(*size, seed=seed)
    return rgb, (mask255 > 0).astype(np.uint8)


@pytest.fixture
def corrections(tmp_path: Path) -> Path:
    """Four saved corrections of 96x128 photos, as the app saves them."""
    folder = tmp_path / "corrections"
    for seed in range(4):
        rgb, mask = lesion(100 + seed)
        save_correction(folder, rgb, mask, {"clicks": [{"x": 10.5, "y": 20.0, "positive": True}],
                                            "threshold": np.float32(0.3), "model": "weights"})
    return folder


def test_a_saved_correction_is_a_training_pair_with_its_record(tmp_path: Path) -> None:
    rgb, mask = lesion(0)
    meta = {"clicks": [(12.0, 30.5, True)], "strokes": [], "threshold": np.float32(0.3), "model": "weights"}
    rec = save_correction(tmp_path / "new" / "corr", rgb, mask, meta)
    assert rec.id.startswith("corr_") and rec.image.parent.name == "images" and rec.mask.parent.name == "masks"
    assert rec.image.name == f"{rec.id}.jpg" and rec.mask.name == f"{rec.id}_segmentation.png"
    photo = np.asarray(Image.open(rec.image).convert("RGB"), dtype=np.int16)
    assert photo.shape == rgb.shape and np.abs(photo - rgb).mean() < 5  # quality-95 JPEG of a noisy photo
    saved_mask = np.asarray(Image.open(rec.mask))
    assert saved_mask.dtype == np.uint8 and set(np.unique(saved_mask)) == {0, 255}
    assert np.array_equal(saved_mask > 0, mask > 0)
    side = json.loads(rec.sidecar.read_text())
    assert side["id"] == rec.id and side["width"] == 128 and side["height"] == 96
    assert side["mask_area_px"] == int(mask.sum()) and side["saved_utc"].endswith("Z")
    assert side["image"] == f"images/{rec.id}.jpg" and side["meta"]["threshold"] == pytest.approx(0.3)
    assert side["meta"]["clicks"] == [[12.0, 30.5, True]]
    # a {0, 255} mask is the same correction; the pairing code reads both, and not the sidecars
    rec2 = save_correction(tmp_path / "new" / "corr", rgb, mask * 255, {})
    assert np.array_equal(np.asarray(Image.open(rec2.mask)), saved_mask)
    assert list_corrections(tmp_path / "new" / "corr") == sorted([rec, rec2], key=lambda r: r.id)
    assert sorted(p.id for p in collect_dir_pairs([tmp_path / "new" / "corr"])) == sorted([rec.id, rec2.id])
    assert list_corrections(tmp_path / "absent") == []


def test_an_id_is_never_overwritten_even_by_concurrent_saves(tmp_path: Path) -> None:
    folder = tmp_path / "corr"
    rgb, mask = lesion(1)
    first = save_correction(folder, rgb, mask, {}, image_id="patient 7/../photo.jpg")
    assert first.id == "patient_7_.._photo.jpg"  # no path separators left: it stays inside the folder
    assert first.image.parent == folder / "images"
    before = first.image.read_bytes(), first.mask.read_bytes(), first.sidecar.read_bytes()
    other_rgb, other_mask = lesion(2)
    second = save_correction(folder, other_rgb, other_mask, {}, image_id=first.id)
    assert second.id == f"{first.id}_2"
    assert (first.image.read_bytes(), first.mask.read_bytes(), first.sidecar.read_bytes()) == before
    # eight saves racing for one id: eight ids, eight complete corrections
    saved, errors = [], []

    def save() -> None:
        try:
            saved.append(save_correction(folder, rgb, mask, {}, image_id="same"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=save) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.id for r in saved) == sorted(["same"] + [f"same_{n}" for n in range(2, 9)])
    assert len(list_corrections(folder)) == 10
    assert not [p for p in folder.rglob(".*")]  # no temporary files left


def test_bad_inputs_fail_with_one_line(tmp_path: Path) -> None:
    rgb, mask = lesion(3)
    with pytest.raises(ValueError) as e:
        save_correction(tmp_path / "c", rgb, mask[:, :100], {})
    assert str(e.value) == ("the mask is 100x96 but the photo is 128x96 (width x height); "
                            "pass the mask at the photo's size")
    bad = mask.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match=r"\{0, 1\} or \{0, 255\}, got values \[0, 1, 7\]"):
        save_correction(tmp_path / "c", rgb, bad, {})
    with pytest.raises(ValueError, match="uint8 RGB array"):
        save_correction(tmp_path / "c", rgb.astype(np.float32), mask, {})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_correction(tmp_path / "c", rgb, mask, {"x": object()})
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OSError) as e:
        save_correction(tmp_path / "a_file" / "corr", rgb, mask, {})
    assert "cannot save the correction" in str(e.value) and "writable" in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "c").exists()  # inputs are checked before anything is written


def test_an_interrupted_save_is_not_training_data(corrections: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A save cut short after the photo and the mask (the sidecar, written last, is missing)."""
    rgb, mask = lesion(9)
    Image.fromarray(rgb).save(corrections / "images" / "cut_short.jpg")
    Image.fromarray(mask * 255).save(corrections / "masks" / "cut_short_segmentation.png")
    with caplog.at_level(logging.WARNING):
        pairs = collect_dir_pairs([corrections])
    assert len(pairs) == 4 and "cut_short" not in {p.id for p in pairs}
    assert "cut_short.jpg" in caplog.text
    assert len(list_corrections(corrections)) == 4
    empty = tmp_path / "empty"
    (empty / "corrections").mkdir(parents=True)
    with pytest.raises(DataError, match="no saved corrections"):
        correction_pairs(empty)


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="the shipped weights/ are not checked out")
def test_finetune_the_shipped_model_on_corrections(corrections: Path, make_dataset, tmp_path: Path) -> None:
    """train_cli.py --finetune: the shipped model, 2 steps at 64 px on 12 original + 4 corrected pairs."""
    originals = make_dataset(n=12, size=(64, 80))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "train_cli.py"), "--finetune", str(SHIPPED), "--data-dir",
                        str(corrections), "--mix-data", str(originals), "--img-size", "64", "--epochs", "1",
                        "--max-steps-per-epoch", "2", "--batch-size", "4", "--workers", "0", "--seed", "7",
                        "--output-dir", str(out), "--run-name", "ft"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    run = out / "ft"
    # the original split, with its test part untouched; the corrections in training and validation
    split = json.loads((run / "split.json").read_text())
    original = make_split([f"ISIC_{i:07d}" for i in range(12)], 0.1, 0.1, 7)
    corrected = {rec.id for rec in list_corrections(corrections)}
    assert split["test"] == original["test"]
    assert set(split["train"]) == set(original["train"]) | (corrected - set(split["val"]))
    assert len(set(split["val"]) & corrected) == 1 and set(original["val"]) <= set(split["val"])
    cfg = (run / "config.yaml").read_text()
    assert "lr: 0.0002\n" in cfg  # a tenth of the default
    # a normal best model folder, with the shipped model's architecture, trained on from its weights
    best = run / "models" / "best_model"
    assert {p.name for p in best.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    config = json.loads((best / "config.json").read_text())
    assert config["encoder_name"] == "mobilenet_v2" and config["inference_img_size"] == 64
    from safetensors.torch import load_file

    tuned, shipped = load_file(str(best / "model.safetensors")), load_file(str(SHIPPED / "model.safetensors"))
    key = next(k for k in shipped if k.endswith("weight") and shipped[k].ndim == 4)
    change = (tuned[key].float() - shipped[key].float()).norm() / shipped[key].float().norm()
    assert 0 < change < 0.1, f"{key} moved by {change:.3f}: not trained on from the shipped weights"
    from lesionseg.inference.predictor import Predictor

    rgb, _ = lesion(100)
    prediction = Predictor.from_weights(best, device="cpu").predict(rgb)
    assert prediction.mask.shape == rgb.shape[:2]


def test_finetune_with_a_missing_weights_folder_exits_2_with_one_line(
        corrections: Path, make_dataset, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    originals = make_dataset(n=4)
    code = main(["train", "--finetune", str(tmp_path / "no_such_weights"), "--data-dir", str(corrections),
                 "--mix-data", str(originals), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: --finetune ") and "no_such_weights" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
