"""evaluate() and the evaluate / predict / inference commands, end to end on real files."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lesionseg.cli.main import main  # noqa: E402
from lesionseg.data.io import load_mask  # noqa: E402
from lesionseg.data.pairing import DataError  # noqa: E402
from lesionseg.data.transforms import normalize  # noqa: E402
from lesionseg.evaluation import RESULT_KEYS, evaluate, evaluate_arrays, format_table  # noqa: E402
from lesionseg.inference import Predictor  # noqa: E402
from lesionseg.metrics import METRICS, image_metrics  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(__file__).resolve().parents[2] / "shared/data/isic2017_train_256"
EXPECTED_KEYS = ["n_images", "threshold", "dice_mean", "dice_std", "iou_mean", "iou_std", "recall_mean",
                 "precision_mean", "specificity_mean", "accuracy_mean", "thresholded_jaccard", "failure_rate",
                 "pooled_dice", "pooled_iou", "per_image"]


def disc_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Skin-coloured (h, w, 3) uint8 with a dark elliptic 'lesion'; its (h, w) {0, 1} mask."""
    img = np.clip(np.full((h, w, 3), (205, 160, 140), np.float64) + rng.normal(0, 6, (h, w, 3)), 0, 255)
    mask = np.zeros((h, w), np.uint8)
    c = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h))
    ax = (max(1, int(rng.uniform(0.12, 0.3) * w)), max(1, int(rng.uniform(0.12, 0.3) * h)))
    cv2.ellipse(mask, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    img[mask > 0] = np.clip(np.array([95, 60, 45]) + rng.normal(0, 6, (int(mask.sum()), 3)), 0, 255)
    return img.astype(np.uint8), mask


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for ~2 s to find dark discs, saved as config.json + model.safetensors."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    m = DSAttentionUNet(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8], inference_img_size=48,
                        deep_supervision=False, encoder_dropout=0.0)
    data = [disc_image(rng, 48, 48) for _ in range(64)]
    x = torch.from_numpy(np.stack([normalize(i, m.preprocess_mean, m.preprocess_std) for i, _ in data]))
    y = torch.from_numpy(np.stack([k for _, k in data]).astype(np.float32))[:, None]
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    m.train()
    for _ in range(40):
        idx = torch.randint(0, len(data), (8,))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    d = tmp_path_factory.mktemp("weights")
    m.eval().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def predictor(weights: Path) -> Predictor:
    return Predictor.from_weights(weights, device="cpu", fast=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/ISIC_000000{i}.jpg|png + masks/ISIC_000000{i}_segmentation.png, odd sizes."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(11)
    for i, (h, w) in enumerate([(250, 333), (97, 131), (300, 200), (64, 64)]):
        img, mask = disc_image(rng, h, w)
        ext = ".png" if i % 2 else ".jpg"
        Image.fromarray(img).save(root / "images" / f"ISIC_000000{i}{ext}", quality=95)
        Image.fromarray(mask * 255).save(root / "masks" / f"ISIC_000000{i}_segmentation.png")
    return root


def test_evaluate_arrays_hand_checked_values() -> None:
    gt_a = np.zeros((10, 10), np.uint8)
    gt_a[0:4, 0:5] = 1  # 20 px
    prob_a = np.full((10, 10), 0.2, np.float32)
    prob_a[0:2, 0:5] = 0.8  # 10 TP
    prob_a[5:7, 0:5] = 0.8  # 10 FP  -> FN 10, TN 70
    gt_b = np.zeros((10, 10), np.uint8)
    gt_b[0:5] = 1  # 50 px, predicted exactly, from a 20 x 20 map resized to the mask's size
    prob_b = np.full((20, 20), 0.1, np.float32)
    prob_b[0:10] = 0.9
    r = evaluate_arrays(["a", "b"], [prob_a, prob_b], [gt_a, gt_b], threshold=0.5)
    assert list(r) == EXPECTED_KEYS == list(RESULT_KEYS)
    a, b = r["per_image"]
    assert a == pytest.approx({"id": "a", "dice": 0.5, "iou": 1 / 3, "recall": 0.5, "precision": 0.5,
                               "specificity": 0.875, "accuracy": 0.8})
    assert b["dice"] == b["iou"] == b["accuracy"] == 1.0
    assert r["dice_mean"] == pytest.approx(0.75) and r["dice_std"] == pytest.approx(0.25)
    assert r["iou_mean"] == pytest.approx(2 / 3)
    assert r["thresholded_jaccard"] == pytest.approx(0.5)  # IoU 1/3 < 0.65 counts as 0
    assert r["failure_rate"] == pytest.approx(0.5)
    assert r["pooled_dice"] == pytest.approx(120 / 140) and r["pooled_iou"] == pytest.approx(60 / 80)
    assert r["n_images"] == 2 and r["threshold"] == 0.5
    empty = evaluate_arrays(["a"], [prob_a], [gt_a], threshold=0.9)  # nothing predicted
    assert empty["recall_mean"] == 0.0 and empty["precision_mean"] == 1.0
    assert "dice" in format_table(r) and "0.7500" in format_table(r)


def test_evaluate_synthetic(predictor: Predictor, dataset: Path) -> None:
    r = evaluate(predictor, dataset / "images", dataset / "masks")
    assert list(r) == EXPECTED_KEYS
    assert r["n_images"] == 4 == len(r["per_image"]) and r["threshold"] == predictor.threshold
    for m in METRICS:
        assert r[f"{m}_mean"] == pytest.approx(np.mean([row[m] for row in r["per_image"]]))
        assert all(0.0 <= row[m] <= 1.0 for row in r["per_image"])
    assert r["dice_std"] == pytest.approx(np.std([row["dice"] for row in r["per_image"]]))
    assert r["dice_mean"] > 0.85  # the tiny model does find the discs
    # each row equals scoring predict_file's full-size mask against the mask file
    row = r["per_image"][0]
    _, pred = predictor.predict_file(dataset / "images" / f"{row['id']}.jpg")
    assert image_metrics(pred.mask, load_mask(dataset / "masks" / f"{row['id']}_segmentation.png")) == \
        pytest.approx({k: v for k, v in row.items() if k != "id"})
    json.dumps(r)  # JSON-ready


def test_evaluate_ids_and_threshold(predictor: Predictor, dataset: Path) -> None:
    r = evaluate(predictor, dataset / "images", dataset / "masks", ids=["ISIC_0000002", "ISIC_0000000"],
                 threshold=0.3, tta=True)
    assert [row["id"] for row in r["per_image"]] == ["ISIC_0000002", "ISIC_0000000"]
    assert r["threshold"] == 0.3 and r["n_images"] == 2
    with pytest.raises(DataError, match="ISIC_9"):
        evaluate(predictor, dataset / "images", dataset / "masks", ids=["ISIC_9"])


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real ISIC data not found at {REAL_DATA}")
def test_evaluate_real_images(predictor: Predictor) -> None:
    ids = sorted(p.stem for p in (REAL_DATA / "images").glob("ISIC_*.jpg"))[:3]
    r = evaluate(predictor, REAL_DATA / "images", REAL_DATA / "masks", ids=ids)
    assert list(r) == EXPECTED_KEYS and r["n_images"] == 3
    for k in EXPECTED_KEYS[2:-1]:
        assert 0.0 <= r[k] <= 1.0, k


def test_cli_evaluate_writes_json(weights: Path, dataset: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "ids.txt").write_text("ISIC_0000001\n# comment\nISIC_0000003\n\n")
    out = tmp_path / "res" / "eval.json"
    rc = main(["evaluate", "--weights", str(weights), "--data-dir", str(dataset), "--ids", str(tmp_path / "ids.txt"),
               "--json", str(out), "--device", "cpu"])
    assert rc == 0
    r = json.loads(out.read_text())
    assert list(r) == EXPECTED_KEYS and r["n_images"] == 2
    assert "pooled dice" in capsys.readouterr().out
    (tmp_path / "split.json").write_text(json.dumps({"train": ["ISIC_0000000"], "val": ["ISIC_0000002"], "test": []}))
    rc = main(["evaluate", "--model_path", str(weights), "--images", str(dataset / "images"), "--masks",
               str(dataset / "masks"), "--ids", str(tmp_path / "split.json"), "--split", "val", "--json", str(out)])
    assert rc == 0 and [row["id"] for row in json.loads(out.read_text())["per_image"]] == ["ISIC_0000002"]
    assert not [f for f in out.parent.iterdir() if f.name.startswith(".")]


def test_cli_evaluate_input_errors(weights: Path, dataset: Path, tmp_path: Path, capsys) -> None:
    rc = main(["evaluate", "--weights", str(weights), "--images", str(tmp_path / "none"), "--masks", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "folder not found" in err and "Traceback" not in err
    rc = main(["evaluate", "--weights", str(tmp_path / "no-weights"), "--data-dir", str(dataset)])
    err = capsys.readouterr().err
    assert rc == 2 and "weights folder not found" in err and len(err.strip().splitlines()) == 1


def _folder_with_a_bad_file(root: Path) -> Path:
    d = root / "in"
    d.mkdir()
    rng = np.random.default_rng(12)
    for name, (h, w) in [("a.jpg", (250, 333)), ("b.png", (120, 90)), ("c.jpeg", (64, 80))]:
        Image.fromarray(disc_image(rng, h, w)[0]).save(d / name)
    data = (d / "a.jpg").read_bytes()
    (d / "bad.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG: header fine, data cut
    (d / "notes.txt").write_text("not an image, ignored")
    return d


def _csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def test_cli_predict_folder_with_a_corrupt_file(weights: Path, tmp_path: Path, capsys) -> None:
    src, out = _folder_with_a_bad_file(tmp_path), tmp_path / "out"
    rc = main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir", str(out),
               "--device", "cpu"])
    assert rc == 1
    rows = _csv(out / "predictions.csv")
    assert sorted(rows) == ["a", "b", "bad", "c"]
    assert rows["bad"]["status"] == "error" and "truncated" in rows["bad"]["error"]
    assert {rows[k]["status"] for k in "abc"} == {"ok"}
    assert (rows["a"]["width"], rows["a"]["height"]) == ("333", "250")
    mask = np.asarray(Image.open(out / "a_mask.png"))
    assert mask.shape == (250, 333) and int(rows["a"]["lesion_area_px"]) == int((mask > 0).sum()) > 0
    expected = {f"{i}_{k}.png" for i in "abc" for k in ("mask", "overlay", "result")} | {"predictions.csv"}
    assert {f.name for f in out.iterdir()} == expected  # no temp files, nothing for the bad file
    assert "1 failed" in capsys.readouterr().out

    mtime = (out / "a_mask.png").stat().st_mtime_ns
    rc = main(["predict", "--weights", str(weights), "--input-dir", str(src), "--output-dir", str(out),
               "--skip-existing"])
    rows = _csv(out / "predictions.csv")
    assert rc == 1 and {rows[k]["status"] for k in "abc"} == {"skipped"}
    assert (out / "a_mask.png").stat().st_mtime_ns == mtime and rows["a"]["lesion_area_px"] != ""


def test_cli_predict_outputs_choice_writes_only_those_files(weights: Path, tmp_path: Path, capsys) -> None:
    src = _folder_with_a_bad_file(tmp_path)
    (src / "bad.jpg").unlink()
    full, only = tmp_path / "full", tmp_path / "only"
    assert main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir", str(full)]) == 0
    assert main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir", str(only),
                 "--outputs", "mask"]) == 0
    assert {f.name for f in only.iterdir()} == {f"{i}_mask.png" for i in "abc"} | {"predictions.csv"}
    for i in "abc":  # the same masks as a full run, and the same CSV rows
        assert (only / f"{i}_mask.png").read_bytes() == (full / f"{i}_mask.png").read_bytes()
    assert _csv(only / "predictions.csv") == _csv(full / "predictions.csv")

    # --skip-existing counts only the kinds asked for: an overlay run after a mask-only run writes overlays
    assert main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir", str(only),
                 "--outputs", "overlay,mask", "--skip-existing"]) == 0
    rows = _csv(only / "predictions.csv")
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert (only / "a_overlay.png").read_bytes() == (full / "a_overlay.png").read_bytes()
    assert not (only / "a_result.png").exists()
    assert main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir", str(only),
                 "--outputs", "overlay", "--skip-existing"]) == 0
    rows = _csv(only / "predictions.csv")
    assert {r["status"] for r in rows.values()} == {"skipped"} and rows["a"]["width"] == ""
    capsys.readouterr()

    with pytest.raises(SystemExit) as exc:
        main(["predict", "--input_dir", str(src), "--output_dir", str(only), "--outputs", "mask,heatmap"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "heatmap" in err and "mask, overlay, result" in err
    rc = main(["inference", "--weights", str(weights), "--input", str(src / "a.jpg"), "--output_dir",
               str(tmp_path / "one"), "--outputs", "result"])
    assert rc == 0 and [f.name for f in (tmp_path / "one").iterdir()] == ["a_result.png"]


def test_cli_predict_images_side_by_side_match_one_at_a_time(weights: Path, tmp_path: Path, capsys) -> None:
    """--jobs 3 (three images in flight, each on its own thread) writes the same bytes and the same
    CSV, in input order, as --jobs 1, including the bad file's error row and --skip-existing rows."""
    src = _folder_with_a_bad_file(tmp_path)
    rng = np.random.default_rng(5)
    for i in range(6):
        Image.fromarray(disc_image(rng, 90 + 13 * i, 120 - 7 * i)[0]).save(src / f"z{i}.png")
    one, three = tmp_path / "one", tmp_path / "three"
    assert main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir", str(one),
                 "--jobs", "1"]) == 1
    assert main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir", str(three),
                 "--jobs", "3"]) == 1
    with open(one / "predictions.csv") as a, open(three / "predictions.csv") as b:
        assert a.read() == b.read()  # row order included
    names = sorted(f.name for f in one.iterdir())
    assert names == sorted(f.name for f in three.iterdir()) and len(names) == 9 * 3 + 1
    for name in names:
        assert (one / name).read_bytes() == (three / name).read_bytes(), name

    (three / "z3_mask.png").unlink()  # one image to redo, the rest skipped, still in order
    assert main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir", str(three),
                 "--jobs", "3", "--skip-existing"]) == 1
    rows = list(_csv(three / "predictions.csv").values())
    assert [r["id"] for r in rows] == [r["id"] for r in _csv(one / "predictions.csv").values()]
    assert [r["status"] for r in rows].count("ok") == 1 and rows[-3]["id"] == "z3" and rows[-3]["status"] == "ok"
    assert (three / "z3_mask.png").read_bytes() == (one / "z3_mask.png").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--input_dir", str(src), "--output_dir", str(one), "--jobs", "0"])
    assert exc.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_cli_predict_exit_codes(weights: Path, tmp_path: Path, capsys) -> None:
    src = _folder_with_a_bad_file(tmp_path)
    (src / "bad.jpg").unlink()
    rc = main(["predict", "--weights", str(weights), "--input_dir", str(tmp_path / "missing"), "--output_dir",
               str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "input folder not found" in err and len(err.strip().splitlines()) == 1
    rc = main(["predict", "--weights", str(tmp_path / "missing-weights"), "--input_dir", str(src), "--output_dir",
               str(tmp_path / "o")])
    assert rc == 2 and "weights folder not found" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    rc = main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir",
               str(tmp_path / "a-file" / "out")])
    err = capsys.readouterr().err
    assert rc == 3 and "not writable" in err and "Traceback" not in err
    rc = main(["predict", "--weights", str(weights), "--input_dir", str(src), "--output_dir", str(tmp_path / "o")])
    assert rc == 0 and len(_csv(tmp_path / "o" / "predictions.csv")) == 3


