"""TDSNet model (common/models/tdsnet.py), its blocks (common/layers.py) and losses (common/losses.py)."""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from common import losses
from common.layers import VGG16_NOTOP_FILE, bilinear_upsample
from common.models import build_model
from common.models.tdsnet import tdsnet

SMALL = (64, 96, 3)


@pytest.fixture(scope="module")
def small_model():
    keras.utils.set_random_seed(0)
    return tdsnet(SMALL)


@pytest.fixture(scope="module")
def vgg16_notop():
    keras.utils.set_random_seed(1)
    return keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))


# ---------------------------------------------------------------------------------------------------- model


def _params(model, names):
    return sum(model.get_layer(n).count_params() for n in names)


def test_parameter_count_at_spec_size():
    model = build_model("tdsnet", (1024, 1280, 3))
    assert model.count_params() == 22_122_331
    vgg = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    assert _params(model, vgg) == 14_714_688
    ce = ["ce_dilate0"] + [f"ce_dilate{r}" for r in (1, 2, 4, 8, 16)] + [
        "task_seg_cls", "task_seg_scene", "task_cls_scene"]
    assert _params(model, ["ce_dilate0"]) == 2_097_408
    assert _params(model, ce) == 6_818_048
    assert _params(model, ["cls_fc", "cls"]) == 134_412
    assert _params(model, ["scene_fc", "scene"]) == 132_099
    assert _params(model, ["seg_dec1_conv1", "seg_dec1_conv2", "seg_dec0_conv", "seg_logits"]) == 323_084
    assert model.output_names == ["seg", "cls", "scene"]
    assert [tuple(o.shape) for o in model.outputs] == [(None, 1024, 1280, 12), (None, 12), (None, 3)]


def test_outputs_and_initialisation(small_model):
    seg, cls, scene = small_model.predict(np.random.default_rng(0).random((2, *SMALL), "float32"), verbose=0)
    assert seg.shape == (2, *SMALL[:2], 12) and cls.shape == (2, 12) and scene.shape == (2, 3)
    np.testing.assert_allclose(np.exp(seg).sum(-1), 1.0, atol=1e-5)  # log_softmax over channels
    # CE block and task convs: zero biases; other new layers: PyTorch's U(+-1/sqrt(fan_in)) biases.
    for name in ("ce_dilate0", "ce_dilate1", "ce_dilate16", "task_cls_scene"):
        assert not np.any(small_model.get_layer(name).get_weights()[1])
    bias = small_model.get_layer("seg_dec1_conv1").get_weights()[1]
    bound = 1 / np.sqrt(9 * 512)
    assert np.any(bias) and np.all(np.abs(bias) <= bound)
    kernel = small_model.get_layer("cls_fc").get_weights()[0]
    assert np.abs(kernel).max() <= 1 / np.sqrt(512) and kernel.std() > 0.5 / np.sqrt(3 * 512)


def test_rejects_sizes_not_multiple_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        tdsnet((100, 96, 3))


def torch_bilinear_reference(x, factor):
    """NumPy port of PyTorch's bilinear upsampling with align_corners=False on NHWC arrays."""

    def axis_weights(n_in):
        src = (np.arange(n_in * factor) + 0.5) / factor - 0.5
        src = np.maximum(src, 0.0)  # PyTorch clamps negative source coordinates to 0
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo)

    h0, h1, wh = axis_weights(x.shape[1])
    w0, w1, ww = axis_weights(x.shape[2])
    wh = wh[None, :, None, None]
    ww = ww[None, None, :, None]
    rows = x[:, h0] * (1 - wh) + x[:, h1] * wh
    return rows[:, :, w0] * (1 - ww) + rows[:, :, w1] * ww


def test_reference_matches_pytorch_on_hand_example():
    # torch.nn.Upsample(scale_factor=2, mode='bilinear')(tensor([[[[0., 1.]]]])) -> [0, .25, .75, 1]
    out = torch_bilinear_reference(np.array([0.0, 1.0]).reshape(1, 1, 2, 1), 2)
    np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.25, 0.75, 1.0])


@pytest.mark.parametrize("factor", [2, 16])
def test_bilinear_upsample_is_align_corners_false(factor):
    x = np.random.default_rng(factor).normal(size=(2, 3, 5, 4)).astype("float32")
    inputs = keras.Input(x.shape[1:])
    layer_out = keras.Model(inputs, bilinear_upsample(inputs, factor))(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer_out), torch_bilinear_reference(x, factor),
                               atol=1e-5)


