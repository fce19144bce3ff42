"""The fingernail study's U-Net family (specs/fingernail.md §2) and its BCE-Dice loss (§3)."""

import collections

import numpy as np
import pytest
import keras

from common.losses import BCEDiceLoss, bce_dice_loss
from common.models import available_models, build_model

SHAPE = (160, 192, 3)

# Spec §2f: parameters and layer counts by type at 160x192x3.
SPEC = {
    "unet2d_8_128": ("Unet_8x128", 485_817, dict(Conv2D=19, Conv2DTranspose=4, MaxPooling2D=4, Concatenate=4), 32),
    "unet2d_res_32_512": ("Unet_Res_32x512", 15_527_681,
                          dict(Conv2D=19, Conv2DTranspose=4, MaxPooling2D=4, Concatenate=22), 50),
    "unet2d_res_srnn_32_512": ("Unet_Res_SRNN_32x512", 14_449_857,
                               dict(Conv2D=21, Conv2DTranspose=4, MaxPooling2D=4, Concatenate=22, SpatialRNN2D=2), 54),
    "unet2d_res_srnn_8_128": ("Unet_Res_SRNN_8x128", 914_865,
                              dict(Conv2D=21, Conv2DTranspose=4, MaxPooling2D=4, Concatenate=22, SpatialRNN2D=2), 54),
}


@pytest.fixture(scope="module")
def models():
    return {name: build_model(name, SHAPE) for name in SPEC}


def test_registered():
    assert set(SPEC) <= set(available_models())


@pytest.mark.parametrize("name", sorted(SPEC))
def test_counts_match_spec(models, name):
    model_name, params, by_type, n_layers = SPEC[name]
    model = models[name]
    assert model.name == model_name
    assert model.count_params() == params
    assert not model.non_trainable_weights
    types = collections.Counter(type(layer).__name__ for layer in model.layers)
    assert types == {"InputLayer": 1, **by_type}
    assert len(model.layers) == n_layers
    assert model.output_shape == (None, 160, 192, 1)
    assert not model.compiled  # builders do not compile


def test_per_layer_spot_checks(models):
    hw = models["unet2d_res_srnn_32_512"]
    expected = {"conv52": 4_585_472, "conv_tr_6": 1_019_136, "conv61": 1_179_904, "conv70": 65_664,
                "rnn70": 1_536, "rnn80": 768, "conv10": 97}
    assert {n: hw.get_layer(n).count_params() for n in expected} == expected
    res = models["unet2d_res_32_512"]
    assert res.get_layer("conv61").count_params() == 1_702_912  # the original's conv29, 739 channels in
    assert res.get_layer("conv61").input.shape[-1] == 739
    assert res.get_layer("conv10").count_params() == 97
    assert models["unet2d_8_128"].get_layer("conv10").count_params() == 9
    lw = models["unet2d_res_srnn_8_128"]
    assert [lw.get_layer(n).count_params() for n in ("rnn70", "rnn80", "conv10")] == [384, 192, 25]


@pytest.mark.parametrize("name,channels", [("unet2d_res_32_512", [35, 99, 227, 483, 995]),
                                           ("unet2d_res_srnn_8_128", [11, 27, 59, 123, 251])])
def test_encoder_block_channels(models, name, channels):
    model = models[name]
    assert [model.get_layer(f"conc{k}2").output.shape[-1] for k in range(1, 6)] == channels


def test_skips_and_concat_order(models):
    """Concat is [up-conv, skip]; the skips differ between Res and CR-UNet (spec §2c/2d)."""

    def sources(model, concat):
        return [t._keras_history.operation.name for t in model.get_layer(concat).input]

    res, hw = models["unet2d_res_32_512"], models["unet2d_res_srnn_32_512"]
    assert [sources(res, f"conc{k}0") for k in (6, 7, 8, 9)] == [
        ["conv_tr_6", "conc42"], ["conv_tr_7", "conv32"], ["conv_tr_8", "conv22"], ["conv_tr_9", "conv12"]]
    assert [sources(hw, f"conc{k}0") for k in (6, 7, 8, 9)] == [
        ["conv_tr_6", "conv42"], ["conv_tr_7", "conv70"], ["conv_tr_8", "conv80"], ["conv_tr_9", "conv12"]]
    assert [(hw.get_layer(n).rnn_seq_length, hw.get_layer(n).input.shape[1:]) for n in ("rnn70", "rnn80")] == [
        (32, (40, 48, 128)), (64, (80, 96, 64))]


