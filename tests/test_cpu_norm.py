"""The bf16 runner's fp32 GroupNorms (one channel per group) compute the layer's own function."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import copy  # noqa: E402

import torch  # noqa: E402
from runner_check import assert_runner_matches  # noqa: E402
from torch import nn  # noqa: E402

from lesionseg.inference.cpu.bf16 import FrozenBF16Runner  # noqa: E402
from lesionseg.inference.cpu.gate import ChannelsFirstGate, use_channels_first_gates  # noqa: E402
from lesionseg.inference.cpu.norm import Fp32GroupNorm, use_fp32_narrow_norms  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402

CL = torch.channels_last
# full-resolution stem and last decoder stage as wide as the GroupNorm groups: one channel per group
LEAN = dict(encoder_name="mobilenet_v2", encoder_channels=[8, 16, 24, 32, 96, 320],
            decoder_channels=[128, 64, 32, 24, 8], norm_groups=8, inference_img_size=64)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    torch.manual_seed(0)
    norm = nn.GroupNorm(groups, channels).eval()
    with torch.no_grad():  # non-trivial affine parameters, so a swapped scale or shift shows
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


def test_fp32_group_norm_equals_the_layer_and_keeps_dtype_and_layout() -> None:
    norm = _norm(8, 8)
    x = (torch.randn(2, 8, 12, 20) * 3 + 1).contiguous(memory_format=CL)
    with torch.no_grad():
        torch.testing.assert_close(Fp32GroupNorm(norm)(x), norm(x), atol=1e-5, rtol=1e-5)
        xb = x.to(torch.bfloat16)
        got = Fp32GroupNorm(copy.deepcopy(norm).to(torch.bfloat16))(xb)
        want = norm(xb.float())  # the fp32 norm of the bf16 activations, rounded once at the end
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=CL)
    assert (got.float() - want).abs().max() < 0.02 * want.abs().max()


def test_only_narrow_bf16_norms_outside_the_gates_are_swapped() -> None:
    model = copy.deepcopy(DSAttentionUNet(**LEAN)).eval().to(torch.bfloat16)
    gates = use_channels_first_gates(model)
    assert gates >= 1
    in_gates = [m for g in model.modules() if isinstance(g, ChannelsFirstGate) for m in g.modules()
                if isinstance(m, nn.GroupNorm)]
    narrow = [m for m in model.modules() if isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels
              and not any(m is n for n in in_gates)]
    # the stem and the last decoder stage: two conv-norm pairs each
    assert len(narrow) == 4
    assert use_fp32_narrow_norms(model) == 4
    assert sum(isinstance(m, Fp32GroupNorm) for m in model.modules()) == 4
    assert all(isinstance(m, nn.GroupNorm) for m in in_gates)  # the gates' norms stay as they were
    # an fp32 model has nothing to gain and is left alone
    assert use_fp32_narrow_norms(DSAttentionUNet(**LEAN).eval()) == 0


def test_bf16_runner_of_a_lean_model_swaps_its_norms_and_matches_fp32() -> None:
    torch.manual_seed(3)
    model = DSAttentionUNet(**LEAN).eval()
    runner = FrozenBF16Runner(model, 64)
    # the stem runs in the fp32 encoder; the last decoder stage's two norms are swapped
    assert runner.norms_swapped == (2 if runner.fp32_encoder else 4)
    assert_runner_matches(runner, model, [torch.randn(2, 3, 64, 64), torch.rand(1, 3, 64, 64)], max_prob_diff=0.05)
