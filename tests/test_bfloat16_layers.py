"""Under ``mixed_bfloat16`` (the CPU's fast path): the custom layers compute in bfloat16 (no float32 island of
ours) and every family's outputs stay close to float32 from the same weights.

The float32 ops that remain are Keras's and TensorFlow's own, on purpose: BatchNormalization's moments,
GlobalAveragePooling's mean, ``ResizeBilinear`` (TensorFlow's kernel returns float32) and the output layers
(float32 by the project's design). One of ours on purpose: ``SpatialRNN2D``'s scans run in float32 under the
bfloat16 policy when no GPU is present (``scan_dtype='auto'``: faster on a CPU); with ``scan_dtype='compute'``
they stay bfloat16 and are checked like the rest."""

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
        if layer.name not in outputs and not isinstance(layer, FLOAT32_ALLOWED):
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
