"""BCDU-Net family: counts against the spec's measurements of the original code, blocks, serialization, VGG16 weights."""

import collections

import h5py
import keras
import numpy as np
import pytest
from keras import layers

from common.layers import conv_lstm_fusion, dense_conv_block, keras2_hard_sigmoid, squeeze_excite
from common.models import build_model
from common.layers import VGG16_NOTOP_FILE

BCDU_D3_TYPES = dict(Conv2D=20, Conv2DTranspose=3, BatchNormalization=3, Activation=3, ConvLSTM2D=3, Reshape=6,
                     Concatenate=4, Dropout=4, MaxPooling2D=3, InputLayer=1)
BCDU_D1_TYPES = dict(BCDU_D3_TYPES, Conv2D=16, Concatenate=3, Dropout=2)
UNET_TYPES = dict(Conv2D=19, UpSampling2D=3, Concatenate=3, Dropout=2, MaxPooling2D=3, InputLayer=1)
SEDU_TYPES = dict(BCDU_D3_TYPES, Conv2D=22, Dropout=2, GlobalAveragePooling2D=6, Dense=12, Multiply=6)

# spec section 2: (model, input shape, options, total, trainable, non-trainable, #layers, layer types)
SPEC_COUNTS = [
    ("bcdu_net_d3", (256, 256, 3), {}, 20_660_869, 20_659_973, 896, 50, BCDU_D3_TYPES),
    ("bcdu_net_d3", (256, 256, 1), {}, 20_659_717, 20_658_821, 896, 50, BCDU_D3_TYPES),
    ("bcdu_net_d3", (64, 64, 1), {}, 20_659_717, 20_658_821, 896, 50, BCDU_D3_TYPES),
    ("bcdu_net_d3", (512, 512, 1), {}, 20_659_717, 20_658_821, 896, 50, BCDU_D3_TYPES),
    ("bcdu_net_d1", (256, 256, 3), {}, 8_862_341, 8_861_445, 896, 43, BCDU_D1_TYPES),
    ("bcdu_net_d1", (256, 256, 1), {}, 8_861_189, 8_860_293, 896, 43, BCDU_D1_TYPES),
    ("bcdu_net_d1", (64, 64, 1), {}, 8_861_189, 8_860_293, 896, 43, BCDU_D1_TYPES),
    ("bcdu_net_d1", (512, 512, 1), {"bottleneck_dropout": 0}, 8_861_189, 8_860_293, 896, 42,
     dict(BCDU_D1_TYPES, Dropout=1)),  # Lung folder variant
    ("bcdu_unet", (256, 256, 3), {}, 9_091_461, 9_091_461, 0, 31, UNET_TYPES),
    ("bcdu_unet", (256, 256, 1), {}, 9_090_309, 9_090_309, 0, 31, UNET_TYPES),
    ("sedu_net_d3", (256, 256, 3), {}, 27_891_901, 27_891_005, 896, 74, SEDU_TYPES),
    ("sedu_net_d3", (256, 256, 1), {}, 27_890_749, 27_889_853, 896, 74, SEDU_TYPES),
]


