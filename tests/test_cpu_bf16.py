"""The CPU fast path (bf16 weights, channels_last, TorchScript-frozen trace) and the decoder's
reduce-then-upsample order: both must compute what the plain fp32 model computes."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lesionseg.inference.cpu.bf16 import FrozenBF16Runner, cpu_bf16_supported  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402
from lesionseg.models.ds_attention_unet import DecoderStage  # noqa: E402

SMALL = dict(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8], inference_img_size=64)


def test_decoder_reduction_before_upsampling_equals_upsampling_first() -> None:
    # a 1x1 conv without bias and bilinear upsampling commute: the cheaper order changes nothing
    torch.manual_seed(0)
    stage = DecoderStage(coarse_ch=32, skip_ch=16, out_ch=16, norm_groups=4, activation="relu",
                         attention=False).eval()
    coarse, skip = torch.randn(2, 32, 9, 13), torch.randn(2, 16, 18, 26)
    with torch.no_grad():
        up_first = stage.reduce(F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        expected = stage.block(torch.cat([skip, up_first], dim=1))
        torch.testing.assert_close(stage(coarse, skip), expected, atol=1e-5, rtol=1e-4)


def _model() -> DSAttentionUNet:
    torch.manual_seed(3)
    return DSAttentionUNet(**SMALL).eval()


def test_runner_matches_the_fp32_model_and_leaves_it_untouched() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = FrozenBF16Runner(model, 64)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    out = runner(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape == (3, 1, 64, 64)
    assert (torch.sigmoid(out) - torch.sigmoid(ref)).abs().max() < 0.03
    assert ((out > 0) == (ref > 0)).float().mean() > 0.99
    for k, v in model.state_dict().items():  # the caller's model stays fp32 and unchanged
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k


def test_runner_uses_the_frozen_trace_at_its_size_and_the_eager_model_elsewhere() -> None:
    model = _model()
    runner = FrozenBF16Runner(model, 64)
    runner(torch.randn(1, 3, 64, 64))
    assert isinstance(runner._frozen, torch.jit.ScriptModule)
    calls = []
    runner.eager.register_forward_hook(lambda *a: calls.append(1))
    runner(torch.randn(2, 3, 64, 64))  # another batch size: still the trace
    assert calls == []
    # another spatial size needs the model's pad-to-stride step, which a trace freezes: eager
    x = torch.randn(1, 3, 50, 70)
    out = runner(x)
    assert calls == [1] and out.shape == (1, 1, 50, 70)
    with torch.no_grad():
        ref = model(x)
    assert ((out > 0) == (ref > 0)).float().mean() > 0.99


def test_predictor_takes_the_bf16_runner_only_where_the_cpu_has_bf16() -> None:
    from lesionseg.inference import Predictor
    from lesionseg.inference.cpu import FrozenFp32Runner, OnnxFp32Runner, OpenVinoRunner
    from lesionseg.inference.cpu.openvino import openvino_enabled
    from lesionseg.inference.cpu.ort import onnx_runtime_available

    fast, exact = Predictor(_model(), fast=True), Predictor(_model(), fast=False)
    from lesionseg.utils.cpu_isa import cpu_fp32_fast_supported

    assert not exact.fast and exact.runner.name == "fp32"
    openvino = openvino_enabled() and cpu_fp32_fast_supported()  # then OpenVINO on every x86 class
    assert isinstance(fast.runner, OpenVinoRunner) == openvino
    assert isinstance(fast.runner, FrozenBF16Runner) == (cpu_bf16_supported() and not openvino)
    fp32_path = OnnxFp32Runner if onnx_runtime_available() else FrozenFp32Runner
    assert isinstance(fast.runner, fp32_path) == (not cpu_bf16_supported() and cpu_fp32_fast_supported()
                                                  and not openvino)
    assert fast.fast == (cpu_bf16_supported() or cpu_fp32_fast_supported())
    x = torch.randn(2, 3, 64, 64)
    assert fast.calls == 0
    p = fast._forward(x)
    assert fast.calls == 1 and p.shape == (2, 64, 64)
    bf16 = isinstance(fast.runner, FrozenBF16Runner)
    assert np.abs(p - exact._forward(x)).max() < (0.03 if bf16 else 1e-4)
