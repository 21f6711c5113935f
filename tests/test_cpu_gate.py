"""The CPU runner's channels-first attention gate must compute exactly what the model's gate does."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import copy  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from runner_check import assert_runner_matches  # noqa: E402

from lesionseg.inference.cpu.bf16 import FrozenBF16Runner  # noqa: E402
from lesionseg.inference.cpu.gate import ChannelsFirstGate, use_channels_first_gates  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402
from lesionseg.models.blocks import AttentionGate  # noqa: E402

CL = torch.channels_last


def _gate(x_ch: int, g_ch: int, inter: int, groups: int) -> AttentionGate:
    torch.manual_seed(0)
    gate = AttentionGate(x_ch, g_ch, inter, groups).eval()
    with torch.no_grad():  # non-trivial affine parameters, so a swapped scale or shift shows
        for norm in (gate.w_x[1], gate.w_g[1]):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return gate


@pytest.mark.parametrize("x_ch,g_ch,inter,groups,batch", [(16, 16, 8, 8, 1), (16, 24, 8, 8, 3),
                                                          (64, 32, 32, 8, 2), (6, 5, 3, 3, 1)])
def test_channels_first_gate_equals_the_gate_in_fp32(x_ch: int, g_ch: int, inter: int, groups: int,
                                                     batch: int) -> None:
    gate = _gate(x_ch, g_ch, inter, groups)
    x = torch.randn(batch, x_ch, 20, 28).contiguous(memory_format=CL)
    g = torch.randn(batch, g_ch, 20, 28).contiguous(memory_format=CL)
    fast = ChannelsFirstGate(gate)
    with torch.no_grad():
        want_x, want_a = gate(x, g)
        got_x, got_a = fast(x, g)
    torch.testing.assert_close(got_a, want_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_x, want_x, atol=1e-5, rtol=1e-5)
    assert got_x.is_contiguous(memory_format=CL)  # the decoder's next conv keeps its layout


def test_channels_first_gate_in_bf16_stays_within_rounding_of_the_gate() -> None:
    gate = _gate(16, 16, 8, 8).to(torch.bfloat16).to(memory_format=CL)
    x = torch.randn(2, 16, 32, 32).to(torch.bfloat16).contiguous(memory_format=CL)
    g = torch.randn(2, 16, 32, 32).to(torch.bfloat16).contiguous(memory_format=CL)
    with torch.no_grad():
        want_x, want_a = gate(x, g)
        got_x, got_a = ChannelsFirstGate(gate)(x, g)
    assert (got_a.float() - want_a.float()).abs().max() < 0.02  # bf16 has 8 mantissa bits
    assert (got_x.float() - want_x.float()).abs().max() < 0.05 * want_x.float().abs().max()


def test_only_gates_with_one_channel_per_group_are_swapped_and_parameters_are_shared() -> None:
    model = DSAttentionUNet(encoder_channels=[16, 32, 64, 128], decoder_channels=[64, 32, 16],
                            norm_groups=8, inference_img_size=64).eval()
    original = model.decoder.stages[-1].gate
    # inter channels: 32, 16, 8; only the last (8 channels, 8 groups) has one channel per group
    assert use_channels_first_gates(model) == 1
    kinds = [type(stage.gate) for stage in model.decoder.stages]
    assert kinds == [AttentionGate, AttentionGate, ChannelsFirstGate]
    swapped = model.decoder.stages[-1].gate
    # the very same parameter tensors, not copies: the runner's bf16 copy stays one set of weights
    assert swapped.w_x.weight is original.w_x[0].weight and swapped.w_g.weight is original.w_g[0].weight
    assert swapped.norm_x is original.w_x[1] and swapped.norm_g is original.w_g[1]
    assert swapped.psi.weight is original.psi.weight and swapped.psi.bias is original.psi.bias
    plain = DSAttentionUNet(encoder_channels=[16, 32, 64, 128], decoder_channels=[64, 32, 16],
                            decoder_attention=False, inference_img_size=64)
    assert use_channels_first_gates(plain) == 0


def test_runner_swaps_its_private_copy_and_matches_the_fp32_model() -> None:
    torch.manual_seed(1)
    model = DSAttentionUNet(encoder_channels=[16, 32, 64, 128], decoder_channels=[64, 32, 16],
                            inference_img_size=64).eval()
    original = copy.deepcopy(model)
    runner = FrozenBF16Runner(model, 64)
    assert runner.gates_swapped == 1
    assert all(isinstance(s.gate, AttentionGate) for s in model.decoder.stages)  # caller's model untouched
    # the frozen trace, then eager at another size
    assert_runner_matches(runner, original, [torch.randn(2, 3, 64, 64), torch.randn(1, 3, 50, 70)],
                          max_prob_diff=0.03)
