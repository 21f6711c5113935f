"""Two training levers of the generalization work: the weight average (``--ema-decay``) and the
encoder's own learning rate (``--encoder-lr-scale``), in the library and through `train_cli.py`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lesionseg.models import DSAttentionUNet
from lesionseg.training.averaging import WARMUP_STEPS, WeightAverage
from lesionseg.training.checkpoint import load_last
from lesionseg.training.epoch import make_optimisation
from test_training import BASE, metrics_rows, train

TINY_MODEL = {"encoder_channels": [8, 16, 32, 64], "decoder_channels": [32, 16, 8]}


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


def test_the_average_follows_the_closed_form_ema_with_its_warm_up() -> None:
    net = _net()
    average = WeightAverage(net, decay=0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(25):
        with torch.no_grad():  # stand-ins for optimiser steps and BatchNorm's running statistics
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net[1].running_mean.add_(1.0)
            net[1].num_batches_tracked.add_(1)
        d = min(0.9, (1 + step) / (WARMUP_STEPS + step))
        assert average.current_decay() == pytest.approx(d)
        average.update(net)
        for k, v in net.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.dtype.is_floating_point else v.clone()
    got = average.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k].float(), v.float(), atol=1e-5), k
    assert int(got["1.num_batches_tracked"]) == 25  # an integer buffer is copied, not averaged
    # the average lags behind the raw weights, and never gets gradients
    assert not torch.allclose(got["0.weight"], net.state_dict()["0.weight"])
    assert not any(p.requires_grad for p in average.module.parameters())


def test_the_average_state_round_trips_and_bad_decays_are_refused() -> None:
    net = _net()
    a = WeightAverage(net, 0.99)
    for _ in range(3):
        with torch.no_grad():
            net[0].weight.mul_(1.5)
        a.update(net)
    b = WeightAverage(_net(), 0.99)
    b.load_state_dict(a.state_dict())
    assert b.steps == 3 and b.current_decay() == a.current_decay()
    assert torch.equal(b.module[0].weight, a.module[0].weight)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            WeightAverage(net, bad)


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_the_encoder_gets_its_own_learning_rate(scale: float) -> None:
    model = DSAttentionUNet(**TINY_MODEL)
    optimizer, scheduler, _, _ = make_optimisation(model, 1e-3, 1e-4, epochs=2, n_batches=10, max_steps=None,
                                                   dtype=None, encoder_lr_scale=scale)
    groups = optimizer.param_groups
    # every parameter is trained, once
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    if scale == 1.0:
        assert len(groups) == 1
        return
    encoder = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in groups[0]["params"]} == encoder
    assert [g["max_lr"] for g in groups] == pytest.approx([1e-3 * scale, 1e-3])
    for _ in range(3):  # every rate of the schedule keeps the ratio
        optimizer.step()
        scheduler.step()
        rates = scheduler.get_last_lr()
        assert rates[0] == pytest.approx(rates[1] * scale)


@pytest.mark.timeout(600)
def test_training_chooses_and_saves_the_average_and_resumes_it(make_dataset, tmp_path: Path) -> None:
    data = make_dataset(n=20, size=(64, 80))
    common = ["--data-dir", str(data), "--no-augment", "--max-steps-per-epoch", "3", "--output-dir", str(tmp_path),
              *BASE, "--ema-decay", "0.9", "--encoder-lr-scale", "0.5"]
    one = train(*common, "--epochs", "1", "--run-name", "one")
    assert one.returncode == 0, one.stderr[-2000:]
    run = tmp_path / "one"
    state = load_last(run)
    assert state["config"]["ema_decay"] == 0.9 and state["config"]["encoder_lr_scale"] == 0.5
    assert state["average"]["steps"] == 3
    # the best model of a one-epoch run is that epoch's average, not the raw weights
    saved = load_file(run / "models" / "best_model" / "model.safetensors")
    averaged, raw = state["average"]["module"], state["model"]
    assert all(torch.equal(saved[k], averaged[k].float()) for k in saved)
    assert any(not torch.equal(saved[k], raw[k].float()) for k in saved)
    # the logged learning rate is the decoder's (the full rate), not the encoder's half of it
    rates = [json.loads(line)["lr"] for line in (run / "logs" / "detailed_metrics.jsonl").read_text().splitlines()]
    assert rates[-1] == pytest.approx(metrics_rows(run)[-1]["lr"])

    # a resumed run carries the average on from the checkpoint instead of starting a new one
    resumed = train("--resume", str(run), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = load_last(run)["average"]
    assert after["steps"] == 6
    assert any(not torch.equal(after["module"][k], averaged[k]) for k in averaged)


@pytest.mark.parametrize("args, needle", [
    (["--ema-decay", "1"], "--ema-decay must lie in [0, 1)"),
    (["--encoder-lr-scale", "0"], "--encoder-lr-scale must lie in (0, 1]"),
    (["--augment-preset", "zoom", "--zoom-p", "1.5"], "--zoom-p must lie in (0, 1]"),
    (["--augment-preset", "robust", "--zoom-p", "0.1"], "--zoom-p applies to --augment-preset zoom only"),
])
def test_bad_lever_values_fail_with_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    r = train("--data-dir", str(tmp_path), *args, "--output-dir", str(tmp_path / "o"))
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
