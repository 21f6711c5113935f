"""scripts/threshold_rules.py: training's threshold rule applied to one seed's points, to the points
pooled over seeds and to the other seeds' points; the committed table in sync with the stored points."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import threshold_rules  # noqa: E402
from threshold_rules import BEGIN, END, OUT, main, mean_points, render, rule_thresholds  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
THS = [0.2, 0.3, 0.4, 0.5]


def _doc(name: str, val_recall: list[float], ext_recall: list[float]) -> dict:
    """A stored model whose precision rises with the threshold (so the rule takes the highest that qualifies)."""
    def points(recalls: list[float]) -> list[dict[str, float]]:
        return [{"threshold": t, "recall": r, "precision": 0.8 + t / 10, "dice": 0.9 - abs(t - 0.4) / 10}
                for t, r in zip(THS, recalls)]
    return {"model": name, "val": points(val_recall), "external": points(ext_recall),
            "test": points([r - 0.01 for r in val_recall])}


def test_each_rule_applies_trainings_choice_to_its_own_points() -> None:
    # validation recall is flat near its target 0.93: seed a qualifies up to 0.5, seed b only up to 0.2
    a = _doc("a", [0.95, 0.94, 0.935, 0.931], [0.95, 0.93, 0.92, 0.91])
    b = _doc("b", [0.94, 0.929, 0.92, 0.91], [0.95, 0.93, 0.92, 0.91])
    c = _doc("c", [0.95, 0.94, 0.93, 0.92], [0.95, 0.93, 0.89, 0.88])
    rules = rule_thresholds([a, b, c])
    assert rules["own"] == [0.5, 0.2, 0.3]
    # mean validation recall 0.9467, 0.936, 0.9283, 0.9203; every external mean >= 0.90 up to 0.4
    assert rules["pooled"] == [0.3, 0.3, 0.3]
    # without a: b and c pooled reach 0.9345 at 0.3 only; without b: 0.4 (external 0.905); without c: 0.3
    assert rules["others"] == [0.3, 0.4, 0.3]
    assert mean_points([a, b], "val")[1]["recall"] == pytest.approx((0.94 + 0.929) / 2)


def test_one_model_has_no_leave_one_out_rule_and_mismatched_grids_are_refused() -> None:
    a = _doc("a", [0.95, 0.94, 0.935, 0.931], [0.95, 0.93, 0.92, 0.91])
    assert set(rule_thresholds([a])) == {"own", "pooled"}
    other = _doc("b", [0.95, 0.94, 0.935, 0.931], [0.95, 0.93, 0.92, 0.91])
    other["val"] = other["val"][:-1]
    with pytest.raises(ValueError, match="different thresholds"):
        mean_points([a, other], "val")


def test_the_table_shows_each_models_numbers_at_each_rules_threshold() -> None:
    a = _doc("a", [0.95, 0.94, 0.935, 0.931], [0.95, 0.93, 0.92, 0.91])
    b = _doc("b", [0.94, 0.929, 0.92, 0.91], [0.95, 0.93, 0.92, 0.91])
    text = render([a, b])
    # validation, external and test recall at 0.5 (test: 0.931 - 0.01)
    assert "| a | own | 0.50 | 0.9310 | 0.9100 | 0.9210 |" in text
    assert "| b | own | 0.20 | 0.9400 | 0.9500 | 0.9300 |" in text
    assert "| mean (range) of 2 | own | 0.20-0.50 | 0.9355 (0.9310-0.9400) | 0.9300 (0.9100-0.9500) |" in text
    assert "| mean (range) of 2 | pooled | 0.30 |" in text  # one threshold for both: no range
    assert text.count("| others |") == 3


def test_the_docs_table_is_rendered_from_the_stored_points() -> None:
    docs = threshold_rules.load_docs(OUT)
    if not docs:
        pytest.skip(f"no stored points in {OUT}")
    doc = (ROOT / "docs" / "generalization.md").read_text()
    assert BEGIN in doc and END in doc, "docs/generalization.md lost the threshold rules' markers"
    assert doc.split(BEGIN, 1)[1].split(END, 1)[0] == "\n" + render(docs) + "\n", \
        "docs/generalization.md is out of date: run python scripts/threshold_rules.py"


@pytest.mark.parametrize("argv", [["weights", "--limit", "0"], ["weights"], ["weights", "x", "--name", "a"],
                                  ["weights", "--name", "a", "--limit", "3"]])
def test_bad_command_lines_exit_with_a_message(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "isic2018_extra_256c").is_dir(), reason="../shared/data not present (CI has it)")
def test_measured_points_match_lesionseg_evaluate_at_the_weights_threshold(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    from lesionseg.data.pairing import collect_pairs
    from lesionseg.evaluation import evaluate_pairs
    from lesionseg.inference import Predictor

    assert main([str(ROOT / "weights"), "--name", "shipped", "--limit", "3", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "shipped.json").read_text())
    assert doc["images"] == {"val": 3, "external": 3, "test": 3}
    predictor = Predictor.from_weights(ROOT / "weights", device="cpu", fast=False)
    pairs = collect_pairs(DATA / "isic2018_extra_256c" / "images", DATA / "isic2018_extra_256c" / "masks")[:3]
    reference = evaluate_pairs(predictor, pairs)  # the masks users get, at the weights' own threshold
    point = next(p for p in doc["external"] if p["threshold"] == pytest.approx(predictor.threshold))
    assert point["recall"] == pytest.approx(reference["recall_mean"], abs=1e-9)
    assert point["dice"] == pytest.approx(reference["dice_mean"], abs=1e-9)
    assert "| shipped | own |" in capsys.readouterr().out
