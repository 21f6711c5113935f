"""Guards on the shipped model in weights/: strict loading, its threshold, its accuracy, its card."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lesionseg.inference.weights import load_model
from lesionseg.training.thresholds import choose_joint_threshold

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # release tooling lives beside ship_weights.py
from model_card import render  # noqa: E402
WEIGHTS = ROOT / "weights"
RECIPE = ROOT / "configs" / "isic2017_256"
N_GUARD = 40


def test_shipped_weights_load_strictly_with_a_tuned_threshold() -> None:
    model = load_model(WEIGHTS)
    cfg = json.loads((WEIGHTS / "config.json").read_text())
    assert 0 < cfg["inference_threshold"] < 1
    assert model.inference_threshold == cfg["inference_threshold"]
    points = cfg["inference_operating_points"]
    assert [round(p["threshold"], 2) for p in points] == [round(0.05 * i, 2) for i in range(1, 20)]
    # the default is the highest-precision point reaching the recall target (or the best recall),
    # on the validation part and, where the recipe had one, the external validation set too
    run = json.loads((RECIPE / "run_info.json").read_text())
    tuned = json.loads((RECIPE / "operating_points.json").read_text())
    if tuned.get("external_points"):
        expected = choose_joint_threshold(points, tuned["external_points"], run["recall_target"],
                                          tuned["external_recall_target"])
        assert tuned["external_at_chosen"]["recall"] >= tuned["external_recall_target"]
    else:
        ok = [p for p in points if p["recall"] >= run["recall_target"]]
        expected = max(ok, key=lambda p: p["precision"]) if ok else max(points, key=lambda p: p["recall"])
    assert cfg["inference_threshold"] == expected["threshold"]
    assert (WEIGHTS / "model.safetensors").stat().st_size < 30 * 2**20
    assert not list(WEIGHTS.glob("*.pth")) and not list(WEIGHTS.glob("*.bin"))


def test_shipped_onnx_export_is_of_the_shipped_weights_and_the_avx2_path_opens_it() -> None:
    """weights/model.onnx (scripts/ship_weights.py writes it) must be re-exported whenever the
    weights change: a stale one is ignored at load, and every AVX2 process exports again."""
    pytest.importorskip("onnxruntime")
    from lesionseg.inference.onnx_backend import ONNX_NAME, OnnxRunner, onnx_source, weights_digest

    model = load_model(WEIGHTS)
    runner = OnnxRunner(WEIGHTS / ONNX_NAME, 1)
    assert runner.digest == weights_digest(model) and runner.img_size == model.inference_img_size
    assert onnx_source(model, WEIGHTS) == str(WEIGHTS / ONNX_NAME)


def test_shipped_operating_points_describe_the_cleaned_masks_users_get() -> None:
    cfg = json.loads((WEIGHTS / "config.json").read_text())
    tuned = json.loads((RECIPE / "operating_points.json").read_text())
    assert tuned["cleanup"] == {"fill_holes": cfg["inference_fill_holes"],
                                "min_region_fraction": cfg["inference_min_region_fraction"]}
    assert tuned["points"] == cfg["inference_operating_points"]
    assert tuned["chosen"]["threshold"] == cfg["inference_threshold"]
    raw = json.loads((RECIPE / "eval_test_raw.json").read_text())  # the card's --no-cleanup column
    cleaned = json.loads((RECIPE / "eval_test.json").read_text())
    assert raw["threshold"] == cleaned["threshold"] and raw["n_images"] == cleaned["n_images"]
    assert "Mask clean-up" in (WEIGHTS / "README.md").read_text()


def test_held_out_ids_are_committed_and_disjoint_from_training() -> None:
    split = json.loads((RECIPE / "split.json").read_text())
    test_ids = (RECIPE / "test_ids.txt").read_text().split()
    assert test_ids == split["test"] and len(test_ids) >= 100
    assert not set(split["train"]) & set(split["test"])
    assert not set(split["train"]) & set(split["val"])


def test_model_card_numbers_come_from_committed_evaluate_output() -> None:
    card = (WEIGHTS / "README.md").read_text()
    assert card == render(RECIPE.relative_to(ROOT), WEIGHTS), "re-run: python scripts/model_card.py"
    result = json.loads((RECIPE / "eval_test.json").read_text())
    assert f"{result['dice_mean']:.4f}" in card and f"{result['failure_rate']:.4f}" in card
    for key in ("pipeline_tag: image-segmentation", "library_name: lesionseg", "license:", "datasets:",
                "Intended use", "Limitations", "Operating points", "flip TTA"):
        assert key in card, key


def test_model_card_compares_a_second_seed_on_the_same_held_out_images() -> None:
    runs = sorted((RECIPE / "other_seeds").glob("seed*/eval_test.json"))
    assert runs, "record one: python scripts/record_seed_run.py outputs/<run trained with another --seed>"
    shipped = json.loads((RECIPE / "eval_test.json").read_text())
    card = (WEIGHTS / "README.md").read_text()
    assert "## Run-to-run spread" in card
    for path in runs:
        other = json.loads(path.read_text())
        info = json.loads((path.parent / "run_info.json").read_text())
        assert info["seed"] != json.loads((RECIPE / "run_info.json").read_text())["seed"]
        assert sorted(r["id"] for r in other["per_image"]) == sorted(r["id"] for r in shipped["per_image"])
        assert f"{other['dice_mean']:.4f}" in card
        assert f"Dice {other['dice_mean'] - shipped['dice_mean']:+.4f}" in card


def test_the_card_states_the_seed_mean_once_there_are_three_seeds() -> None:
    from seed_card import seed_mean_sentence

    shipped, others = {"dice_mean": 0.93}, [{"dice_mean": 0.90}, {"dice_mean": 0.91}]
    assert seed_mean_sentence(shipped, others[:1]) == ""  # two seeds: the table says it all
    text = seed_mean_sentence(shipped, others, {"dice_mean": 0.80}, [{"dice_mean": 0.70}, {"dice_mean": 0.75}])
    assert "3 seeds" in text and "held-out test 0.9133 (0.9000-0.9300)" in text and "external 0.7500 (0.7000-0.8000)" in text
    assert "external" not in seed_mean_sentence(shipped, others, {"dice_mean": 0.80}, [None, {"dice_mean": 0.75}])


def test_the_cards_seed_table_has_one_row_per_seed_with_both_sets_where_measured() -> None:
    from seed_card import SPREAD_KEYS, seed_table

    def result(dice: float, t: float) -> dict:
        return {**{key: dice for _, key in SPREAD_KEYS}, "threshold": t}
    rows = [("43 (shipped)", result(0.91, 0.3), result(0.93, 0.3)), ("42", result(0.90, 0.25), None)]
    lines = seed_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)  # header, rule, a row per seed: it grows down, not across
    assert lines[2].startswith("| 43 (shipped) | 0.30 | 0.9100 / 0.9300 |")
    assert lines[3].startswith("| 42 | 0.25 | 0.9000 |") and "/" not in lines[3]


def test_evaluate_on_held_out_subset_keeps_dice_above_guard(real_data_dir: Path, tmp_path: Path) -> None:
    ids = (RECIPE / "test_ids.txt").read_text().split()[:N_GUARD]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    out = tmp_path / "eval.json"
    r = subprocess.run([sys.executable, "-m", "lesionseg", "evaluate", "--data-dir", str(real_data_dir),
                        "--ids", str(ids_file), "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["n_images"] == N_GUARD
    assert result["dice_mean"] >= 0.85
    # and it reproduces the committed per-image numbers for these images
    committed = {row["id"]: row["dice"] for row in json.loads((RECIPE / "eval_test.json").read_text())["per_image"]}
    for row in result["per_image"]:
        assert row["dice"] == pytest.approx(committed[row["id"]], abs=0.01), row["id"]


REFINER_RECIPE = RECIPE / "refiner"


def test_shipped_refiner_loads_and_its_card_section_comes_from_committed_evaluations() -> None:
    if not (WEIGHTS / "refiner" / "config.json").is_file():
        pytest.skip("no click refiner shipped in weights/refiner/")
    refiner = load_model(WEIGHTS / "refiner")
    model = load_model(WEIGHTS)
    assert refiner.click_conditioned and refiner.in_channels == 6
    assert refiner.inference_img_size == model.inference_img_size
    card = (WEIGHTS / "README.md").read_text()
    assert "## Click refiner (`refiner/`)" in card
    for name in ("eval_clicks_test.json", "eval_clicks_external.json"):
        result = json.loads((REFINER_RECIPE / name).read_text())
        assert result["n_clicks"] == 3 and result["n_images"] >= 100
        assert " | ".join(f"{v:.3f}" for v in result["miou"]) in card, name
    others = sorted((REFINER_RECIPE / "other_seeds").glob("*/eval_clicks_external.json"))
    assert others, "the card compares a second seed of the refiner"


def test_shipped_refiner_corrects_external_outlines_through_predictor_refine(real_data_dir: Path) -> None:
    # a guard on a slice of the external set, by the evaluation protocol itself: clicks must help
    if not (WEIGHTS / "refiner" / "config.json").is_file():
        pytest.skip("no click refiner shipped in weights/refiner/")
    from lesionseg.data.pairing import collect_pairs, resolve_data_dir
    from lesionseg.evaluation_clicks import evaluate_clicks
    from lesionseg.inference import Predictor

    external = real_data_dir.parent / "isic2018_extra_256c"
    if not (external / "images").is_dir():
        pytest.skip(f"external set not found at {external}")
    pairs = collect_pairs(*resolve_data_dir(external))[:N_GUARD]
    result = evaluate_clicks(Predictor.from_weights(WEIGHTS, device="cpu"), pairs, n_clicks=3)
    committed = {r["id"]: r["iou"] for r in json.loads((REFINER_RECIPE / "eval_clicks_external.json")
                                                           .read_text())["per_image"]}
    assert result["miou"][3] >= result["miou"][0] + 0.02, result["miou"]
    # and it reproduces the committed numbers of these images (to the CPU path's rounding, which can
    # move a later click by a pixel on some images: compared as a mean)
    mine = [row["iou"][3] for row in result["per_image"]]
    assert np.mean(mine) == pytest.approx(np.mean([committed[row["id"]][3] for row in result["per_image"]]), abs=0.01)
