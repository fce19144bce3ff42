"""Under ``mixed_bfloat16`` (the CPU's fast path): the custom layers compute in bfloat16 (no float32 island of
ours) and every family's outputs stay close to float32 from the same weights.

The float32 ops that remain are Keras's and TensorFlow's own, on purpose: BatchNormalization's moments,
GlobalAveragePooling's mean, ``ResizeBilinear`` (TensorFlow's kernel returns float32) and the output layers
(float32 by the project's design). One of ours on purpose: ``SpatialRNN2D``'s scans run in float32 under the
bfloat16 policy when no GPU is present (``scan_dtype='auto'``: faster on a CPU); with ``scan_dtype='compute'``
they stay bfloat16 and are checked like the rest. And ``build_model``'s: the layer that reads the image (the
first convolution) computes in float32 under a mixed policy (common.devices.keep_input_layers_float32)."""

import re
import warnings

import keras
import numpy as np
import pytest

from common.devices import set_precision
from common.layers import SpatialRNN2D
from tests import _families

FLOAT32_ALLOWED = (keras.layers.BatchNormalization, keras.layers.GlobalAveragePooling2D, keras.layers.UpSampling2D)


@pytest.fixture
def float32_after():
    yield
    set_precision("off")


def _image_readers(model):
    """Names of the layers with weights whose inputs include the model's input tensor, read from the saved config
    (not from the graph walk under test); a merge of the image with features has no weights and stays bfloat16."""
    config = model.get_config()
    inputs = {entry[0] for entry in config["input_layers"]} if isinstance(config["input_layers"][0], list) \
        else {config["input_layers"][0]}

    def histories(node):
        if isinstance(node, dict):
            if "keras_history" in node:
                yield node["keras_history"][0]
            for value in node.values():
                yield from histories(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                yield from histories(value)

    return {layer["name"] for layer in config["layers"]
            if inputs & set(histories(layer["inbound_nodes"])) and model.get_layer(layer["name"]).weights}


def _float32_layers(model):
    return {layer.name for layer in model.layers if layer.compute_dtype == "float32"}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="reads the TensorFlow graph")
@pytest.mark.parametrize("family", ["bcdu_net", "sedu_net", "unet2d_srnn", "tdsnet"])
def test_no_float32_compute_outside_keras_islands_and_outputs(family, float32_after):
    import tensorflow as tf

    set_precision("bfloat16")
    model = _families.build(family)
    x, _ = _families.batch(family)
    graph = tf.function(lambda t: model(t, training=True)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32)).graph
    layers = {layer.name: layer for layer in model.layers}
    readers = _image_readers(model)  # float32 under mixed policies on purpose (tests below)
    outputs = {t._keras_history.operation.name for t in keras.tree.flatten(model.outputs)}
    skip = {"Cast", "ReadVariableOp", "Placeholder", "Const", "Identity", "NoOp", "Shape", "StridedSlice", "Pack",
            "Reshape", "Squeeze", "StopGradient"}
    islands = set()
    for op in graph.get_operations():
        parts = op.name.split("/")
        layer = layers.get(re.sub(r"_\d+$", "", parts[1])) if len(parts) > 2 else None
        if layer is None or op.type in skip or not op.outputs or op.outputs[0].dtype != tf.float32:
            continue
        if isinstance(layer, SpatialRNN2D) and layer.resolved_scan_dtype() == "float32":
            continue  # its scans in float32 on purpose on a CPU (scan_dtype='auto'; tests/test_spatial_rnn.py)
        if layer.name not in outputs | readers and not isinstance(layer, FLOAT32_ALLOWED):
            islands.add((layer.name, type(layer).__name__, op.type))
    assert not islands, f"float32 compute in layers that run under mixed_bfloat16: {sorted(islands)}"


