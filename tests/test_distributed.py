"""Distributed training: real `torchrun` processes (gloo on CPU) running train_cli.py, no mocks."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lesionseg.data.dataset import LesionDataset
from lesionseg.data.pairing import collect_pairs, resolve_data_dir
from lesionseg.models import DSAttentionUNet
from lesionseg.training.checkpoint import load_last
from lesionseg.training.distributed import REQUIRED_VARS
from lesionseg.training.loop import autocast_dtype, predict_probs, use_channels_last, validation_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = json.dumps({"encoder_channels": [8, 16, 32, 64], "decoder_channels": [32, 16, 8]})
SMALL = ["--img_size", "64", "--batch_size", "4", "--model", TINY, "--epochs", "2", "--max-steps-per-epoch", "2",
         "--workers", "0", "--device", "cpu"]
# metrics.jsonl key -> validation_metrics key
VAL_KEYS = {"val_dice": "dice_mean", "val_iou": "iou_mean", "val_recall": "recall_mean",
            "val_precision": "precision_mean", "val_thresholded_jaccard": "thresholded_jaccard",
            "val_failure_rate": "failure_rate"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _env(**extra: str) -> dict[str, str]:
    """This environment without any launcher variables, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED_VARS}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, timeout: int = 1200) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), str(ROOT / "train_cli.py"), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_env())


def only_run(out: Path) -> Path:
    runs = list(out.iterdir())
    assert len(runs) == 1, runs  # every process agrees on rank 0's timestamped run name
    return runs[0]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def single_process_val_metrics(run: Path) -> dict[str, float]:
    """What one process computes with the loop's own functions on the last checkpoint's weights."""
    state = load_last(run)
    cfg = state["config"]
    model = DSAttentionUNet(**state["model_config"])
    model.load_state_dict(state["model"])
    device = torch.device("cpu")
    dtype = autocast_dtype(device, cfg["amp"])
    channels_last = use_channels_last(True, device, dtype)  # the loop's own choice
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    by_id = {p.id: p for p in collect_pairs(*resolve_data_dir(cfg["data_dir"]), cfg["mask_suffix"])}
    val_ds = LesionDataset([by_id[i] for i in cfg["_split"]["val"]], cfg["img_size"], None,
                           model.preprocess_mean, model.preprocess_std)
    probs, masks, _ = predict_probs(model, DataLoader(val_ds, batch_size=16), device, dtype, channels_last)
    return validation_metrics(probs, masks)


def check_run(r: subprocess.CompletedProcess, out: Path, epochs: int, steps: int = 2) -> Path:
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    assert r.stdout.count("best model:") == 1  # rank 0 alone reports
    run = only_run(out)
    rows = lines(run / "logs" / "metrics.jsonl")
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))  # one line per epoch, not one per rank
    assert len(lines(run / "logs" / "detailed_metrics.jsonl")) == epochs * steps
    state = load_last(run)
    assert state["epoch"] == epochs and state["config"]["_world_size"] == 2
    assert (run / "models/best_model/model.safetensors").is_file()
    assert (run / "visualizations/metrics_history.png").is_file()
    assert (run / "visualizations/test_evaluation/test_metrics.json").is_file()
    assert (run / "logs/operating_points.json").is_file()
    # no stray temporary files from two writers
    assert not [p for p in run.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    # the logged validation metrics are the whole validation set's, as one process computes them
    single = single_process_val_metrics(run)
    for logged, key in VAL_KEYS.items():
        assert rows[-1][logged] == pytest.approx(single[key], abs=1e-6), logged
    return run


def test_two_processes_train_and_resume_on_synthetic_data(make_dataset, tmp_path: Path) -> None:
    data = make_dataset(n=20, size=(64, 80))
    out = tmp_path / "out"
    r = torchrun("--data-dir", str(data), "--output-dir", str(out), "--seed", "3", *SMALL)
    run = check_run(r, out, epochs=2)
    first = lines(run / "logs" / "metrics.jsonl")

    resumed = torchrun("--resume", str(run), "--epochs", "3")
    run = check_run(resumed, out, epochs=3)
    rows = lines(run / "logs" / "metrics.jsonl")
    assert rows[:2] == first  # the first two epochs are kept, the run continued from its checkpoint
    assert "resumed from" in resumed.stderr and "at epoch 2" in resumed.stderr


def test_two_processes_on_real_data(real_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = torchrun("--data-dir", str(real_data_dir), "--limit", "24", "--output-dir", str(out), *SMALL)
    run = check_run(r, out, epochs=2)
    split = json.loads((run / "split.json").read_text())
    assert sum(len(v) for v in split.values()) == 24


@pytest.mark.parametrize("env, needle", [
    ({"WORLD_SIZE": "2"}, "MASTER_ADDR"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_PORT": "29500"}, "MASTER_ADDR"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
     "RANK=2"),
])
def test_half_set_environment_fails_with_one_line(env: dict, needle: str, make_dataset, tmp_path: Path) -> None:
    data = make_dataset(n=6, size=(40, 40))
    r = subprocess.run([sys.executable, str(ROOT / "train_cli.py"), "--data-dir", str(data), "--output-dir",
                        str(tmp_path / "o"), *SMALL], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=_env(**env))
    assert r.returncode == 2, r.stderr[-2000:]
    msg = r.stderr.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith("error:") and needle in msg[0], r.stderr
    assert "torchrun" in msg[0] or "RANK" in msg[0]
    assert not (tmp_path / "o").exists()  # nothing written before the check
