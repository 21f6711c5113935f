"""DS-AttentionUNet: shapes, deep supervision, GroupNorm, parameter count, Hub folder round trip."""
from __future__ import annotations

import inspect
import json

import pytest
import torch
from torch import nn

from lesionseg.models import DSAttentionUNet
from lesionseg.models.blocks import AttentionGate, group_norm, make_activation

DEFAULT_NUM_PARAMETERS = 1_834_368


@pytest.fixture(scope="module")
def default_model() -> DSAttentionUNet:
    torch.manual_seed(0)
    return DSAttentionUNet()


@pytest.mark.parametrize("size", [(256, 256), (250, 333), (17, 23), (1, 1), (3, 2)])
def test_eval_output_is_one_logit_map_of_input_size(default_model, size):
    default_model.eval()
    with torch.no_grad():
        out = default_model(torch.randn(2, 3, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(256, 256), (250, 333), (17, 23)])
def test_train_mode_deep_supervision_returns_all_heads_at_input_size(default_model, size):
    default_model.train()
    try:
        outs = default_model(torch.randn(1, 3, *size))  # batch 1: GroupNorm, no batch statistics
    finally:
        default_model.eval()
    assert isinstance(outs, tuple)
    # final head + one auxiliary head per decoder stage but the last (4 stages -> 3 aux)
    assert len(outs) == 4
    for o in outs:
        assert o.shape == (1, 1, *size)
        assert torch.isfinite(o).all()
    # the auxiliary heads are separate predictions, not copies of the final one
    for aux in outs[1:]:
        assert not torch.allclose(aux, outs[0])


def test_train_mode_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = DSAttentionUNet(encoder_dropout=0.0).train()
    outs = model(torch.randn(1, 3, 40, 56))
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_without_deep_supervision_train_mode_returns_a_tensor():
    model = DSAttentionUNet(encoder_channels=(8, 16, 32, 64), decoder_channels=(32, 16, 8),
                            deep_supervision=False).train()
    out = model(torch.randn(1, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 32, 32)
    assert len(model.aux_heads) == 0


def test_groupnorm_makes_each_sample_independent_of_its_batch():
    """With BatchNorm, a sample's training-mode output would depend on the other samples."""
    torch.manual_seed(0)
    model = DSAttentionUNet(encoder_channels=(8, 16, 32, 64), decoder_channels=(32, 16, 8), norm_groups=4,
                            encoder_dropout=0.0).train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        alone = model(x[:1])[0]
        together = model(x)[0][:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)


def test_default_parameter_count(default_model):
    assert default_model.num_parameters() == DEFAULT_NUM_PARAMETERS
    assert sum(p.numel() for p in default_model.parameters()) == DEFAULT_NUM_PARAMETERS


def test_group_norm_picks_a_divisor_of_the_channels():
    assert group_norm(16, 8).num_groups == 8
    assert group_norm(12, 8).num_groups == 6
    assert group_norm(7, 8).num_groups == 7
    assert group_norm(3, 8).num_groups == 3
    assert group_norm(5, 4).num_groups == 1


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError, match="gelu.*leaky_relu.*relu.*silu"):
        make_activation("swish")
    with pytest.raises(ValueError, match="unknown activation"):
        DSAttentionUNet(activation="swish")


@pytest.mark.parametrize("kwargs, match", [
    ({"encoder_channels": (16, 32, 64), "decoder_channels": (32, 16)}, "4 to 6 levels"),
    ({"encoder_channels": (8, 16, 32, 64), "decoder_channels": (32, 16)}, "decoder_channels needs 3"),
    ({"inference_threshold": 1.0}, "inference_threshold"),
    ({"inference_threshold": 0.0}, "inference_threshold"),
])
def test_invalid_configurations_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSAttentionUNet(**kwargs)


def test_attention_gate_coefficients_lie_in_unit_interval_and_scale_the_skip():
    torch.manual_seed(0)
    gate = AttentionGate(x_channels=8, g_channels=16, inter_channels=4, norm_groups=4)
    with torch.no_grad():
        gate.psi.weight.mul_(50)  # push the sigmoid towards 0 and 1
        x, g = torch.randn(2, 8, 12, 10) * 10, torch.randn(2, 16, 12, 10) * 10
        gated, alpha = gate(x, g)
    assert alpha.shape == (2, 1, 12, 10)
    assert gated.shape == x.shape
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert alpha.min() < 0.01 and alpha.max() > 0.99  # really gates, not a constant
    torch.testing.assert_close(gated, x * alpha)


# -- Hugging Face model folder ---------------------------------------------------------------------

def test_save_pretrained_writes_config_weights_and_card(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pth", ".pt")) for n in names)
    card = (tmp_path / "README.md").read_text()
    assert "library_name: lesionseg" in card and "image-segmentation" in card


def test_config_json_keys_are_the_constructor_arguments(tmp_path, tiny_model_kwargs):
    model = DSAttentionUNet(**tiny_model_kwargs, inference_threshold=0.3, deep_supervision=False)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    ctor = set(inspect.signature(DSAttentionUNet.__init__).parameters) - {"self"}
    assert set(config) == ctor
    for key in ("in_channels", "encoder_channels", "decoder_channels", "norm_groups", "deep_supervision",
                "inference_threshold", "inference_img_size", "preprocess_mean", "preprocess_std"):
        assert key in config
    assert config["encoder_channels"] == [8, 16, 32, 64]
    assert config["inference_threshold"] == 0.3
    assert config["deep_supervision"] is False


def test_from_pretrained_round_trip_gives_identical_outputs(tmp_path, tiny_model_kwargs):
    torch.manual_seed(1)
    points = [{"threshold": 0.3, "recall": 0.95, "precision": 0.8}]
    model = DSAttentionUNet(**tiny_model_kwargs, inference_threshold=0.35, inference_operating_points=points).eval()
    model.save_pretrained(tmp_path)
    loaded = DSAttentionUNet.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.inference_threshold == 0.35
    assert loaded.inference_operating_points == points
    assert loaded.encoder_channels == [8, 16, 32, 64]
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_loading_weights_into_a_model_of_another_shape_fails(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["encoder_channels"] = [8, 16, 32, 128]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="size mismatch"):
        DSAttentionUNet.from_pretrained(tmp_path)


def test_strict_loading_refuses_extra_weights(tmp_path, tiny_model):
    """Weights with deep-supervision heads into a model without them: unexpected keys fail."""
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["deep_supervision"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="aux_heads"):
        DSAttentionUNet.from_pretrained(tmp_path)


def test_pickled_checkpoints_are_not_unpickled(tmp_path, tiny_model, monkeypatch):
    """Only model.safetensors is read: a folder with just pytorch_model.bin (a pickle) fails without
    unpickling it, and the Hub fallback to .bin files is refused."""
    tiny_model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(tiny_model.state_dict(), tmp_path / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on an untrusted checkpoint")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        DSAttentionUNet.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        DSAttentionUNet._load_as_pickle(tiny_model, str(tmp_path / "pytorch_model.bin"), "cpu", True)
