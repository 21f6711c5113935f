"""The CPU runner's upsampling and pooling must compute exactly what the model's modules do."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from runner_check import assert_runner_matches  # noqa: E402
from torch import nn  # noqa: E402

from lesionseg.inference.cpu.bf16 import FrozenBF16Runner  # noqa: E402
from lesionseg.inference.cpu.resample import (LerpUpsample, PairMaxPool2d, max_pool2x, upsample2x,  # noqa: E402
                                              use_fast_resampling)
from lesionseg.models import DSAttentionUNet  # noqa: E402
from lesionseg.models.ds_attention_unet import BilinearUpsample  # noqa: E402

CL = torch.channels_last


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("b,c,h,w", [(1, 16, 32, 32), (3, 5, 7, 11), (2, 32, 2, 2), (1, 1, 9, 4)])
def test_upsample2x_equals_bilinear_interpolation_in_fp32(b: int, c: int, h: int, w: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(b, c, h, w).contiguous(memory_format=CL)
    got = upsample2x(x)
    torch.testing.assert_close(got, _bilinear(x, (2 * h, 2 * w)), atol=1e-6, rtol=1e-6)
    assert got.is_contiguous(memory_format=CL)  # the next conv keeps its layout


def test_upsample2x_in_bf16_stays_within_rounding_of_interpolate() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 64, 64).to(torch.bfloat16).contiguous(memory_format=CL)
    want = _bilinear(x.float(), (128, 128))
    got = upsample2x(x).float()
    # two bf16 roundings (the row pass, then the column pass), each at most 2**-8 of the largest
    # input magnitude among the blended neighbours
    local_max = F.interpolate(F.max_pool2d(x.float().abs(), 3, 1, 1), scale_factor=2, mode="nearest")
    assert ((got - want).abs() <= 2 * 2 ** -8 * local_max).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_max_pool2x_equals_max_pool2d_exactly_nan_included(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 12, 18).to(dtype)
    x[0, 3, 4, 5] = float("nan")
    x[1, 7, 0, 0] = float("-inf")
    x = x.contiguous(memory_format=CL)
    got, want = max_pool2x(x), F.max_pool2d(x, 2)
    assert got.is_contiguous(memory_format=CL)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(got[0, 3, 2, 2])


def test_drop_ins_fall_back_where_the_fast_kernels_do_not_apply() -> None:
    torch.manual_seed(0)
    up, pool = LerpUpsample(), PairMaxPool2d()
    cases = [torch.randn(1, 16, 6, 8).contiguous(memory_format=CL),   # not a 2x size
             torch.randn(1, 64, 6, 8).contiguous(memory_format=CL),   # wide: stock kernel
             torch.randn(1, 16, 6, 8)]                                # NCHW
    for x in cases:
        torch.testing.assert_close(up(x, (9, 13)), _bilinear(x, (9, 13)), rtol=0, atol=0)
        torch.testing.assert_close(up(x, (12, 16)), _bilinear(x, (12, 16)), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(pool(x), F.max_pool2d(x, 2), rtol=0, atol=0)
    odd = torch.randn(1, 16, 7, 9).contiguous(memory_format=CL)      # floor semantics kept
    torch.testing.assert_close(pool(odd), F.max_pool2d(odd, 2), rtol=0, atol=0)
    row = torch.randn(1, 16, 1, 5).contiguous(memory_format=CL)
    torch.testing.assert_close(up(row, (2, 10)), _bilinear(row, (2, 10)), rtol=0, atol=0)


def test_swap_touches_only_the_stock_modules_and_no_weights() -> None:
    model = DSAttentionUNet(encoder_channels=[16, 32, 64, 128], decoder_channels=[64, 32, 16]).eval()
    keys = set(model.state_dict())
    assert use_fast_resampling(model) == 4  # three decoder upsamplings and the encoder's pool
    assert all(isinstance(s.upsample, LerpUpsample) for s in model.decoder.stages)
    assert isinstance(model.encoder.pool, PairMaxPool2d)
    assert set(model.state_dict()) == keys
    other = DSAttentionUNet(encoder_channels=[16, 32, 64, 128], decoder_channels=[64, 32, 16]).eval()
    other.encoder.pool = nn.MaxPool2d(3, stride=2)  # a different pooling is not ours to replace
    use_fast_resampling(other)
    assert isinstance(other.encoder.pool, nn.MaxPool2d)
    assert use_fast_resampling(nn.Conv2d(3, 3, 1)) == 0


def test_runner_uses_them_and_matches_the_fp32_model() -> None:
    torch.manual_seed(2)
    model = DSAttentionUNet(encoder_channels=[16, 32, 64, 128], decoder_channels=[64, 32, 16],
                            inference_img_size=64).eval()
    runner = FrozenBF16Runner(model, 64)
    assert runner.resampling_swapped == 4
    assert all(isinstance(s.upsample, BilinearUpsample) for s in model.decoder.stages)  # caller's model untouched
    assert_runner_matches(runner, model, [torch.randn(1, 3, 64, 64), torch.randn(3, 3, 64, 64),
                                          torch.randn(1, 3, 40, 56)], max_prob_diff=0.03)
