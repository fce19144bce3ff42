"""Mixed precision (``--mixed-precision``) on the CPU: one tiny model of every family (tests/_families.py).

Reference: the same model in float32 from the same weights and batch (Dropout off in both, its random masks
depend on the dtype).
"""

import argparse

import keras
import numpy as np
import pytest

import _families as F
from common import losses
from common.devices import (add_precision_arguments, apply_precision, check_saved_precision, mixed_precision_support, policy_name,
                            saved_policy, set_precision)


@pytest.fixture
def float32_after():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def _run(family, policy, weights=None):
    """(model, its outputs as probabilities, the two training losses, the weights it started from)."""
    set_precision(policy)
    keras.utils.set_random_seed(0)
    model = F.without_dropout(F.build(family))
    if weights is None:
        weights = model.get_weights()
    else:
        model.set_weights(weights)
    x, y = F.batch(family)
    predictions = F.probabilities(family, model(x, training=False))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=F.loss(family))
    step_losses = [float(np.ravel(model.train_on_batch(x, y))[0]) for _ in range(2)]
    return model, predictions, step_losses, weights


@pytest.mark.parametrize("family", sorted(F.CASES))
def test_mixed_float16_matches_float32(family, tmp_path, float32_after):
    _, ref_pred, ref_losses, weights = _run(family, "off")
    model, pred, step_losses, _ = _run(family, "float16", weights)

    # Keras wraps the optimizer for loss scaling; outputs (sigmoid / log_softmax / logits) are float32
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.dtype_policy.name == "mixed_float16"
    assert all(keras.backend.standardize_dtype(o.dtype) == "float32" for o in keras.tree.flatten(model.outputs))
    assert np.all(np.isfinite(step_losses)), step_losses
    np.testing.assert_allclose(step_losses, ref_losses, atol=5e-2)
    for a, b in zip(pred, ref_pred):
        np.testing.assert_allclose(a, b, atol=2e-2)

    # saved as .keras: reloads with its layers' policies and predictions under any global policy
    x, _ = F.batch(family)
    before = F.probabilities(family, model(x, training=False))
    path = tmp_path / "m.keras"
    model.save(path)
    assert saved_policy(path) == "mixed_float16"
    keras.mixed_precision.set_dtype_policy("float32")
    loaded = keras.models.load_model(path)
    first, conv = [layer for layer in loaded.layers if isinstance(layer, keras.layers.Conv2D)][:2]
    assert first.dtype_policy.name == "float32"  # reads the image: float32 under mixed policies (build_model)
    assert conv.dtype_policy.name == "mixed_float16"
    assert conv.compute_dtype == "float16" and conv.variable_dtype == "float32"
    for a, b in zip(F.probabilities(family, loaded(x, training=False)), before):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="resume it with --mixed-precision float16"):
        check_saved_precision(path, "off")
    # loaded under its own policy (set_precision first, as the train scripts do): the loss-scaled optimizer
    # and its state come back, so a resumed run continues where it stopped
    set_precision("float16")
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)
    saved_state = [v.numpy() for v in model.optimizer.variables]
    loaded_state = [v.numpy() for v in loaded.optimizer.variables]
    assert len(saved_state) == len(loaded_state)
    for a, b in zip(loaded_state, saved_state):
        np.testing.assert_array_equal(a, b)


def test_mixed_bfloat16_trains_close_to_float32(float32_after):
    _, ref_pred, ref_losses, weights = _run("unet", "off")
    model, pred, step_losses, _ = _run("unet", "bfloat16", weights)
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # bfloat16 needs no scaling
    np.testing.assert_allclose(step_losses, ref_losses, atol=5e-2)
    np.testing.assert_allclose(pred[0], ref_pred[0], atol=5e-2)  # bfloat16: 8-bit mantissa


def _float16(x):
    return keras.ops.convert_to_tensor(np.asarray(x, np.float32), "float16")