def _params(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _conv_lstm_params(model):
    return _params(w for layer in model.layers if isinstance(layer, layers.ConvLSTM2D) for w in layer.weights)


@pytest.mark.parametrize("name, shape, options, total, trainable, non_trainable, n_layers, types", SPEC_COUNTS)
def test_counts_match_spec(name, shape, options, total, trainable, non_trainable, n_layers, types):
    model = build_model(name, shape, **options)
    assert model.count_params() == total
    assert _params(model.trainable_weights) == trainable
    assert _params(model.non_trainable_weights) == non_trainable
    assert len(model.layers) == n_layers
    assert collections.Counter(type(layer).__name__ for layer in model.layers) == types
    assert model.output_shape == (None,) + shape[:2] + (1,)


def test_bcdu_net_d3_per_layer_params():
    model = build_model("bcdu_net_d3", (256, 256, 3))
    params = {layer.name: layer.count_params() for layer in model.layers if layer.count_params()}
    expected = [1792, 36928, 73856, 147584, 295168, 590080,                      # encoder
                1180160, 2359808, 2359808, 2359808, 4719104, 2359808,            # dense bottleneck
                524544, 1024, 1769984, 295168, 590080,                           # level N/4
                131200, 512, 442624, 73856, 147584,                              # level N/2
                32832, 256, 110720, 18496, 36928,                                # level N
                1154, 3]                                                         # head
    assert list(params.values()) == expected
    split = collections.Counter()
    for layer_name, count in params.items():
        split["encoder" if layer_name.startswith("enc") else "bottleneck" if layer_name.startswith("dense")
              else "decoder"] += count
    assert split == {"encoder": 1_145_408, "bottleneck": 15_338_496, "decoder": 4_176_965}
    assert params["fuse6_convlstm"] == 4 * 128 * (9 * (256 + 128)) + 4 * 128


def test_sedu_conv_lstm_params_and_vgg_names():
    model = build_model("sedu_net_d3", (256, 256, 3))
    assert [model.get_layer(f"fuse{s}_convlstm").count_params() for s in (6, 7, 8)] == [4_719_616, 1_180_160, 295_168]
    vgg_names = {layer.name for layer in keras.applications.VGG16(weights=None, include_top=False).layers}
    blocks = [layer.name for layer in model.layers if layer.name.startswith("block")]
    assert len(blocks) == 13 and set(blocks) <= vgg_names  # 10 convs + 3 pools, no block4_pool


def test_hard_sigmoid_is_keras2():
    x = np.linspace(-6, 6, 121, dtype="float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras2_hard_sigmoid(x)), np.clip(0.2 * x + 0.5, 0, 1))
    assert not np.allclose(keras.ops.convert_to_numpy(keras.activations.hard_sigmoid(x)), np.clip(0.2 * x + 0.5, 0, 1))


def test_fusion_is_forward_conv_lstm_on_reversed_sequence():
    rng = np.random.default_rng(0)
    enc_in, dec_in = keras.Input((5, 6, 3)), keras.Input((5, 6, 3))
    fusion = keras.Model([enc_in, dec_in], conv_lstm_fusion(enc_in, dec_in, 4, name="fuse"))
    lstm = fusion.get_layer("fuse_convlstm")
    assert lstm.go_backwards and not lstm.return_sequences and lstm.recurrent_activation is keras2_hard_sigmoid
    forward = layers.ConvLSTM2D(4, 3, padding="same", recurrent_activation=keras2_hard_sigmoid)
    forward.build((None, 2, 5, 6, 3))
    for target, source in zip(forward.weights, lstm.weights):  # random bias too, not only the zero default
        target.assign(rng.normal(size=source.shape).astype("float32"))
        source.assign(target)
    enc, dec = rng.normal(size=(2, 2, 5, 6, 3)).astype("float32")
    out = fusion.predict([enc, dec], verbose=0)
    np.testing.assert_allclose(out, forward(np.stack([dec, enc], axis=1)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, forward(np.stack([enc, dec], axis=1)), atol=1e-3)  # order matters


def test_bidirectional_adds_a_forward_conv_lstm_per_fusion():
    uni = build_model("bcdu_net_d3", (32, 32, 1))
    bi = build_model("bcdu_net_d3", (32, 32, 1), bidirectional=True)
    assert bi.count_params() - uni.count_params() == _conv_lstm_params(uni) == 2_323_328
    for layer in uni.layers:
        bi.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.random.default_rng(1).random((2, 32, 32, 1), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(uni(x, training=False))  # eager calls: no per-model tracing
    assert not np.allclose(bi(x, training=False), expected, atol=1e-4)
    for stage in (6, 7, 8):  # a zero forward ConvLSTM outputs h = 0.5 * tanh(0) = 0: back to the original
        layer = bi.get_layer(f"fuse{stage}_convlstm_fwd")
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    np.testing.assert_allclose(bi(x, training=False), expected, rtol=1e-5, atol=1e-6)
    sedu = build_model("sedu_net_d3", (32, 32, 1))
    assert build_model("sedu_net_d3", (32, 32, 1), bidirectional=True).count_params() - sedu.count_params() \
        == _conv_lstm_params(sedu) == 4_719_616 + 1_180_160 + 295_168


def _input_names(layer):
    return [tensor._keras_history.operation.name for tensor in layer.input]


def test_dense_conv_block_connectivity():
    x = keras.Input((8, 8, 4), name="x")
    d3 = keras.Model(x, dense_conv_block(x, 6, n_blocks=3, name="d"))  # BCDU D3: D3 reads concat([D2, D1])
    assert _input_names(d3.get_layer("d3_concat")) == ["d2_drop", "d1_drop"]
    assert d3.get_layer("d2_conv1").input._keras_history.operation.name == "d1_drop"
    sedu = keras.Model(x, dense_conv_block(x, 6, n_blocks=2, include_input=True, name="d"))  # D1 = x
    assert _input_names(sedu.get_layer("d3_concat")) == ["d2_drop", "x"]
    assert "d1_conv1" not in [layer.name for layer in sedu.layers]


@pytest.mark.parametrize("make", ["bcdu_net_d3", "all_blocks"])
def test_keras_file_round_trip(tmp_path, make):
    if make == "all_blocks":  # every custom block in one tiny model, bidirectional fusion included
        inputs = keras.Input((8, 8, 32))
        x = dense_conv_block(inputs, 32, n_blocks=2, include_input=True, name="dense")
        x = squeeze_excite(x, 16, name="se")
        model = keras.Model(inputs, conv_lstm_fusion(inputs, x, 4, bidirectional=True, name="fuse"))
    else:
        model = build_model(make, (32, 32, 1))
    x = np.random.default_rng(2).random((2,) + model.input_shape[1:], dtype=np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert reloaded.get_layer("fuse_convlstm" if make == "all_blocks" else "fuse6_convlstm").recurrent_activation \
        is keras2_hard_sigmoid


def _write_legacy_vgg16_notop(path, vgg):
    """Write ``vgg``'s weights in the layout of Keras's vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in vgg.layers]
        f.attrs["backend"], f.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for layer in vgg.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}_{kind}_1:0".encode() for kind in "Wb"][: len(layer.weights)]
            group.attrs["weight_names"] = np.array(names, dtype="S")
            for weight_name, value in zip(names, layer.get_weights()):
                group.create_dataset(weight_name.decode(), data=value)


@pytest.fixture(scope="module")
def vgg16_notop(tmp_path_factory):
    vgg = keras.applications.VGG16(weights=None, include_top=False)
    path = tmp_path_factory.mktemp("keras_home") / "models" / VGG16_NOTOP_FILE
    path.parent.mkdir()
    _write_legacy_vgg16_notop(path, vgg)
    return vgg, path


def _assert_encoder_is(model, vgg):
    convs = [layer for layer in model.layers if layer.name.startswith("block") and "_conv" in layer.name]
    assert len(convs) == 10
    for layer in convs:
        for ours, theirs in zip(layer.get_weights(), vgg.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_sedu_loads_vgg16_weights_from_path_and_keras_cache(vgg16_notop, monkeypatch):
    vgg, path = vgg16_notop
    _assert_encoder_is(build_model("sedu_net_d3", (32, 32, 3), encoder_weights=str(path)), vgg)
    monkeypatch.setenv("KERAS_HOME", str(path.parent.parent))
    _assert_encoder_is(build_model("sedu_net_d3", (32, 32, 3), encoder_weights="imagenet"), vgg)
    with pytest.raises(ValueError, match="3-channel"):
        build_model("sedu_net_d3", (32, 32, 1), encoder_weights=str(path))


def test_sedu_imagenet_without_local_file_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"never downloaded.*encoder_weights=./path"):
        build_model("sedu_net_d3", (32, 32, 3), encoder_weights="imagenet")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        build_model("sedu_net_d3", (32, 32, 3), encoder_weights=str(tmp_path / "missing.h5"))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="multiples of 8"):
        build_model("bcdu_net_d3", (60, 64, 1))
    with pytest.raises(ValueError, match="bidirectional"):
        build_model("bcdu_unet", (64, 64, 1), bidirectional=True)
