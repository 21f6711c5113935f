"""Safe weight loading: strict round trip, wrong configs / shapes / files fail with WeightsError."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from lesionseg.inference.weights import (DEFAULT_WEIGHTS, WeightsError, default_weights_source,  # noqa: E402
                                         load_model)
from lesionseg.utils.devices import resolve_device  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402

SMALL = dict(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8])


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def small_model() -> DSAttentionUNet:
    torch.manual_seed(0)
    return DSAttentionUNet(**SMALL, inference_threshold=0.4, inference_img_size=64).eval()


@pytest.fixture
def weights_dir(tmp_path: Path, small_model: DSAttentionUNet) -> Path:
    d = tmp_path / "w"
    small_model.save_pretrained(d)
    return d


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.inference_mode():
        return model(torch.randn(2, 3, 40, 56))


def test_round_trip_is_exact(weights_dir: Path, small_model: DSAttentionUNet) -> None:
    loaded = load_model(weights_dir)
    assert not loaded.training
    assert loaded.inference_threshold == 0.4 and loaded.inference_img_size == 64
    assert torch.equal(_outputs(loaded), _outputs(small_model))


def test_safetensors_file_path_is_accepted(weights_dir: Path, small_model: DSAttentionUNet) -> None:
    loaded = load_model(weights_dir / "model.safetensors")
    assert torch.equal(_outputs(loaded), _outputs(small_model))


def test_config_of_another_architecture_fails(weights_dir: Path) -> None:
    (weights_dir / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768,
                                                         "in_channels": 3}))
    with pytest.raises(WeightsError, match=r"unknown keys: hidden_size, model_type") as e:
        load_model(weights_dir)
    assert "\n" not in str(e.value) and str(weights_dir) in str(e.value)


def test_config_not_an_object_fails(weights_dir: Path) -> None:
    (weights_dir / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(WeightsError, match="must be a JSON object"):
        load_model(weights_dir)
    (weights_dir / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not readable JSON"):
        load_model(weights_dir)


def test_invalid_config_values_fail(weights_dir: Path) -> None:
    cfg = json.loads((weights_dir / "config.json").read_text())
    cfg["decoder_channels"] = [32, 16]  # one stage short
    (weights_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="invalid values"):
        load_model(weights_dir)


def test_wrong_shapes_fail_clearly(weights_dir: Path) -> None:
    cfg = json.loads((weights_dir / "config.json").read_text())
    cfg["encoder_channels"] = [16, 32, 64, 128]
    cfg["decoder_channels"] = [64, 32, 16]
    (weights_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"shape\(s\) differ, e\.g\. encoder\.blocks\.0"):
        load_model(weights_dir)


def test_missing_and_unexpected_keys_fail(weights_dir: Path) -> None:
    cfg = json.loads((weights_dir / "config.json").read_text())
    cfg["deep_supervision"] = False  # the file has aux heads this config does not build
    (weights_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"unexpected \(e\.g\. aux_heads"):
        load_model(weights_dir)


def test_truncated_safetensors_fails(weights_dir: Path) -> None:
    f = weights_dir / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_model(weights_dir)


def test_missing_config_fails(weights_dir: Path) -> None:
    (weights_dir / "config.json").unlink()
    with pytest.raises(WeightsError, match="config.json missing"):
        load_model(weights_dir)


def test_pickle_is_refused_unless_allowed(tmp_path: Path, weights_dir: Path, small_model: DSAttentionUNet) -> None:
    d = tmp_path / "pickled"
    d.mkdir()
    shutil.copy(weights_dir / "config.json", d / "config.json")
    torch.save({"model": small_model.state_dict(), "epoch": 3}, d / "best.pth")
    with pytest.raises(WeightsError, match="pickle"):
        load_model(d)
    loaded = load_model(d, allow_pickle=True)
    assert torch.equal(_outputs(loaded), _outputs(small_model))


class _NotWeights:
    def __init__(self) -> None:
        self.x = 1


def test_pickle_with_arbitrary_objects_is_refused_even_when_allowed(tmp_path: Path, weights_dir: Path) -> None:
    d = tmp_path / "evil"
    d.mkdir()
    shutil.copy(weights_dir / "config.json", d / "config.json")
    torch.save({"model": _NotWeights()}, d / "model.pt")
    with pytest.raises(WeightsError, match="weights-only"):
        load_model(d, allow_pickle=True)


def test_missing_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weights folder not found"):
        load_model(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="no model.safetensors"):
        load_model(empty)


def test_hub_id_offline_and_uncached_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="run once online or pass a local weights folder"):
        load_model("someone/lesion-model")


def test_hub_id_loads_from_cache_offline(weights_dir: Path, small_model: DSAttentionUNet, offline_hub_repo) -> None:
    loaded = load_model(offline_hub_repo(weights_dir, ("config.json", "model.safetensors")))
    assert torch.equal(_outputs(loaded), _outputs(small_model))


def test_default_source_and_env_override(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LESIONSEG_WEIGHTS", raising=False)
    assert default_weights_source() == str(DEFAULT_WEIGHTS)
    assert DEFAULT_WEIGHTS == Path(__file__).resolve().parents[1] / "weights"
    monkeypatch.setenv("LESIONSEG_WEIGHTS", str(weights_dir))
    assert default_weights_source() == str(weights_dir)
    assert load_model(None).inference_img_size == 64


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="valid options: auto, cpu, cuda"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            resolve_device("cuda")
