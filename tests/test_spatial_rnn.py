"""SpatialRNN2D against a loop-by-loop NumPy transcription of the spec's formula (specs/fingernail.md §1)."""

import warnings

import numpy as np
import pytest
import keras

from common.layers import SpatialRNN2D

# Active tap of each kernel, in weight order right, left, down, up (spec table).
ACTIVE_TAPS = [(0, 0), (0, 2), (0, 0), (2, 0)]
# Where direction d reads its predecessor from: S_d(h)[i, j] = h[i + di, j + dj].
OFFSETS = [(0, -1), (0, 1), (-1, 0), (1, 0)]


def relu(v):
    return max(v, 0.0)


def reference(x, kernels, steps, output_kernel=None):
    """y_d = x + h_1 + ... + h_L with h_t[i, j, c] = relu(a_d[c] * h_{t-1}[i + di, j + dj, c]), zero outside."""
    x = x.astype(np.float32)
    b_, h_, w_, c_ = x.shape
    outs = []
    for kernel, (tr, tc), (di, dj) in zip(kernels, ACTIVE_TAPS, OFFSETS):
        a = kernel[tr, tc, :, 0].astype(np.float32)
        h = x.copy()
        y = x.copy()
        for _ in range(steps):
            new = np.zeros_like(h)
            for b in range(b_):
                for i in range(h_):
                    for j in range(w_):
                        si, sj = i + di, j + dj
                        if 0 <= si < h_ and 0 <= sj < w_:
                            for c in range(c_):
                                new[b, i, j, c] = relu(np.float32(a[c] * h[b, si, sj, c]))
            h = new
            y = y + h
        outs.append(y)
    out = np.concatenate(outs, axis=-1)
    if output_kernel is not None:
        out = np.maximum(np.einsum("bhwk,kf->bhwf", out, output_kernel[0, 0]), 0.0)
    return out


def random_weights(layer, rng, scale=1.2):
    """Random weights of both signs in every tap (masked taps included: they must have no effect)."""
    weights = [rng.uniform(-scale, scale, w.shape).astype(np.float32) for w in layer.get_weights()]
    layer.set_weights(weights)
    return weights


@pytest.mark.parametrize("shape,steps", [((2, 5, 7, 3), 4), ((1, 3, 4, 2), 6), ((2, 6, 5, 1), 1)])
def test_matches_numpy_reference(shape, steps):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    layer = SpatialRNN2D(steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer.build(shape)
    # The layer warns (and only warns) once per axis that is shorter than L.
    assert len(caught) == (steps > shape[1]) + (steps > shape[2])
    weights = random_weights(layer, rng)
    got = keras.ops.convert_to_numpy(layer(x))
    assert got.shape == shape[:3] + (4 * shape[3],)
    np.testing.assert_allclose(got, reference(x, weights, steps), rtol=1e-6, atol=1e-6)


def test_convolution_merge_mode_matches_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 5, 2)).astype(np.float32)
    layer = SpatialRNN2D(3, merge_mode="convolution", output_conv_filter=3)
    layer.build(x.shape)
    weights = random_weights(layer, rng)
    assert [w.shape for w in weights][-1] == (1, 1, 8, 3)
    assert layer.count_params() == 12 * 2 + 8 * 3
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, reference(x, weights[:4], 3, weights[4]), rtol=1e-5, atol=1e-5)


def test_closed_form_positive_weight():
    """a > 0: h_t[j] = a^t relu(x[j - t]) for the right direction (spec note)."""
    x = np.array([1.0, -2.0, 3.0, 0.5, 4.0], np.float32).reshape(1, 1, 5, 1)
    layer = SpatialRNN2D(2)
    with pytest.warns(UserWarning):  # L = 2 > H = 1
        layer.build(x.shape)
    layer.set_weights([np.full(w.shape, 0.5, np.float32) for w in layer.get_weights()])
    right = keras.ops.convert_to_numpy(layer(x))[0, 0, :, 0]
    r = np.maximum(x[0, 0, :, 0], 0)
    expected = x[0, 0, :, 0] + 0.5 * np.r_[0, r[:-1]] + 0.25 * np.r_[0, 0, r[:-2]]
    np.testing.assert_allclose(right, expected, rtol=1e-6)


def test_weights_shapes_order_and_count():
    layer = SpatialRNN2D(8)
    layer.build((None, 16, 16, 5))
    assert [tuple(w.shape) for w in layer.weights] == [(1, 3, 5, 1), (1, 3, 5, 1), (3, 1, 5, 1), (3, 1, 5, 1)]
    assert [w.name for w in layer.weights] == ["right_kernel", "left_kernel", "down_kernel", "up_kernel"]
    assert layer.count_params() == 12 * 5
    assert layer.compute_output_shape((None, 16, 16, 5)) == (None, 16, 16, 20)