def test_model_upsampling_layer_is_align_corners_false(small_model):
    x = np.random.default_rng(3).normal(size=(1, 4, 6, 512)).astype("float32")
    out = keras.ops.convert_to_numpy(small_model.get_layer("seg_upsample")(x))
    np.testing.assert_allclose(out, torch_bilinear_reference(x, 16), atol=1e-5)


def test_keras_file_roundtrip(small_model, tmp_path):
    x = np.random.default_rng(1).random((1, *SMALL), "float32")
    path = tmp_path / "tdsnet.keras"
    small_model.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.output_names == ["seg", "cls", "scene"]
    for before, after in zip(small_model.predict(x, verbose=0), reloaded.predict(x, verbose=0)):
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- weights


def test_imagenet_without_local_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match="never downloaded") as error:
        tdsnet(SMALL, encoder_weights="imagenet")
    assert VGG16_NOTOP_FILE in str(error.value) and "encoder_weights=" in str(error.value)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        tdsnet(SMALL, encoder_weights=str(tmp_path / "missing.h5"))


def _assert_encoder_equals(model, vgg):
    n = 0
    for layer in vgg.layers:
        if layer.weights:
            for got, want in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(got, want)
            n += 1
    assert n == 13


def test_encoder_weights_from_saved_vgg16(vgg16_notop, tmp_path):
    path = tmp_path / "vgg16_notop.weights.h5"
    vgg16_notop.save_weights(path)
    model = tdsnet(SMALL, encoder_weights=str(path))
    _assert_encoder_equals(model, vgg16_notop)