def test_cli_inference_single_file(weights: Path, tmp_path: Path, capsys) -> None:
    img, _ = disc_image(np.random.default_rng(13), 211, 157)
    Image.fromarray(img).save(tmp_path / "one.png")
    rc = main(["inference", "--weights", str(weights), "--input", str(tmp_path / "one.png"), "--output_dir",
               str(tmp_path / "o"), "--tta", "--threshold", "0.4"])
    assert rc == 0
    assert np.asarray(Image.open(tmp_path / "o" / "one_mask.png")).shape == (211, 157)
    assert {f.name for f in (tmp_path / "o").iterdir()} == {"one_mask.png", "one_overlay.png", "one_result.png"}
    assert "threshold 0.4000" in capsys.readouterr().out
    (tmp_path / "junk.jpg").write_bytes(b"\x00" * 50)
    rc = main(["inference", "--weights", str(weights), "--input", str(tmp_path / "junk.jpg"), "--output_dir",
               str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a readable image" in err and len(err.strip().splitlines()) == 1


def test_python_m_lesionseg_predict_subprocess(weights: Path, tmp_path: Path) -> None:
    src = _folder_with_a_bad_file(tmp_path)
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "lesionseg", "predict", "--model_path", str(weights), "--input_dir",
                           str(src), "--output_dir", str(tmp_path / "out"), "--img_size", "256", "--use_gpu"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--img_size 256 ignored" in proc.stderr  # the model's own 48 px is used
    assert "truncated" in proc.stderr  # the bad file's one-line error
    assert len(_csv(tmp_path / "out" / "predictions.csv")) == 4