def test_bad_input_size():
    with pytest.raises(ValueError, match="divisible by 16"):
        build_model("unet2d_8_128", (100, 192, 3))


def test_small_forward_and_weights_option(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((1, 32, 48, 3), dtype=np.float32)
    with pytest.warns(UserWarning, match="rnn_seq_length"):  # L = 32, 64 exceed these small maps
        model = build_model("unet2d_res_srnn_8_128", x.shape[1:])
    y = model.predict(x, verbose=0)
    assert y.shape == (1, 32, 48, 1) and np.all((y >= 0) & (y <= 1))
    path = str(tmp_path / "lw.weights.h5")
    model.save_weights(path)
    with pytest.warns(UserWarning):
        again = build_model("unet2d_res_srnn_8_128", x.shape[1:], weights=path)
    np.testing.assert_array_equal(again.predict(x, verbose=0), y)


# ---- BCE-Dice loss (spec §3) against NumPy ----------------------------------------------------------------

Y = np.array([[[1, 0], [0, 1]], [[0, 0], [1, 1]]], np.float32)[..., None]  # (2, 2, 2, 1)
P = np.array([[[0.9, 0.2], [0.4, 0.6]], [[0.1, 0.0], [0.7, 1.0]]], np.float32)[..., None]
EPS = 1e-7


def _np_bce(y, p):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=-1)  # (B, H, W)


def _np_per_pixel(y, p):
    dice = 2 * (y * p).sum(-1) / ((y + p).sum(-1) + EPS)
    return (_np_bce(y, p) - np.log(dice + EPS)).mean()


def _np_image_level(y, p):
    dice = 2 * (y * p).sum((1, 2, 3)) / ((y + p).sum((1, 2, 3)) + EPS)
    return (_np_bce(y, p).mean((1, 2)) - np.log(dice + EPS)).mean()


def test_bce_dice_variants_match_numpy():
    per_pixel = float(BCEDiceLoss()(Y, P))  # the default is the original's per-pixel Dice
    image = float(BCEDiceLoss(per_pixel_dice=False)(Y, P))
    np.testing.assert_allclose(per_pixel, _np_per_pixel(Y, P), rtol=1e-5)
    np.testing.assert_allclose(image, _np_image_level(Y, P), rtol=1e-5)
    assert keras.ops.convert_to_numpy(bce_dice_loss(Y, P, per_pixel_dice=False)).shape == (2,)
    assert keras.ops.convert_to_numpy(bce_dice_loss(Y, P)).shape == (2, 2, 2)
    # Spec's verified per-pixel values: background at p = 0.5, foreground at p = 0.5.
    half = np.full((1, 1, 1, 1), 0.5, np.float32)
    np.testing.assert_allclose(float(BCEDiceLoss(per_pixel_dice=True)(0 * half, half)), 16.8112, atol=1e-4)
    np.testing.assert_allclose(float(BCEDiceLoss(per_pixel_dice=True)(0 * half + 1, half)), 1.0986, atol=1e-4)


def test_bce_dice_serialization():
    loss = BCEDiceLoss(per_pixel_dice=True)  # not the default: a config that dropped it would show below
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, BCEDiceLoss) and restored.get_config() == loss.get_config()
    np.testing.assert_allclose(float(restored(Y, P)), _np_per_pixel(Y, P), rtol=1e-5)
    assert keras.saving.get_registered_object("common>bce_dice_loss") is bce_dice_loss
