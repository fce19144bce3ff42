"""common.legacy_weights: Keras-2 HDF5 checkpoints (the authors' layout) into the project's Keras 3 models.

The test files are written with h5py in exactly the layout Keras 2.2.4's ``save_weights_to_hdf5_group``
writes: root (or ``model_weights`` group of a full-model file) attributes ``layer_names``, ``backend``,
``keras_version``; one group per layer (Keras-2 auto-generated names ``conv2d_1``, ``conv_lst_m2d_1``, ...)
with attribute ``weight_names`` (``conv2d_1/kernel:0``) and the arrays at those paths, in Keras 2's weight
order, which the test spells out by weight name (below), independently of the loader.
"""

import re

import h5py
import numpy as np
import pytest

from common.errors import UserError
from common.legacy_weights import add_init_weights_argument, load_legacy_weights
from common.models import build_model

# Keras 2.2.4's order of each layer's saved weights (trainable first, then non-trainable), by weight name.
KERAS2_ORDER = {
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "ConvLSTM2D": ("kernel", "recurrent_kernel", "bias"),
}


def keras2_snake_case(name):
    """Keras 2's ``_to_snake_case`` (the prefix of its auto-generated layer names)."""
    intermediate = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()


def keras2_layer_names(model):
    counters, names = {}, []
    for layer in model.layers:
        cls = type(layer).__name__
        prefix = "input" if cls == "InputLayer" else keras2_snake_case(cls)
        counters[prefix] = counters.get(prefix, 0) + 1
        names.append(f"{prefix}_{counters[prefix]}")
    return names


def write_keras2_file(path, model, full_model=False, chunked=False):
    names = keras2_layer_names(model)
    with h5py.File(path, "w") as f:
        if full_model:
            f.attrs["model_config"] = b'{"class_name": "Model", "config": {}}'
            f.attrs["keras_version"] = b"2.2.4"
            f.attrs["backend"] = b"tensorflow"
            f.create_group("optimizer_weights")
            group = f.create_group("model_weights")
        else:
            group = f
        encoded = [n.encode("utf8") for n in names]
        if chunked:  # Keras 2 splits attributes over 64 KB into layer_names0, layer_names1, ...
            for i, part in enumerate(np.array_split(np.asarray(encoded), 3)):
                group.attrs[f"layer_names{i}"] = part
        else:
            group.attrs["layer_names"] = encoded
        group.attrs["backend"] = b"tensorflow"
        group.attrs["keras_version"] = b"2.2.4"
        for name, layer in zip(names, model.layers):
            g = group.create_group(name)
            by_name = {w.name: w for w in layer.weights}
            order = [w for w in KERAS2_ORDER.get(type(layer).__name__, ("kernel", "bias")) if w in by_name]
            assert len(order) == len(by_name), (layer.name, sorted(by_name))
            weight_names = [f"{name}/{w}:0" for w in order]
            g.attrs["weight_names"] = [w.encode("utf8") for w in weight_names]  # as Keras 2: a list, maybe []
            for weight_name, w in zip(weight_names, order):
                g.create_dataset(weight_name, data=np.asarray(by_name[w]))
    return names


def randomise_batch_norm_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape).astype("float32"))


def predict(model, x):
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize("full_model, file_name", [(False, "weights.h5"), (True, "weights_full.h5")])
def test_nerve_unet_round_trip(tmp_path, full_model, file_name):
    source = build_model("nerve_unet", (96, 96, 1))
    path = tmp_path / file_name
    write_keras2_file(path, source, full_model=full_model)
    x = np.random.default_rng(1).random((2, 96, 96, 1), dtype=np.float32)
    target = build_model("nerve_unet", (96, 96, 1))
    assert not np.allclose(predict(target, x), predict(source, x))
    pairs = load_legacy_weights(target, path)
    np.testing.assert_array_equal(predict(target, x), predict(source, x))
    assert pairs[0] == ("conv2d_1", target.layers[1].name)
    assert pairs[-1][0] == "conv2d_19" and len(pairs) == 23  # 19 Conv2D + 4 Conv2DTranspose


