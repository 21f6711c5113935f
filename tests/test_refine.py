"""The click refiner: its starting point, training it with train_cli.py, loading it beside a model,
Predictor.refine and ``lesionseg evaluate --clicks``."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, TINY_MODEL_KWARGS, draw_lesion
from lesionseg.inference.predictor import Predictor, RefineUnavailable
from lesionseg.inference.weights import WeightsError, load_model
from lesionseg.models import DSAttentionUNet
from lesionseg.models.refiner import click_refiner_from

ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}


@pytest.fixture(scope="module")
def tiny_with_refiner(tmp_path_factory) -> Path:
    """A tiny model folder with a refiner/ beside it (zero-initialised from the model)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_refine")
    model = DSAttentionUNet(**TINY_MODEL_KWARGS).eval()
    model.save_pretrained(folder)
    click_refiner_from(model, dict(model._hub_mixin_config)).save_pretrained(folder / "refiner")
    return folder


def test_refiner_starts_as_the_model_and_takes_six_channels():
    for kwargs in (TINY_MODEL_KWARGS, {"encoder_name": "mobilenet_v2", "inference_img_size": 64}):
        torch.manual_seed(0)
        model = DSAttentionUNet(**kwargs).eval()
        refiner = click_refiner_from(model, dict(model._hub_mixin_config)).eval()
        assert refiner.in_channels == 6 and refiner.click_conditioned
        x = torch.randn(2, 3, 64, 64)
        extra = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(model(x), refiner(torch.cat([x, extra], 1)))
        with pytest.raises(ValueError, match="already a click refiner"):
            click_refiner_from(refiner, dict(refiner._hub_mixin_config))
    with pytest.raises(ValueError, match="in_channels 6"):
        DSAttentionUNet(click_conditioned=True)


def test_predictor_refine_contract(tiny_with_refiner):
    pred = Predictor.from_weights(tiny_with_refiner, device="cpu")
    assert pred.can_refine
    rgb, _ = draw_lesion(90, 120, seed=3)
    plain = pred.predict(rgb)
    refined = pred.refine(rgb, [(60, 45, True), (5, 5, False)], previous=plain)
    again = pred.refine(rgb, [(60, 45, True), (5, 5, False)], previous=plain)
    assert np.array_equal(refined.lowres, again.lowres)  # deterministic
    assert refined.size == (90, 120) and refined.threshold == plain.threshold
    assert refined.mask.shape == (90, 120) and refined.with_threshold(0.9).mask.sum() <= refined.mask.sum()
    assert refined.measurements()["area_px"] == refined.lesion_area_px
    from_plain = pred.refine(rgb, [(60, 45, True), (5, 5, False)])  # previous=None: the plain prediction
    assert np.array_equal(from_plain.lowres, refined.lowres)
    for bad, words in (([(120, 10, True)], "outside"), ([(float("nan"), 1, True)], "finite"),
                       ([(1, 1, True)] * 51, "more than the 50")):
        with pytest.raises(ValueError, match=words):
            pred.refine(rgb, bad, previous=plain)


def test_weights_without_refiner_load_and_say_refine_is_unavailable(tiny_model_dir, tmp_path):
    pred = Predictor.from_weights(tiny_model_dir, device="cpu")
    assert not pred.can_refine
    with pytest.raises(RefineUnavailable, match="no click refiner.*--refiner-from"):
        pred.refine(np.zeros((20, 20, 3), np.uint8), [(1, 1, True)])
    # a refiner/ folder holding a plain segmentation model is refused with the fix
    folder = tmp_path / "w"
    shutil.copytree(tiny_model_dir, folder)
    shutil.copytree(tiny_model_dir, folder / "refiner")
    with pytest.raises(WeightsError, match="not a click refiner"):
        Predictor.from_weights(folder, device="cpu")


