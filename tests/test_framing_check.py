"""scripts/framing_check.py: the re-framing windows, and scores that match ``lesionseg evaluate``'s
on the images as given."""
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

from framing_check import card_sentence, file_sha256, framing_box, main, score_framings  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def _mask(h: int = 100, w: int = 200, box: tuple[int, int, int, int] = (40, 60, 150, 190)) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = 1
    return m


def test_centre_windows_keep_the_centre_and_shrink_each_side_by_the_zoom() -> None:
    m = _mask()
    assert framing_box(m, 1.0, "centre") == (0, 100, 0, 200)
    assert framing_box(m, 2.0, "centre") == (25, 75, 50, 150)
    y0, y1, x0, x1 = framing_box(m, 1.5, "centre")
    assert (y1 - y0, x1 - x0) == (67, 133) and abs((y0 + y1) / 2 - 50) <= 1 and abs((x0 + x1) / 2 - 100) <= 1


def test_edge_windows_put_the_lesion_a_quarter_from_the_left_and_stay_inside_the_image() -> None:
    # lesion centred at (50, 170): the window's left quarter is clipped by the image's right edge
    y0, y1, x0, x1 = framing_box(_mask(), 2.0, "edge")
    assert (x0, x1) == (100, 200) and y1 - y0 == 50 and abs(y0 - 24.5) <= 0.5
    # a lesion in the middle of a wide image: its centre lies a quarter of the window from the left
    m = _mask(100, 400, (40, 60, 190, 210))
    y0, y1, x0, x1 = framing_box(m, 2.0, "edge")
    assert x1 - x0 == 200 and abs(200 - (x0 + 50)) <= 1 and y1 - y0 == 50 and abs(y0 - 24.5) <= 0.5
    assert m[y0:y1, x0:x1].sum() == m.sum()  # a small lesion stays whole
    # no lesion: the centre window
    assert framing_box(np.zeros((100, 200), np.uint8), 2.0, "edge") == (25, 75, 50, 150)


@pytest.mark.parametrize("zoom,where,match", [(0.5, "centre", "zoom"), (2.0, "corner", "where")])
def test_bad_framings_name_the_valid_ones(zoom: float, where: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        framing_box(_mask(), zoom, where)


@pytest.mark.parametrize("argv", [["weights", "--limit", "0"], ["weights", "--table"], []])
def test_bad_command_lines_exit_with_a_message(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "isic2018_extra_256c").is_dir(), reason="../shared/data not present (CI has it)")
def test_scores_as_given_are_lesionseg_evaluates_and_the_json_is_written(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    from lesionseg.data.pairing import collect_pairs
    from lesionseg.evaluation import evaluate_pairs
    from lesionseg.inference import Predictor

    pairs = collect_pairs(DATA / "isic2018_extra_256c" / "images", DATA / "isic2018_extra_256c" / "masks")[:3]
    predictor = Predictor.from_weights(ROOT / "weights", device="cpu", fast=False)
    scores = score_framings(predictor, pairs)
    reference = evaluate_pairs(predictor, pairs)
    assert scores["as given"]["dice_mean"] == pytest.approx(reference["dice_mean"], abs=1e-9)
    assert scores["as given"]["n_images"] == 3 and set(scores) == {"as given", "centre 1.5x", "centre 2x", "edge 1.5x"}
    assert scores["centre 2x"]["dice_mean"] != scores["as given"]["dice_mean"]  # another photo was scored

    assert main([str(ROOT / "weights"), "--limit", "2", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "shipped.json").read_text())
    assert doc["images"] == {"test": 2, "external": 2, "val": 2} and doc["threshold"] == predictor.threshold
    assert doc["wide_view"] == predictor.wide_view
    assert 0.0 <= doc["external"]["centre 2x"]["recall_mean"] <= 1.0
    # the external set's photos are kept, and their mean is the file's mean
    photos = doc["per_image"]["external"]["centre 2x"]
    assert [r["id"] for r in photos] == [p.id for p in pairs[:2]]
    assert np.mean([r["dice"] for r in photos]) == pytest.approx(doc["external"]["centre 2x"]["dice_mean"], abs=1e-9)
    assert "| shipped (weights/) | edge 1.5x |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--limit", "1", "--out", str(tmp_path)])  # no config.json there
    capsys.readouterr()
    assert main(["--table", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    cell = " / ".join(f"{doc['external']['centre 2x'][c]:.3f}" for c in ("dice_mean", "recall_mean", "failure_rate"))
    assert "external set" in printed and "own test part" in printed and "own validation part" in printed
    assert cell in printed
    # another zoom-out factor than the weights' own is named as such, beside the model's own results
    assert main([str(ROOT / "weights"), "--limit", "1", "--wide-view", "1.5", "--out", str(tmp_path)]) == 0
    wide = json.loads((tmp_path / "shipped_wide1.5.json").read_text())
    assert wide["wide_view"] == 1.5 and wide["model"] == "shipped (weights/)_wide1.5"
    assert json.loads((tmp_path / "shipped.json").read_text())["wide_view"] == 0.0


def test_the_card_sentence_is_only_for_the_weights_it_was_measured_on(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(b"weights one")
    scores = {"as given": {"dice_mean": 0.93, "recall_mean": 0.925, "failure_rate": 0.014},
              "centre 2x": {"dice_mean": 0.91, "recall_mean": 0.888, "failure_rate": 0.097}}
    doc = {"model": "shipped (weights/)", "model_sha256": file_sha256(weights / "model.safetensors"),
           "external": scores}
    (tmp_path / "shipped.json").write_text(json.dumps(doc))
    sentence = card_sentence(weights, tmp_path)
    assert "Dice is 0.910, recall 0.888 and 9.7%" in sentence and "0.930, 0.925 and 1.4% as given" in sentence
    (weights / "model.safetensors").write_bytes(b"weights two")  # re-shipped: the file speaks of other weights
    assert card_sentence(weights, tmp_path) == ""
    assert card_sentence(weights, tmp_path / "absent") == ""
