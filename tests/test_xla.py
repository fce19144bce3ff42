"""XLA (``--jit-compile``) on the CPU: one tiny model of every family (tests/_families.py) trains two steps
with ``jit_compile=True`` as without it: same losses within 1e-4, same weights after the two SGD steps (same
weights, batch and optimizer; Dropout off)."""

import keras
import numpy as np
import pytest

import _families as F
from common.devices import XLA_UNSUPPORTED, check_jit_compile


def _two_steps(family, jit_compile, weights=None):
    keras.utils.set_random_seed(0)
    model = F.without_dropout(F.build(family))
    if weights is None:
        weights = model.get_weights()
    else:
        model.set_weights(weights)
    # SGD, not Adam: Adam's g / sqrt(v) turns the rounding noise of a zero gradient (the bias of a conv before
    # BatchNorm) into a full-size step, so the weights would differ by ~lr wherever the gradient is zero
    model.compile(optimizer=keras.optimizers.SGD(1e-2), loss=F.loss(family), jit_compile=jit_compile)
    x, y = F.batch(family)
    step_losses = [float(np.ravel(model.train_on_batch(x, y))[0]) for _ in range(2)]
    return step_losses, model.get_weights(), weights


@pytest.mark.parametrize("family", sorted(F.CASES))
def test_jit_compile_gives_the_same_steps(family):
    if F.CASES[family][0] in XLA_UNSUPPORTED:
        pytest.skip(XLA_UNSUPPORTED[F.CASES[family][0]])
    ref_losses, ref_after, weights = _two_steps(family, False)
    xla_losses, xla_after, _ = _two_steps(family, True, weights)
    # the second loss is computed after one update, so it also compares the gradients
    np.testing.assert_allclose(xla_losses, ref_losses, atol=1e-4, rtol=1e-4)
    moved = max(float(np.abs(a - w).max()) for a, w in zip(ref_after, weights))
    assert moved > 1e-4  # the steps changed the weights, so comparing them compares the updates
    for a, b in zip(xla_after, ref_after):  # weights and BatchNorm statistics after the two steps
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unsupported_model_fails_in_one_line(monkeypatch):
    monkeypatch.setitem(XLA_UNSUPPORTED, "some_model", "layer X has no XLA kernel")
    with pytest.raises(ValueError, match="^--jit-compile: XLA cannot compile some_model: layer X"):
        check_jit_compile("some_model", True)
    check_jit_compile("some_model", False)
    check_jit_compile("nerve_unet", True)
