"""The CPU path's module rewrites find their targets by type, in both encoders' models.

Each rewrite must find something in the model it is meant for: a rewrite that finds nothing
(a block renamed, rebuilt or inlined) would leave the fast path silently slower, so these counts
fail loudly instead.
"""
from __future__ import annotations

import copy
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from lesionseg.inference.cpu.gate import ChannelsFirstGate, use_channels_first_gates  # noqa: E402
from lesionseg.inference.cpu.int8 import Int8Conv2d, cpu_int8_supported, use_int8_convs  # noqa: E402
from lesionseg.inference.cpu.resample import LerpUpsample, PairMaxPool2d, use_fast_resampling  # noqa: E402
from lesionseg.inference.cpu.swap import swap_modules  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402
from lesionseg.models.blocks import AttentionGate  # noqa: E402
from lesionseg.models.ds_attention_unet import BilinearUpsample  # noqa: E402


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _cpu_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval().to(torch.bfloat16).to(memory_format=torch.channels_last)


@pytest.mark.parametrize("encoder", ["unet", "mobilenet_v2"])
def test_every_rewrite_finds_its_targets(encoder: str) -> None:
    torch.manual_seed(0)
    model = DSAttentionUNet(encoder_name=encoder).eval()
    upsamples, pools = _count(model, BilinearUpsample), _count(model, nn.MaxPool2d)
    fast = _cpu_copy(model)
    gates = use_channels_first_gates(fast)
    resampled = use_fast_resampling(fast)
    assert gates >= 1 and _count(fast, ChannelsFirstGate) == gates
    assert upsamples >= 1 and resampled == upsamples + pools
    assert _count(fast, BilinearUpsample) == 0 and _count(fast, nn.MaxPool2d) == 0
    assert _count(fast, LerpUpsample) == upsamples and _count(fast, PairMaxPool2d) == pools
    if cpu_int8_supported():
        assert use_int8_convs(fast) >= 1 and _count(fast, Int8Conv2d) >= 1


def test_targets_are_found_wherever_they_sit() -> None:
    """A model nested under another attribute name still gets every rewrite (no attribute lookups)."""
    torch.manual_seed(0)
    wrapper = nn.Module()
    wrapper.renamed = DSAttentionUNet(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8], norm_groups=4,
                                      inference_img_size=64).eval()
    gates = _count(wrapper, AttentionGate)
    assert use_channels_first_gates(wrapper) >= 1 and _count(wrapper, ChannelsFirstGate) <= gates
    assert use_fast_resampling(wrapper) == 3 + 1  # three decoder stages, one pooling module
    assert swap_modules(wrapper, lambda m: isinstance(m, BilinearUpsample), nn.Identity) == 0  # all swapped already