@pytest.fixture(scope="module")
def bcdu_source():
    """One BCDU_net_D3 (64x64x3) with non-trivial BatchNorm moving statistics, shared (20M parameters)."""
    model = build_model("bcdu_net_d3", (64, 64, 3))
    randomise_batch_norm_statistics(model)
    return model


def test_bcdu_net_round_trip_full_model_no_extension(tmp_path, bcdu_source):
    """ConvLSTM2D and BatchNormalization (with non-trivial moving statistics) in a full-model file named
    like the authors' ``weight_isic18`` (no extension), its layer_names split into chunks."""
    source = bcdu_source
    path = tmp_path / "weight_isic18"
    names = write_keras2_file(path, source, full_model=True, chunked=True)
    assert {"conv_lst_m2d_3", "batch_normalization_3", "conv2d_transpose_3"} <= set(names)
    x = np.random.default_rng(2).random((1, 64, 64, 3), dtype=np.float32)
    target = build_model("bcdu_net_d3", (64, 64, 3))
    assert not np.allclose(predict(target, x), predict(source, x))
    load_legacy_weights(target, path)
    np.testing.assert_array_equal(predict(target, x), predict(source, x))


def test_bcdu_net_weighted_layer_order_matches_the_original(bcdu_source):
    """Matching by order works for the authors' files only if the project's layers with weights come in
    the original's order: the spec's per-layer parameter counts of BCDU_net_D3 (3 input channels)."""
    original = [1792, 36928, 73856, 147584, 295168, 590080,
                1180160, 2359808, 2359808, 2359808, 4719104, 2359808,
                524544, 1024, 1769984, 295168, 590080,
                131200, 512, 442624, 73856, 147584,
                32832, 256, 110720, 18496, 36928,
                1154, 3]
    counts = [layer.count_params() for layer in bcdu_source.layers if layer.weights]
    assert counts == original


def test_shape_mismatch_is_one_line_and_leaves_the_model_untouched(tmp_path):
    path = tmp_path / "weights.h5"
    write_keras2_file(path, build_model("nerve_unet", (96, 96, 3)))  # 3 input channels
    target = build_model("nerve_unet", (96, 96, 1))
    before = [np.asarray(w).copy() for w in target.weights]
    with pytest.raises(UserError) as info:
        load_legacy_weights(target, path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: layer 1 of 23 with weights ('conv2d_1' in the file")
    assert "'conv2d_1/kernel:0' has shape (3, 3, 3, 32) but the model expects (3, 3, 1, 32)" in message
    for w, b in zip(target.weights, before):
        np.testing.assert_array_equal(np.asarray(w), b)


def test_count_mismatch_and_bad_files(tmp_path):
    small = build_model("nerve_unet", (32, 32, 1), filters=(8, 16, 32))
    path = tmp_path / "weight_lung"
    write_keras2_file(path, small)
    target = build_model("nerve_unet", (96, 96, 1))
    with pytest.raises(UserError, match=r"holds weights for 13 layers but model 'nerve_unet' has 23 layers"):
        load_legacy_weights(target, path)
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        load_legacy_weights(target, junk)
    with pytest.raises(UserError, match="no such file"):
        load_legacy_weights(target, tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(UserError, match="not a Keras-2 HDF5 weights file"):
        load_legacy_weights(target, other)
    theano = tmp_path / "theano.h5"
    write_keras2_file(theano, target)
    with h5py.File(theano, "a") as f:
        f.attrs["backend"] = b"theano"
    with pytest.raises(UserError, match="theano backend"):
        load_legacy_weights(target, theano)


def test_init_weights_argument():
    import argparse

    parser = add_init_weights_argument(argparse.ArgumentParser())
    assert str(parser.parse_args(["--init-weights", "weight_lstm.hdf5"]).init_weights) == "weight_lstm.hdf5"
    assert parser.parse_args([]).init_weights is None
    assert "Keras-2 HDF5" in parser.format_help().replace("\n", " ")