@pytest.mark.parametrize("family", ["bcdu_net", "sedu_net", "unet2d_srnn", "edema_unet", "tdsnet"])
def test_bfloat16_outputs_stay_close_to_float32(family, float32_after):
    keras.utils.set_random_seed(0)
    reference = _families.build(family)
    set_precision("bfloat16")
    model = _families.build(family)
    model.set_weights(reference.get_weights())
    x, _ = _families.batch(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, got = (keras.tree.flatten(m.predict_on_batch(x)) for m in (reference, model))
    for w, g, layer in zip(want, got, model.outputs):
        assert np.asarray(g).dtype == np.float32  # outputs stay float32
        w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
        if np.all(w <= 0):  # log_softmax head: compare probabilities
            w, g = np.exp(w), np.exp(g)
        np.testing.assert_allclose(g, w, atol=2e-2)  # bfloat16: 8-bit mantissa through the whole network


@pytest.mark.parametrize("family", sorted(_families.CASES))
def test_mixed_policy_keeps_exactly_the_image_reading_layer_float32(family, float32_after):
    from common.models import get_builder

    name, options, shape, _ = _families.CASES[family]
    set_precision("bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = get_builder(name)(shape, **options)  # the architecture alone, nothing set after building
        model = _families.build(family)
    readers = _image_readers(model)
    assert len(readers) == 1 and isinstance(model.get_layer(next(iter(readers))), keras.layers.Conv2D)
    assert _float32_layers(model) - _float32_layers(raw) == readers  # the reader, nothing else
    assert not readers & _float32_layers(raw)
    set_precision("off")  # float32: every layer float32 as built
    assert _float32_layers(_families.build(family)) == {layer.name for layer in model.layers}


def test_first_convolution_sees_the_image_in_float32_under_bfloat16(tmp_path, float32_after):
    """bcdu_net_d3's enc1_conv1 (3x3 'same', ReLU) on an image of k/255 grey levels against a float64 NumPy
    convolution: float32 accuracy under mixed_bfloat16, also after a save / load; the architecture built without
    the float32 reader is off by bfloat16's rounding (what the test would see without the change)."""
    from common.models import build_model, get_builder

    rng = np.random.default_rng(3)
    image = (rng.integers(0, 256, (2, 16, 16, 1)) / 255.0).astype(np.float32)
    set_precision("bfloat16")
    model = build_model("bcdu_net_d3", (16, 16, 1))
    raw = get_builder("bcdu_net_d3")((16, 16, 1))
    raw.set_weights(model.get_weights())
    kernel, bias = (np.asarray(w, np.float64) for w in model.get_layer("enc1_conv1").get_weights())
    padded = np.pad(image[..., 0].astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    want = np.zeros((2, 16, 16, kernel.shape[-1])) + bias
    for dy in range(3):
        for dx in range(3):
            want += padded[:, dy:dy + 16, dx:dx + 16, None] * kernel[dy, dx, 0]
    want = np.maximum(want, 0.0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    def first_conv(m):
        return np.asarray(keras.Model(m.inputs[0], m.get_layer("enc1_conv1").output)(image), np.float64)

    scale = np.abs(want).max()
    for m in (model, loaded):
        assert np.abs(first_conv(m) - want).max() < 1e-5 * scale
    assert np.abs(first_conv(raw) - want).max() > 1e-3 * scale  # bfloat16 compute: 8 significant bits


def test_apply_precision_keeps_the_image_reader_float32_under_a_mixed_policy(float32_after):
    """A float32 checkpoint evaluated with --mixed-precision bfloat16 computes as build_model builds under it:
    the image reader and the output float32, the rest bfloat16; back to 'off': all float32, same outputs."""
    from common.devices import apply_precision

    model = _families.build("bcdu_net")
    readers = _image_readers(model)
    outputs = {t._keras_history.operation.name for t in keras.tree.flatten(model.outputs)}
    mixed = apply_precision(model, "bfloat16")
    weighted = {layer.name for layer in mixed.layers if layer.weights}
    assert _float32_layers(mixed) & weighted == readers | outputs
    back = apply_precision(mixed, "off")
    assert _float32_layers(back) == {layer.name for layer in model.layers}
    x, _ = _families.batch("bcdu_net")
    np.testing.assert_allclose(back.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