@pytest.mark.slow
def test_train_refiner_with_train_cli_then_evaluate_clicks(tiny_model_dir, make_dataset, tmp_path):
    data = make_dataset(12, size=(64, 64))
    out = tmp_path / "runs"
    cmd = [sys.executable, str(REPO_ROOT / "train_cli.py"), "--refiner-from", str(tiny_model_dir),
           "--data-dir", str(data), "--img-size", "64", "--epochs", "1", "--batch-size", "4",
           "--max-steps-per-epoch", "2", "--output-dir", str(out), "--run-name", "r", "--max-clicks", "2",
           "--no-augment", "--push-to-hub", "someone/lesion-model"]
    env = {**__import__("os").environ, **ENV}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    # offline, publishing fails after the run's outputs are saved: exit 4, one line naming the sub-folder
    assert done.returncode == 4, done.stderr[-2000:]
    assert "hf upload someone/lesion-model" in done.stderr and " refiner`" in done.stderr
    best = out / "r" / "models" / "best_model"
    rows = [json.loads(line) for line in (out / "r" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert {"val_miou@0", "val_miou@2", "score"} <= set(rows[0])
    refiner = load_model(best)
    assert refiner.click_conditioned and refiner.in_channels == 6
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model_dir, weights)
    shutil.copytree(best, weights / "refiner")
    report = tmp_path / "clicks.json"
    cmd = [sys.executable, "-m", "lesionseg", "evaluate", "--weights", str(weights), "--data-dir", str(data),
           "--clicks", "2", "--json", str(report)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["n_images"] == 12 and len(result["miou"]) == 3 and len(result["per_image"][0]["iou"]) == 3
    assert "NoC@90" in done.stdout
    # weights without a refiner: one line, exit 2; a bad base: one line, exit 2
    for args in (["evaluate", "--weights", str(tiny_model_dir), "--data-dir", str(data), "--clicks", "2"],
                 ["train", "--refiner-from", str(tmp_path / "nope"), "--data-dir", str(data)]):
        done = subprocess.run([sys.executable, "-m", "lesionseg", *args], capture_output=True, text=True, env=env,
                              timeout=120, cwd=REPO_ROOT)
        errors = [line for line in done.stderr.splitlines() if "error:" in line]
        assert done.returncode == 2 and len(errors) == 1, done.stderr


def test_disk_baseline_and_refiner_share_the_click_protocol(tiny_model_dir, tiny_with_refiner, make_dataset):
    from lesionseg.data.pairing import collect_pairs, resolve_data_dir
    from lesionseg.evaluation_clicks import evaluate_clicks

    pairs = collect_pairs(*resolve_data_dir(make_dataset(3, size=(64, 80))))
    plain = Predictor.from_weights(tiny_model_dir, device="cpu")
    disk = evaluate_clicks(plain, pairs, 2, method="disk")  # needs no refiner
    assert disk["method"] == "disk" and len(disk["miou"]) == 3 and disk["n_images"] == 3
    assert all(len(r["clicks"]) <= 2 and len(r["iou"]) == 3 for r in disk["per_image"])
    with pytest.raises(RefineUnavailable):
        evaluate_clicks(plain, pairs, 2)
    with pytest.raises(ValueError, match="unknown click method"):
        evaluate_clicks(plain, pairs, 2, method="grabcut")
    refined = evaluate_clicks(Predictor.from_weights(tiny_with_refiner, device="cpu"), pairs, 2)
    assert [r["iou"][0] for r in refined["per_image"]] == [r["iou"][0] for r in disk["per_image"]]


def test_refiner_loads_from_a_hub_repo_subfolder_offline(tiny_with_refiner, tiny_model_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from lesionseg.inference.weights import load_refiner

    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo_name, source in (("with-refiner", tiny_with_refiner), ("plain", tiny_model_dir)):
        repo = tmp_path / "hub" / f"models--someone--{repo_name}"
        snap = repo / "snapshots" / commit
        shutil.copytree(source, snap)  # the Hub's file layout: refiner/ is a subfolder of the repo
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    refiner = load_refiner("someone/with-refiner")
    assert refiner is not None and refiner.click_conditioned
    assert load_refiner("someone/plain") is None  # an older repo: the model alone
    assert Predictor.from_weights("someone/with-refiner", device="cpu").can_refine
