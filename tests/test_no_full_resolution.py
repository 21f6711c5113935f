"""The DS-AttentionUNet without its full-resolution stage (``full_resolution_stage: false``): the
decoder ends at 1/2 and its logits are upsampled. Same calling conventions as the full model on
every path: any input size, deep supervision in training, config.json round trip, the CPU fast
paths, ONNX export, the ImageNet file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lesionseg.inference.cpu import FrozenBF16Runner, FrozenFp32Runner
from lesionseg.models import DSAttentionUNet
from runner_check import assert_runner_matches
from test_generalization import imagenet_like_file

HALF = {"encoder_name": "mobilenet_v2", "full_resolution_stage": False, "decoder_channels": [32, 24, 16, 8],
        "norm_groups": 4, "inference_img_size": 64}


def half_model(seed: int = 0) -> DSAttentionUNet:
    torch.manual_seed(seed)
    model = DSAttentionUNet(**HALF).eval()
    for m in model.modules():  # BatchNorm statistics other than the identity, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_skips_start_at_half_resolution_and_outputs_keep_the_input_size() -> None:
    model = half_model()
    assert model.encoder_channels == [16, 24, 32, 96, 320] and model.stride == 32
    assert not any(n.startswith("encoder.stem") for n, _ in model.named_parameters())
    feats = model.encoder(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, 64 // 2 ** (i + 1), 96 // 2 ** (i + 1))
                                                   for i, c in enumerate(model.encoder_channels)]
    assert model(torch.randn(1, 3, 50, 70)).shape == (1, 1, 50, 70)  # padded to 32 and cropped back
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    # one auxiliary head per decoder stage but the last: 3 of 4
    assert isinstance(out, tuple) and len(out) == 4 and all(o.shape == (2, 1, 64, 64) for o in out)
    out[0].mean().backward()
    assert model.head.weight.grad is not None and model.encoder.features[1].conv[0][0].weight.grad is not None


def test_the_logits_are_the_half_resolution_head_upsampled() -> None:
    model = half_model()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        half = model.head(model.decoder(model.encoder(x))[-1])
        assert half.shape[-2:] == (32, 32)
        expected = torch.nn.functional.interpolate(half, size=(64, 64), mode="bilinear", align_corners=False)
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_config_json_round_trip_and_full_models_are_unchanged(tmp_path: Path) -> None:
    model = half_model()
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["full_resolution_stage"] is False and config["encoder_channels"] == [16, 24, 32, 96, 320]
    loaded = DSAttentionUNet.from_pretrained(tmp_path / "m").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # a folder written before the option existed has a stem and a full-resolution stage
    full = DSAttentionUNet(encoder_name="mobilenet_v2", inference_img_size=64)
    assert full.full_resolution_stage and full.encoder_channels[0] == 16 and full.upsample_logits is None


@pytest.mark.parametrize("kwargs, match", [
    ({"encoder_name": "unet", "full_resolution_stage": False}, "needs a pretrained encoder"),
    ({"encoder_name": "mobilenet_v2", "full_resolution_stage": False,
      "encoder_channels": [16, 16, 24, 32, 96, 320]}, r"\[16, 24, 32, 96, 320\] \(no stem"),
    ({"encoder_name": "mobilenet_v2", "full_resolution_stage": False,
      "decoder_channels": [128, 64, 32, 24, 16]}, "decoder_channels needs 4 entries"),
])
def test_inconsistent_options_are_refused_naming_the_valid_ones(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DSAttentionUNet(**kwargs)


def test_imagenet_file_loads_into_the_encoder_without_a_stem(tmp_path: Path) -> None:
    state = imagenet_like_file(tmp_path / "mobilenet_v2.pth")
    model = DSAttentionUNet(**HALF)
    model.load_encoder_weights(tmp_path / "mobilenet_v2.pth")
    assert torch.equal(model.encoder.features.state_dict()["0.0.weight"], state["features.0.0.weight"])


@pytest.mark.parametrize("runner_cls, max_diff", [(FrozenFp32Runner, 1e-4), (FrozenBF16Runner, 0.1)])
def test_cpu_fast_paths_compute_the_model(runner_cls, max_diff: float) -> None:
    model = half_model()
    runner = runner_cls(model, 64)
    inputs = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    assert_runner_matches(runner, model, inputs, max_diff)


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("onnx", "onnxruntime")),
                    reason="onnx / onnxruntime not installed")
def test_exports_to_onnx_and_every_backend_predicts_the_same(tmp_path: Path) -> None:
    from lesionseg.cli.main import main as cli_main
    from lesionseg.inference import Predictor

    half_model().save_pretrained(tmp_path / "w")
    assert cli_main(["export", "--onnx", "--weights", str(tmp_path / "w")]) == 0
    img = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    exact = Predictor.from_weights(tmp_path / "w", device="cpu", fast=False).predict(img)
    assert exact.prob.shape == (90, 120)
    for kwargs in ({"backend": "onnx"}, {}):
        other = Predictor.from_weights(tmp_path / "w", device="cpu", **kwargs).predict(img)
        assert np.abs(other.prob - exact.prob).max() < 0.05, kwargs
