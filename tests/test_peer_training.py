"""``benchmarks.peer_training``: a peer and our model trained by the recipe's own epoch loop and scored
on the held-out split (tiny runs on the CPU here; the recorded comparison ran on a lent GPU)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from benchmarks.peer_training import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isic2017_train_256"
needs_data = pytest.mark.skipif(not (DATA / "images").is_dir(), reason=f"real ISIC data not found at {DATA}")
KEYS = {"dice_mean", "iou_mean", "recall_mean", "precision_mean", "thresholded_jaccard", "failure_rate"}


@needs_data
@pytest.mark.parametrize("model", ["ours", "smp_unet_resnet34"])
def test_tiny_training_run_writes_scores(model: str, tmp_path: Path) -> None:
    # the peers are optional extras (requirements-bench.txt), not test requirements; find_spec, not an
    # import: smp must be imported after benchmarks/peers.py's torchvision shim
    if model != "ours" and importlib.util.find_spec("segmentation_models_pytorch") is None:
        pytest.skip("smp not installed (requirements-bench.txt)")
    out = tmp_path / "r.json"
    code = main(["--model", model, "--epochs", "2", "--limit", "16", "--max-steps-per-epoch", "2", "--device", "cpu",
                 "--data-dir", str(DATA), "--output", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["model"] == model and r["epochs"] == 2 and len(r["history"]) == 2
    assert r["n_test"] == 16
    for part in ("test_cleaned", "test_raw", "test_raw_at_0.5"):
        assert set(r[part]) == KEYS
        assert all(0.0 <= v <= 1.0 for v in r[part].values())
    assert r["best_val_dice_at_0.5"] == max(h["val_dice"] for h in r["history"])
    assert r["parameters"] > (20e6 if model == "smp_unet_resnet34" else 1e6)


@needs_data
def test_scoring_the_shipped_weights_matches_their_quality(tmp_path: Path) -> None:
    out = tmp_path / "w.json"
    assert main(["--weights", str(ROOT / "weights"), "--limit", "40", "--device", "cpu", "--data-dir", str(DATA),
                 "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n_test"] == 40
    assert r["test_cleaned"]["dice_mean"] > 0.85  # 0.91 on all 200 held-out images
    assert r["val_threshold"]["recall"] >= 0.9


def test_missing_data_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--model", "ours", "--epochs", "1", "--device", "cpu", "--data-dir", str(tmp_path / "absent"),
                 "--output", str(tmp_path / "x.json")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "absent" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_unknown_model_lists_the_valid_ones() -> None:
    from benchmarks.peer_training import build_model
    from lesionseg.training.config import TrainConfig

    with pytest.raises(ValueError, match="ours, smp_unet_resnet34"):
        build_model("unet_resnet50", TrainConfig())


def test_a_missing_peer_package_names_the_extras(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # import now raises ImportError
    code = main(["--model", "smp_unet_resnet34", "--epochs", "1", "--device", "cpu", "--limit", "4",
                 "--data-dir", str(DATA), "--output", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "requirements-bench.txt" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
