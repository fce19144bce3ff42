"""XLA (``--jit-compile``) on the CPU: one tiny model of every family (tests/_families.py) trains two steps
with ``jit_compile=True`` exactly as without it (same weights, batch and optimizer; Dropout off)."""

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
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=F.loss(family), jit_compile=jit_compile)
    x, y = F.batch(family)
    step_losses = [float(np.ravel(model.train_on_batch(x, y))[0]) for _ in range(2)]
    return step_losses, model.get_weights(), weights


@pytest.mark.parametrize("family", sorted(F.CASES))
def test_jit_compile_gives_the_same_steps(family):
    if F.CASES[family][0] in XLA_UNSUPPORTED:
        pytest.skip(XLA_UNSUPPORTED[F.CASES[family][0]])
    ref_losses, ref_after, weights = _two_steps(family, False)
    xla_losses, xla_after, _ = _two_steps(family, True, weights)
    # the second loss is computed after one update, so it also compares the gradients and the Adam step
    np.testing.assert_allclose(xla_losses, ref_losses, atol=1e-4, rtol=1e-4)
    for a, b, w in zip(xla_after, ref_after, weights):
        # Adam moves each weight by at most ~lr per step: 2 steps of 1e-3, compared at 1 % of that
        np.testing.assert_allclose(a, b, atol=2e-5)
        assert a.shape == w.shape


def test_unsupported_model_fails_in_one_line(monkeypatch):
    monkeypatch.setitem(XLA_UNSUPPORTED, "some_model", "layer X has no XLA kernel")
    with pytest.raises(ValueError, match="^--jit-compile: XLA cannot compile some_model: layer X"):
        check_jit_compile("some_model", True)
    check_jit_compile("some_model", False)
    check_jit_compile("nerve_unet", True)
