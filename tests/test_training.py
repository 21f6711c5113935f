"""Integration tests of `train_cli.py` / `lesionseg train`: real files, real subprocesses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lesionseg.models import DSAttentionUNet
from lesionseg.training.checkpoint import load_last

ROOT = Path(__file__).resolve().parents[1]
TINY = json.dumps({"encoder_channels": [8, 16, 32, 64], "decoder_channels": [32, 16, 8], "encoder_dropout": 0.1})
BASE = ["--img_size", "64", "--batch_size", "4", "--model", TINY, "--seed", "7", "--workers", "0"]


def train(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train_cli.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def metrics_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def synthetic(make_dataset) -> Path:
    return make_dataset(n=20, size=(64, 80))


def test_train_writes_the_research_layout(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    r = train("--data-dir", str(synthetic), "--epochs", "2", "--output-dir", str(out), "--run-name", "run", *BASE)
    assert r.returncode == 0, r.stderr[-2000:]
    run = out / "run"
    for rel in ["models/best_model/config.json", "models/best_model/model.safetensors", "models/last_checkpoint.pth",
                "logs/metrics.jsonl", "logs/detailed_metrics.jsonl", "logs/operating_points.json",
                "visualizations/metrics_history.png", "visualizations/epochs/epoch_001.png",
                "visualizations/epochs/epoch_002.png", "visualizations/test_evaluation/test_report.html",
                "visualizations/test_evaluation/test_metrics.csv", "visualizations/test_evaluation/test_metrics.json",
                "split.json", "train_ids.txt", "val_ids.txt", "test_ids.txt", "config.yaml"]:
        assert (run / rel).is_file(), rel
    assert list((run / "visualizations/test_evaluation/best").glob("*.png"))
    assert list((run / "visualizations/test_evaluation/worst").glob("*.png"))
    assert [row["epoch"] for row in metrics_rows(run)] == [1, 2]
    split = json.loads((run / "split.json").read_text())
    assert sum(len(v) for v in split.values()) == 20
    assert not set(split["train"]) & (set(split["val"]) | set(split["test"]))
    # the best model is a strict Hub folder with its tuned threshold and operating points
    model = DSAttentionUNet.from_pretrained(run / "models/best_model")
    assert len(model.inference_operating_points) == 19
    assert model.inference_threshold in [p["threshold"] for p in model.inference_operating_points]
    # the int8 calibration of the CPU fast path beside it, or (a barely trained model's masks sit at the
    # threshold, where int8 flips them) the warning that it was refused
    from lesionseg.inference.cpu.qdq import load_calibration

    if (run / "models/best_model/int8_calibration.json").is_file():
        assert load_calibration(model, run / "models/best_model") is not None
    else:
        assert "no int8 calibration for" in r.stderr and "int8 masks disagree" in r.stderr
    # no temporary files left behind by atomic writes
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.suffixes]


def test_same_seed_same_split_and_flags_override_yaml(synthetic: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data_dir: {synthetic}\nepochs: 3\nmax_steps_per_epoch: 1\nloss: dice\n")
    r = train("--config", str(cfg), "--epochs", "1", "--output-dir", str(tmp_path / "o"), "--run-name", "a", *BASE)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "o" / "a"
    assert len(metrics_rows(run)) == 1  # the flag won over the file's epochs: 3
    saved = (run / "config.yaml").read_text()
    assert "loss: dice" in saved and "epochs: 1" in saved
    # a split file passed back in reproduces the split
    r2 = train("--data-dir", str(synthetic), "--split-file", str(run / "split.json"), "--epochs", "1",
               "--max-steps-per-epoch", "1", "--output-dir", str(tmp_path / "o"), "--run-name", "b", *BASE)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert json.loads((tmp_path / "o/b/split.json").read_text()) == json.loads((run / "split.json").read_text())
    # a fresh run under the name of an earlier one starts its logs afresh instead of appending to them
    r3 = train("--data-dir", str(synthetic), "--epochs", "1", "--max-steps-per-epoch", "1",
               "--output-dir", str(tmp_path / "o"), "--run-name", "a", *BASE)
    assert r3.returncode == 0, r3.stderr[-2000:]
    assert [row["epoch"] for row in metrics_rows(run)] == [1]
    detail = [json.loads(line) for line in (run / "logs" / "detailed_metrics.jsonl").read_text().splitlines()]
    assert len(detail) == 1 and detail[0]["epoch"] == 1


def test_research_flag_spellings_and_help() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "train_cli.py"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ["--batch_size", "--batch-size", "--img_size", "--img-size", "--epochs", "--lr", "--loss",
                 "--augment", "--no-augment", "--debug", "--images", "--masks", "--data-dir", "--output-dir",
                 "--device", "--amp", "--no-amp", "--workers", "--seed", "--val-fraction", "--resume", "--config",
                 "--push-to-hub"]:
        assert flag in r.stdout, flag


@pytest.mark.parametrize("args, needle", [
    (["--data-dir", "/nonexistent/folder"], "/nonexistent/folder"),
    (["--loss", "nope"], "invalid choice"),
    (["--images", "/nonexistent/i", "--masks", "/nonexistent/m"], "/nonexistent/i"),
])
def test_bad_arguments_fail_with_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    r = train(*args, "--output-dir", str(tmp_path))
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_mismatched_mask_is_reported_before_training(make_dataset, tmp_path: Path) -> None:
    from PIL import Image

    root = make_dataset(n=6, size=(40, 40))
    Image.new("L", (20, 20)).save(root / "masks" / "ISIC_0000003_segmentation.png")
    (root / "images" / "ISIC_0000009.jpg").write_bytes((root / "images" / "ISIC_0000001.jpg").read_bytes())
    r = train("--data-dir", str(root), "--output-dir", str(tmp_path / "o"), *BASE)
    assert r.returncode == 2
    assert "ISIC_0000003_segmentation.png" in r.stderr and "20x20" in r.stderr
    assert "ISIC_0000009.jpg" in r.stderr  # image without mask, listed in the same report
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.pth"))


def test_push_to_hub_offline_fails_after_outputs_are_saved(synthetic: Path, tmp_path: Path) -> None:
    r = train("--data-dir", str(synthetic), "--epochs", "1", "--max-steps-per-epoch", "1", "--output-dir",
              str(tmp_path / "o"), "--run-name", "p", "--push-to-hub", "someone/lesionseg-test", *BASE,
              env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 4, r.stderr[-2000:]
    assert "someone/lesionseg-test" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "o/p/models/best_model/model.safetensors").is_file()


def _wait_for(pred, timeout: float, poll: float = 0.05) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(poll)
    raise TimeoutError("condition not reached")


@pytest.mark.timeout(900)  # three short training runs; slow only on a shared machine
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(make_dataset, tmp_path: Path) -> None:
    # 32 training steps per epoch (40 images, batch 1): the batch log is flushed every step, so the kill
    # below lands at the start of epoch 2 with 31 steps still to go, however fast the machine is; at
    # 64 px the three runs stay short on a CPU without bf16
    data = make_dataset(n=40, size=(64, 64))
    common = ["--data-dir", str(data), "--epochs", "3", "--no-augment", "--output-dir", str(tmp_path), *BASE,
              "--batch_size", "1"]
    ref = train(*common, "--run-name", "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_cli.py"), *common, "--run-name", "killed"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill in the middle of epoch 2: after epoch 1's checkpoint, once epoch 2 has logged a batch
        detail = run / "logs" / "detailed_metrics.jsonl"
        _wait_for(lambda: detail.exists() and '"epoch": 2' in detail.read_text(), 300, poll=0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    state = load_last(run)
    assert state["epoch"] == 1

    resumed = train("--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = metrics_rows(tmp_path / "ref"), metrics_rows(run)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    # same seed on CPU: the resumed run reproduces the uninterrupted one (tolerance for bf16 rounding)
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-4)
        assert rb["val_dice"] == pytest.approx(ra["val_dice"], abs=1e-3)
    final = load_last(run)
    assert final["epoch"] == 3
    ref_state = load_last(tmp_path / "ref")
    for k, v in ref_state["model"].items():
        assert torch.allclose(v.float(), final["model"][k].float(), atol=1e-4), k


def test_a_half_written_checkpoint_temp_file_is_ignored_on_resume(synthetic: Path, tmp_path: Path) -> None:
    r = train("--data-dir", str(synthetic), "--epochs", "1", "--max-steps-per-epoch", "2", "--output-dir",
              str(tmp_path), "--run-name", "c", *BASE)
    assert r.returncode == 0, r.stderr[-2000:]
    models = tmp_path / "c" / "models"
    good = (models / "last_checkpoint.pth").read_bytes()
    # what a kill during torch.save leaves: a truncated temporary file beside the intact checkpoint
    (models / ".last_checkpoint.pth.abc123.tmp.pth").write_bytes(good[: len(good) // 3])
    r = train("--resume", str(tmp_path / "c"), "--epochs", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_last(tmp_path / "c")["epoch"] == 2


def test_truncated_checkpoint_gives_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "run" / "models" / "last_checkpoint.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 truncated")
    r = train("--resume", str(tmp_path / "run"))
    assert r.returncode == 2
    assert "last_checkpoint.pth" in r.stderr and "Traceback" not in r.stderr


def test_debug_run_on_real_data(real_data_dir: Path, tmp_path: Path) -> None:
    r = train("--data-dir", str(real_data_dir), "--debug", "--epochs", "1", "--max-steps-per-epoch", "3",
              "--output-dir", str(tmp_path), "--run-name", "real", *BASE)
    assert r.returncode == 0, r.stderr[-2000:]
    split = json.loads((tmp_path / "real/split.json").read_text())
    assert sum(len(v) for v in split.values()) == 48
    assert all(i.startswith("ISIC_") for v in split.values() for i in v)
    res = json.loads((tmp_path / "real/visualizations/test_evaluation/test_metrics.json").read_text())
    assert res["n_images"] == len(split["test"]) and 0 <= res["dice_mean"] <= 1


def test_dataloader_workers_draw_different_augmentations_reproducibly() -> None:
    # forked workers inherit one albumentations RNG: without seed_worker, worker 0 and worker 1
    # would augment their first items identically
    import albumentations as A
    import numpy as np
    from torch.utils.data import DataLoader, Dataset

    from lesionseg.data.dataset import seed_worker

    class Same(Dataset):
        def __init__(self) -> None:
            self.transform = A.Compose([A.Affine(rotate=(-90, 90), translate_percent=(-0.2, 0.2), p=1.0)])
            self.image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)

        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.from_numpy(self.transform(image=self.image)["image"].copy())

    def draw(seed: int, init) -> list[torch.Tensor]:
        ds = Same()
        ds.transform.set_random_seed(0)
        gen = torch.Generator().manual_seed(seed)
        return list(DataLoader(ds, batch_size=1, num_workers=2, generator=gen, worker_init_fn=init))

    unseeded = draw(1, None)
    assert torch.equal(unseeded[0], unseeded[1])  # the failure seed_worker fixes
    a, b, c = draw(1, seed_worker), draw(1, seed_worker), draw(2, seed_worker)
    assert not torch.equal(a[0], a[1])
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # same loader seed: same augmentations
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