def _write_legacy_notop_h5(vgg, path):
    """Write weights in the layout of Keras's legacy ``vgg16_..._notop.h5`` (root ``layer_names``)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in vgg.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in vgg.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}_{'W' if i == 0 else 'b'}_1:0".encode() for i in range(len(layer.weights))]
            group.attrs["weight_names"] = names
            for weight_name, value in zip(names, layer.get_weights()):
                group.create_dataset(weight_name.decode(), data=value)


def test_encoder_weights_imagenet_from_keras_cache(vgg16_notop, tmp_path, monkeypatch):
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    _write_legacy_notop_h5(vgg16_notop, cache / VGG16_NOTOP_FILE)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    model = tdsnet(SMALL, encoder_weights="imagenet")
    _assert_encoder_equals(model, vgg16_notop)
    with pytest.raises(ValueError, match="3-channel"):
        tdsnet((64, 96, 1), encoder_weights="imagenet")


# ---------------------------------------------------------------------------------------------------- losses


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_jaccard(t, logp, eps=1e-15):
    p = np.exp(logp.astype(np.float64))
    total = 0.0
    for c in range(t.shape[-1]):
        tc, pc = t[..., c], p[..., c]
        if tc.sum() == 0:
            total += 1.0 if pc.sum() != 0 else 0.0
        else:
            inter = (pc * tc).sum()
            total += 1 - (inter + eps) / (pc.sum() + tc.sum() - inter + eps)
    return total


def np_seg(t, logp, w=0.5):
    nll = -np.mean(np.take_along_axis(logp.astype(np.float64), t.argmax(-1)[..., None], -1))
    return (1 - w) * nll + w * np_jaccard(t, logp)


def np_bce_logits(y, z):
    s = 1 / (1 + np.exp(-z.astype(np.float64)))
    return np.mean(-(y * np.log(s) + (1 - y) * np.log(1 - s)))


def np_scene(ids, s):
    return np.mean(-_log_softmax(s.astype(np.float64))[np.arange(len(ids)), ids])


@pytest.fixture
def hand_example():
    """Batch 2, 2x3 pixels, 4 classes; class 3 absent from the mask; seg logits pushing class 3 above 0.5."""
    labels = np.array([[[0, 0, 1], [0, 2, 2]],
                       [[1, 1, 1], [0, 0, 1]]])
    t = np.eye(4, dtype="float32")[labels]
    z = np.array([[[[2.0, 0.1, -1.0, 0.0], [1.0, 1.5, 0.0, -2.0], [0.0, 3.0, 0.0, 0.5]],
                   [[0.2, 0.1, 0.3, 2.5], [-1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 1.0, 1.1]]],
                  [[[0.0, 1.0, 0.0, 0.0], [0.3, 0.2, 0.1, 0.0], [0.0, 2.0, 0.0, 0.0]],
                   [[1.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.4]]]], "float32")
    logp = _log_softmax(z).astype("float32")
    cls_logits = np.array([[1.5, -0.5, 2.0, 0.3], [-1.0, 2.0, 0.0, -3.0]], "float32")
    scene_logits = np.array([[0.1, 1.2, -0.4], [2.0, 0.0, 0.5]], "float32")
    scene_ids = np.array([1, 2])
    return t, logp, cls_logits, scene_logits, scene_ids


def _f(x):
    return float(keras.ops.convert_to_numpy(x))


def test_seg_loss_exact_hand_value():
    # Two pixels of class 0, uniform softmax over 2 classes: J_0 = 1 - 1/(3-1) = 0.5, J_1 (absent) = 1.
    t = np.array([[[[1.0, 0.0], [1.0, 0.0]]]], "float32")
    logp = np.log(np.full((1, 1, 2, 2), 0.5, "float32"))
    assert _f(losses.tdsnet_jaccard_loss(t, logp)) == pytest.approx(1.5, abs=1e-6)
    assert _f(losses.tdsnet_seg_loss(t, logp)) == pytest.approx(0.5 * np.log(2) + 0.75, abs=1e-6)


def test_losses_match_numpy_reference(hand_example):
    t, logp, cls_logits, scene_logits, scene_ids = hand_example
    presence = (t.reshape(2, -1, 4).max(1) > 0).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(losses.class_presence(t)), presence)
    q = (np.exp(logp).reshape(2, -1, 4).max(1) > 0.5).astype("float32")
    assert q[0, 3] == 1 and presence[0, 3] == 0  # the sync target differs from the GT presence here
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(losses.sync_targets(logp)), q)

    assert _f(losses.tdsnet_jaccard_loss(t, logp)) == pytest.approx(np_jaccard(t, logp), rel=1e-5)
    assert _f(losses.tdsnet_seg_loss(t, logp)) == pytest.approx(np_seg(t, logp), rel=1e-5)
    assert _f(losses.tdsnet_class_loss(presence, cls_logits)) == pytest.approx(
        np_bce_logits(presence, cls_logits), rel=1e-5)
    assert _f(losses.tdsnet_class_loss(t, cls_logits)) == pytest.approx(np_bce_logits(presence, cls_logits), rel=1e-5)
    assert _f(losses.tdsnet_sync_loss(logp, cls_logits)) == pytest.approx(np_bce_logits(q, cls_logits), rel=1e-5)
    assert _f(losses.tdsnet_scene_loss(scene_ids, scene_logits)) == pytest.approx(
        np_scene(scene_ids, scene_logits), rel=1e-5)

    terms = losses.tdsnet_loss_terms(t, None, scene_ids, logp, cls_logits, scene_logits)
    expected = (np_seg(t, logp) + 0.2 * np_bce_logits(presence, cls_logits) + 0.6 * np_bce_logits(q, cls_logits)
                + 0.2 * np_scene(scene_ids, scene_logits))
    assert losses.TDSNET_LOSS_WEIGHTS == (0.2, 0.6, 0.2)
    assert _f(terms["total"]) == pytest.approx(expected, rel=1e-5)
    assert _f(losses.tdsnet_total_loss(t, presence, scene_ids, logp, cls_logits, scene_logits)) == pytest.approx(
        expected, rel=1e-5)


def test_sync_target_carries_no_gradient(hand_example):
    _, logp, cls_logits, _, _ = hand_example
    seg = tf.Variable(logp)
    cls = tf.Variable(cls_logits)
    with tf.GradientTape(persistent=True) as tape:
        loss = losses.tdsnet_sync_loss(seg, cls)
        target_sum = tf.reduce_sum(losses.sync_targets(seg))
    grad_seg, grad_cls = tape.gradient(loss, [seg, cls])
    assert grad_seg is None or not np.any(grad_seg.numpy())
    assert tape.gradient(target_sum, seg) is None
    assert grad_cls is not None and np.any(grad_cls.numpy())


def test_absent_class_jaccard_term_is_constant(hand_example):
    t, logp, _, _, _ = hand_example
    seg = tf.Variable(logp)
    with tf.GradientTape() as tape:
        # Only class 3 (absent from the mask) contributes: restrict the mask and prediction to that channel.
        loss = losses.tdsnet_jaccard_loss(t[..., 3:], seg[..., 3:])
    assert _f(loss) == 1.0
    grad = tape.gradient(loss, seg)
    assert grad is None or not np.any(grad.numpy())
