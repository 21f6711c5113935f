"""Losses against values computed by hand on 2x2 images.

Logits of +-30 give sigmoid probabilities within 1e-13 of 1 / 0 (hard predictions); logits of 0
give p = 0.5 everywhere. Soft counts below use target [[1, 0], [0, 0]] unless stated.
"""
from __future__ import annotations

import math

import pytest
import torch

from lesionseg.losses import (
    LOSSES,
    bce_dice_loss,
    bce_loss,
    combined_loss,
    deep_supervision_weights,
    dice_loss,
    focal_tversky_loss,
    get_loss,
    supervised_loss,
    tversky_index,
    tversky_loss,
)

BIG = 30.0
TARGET = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])          # (1, 1, 2, 2), one lesion pixel
PERFECT = BIG * (2 * TARGET - 1)                              # +30 on the lesion, -30 elsewhere
ALL_WRONG = -PERFECT                                          # TP 0, FP 3, FN 1
HALF = torch.zeros_like(TARGET)                               # p = 0.5: TP 0.5, FP 1.5, FN 0.5
LN2 = math.log(2.0)


def close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> None:
    assert value.dim() == 0, "losses return a scalar"
    assert value.item() == pytest.approx(expected, abs=tol)


# -- Dice (smooth 1) ----------------------------------------------------------------------------

def test_dice_perfect_prediction_costs_nothing():
    close(dice_loss(PERFECT, TARGET), 0.0)


def test_dice_all_wrong():
    # 1 - (2*0 + 1) / (2*0 + 3 + 1 + 1)
    close(dice_loss(ALL_WRONG, TARGET), 1 - 1 / 5)


def test_dice_at_half_probability():
    # 1 - (2*0.5 + 1) / (2*0.5 + 1.5 + 0.5 + 1) = 1 - 2/4
    close(dice_loss(HALF, TARGET), 0.5)


def test_dice_empty_mask_predicted_empty_costs_nothing():
    empty = torch.zeros_like(TARGET)
    close(dice_loss(torch.full_like(TARGET, -BIG), empty), 0.0)
    # one false-positive pixel on an empty mask: 1 - 1 / (1 + 1)
    close(dice_loss(torch.tensor([[[[BIG, -BIG], [-BIG, -BIG]]]]), empty), 0.5)


def test_dice_is_averaged_per_image_not_pooled():
    logits = torch.cat([PERFECT, HALF])
    target = torch.cat([TARGET, TARGET])
    # per image: (0 + 0.5) / 2; pooled over the batch it would be 1 - 4/6
    close(dice_loss(logits, target), 0.25)


# -- BCE + Dice ---------------------------------------------------------------------------------

def test_bce_at_half_probability_is_ln2():
    close(bce_loss(HALF, TARGET), LN2)


def test_bce_dice_values():
    close(bce_dice_loss(HALF, TARGET), LN2 + 0.5)
    close(bce_dice_loss(PERFECT, TARGET), 0.0)
    # BCE of a confidently wrong pixel is ~30 (its logit); all four pixels are wrong
    close(bce_dice_loss(ALL_WRONG, TARGET), BIG + 0.8, tol=1e-5)


# -- Tversky (alpha 0.3 on FP, beta 0.7 on FN, smooth 1) -----------------------------------------

def test_tversky_values():
    close(tversky_loss(PERFECT, TARGET), 0.0)
    # TI = (0 + 1) / (0 + 0.3*3 + 0.7*1 + 1) = 1 / 2.6
    close(tversky_loss(ALL_WRONG, TARGET), 1 - 1 / 2.6)
    # TI = (0.5 + 1) / (0.5 + 0.3*1.5 + 0.7*0.5 + 1) = 1.5 / 2.3
    close(tversky_loss(HALF, TARGET), 1 - 1.5 / 2.3)