def test_losses_are_float32_for_float16_predictions():
    rng = np.random.default_rng(1)
    y = (rng.random((2, 8, 8, 1)) > 0.5).astype(np.float32)
    p = rng.uniform(0.05, 0.95, (2, 8, 8, 1)).astype(np.float16).astype(np.float32)
    labels = rng.integers(0, 4, (2, 8, 8)).astype(np.float32)
    log_p = np.log(rng.dirichlet(np.ones(4), (2, 8, 8))).astype(np.float16).astype(np.float32)
    one_hot = np.eye(4, dtype=np.float32)[labels.astype(int)]
    cases = [
        (losses.dice_coef_loss, y, p), (losses.bce_dice_loss, y, p),
        (lambda t, q: losses.bce_dice_loss(t, q, per_pixel_dice=True), y, p),
        (losses.weighted_nll, labels, log_p), (losses.multiclass_dice_loss, labels, log_p),
        (losses.exp_log_dice_loss, labels, log_p), (losses.presence_bce, labels, p[:, 0, :3, 0]),
        (losses.tdsnet_seg_loss, one_hot, log_p), (losses.tdsnet_class_loss, one_hot, log_p[:, 0, 0]),
        (losses.tdsnet_scene_loss, labels[:, 0, 0] % 3, log_p[:, 0, 0, :3]),
    ]
    for fn, t, q in cases:
        half = fn(t, _float16(q))
        assert keras.backend.standardize_dtype(half.dtype) == "float32", fn
        # q is exactly representable in float16, so the float16 input is the same numbers as the float32 one
        np.testing.assert_allclose(np.asarray(half), np.asarray(fn(t, q)), rtol=1e-5, atol=1e-5)


def test_precision_options(float32_after):
    parser = add_precision_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--mixed-precision", "bfloat16", "--jit-compile"])
    assert (args.mixed_precision, args.jit_compile) == ("bfloat16", True)
    args = parser.parse_args([])
    assert (args.mixed_precision, args.jit_compile) == ("off", False)
    no_jit = add_precision_arguments(argparse.ArgumentParser(), jit_compile=False).parse_args([])
    assert not hasattr(no_jit, "jit_compile")
    with pytest.raises(SystemExit):
        parser.parse_args(["--mixed-precision", "float8"])
    assert set_precision("float16") == "mixed_float16"
    assert keras.layers.Dense(1).compute_dtype == "float16"
    assert set_precision("off") == "float32" and keras.layers.Dense(1).compute_dtype == "float32"
    assert policy_name("bfloat16") == "mixed_bfloat16"
    assert mixed_precision_support((6, 1)) == [] and mixed_precision_support((7, 5)) == ["float16"]
    assert mixed_precision_support((9, 0)) == ["float16", "bfloat16"] and mixed_precision_support(None) == []


def test_apply_precision_to_a_loaded_model(tmp_path, float32_after):
    """A saved model keeps its layers' policies on loading; apply_precision switches them (predict scripts)."""
    set_precision("off")
    keras.utils.set_random_seed(0)
    model = F.build("edema_unet")
    x, _ = F.batch("edema_unet")
    reference = F.probabilities("edema_unet", model(x, training=False))
    model.save(tmp_path / "f32.keras")
    set_precision("float16")
    loaded = keras.models.load_model(tmp_path / "f32.keras", compile=False)
    assert loaded.get_layer("x00_conv1").compute_dtype == "float32"  # the global policy does not apply
    half = apply_precision(loaded, "float16")
    assert half.get_layer("x00_conv2").compute_dtype == "float16"
    assert half.get_layer("x00_conv1").compute_dtype == "float32"  # reads the image (build_model's rule)
    assert half.get_layer("seg").compute_dtype == half.get_layer("det").compute_dtype == "float32"
    for a, b in zip(F.probabilities("edema_unet", half(x, training=False)), reference):
        np.testing.assert_allclose(a, b, atol=2e-2)
    back = apply_precision(half, "off")
    assert back.get_layer("x00_conv2").compute_dtype == "float32"
    for a, b in zip(F.probabilities("edema_unet", back(x, training=False)), reference):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert apply_precision(back, "off") is back
