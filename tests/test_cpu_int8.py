"""The CPU runner's int8 convolutions: close to the fp32 convolution, per image, only below full resolution."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from runner_check import assert_runner_matches  # noqa: E402
from torch import nn  # noqa: E402

import lesionseg.inference.cpu.bf16 as cpu_bf16  # noqa: E402
from lesionseg.cli.main import build_parser  # noqa: E402
from lesionseg.inference import Predictor  # noqa: E402
from lesionseg.inference.cpu.bf16 import FrozenBF16Runner  # noqa: E402
from lesionseg.inference.cpu.int8 import Int8Conv2d, cpu_int8_supported, use_int8_convs  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402

CL = torch.channels_last
needs_int8 = pytest.mark.skipif(not cpu_int8_supported(),
                                reason="no int8 dot products here (no VNNI / AMX, or capped by ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA)")
SMALL = dict(encoder_channels=[16, 32, 64, 128], decoder_channels=[64, 32, 16], inference_img_size=64)


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


@needs_int8
@pytest.mark.parametrize("offset,bias,padding", [(0.0, False, 1),   # post-ReLU-like: zero point 0
                                                 (-0.7, True, 1),   # mixed signs: zero point ~60
                                                 (-5.0, True, 1),   # all negative: zero point 255
                                                 (40.0, True, 0)])  # far from 0: coarse steps
def test_int8_conv_is_close_to_the_fp32_conv(offset: float, bias: bool, padding: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, 3, padding=padding, bias=bias).eval()
    x = (torch.rand(2, 32, 20, 24) * 3 + offset).contiguous(memory_format=CL)
    with torch.no_grad():
        want = conv(x)
    got = Int8Conv2d(conv)(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=CL)
    # 8-bit input and weight rounding; a wrong zero point or scale gives errors of order 1
    assert _rel_err(got, want) < 0.02


@needs_int8
def test_int8_conv_scales_each_image_on_its_own() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False).eval()
    q = Int8Conv2d(conv)
    quiet = torch.rand(1, 16, 12, 12) * 0.01
    loud = torch.rand(1, 16, 12, 12) * 100.0
    both = torch.cat([quiet, loud]).contiguous(memory_format=CL)
    alone = q(quiet.contiguous(memory_format=CL))
    assert torch.equal(q(both)[:1], alone)  # a loud neighbour in the batch does not coarsen its scale
    with torch.no_grad():
        assert _rel_err(alone, conv(quiet)) < 0.02
    zeros = torch.zeros(1, 16, 8, 8).contiguous(memory_format=CL)
    assert torch.equal(q(zeros), torch.zeros(1, 16, 8, 8))


@needs_int8
def test_int8_conv_keeps_bf16_in_bf16_out_with_a_bias() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3, padding=1, bias=True).eval()
    x = torch.relu(torch.randn(1, 32, 16, 16)).contiguous(memory_format=CL)
    got = Int8Conv2d(conv)(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    with torch.no_grad():
        assert _rel_err(got, conv(x)) < 0.02


@needs_int8
def test_int8_conv_takes_any_layout_and_odd_inputs() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1, bias=False).eval()
    q = Int8Conv2d(conv)
    x = torch.randn(2, 16, 10, 12)  # NCHW: oneDNN itself would read it as channels_last (and crash)
    with torch.no_grad():
        assert _rel_err(q(x), conv(x)) < 0.02
    assert q(torch.zeros(0, 16, 10, 12)).shape == (0, 24, 10, 12)
    bad = torch.randn(2, 16, 10, 12)
    bad[1, 3, 4, 5] = float("nan")
    out = q(bad.contiguous(memory_format=CL))
    # the float model's next GroupNorm turns one NaN into a NaN image; the other image is unaffected
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()
    with torch.no_grad():
        assert _rel_err(out[:1], conv(bad[:1])) < 0.02


@needs_int8
def test_int8_conv_from_several_threads_gives_the_sequential_results() -> None:
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    q = Int8Conv2d(nn.Conv2d(32, 32, 3, padding=1, bias=False).eval())
    xs = [(torch.rand(1, 32, 24, 24) * (i + 1) - i).contiguous(memory_format=CL) for i in range(8)]
    want = [q(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            assert all(torch.equal(a, b) for a, b in zip(pool.map(q, xs), want))


def test_int8_conv_refuses_what_it_does_not_compute() -> None:
    convs = (nn.Conv2d(8, 8, 3, stride=2), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 8, 3, dilation=2),
             nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.Conv2d(8, 8, 3, padding="same"))
    for conv in convs:  # refused before any oneDNN call, so this runs on every CPU
        with pytest.raises(ValueError, match="stride 1, dilation 1, one group, zero padding"):
            Int8Conv2d(conv)


@needs_int8
def test_only_3x3_convolutions_below_full_resolution_are_swapped() -> None:
    model = DSAttentionUNet(**SMALL).eval()
    # encoder levels 1-3 (two each) and the two coarser decoder stages (two each); the full-resolution
    # encoder block, the last decoder stage, 1x1 projections and heads stay as they are
    assert use_int8_convs(model) == 10
    assert all(isinstance(m, nn.Conv2d) for m in model.encoder.blocks[0] if not isinstance(m, (nn.GroupNorm, nn.ReLU)))
    assert all(isinstance(m, nn.Conv2d) for m in model.decoder.stages[-1].block
               if not isinstance(m, (nn.GroupNorm, nn.ReLU)))
    assert isinstance(model.encoder.blocks[1][0], Int8Conv2d)
    assert isinstance(model.decoder.stages[0].block[3], Int8Conv2d)
    assert isinstance(model.decoder.stages[0].reduce, nn.Conv2d) and isinstance(model.head, nn.Conv2d)


@needs_int8
def test_runner_traces_the_int8_op_and_matches_the_fp32_model() -> None:
    torch.manual_seed(3)
    model = DSAttentionUNet(**SMALL).eval()
    runner = FrozenBF16Runner(model, 64, int8=True)
    assert runner.int8_convs == 10
    assert not any(isinstance(m, Int8Conv2d) for m in model.modules())  # the caller's model is untouched
    assert_runner_matches(runner, model, [torch.randn(1, 3, 64, 64), torch.randn(2, 3, 64, 64),
                                          torch.randn(1, 3, 40, 56)], max_prob_diff=0.05)
    assert isinstance(runner._frozen, torch.jit.ScriptModule)
    assert "lesionseg::qconv2d_dynamic" in str(runner._frozen.inlined_graph)


def test_no_int8_where_the_cpu_lacks_it_or_it_is_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONSEG_OPENVINO", "0")  # the bf16 path's int8 (OpenVINO's: test_openvino_path.py)
    model = DSAttentionUNet(**SMALL).eval()
    assert FrozenBF16Runner(model, 64, int8=False).int8_convs == 0
    monkeypatch.setattr(cpu_bf16, "cpu_int8_supported", lambda: False)
    runner = FrozenBF16Runner(model, 64, int8=True)
    assert runner.int8_convs == 0 and not any(isinstance(m, Int8Conv2d) for m in runner.eager.modules())
    assert not Predictor(model, fast=True, int8=True).int8


def test_cli_no_int8_flag_reaches_the_predictor(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionseg.cli.common import load_predictor

    monkeypatch.setenv("LESIONSEG_OPENVINO", "0")  # the bf16 path's int8 (OpenVINO's: test_openvino_path.py)
    DSAttentionUNet(**SMALL).eval().save_pretrained(tmp_path / "w")
    base = ["predict", "--input_dir", "x", "--output_dir", "y", "--weights", str(tmp_path / "w"), "--device", "cpu"]
    off = load_predictor(build_parser().parse_args([*base, "--no-int8"]))
    on = load_predictor(build_parser().parse_args(base))
    assert off.fast == on.fast and not off.int8
    assert on.int8 == (isinstance(on.runner, FrozenBF16Runner) and cpu_int8_supported())