def test_tversky_penalises_a_missed_pixel_more_than_a_false_alarm():
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    one_fn = torch.tensor([[[[BIG, -BIG], [-BIG, -BIG]]]])   # TP 1, FN 1
    one_fp = torch.tensor([[[[BIG, BIG], [BIG, -BIG]]]])     # TP 2, FP 1
    close(tversky_index(one_fn, target, 0.3, 0.7).squeeze(), (1 + 1) / (1 + 0.7 + 1))
    close(tversky_index(one_fp, target, 0.3, 0.7).squeeze(), (2 + 1) / (2 + 0.3 + 1))
    assert tversky_loss(one_fn, target) > tversky_loss(one_fp, target)


def test_tversky_index_with_other_weights():
    # alpha = beta = 0.5 (Dice-like): (0.5 + 1) / (0.5 + 0.5*1.5 + 0.5*0.5 + 1) = 1.5 / 2.5
    ti = tversky_index(HALF, TARGET, 0.5, 0.5).squeeze()
    close(ti, 0.6)


# -- Focal Tversky (gamma 0.75) and combined ------------------------------------------------------

def test_focal_tversky_values():
    close(focal_tversky_loss(PERFECT, TARGET), 0.0)
    close(focal_tversky_loss(HALF, TARGET), (1 - 1.5 / 2.3) ** 0.75)
    close(focal_tversky_loss(ALL_WRONG, TARGET), (1 - 1 / 2.6) ** 0.75)
    # gamma < 1 raises a loss below 1: focal Tversky > Tversky on a bad image
    assert focal_tversky_loss(HALF, TARGET) > tversky_loss(HALF, TARGET)


def test_combined_is_bce_plus_dice_plus_focal_tversky():
    close(combined_loss(HALF, TARGET), LN2 + 0.5 + (1 - 1.5 / 2.3) ** 0.75)
    close(combined_loss(PERFECT, TARGET), 0.0)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_has_finite_gradients_and_accepts_low_precision_logits(name):
    fn = get_loss(name)
    logits = torch.zeros(2, 1, 4, 4, requires_grad=True)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :2] = 1
    loss = fn(logits, target)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # bfloat16 logits (autocast) are computed in float32
    low = fn(logits.detach().to(torch.bfloat16), target)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(loss.item(), rel=1e-6)


# -- lookup and deep supervision ---------------------------------------------------------------

def test_get_loss_by_name():
    assert get_loss("dice") is dice_loss
    assert get_loss("combined") is combined_loss
    assert list(LOSSES) == ["dice", "bce_dice", "tversky", "focal_tversky", "combined"]


def test_get_loss_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_loss("focal")
    msg = str(err.value)
    assert "'focal'" in msg
    for name in LOSSES:
        assert name in msg


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_deep_supervision_weights_sum_to_one_and_decay(n):
    w = deep_supervision_weights(n)
    assert len(w) == n
    assert sum(w) == pytest.approx(1.0)
    for a, b in zip(w, w[1:]):
        assert b == pytest.approx(a / 2)


def test_deep_supervision_weights_values():
    assert deep_supervision_weights(4) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    assert deep_supervision_weights(3, decay=1.0) == pytest.approx([1 / 3] * 3)


def test_supervised_loss_with_a_tuple_is_the_weighted_sum():
    outputs = (PERFECT, HALF, ALL_WRONG, HALF)
    expected = (8 * 0.0 + 4 * 0.5 + 2 * 0.8 + 1 * 0.5) / 15
    close(supervised_loss(outputs, TARGET, dice_loss), expected)
    manual = sum(w * dice_loss(o, TARGET) for w, o in zip(deep_supervision_weights(4), outputs))
    close(supervised_loss(list(outputs), TARGET, dice_loss), manual.item())


def test_supervised_loss_with_a_tensor_is_the_plain_loss():
    close(supervised_loss(HALF, TARGET, dice_loss), 0.5)
    close(supervised_loss(HALF, TARGET, bce_dice_loss), LN2 + 0.5)
