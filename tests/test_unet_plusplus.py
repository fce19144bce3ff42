"""Retinal-edema U-Net / UNet++ / dilated UNet++ (spec: shared/specs/retinal_edema.md section 1)."""

import numpy as np
import pytest

import keras

from common.models import available_models, build_model

# (trainable = torch parameter count, Keras count_params incl. BN moving statistics), spec section 1.5.
SPEC_COUNTS = {
    "edema_unet": (2_466_151, 2_468_135),
    "unet_nested": (2_953_027, 2_955_011),
    "unet_nested_dilated": (5_315_395, 5_319_427),
}
# Per-block torch counts (spec 1.5), keyed by our node names X(i,j).
ENCODER_BLOCKS = {"x00": 2_832, "x10": 14_016, "x20": 55_680, "x30": 221_952, "x40": 886_272, "det": 771}
UNET_DECODER = {"x31": 967_040, "x22": 241_856, "x13": 60_512, "x04": 15_152, "seg": 68}
NESTED_DECODER = {"x31": 967_040, "x21": 241_856, "x11": 60_512, "x01": 15_152,
                  "x22": 278_720, "x12": 69_728, "x02": 17_456, "x13": 78_944, "x03": 19_760, "x04": 22_064,
                  "seg": 4 * 68}
SMALL = dict(input_shape=(32, 32, 3), feature_scale=16)  # filters [4, 8, 16, 32, 64]


def _n_params(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _block_counts(model):
    counts = {}
    for layer in model.layers:
        key = layer.name.split("_")[0]
        counts[key] = counts.get(key, 0) + _n_params(layer.trainable_weights)
    return counts


@pytest.fixture(scope="module")
def full_models():
    keras.utils.set_random_seed(0)
    return {name: build_model(name, (64, 32, 3)) for name in SPEC_COUNTS}


@pytest.fixture(scope="module")
def small_models():
    keras.utils.set_random_seed(1)
    return {name: build_model(name, **SMALL) for name in SPEC_COUNTS}


def test_registered():
    assert set(SPEC_COUNTS) <= set(available_models())


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_parameter_counts(full_models, name):
    model = full_models[name]
    trainable, total = SPEC_COUNTS[name]
    assert _n_params(model.trainable_weights) == trainable
    assert model.count_params() == total


def test_block_counts(full_models):
    unet = _block_counts(full_models["edema_unet"])
    assert {k: unet[k] for k in {**ENCODER_BLOCKS, **UNET_DECODER}} == {**ENCODER_BLOCKS, **UNET_DECODER}
    dilated = _block_counts(full_models["unet_nested_dilated"])
    expected = {**ENCODER_BLOCKS, **NESTED_DECODER, "dilated": 4 * 590_592}
    assert {k: dilated[k] for k in expected} == expected


def test_batchnorm_torch_semantics_and_decoder_without_bn(full_models):
    model = full_models["unet_nested_dilated"]
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 2 * 5 + 4
    for bn in bns:
        assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)
        assert bn.name.startswith(("x00", "x10", "x20", "x30", "x40", "dilated"))


def test_initialisation(full_models):
    model = full_models["unet_nested_dilated"]
    # Kaiming normal fan_in, untruncated: std sqrt(2/fan_in), tails beyond 2 std present.
    kernel = keras.ops.convert_to_numpy(model.get_layer("dilated_conv1").kernel)
    std = np.sqrt(2.0 / (3 * 3 * 256))
    assert kernel.std() == pytest.approx(std, rel=0.01) and abs(kernel.mean()) < 0.01 * std
    assert np.abs(kernel).max() > 3 * std
    up = keras.ops.convert_to_numpy(model.get_layer("x31_up").kernel)  # (4, 4, out 128, in 256)
    assert up.std() == pytest.approx(np.sqrt(2.0 / (128 * 16)), rel=0.02)
    # torch default bias U(+-1/sqrt(fan_in)).
    for name, fan_in in [("dilated_conv1", 9 * 256), ("x31_up", 128 * 16), ("x04_conv1", 9 * 80),
                         ("seg_head1", 16), ("det_conv", 256)]:
        bias = keras.ops.convert_to_numpy(model.get_layer(name).bias)
        bound = 1.0 / np.sqrt(fan_in)
        assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.5 * bound, name
    # BatchNorm gamma ~ N(1, 0.02), beta 0, a different draw per layer.
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    gammas = np.concatenate([keras.ops.convert_to_numpy(bn.gamma) for bn in bns])
    assert gammas.mean() == pytest.approx(1.0, abs=0.003) and gammas.std() == pytest.approx(0.02, rel=0.1)
    assert all(not np.any(keras.ops.convert_to_numpy(bn.beta)) for bn in bns)
    g1, g2 = (keras.ops.convert_to_numpy(model.get_layer(n).gamma) for n in ("x40_conv1_bn", "x40_conv2_bn"))
    assert not np.allclose(g1, g2)


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_outputs(small_models, name):
    model = small_models[name]
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    out = model(x, training=False)
    seg, det = (keras.ops.convert_to_numpy(out[k]) for k in ("seg", "det"))
    assert seg.shape == (2, 32, 32, 4) and det.shape == (2, 3)
    np.testing.assert_allclose(np.exp(seg).sum(-1), 1.0, atol=1e-5)  # log_softmax
    assert np.all((det > 0) & (det < 1))


def test_deep_supervision_logits_are_averaged(small_models):
    model = small_models["unet_nested"]
    names = ["seg_head1", "seg_head2", "seg_head3", "seg_head4", "seg_logits", "seg"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype("float32")
    *heads, logits, seg = (keras.ops.convert_to_numpy(t) for t in probe(x, training=False))
    np.testing.assert_allclose(logits, np.mean(heads, axis=0), atol=1e-6)
    shifted = logits - logits.max(-1, keepdims=True)
    np.testing.assert_allclose(seg, shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)), atol=1e-5)
    # The four heads sit on X(0,1) .. X(0,4).
    assert [model.get_layer(f"seg_head{k}").input.shape[-1] for k in range(1, 5)] == [4] * 4


def test_dilated_block_sums_input_and_all_stages(small_models):
    model = small_models["unet_nested_dilated"]
    names = ["x40_conv2_relu"] + [f"dilated_conv{k}_relu" for k in range(1, 5)] + ["dilated_sum"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    x = np.random.default_rng(2).normal(size=(1, 32, 32, 3)).astype("float32")
    *paths, total = (keras.ops.convert_to_numpy(t) for t in probe(x, training=False))
    np.testing.assert_allclose(total, np.sum(paths, axis=0), atol=1e-5)
    assert [model.get_layer(f"dilated_conv{k}").dilation_rate for k in range(1, 5)] == [(1, 1), (2, 2),
                                                                                        (4, 4), (8, 8)]
    # The sum feeds X(3,1) and the detection head; the encoder skip X(3,0) is unchanged.
    assert model.get_layer("x31_up").input is model.get_layer("dilated_sum").output
    assert model.get_layer("det_dropout").input is model.get_layer("dilated_sum").output


def test_single_task_and_no_deep_supervision():
    model = build_model("unet_nested", **SMALL, multi_task=False, deep_supervision=False)
    assert model.output_names == ["seg"]
    assert "seg_head" in [layer.name for layer in model.layers]


@pytest.mark.parametrize("shape", [(40, 32, 3), (32, 24, 3), (32, 32)])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError):
        build_model("edema_unet", shape)


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_save_and_reload(small_models, tmp_path, name):
    model = small_models[name]
    x = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    before, after = model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
    assert sorted(after) == ["det", "seg"]
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
