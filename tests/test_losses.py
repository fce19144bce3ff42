import numpy as np
import pytest

from common.losses import dice_coef, dice_coef_loss


def test_nerve_dice_on_hand_example():
    y = np.array([[[1, 0], [1, 0]], [[0, 0], [0, 1]]], np.float32)[..., None]
    p = np.array([[[0.8, 0.2], [0.6, 0.0]], [[0.1, 0.0], [0.0, 0.5]]], np.float32)[..., None]
    # batch level: intersection 0.8+0.6+0.5 = 1.9, sum y = 3, sum p = 2.2, smooth 1
    expected = (2 * 1.9 + 1) / (3 + 2.2 + 1)
    assert float(dice_coef(y, p)) == pytest.approx(expected, rel=1e-6)
    assert float(dice_coef_loss(y, p)) == pytest.approx(-expected, rel=1e-6)
    per_image = np.mean([(2 * 1.4 + 1) / (2 + 1.6 + 1), (2 * 0.5 + 1) / (1 + 0.6 + 1)])
    assert float(dice_coef(y, p, per_image=True)) == pytest.approx(per_image, rel=1e-6)


def test_perfect_prediction_approaches_minus_one():
    y = np.zeros((2, 8, 8, 1), np.float32)
    y[:, 2:6, 2:6] = 1
    assert float(dice_coef_loss(y, y)) == pytest.approx(-1.0)