def test_config_round_trip():
    layer = SpatialRNN2D(7, kernel_initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=3),
                         merge_mode="convolution", output_conv_filter=4, name="rnn")
    config = layer.get_config()
    assert config["rnn_seq_length"] == 7 and config["activation"] == "relu"
    clone = SpatialRNN2D.from_config(config)
    assert clone.get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, SpatialRNN2D) and restored.get_config() == config
    # The restored layer computes what the spec's formula says for these (non-default) settings: L = 7 steps,
    # a 1x1 output convolution to 4 maps (a config that lost any of them would equal itself above).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 8, 9, 2)).astype(np.float32)
    restored.build(x.shape)
    weights = random_weights(restored, rng)
    assert [w.shape for w in weights][-1] == (1, 1, 8, 4)
    got = keras.ops.convert_to_numpy(restored(x))
    np.testing.assert_allclose(got, reference(x, weights[:4], 7, weights[4]), rtol=1e-5, atol=1e-5)


def test_keras_file_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    inputs = keras.Input((6, 8, 2))
    x = SpatialRNN2D(3, name="rnn")(inputs)
    outputs = keras.layers.Conv2D(1, 1, name="head")(x)
    model = keras.Model(inputs, outputs)
    random_weights(model.get_layer("rnn"), rng)
    data = rng.normal(size=(2, 6, 8, 2)).astype(np.float32)
    path = tmp_path / "srnn.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded.get_layer("rnn"), SpatialRNN2D)
    np.testing.assert_array_equal(reloaded.predict(data, verbose=0), model.predict(data, verbose=0))


def test_masked_taps_get_zero_gradient():
    import tensorflow as tf

    layer = SpatialRNN2D(2)
    x = tf.random.normal((1, 4, 4, 2))
    layer.build(x.shape)
    layer.set_weights([np.full(w.shape, 0.7, np.float32) for w in layer.get_weights()])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x))
    grads = tape.gradient(loss, layer.trainable_variables)
    weights = [np.full(w.shape, 0.7, np.float32) for w in layer.get_weights()]
    x_np = x.numpy()
    for d, (grad, (tr, tc)) in enumerate(zip(grads, ACTIVE_TAPS)):
        grad = grad.numpy()
        # the active tap's gradient is the central difference of the NumPy reference's sum
        for c in range(2):
            up, down = [w.copy() for w in weights], [w.copy() for w in weights]
            up[d][tr, tc, c, 0] += 1e-2
            down[d][tr, tc, c, 0] -= 1e-2
            numeric = (reference(x_np, up, 2).sum() - reference(x_np, down, 2).sum()) / 2e-2
            assert grad[tr, tc, c, 0] == pytest.approx(numeric, rel=1e-2, abs=1e-3)
        assert grad[tr, tc].all()  # the active taps learn (an all-zero gradient would pass the check below)
        masked = grad.copy()
        masked[tr, tc] = 0
        assert not masked.any()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        SpatialRNN2D(0)
    with pytest.raises(ValueError):
        SpatialRNN2D(3, merge_mode="sum")



@pytest.fixture
def bfloat16_policy():
    from common.devices import set_precision

    set_precision("bfloat16")
    yield
    set_precision("off")


@pytest.mark.parametrize("scan_dtype,gpu,want", [
    ("auto", False, "float32"),     # bfloat16 policy on a CPU: the scans in float32 (no bf16 element-wise units)
    ("auto", True, "bfloat16"),     # on a GPU they stay in the compute dtype
    ("compute", False, "bfloat16"),
    ("float32", True, "float32"),
])
def test_scan_dtype_under_bfloat16(scan_dtype, gpu, want, bfloat16_policy, monkeypatch):
    import ml_dtypes

    import common.devices

    monkeypatch.setattr(common.devices, "gpu_present", lambda: gpu)
    layer = SpatialRNN2D(5, scan_dtype=scan_dtype)
    assert layer.compute_dtype == "bfloat16" and layer.resolved_scan_dtype() == want
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
    layer.build(x.shape)
    weights = random_weights(layer, rng, scale=1.0)
    got = keras.ops.convert_to_numpy(keras.ops.cast(layer(x), "float32"))
    # Reference: the float32 formula on the bfloat16 input and taps the policy hands the layer (Keras casts
    # both to the compute dtype), so a float32 scan differs from it only by the final rounding to bfloat16.
    bf16 = lambda a: np.asarray(a, ml_dtypes.bfloat16).astype(np.float32)  # noqa: E731
    want_out = reference(bf16(x), [bf16(w) for w in weights], 5)
    if want == "float32":
        np.testing.assert_allclose(got, want_out, rtol=2 ** -8, atol=1e-6)
    else:  # bfloat16 scans round every step: close, not within one rounding
        np.testing.assert_allclose(got, want_out, rtol=5e-2, atol=5e-2)


def test_scan_dtype_in_config_and_float32_policy_unchanged():
    layer = SpatialRNN2D(3, scan_dtype="float32")
    assert SpatialRNN2D.from_config(layer.get_config()).scan_dtype == "float32"
    assert SpatialRNN2D(3).get_config()["scan_dtype"] == "auto"
    assert SpatialRNN2D(3).resolved_scan_dtype() == "float32"  # the float32 policy: the original's float32
    with pytest.raises(ValueError):
        SpatialRNN2D(3, scan_dtype="float33")
