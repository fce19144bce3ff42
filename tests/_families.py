"""One tiny model of every family, with its task's loss and a batch, for the precision / XLA / backend tests.

``CASES[name]() -> (model_name, build_options, input_shape, batch)`` and :func:`loss_and_targets` give the
loss each task compiles with and matching random targets. Everything here is ``keras.ops``/NumPy only, so
it also runs under ``KERAS_BACKEND=jax`` (tests/test_backends.py).
"""

import numpy as np

# family -> (registered model, build options, input shape (H, W, C), batch)
CASES = {
    "unet": ("nerve_unet", {"filters": (4, 8, 16, 32, 64)}, (32, 32, 1), 2),
    "bcdu_net": ("bcdu_net_d3", {}, (16, 16, 1), 2),
    "sedu_net": ("sedu_net_d3", {"encoder_weights": None}, (16, 16, 3), 2),
    "unet2d_srnn": ("unet2d_res_srnn_8_128", {}, (16, 16, 3), 2),
    "edema_unet": ("edema_unet", {"feature_scale": 16}, (32, 32, 3), 2),
    "unet_nested": ("unet_nested", {"feature_scale": 16}, (32, 32, 3), 2),
    "tdsnet": ("tdsnet", {}, (32, 32, 3), 1),
}


def build(family):
    """The family's tiny model, built under the current global dtype policy."""
    import warnings

    from common.models import build_model

    name, options, shape, _ = CASES[family]
    with warnings.catch_warnings():  # SpatialRNN2D warns that L exceeds the tiny image
        warnings.simplefilter("ignore")
        return build_model(name, shape, **options)


def batch(family, seed=0):
    """``(x, y)``: a float32 input batch and targets in the form the family's loss expects."""
    _, _, shape, n = CASES[family]
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + shape, dtype=np.float32)
    h, w = shape[:2]
    if family in ("edema_unet", "unet_nested"):
        labels = rng.integers(0, 4, (n, h, w)).astype(np.float32)
        return x, {"seg": labels, "det": labels}
    if family == "tdsnet":
        labels = rng.integers(0, 12, (n, h, w))
        one_hot = np.eye(12, dtype=np.float32)[labels]
        presence = one_hot.reshape(n, -1, 12).max(axis=1)
        return x, [one_hot, presence, rng.integers(0, 3, (n,)).astype(np.float32)]
    return x, (rng.random((n, h, w, 1)) > 0.7).astype(np.float32)


def loss(family):
    """The loss the family's task trains with (``model.compile(loss=...)``)."""
    from common import losses

    if family == "unet":
        return losses.dice_coef_loss
    if family == "unet2d_srnn":
        return losses.BCEDiceLoss()
    if family in ("edema_unet", "unet_nested"):
        return losses.edema_losses("mix_3")
    if family == "tdsnet":
        return [losses.tdsnet_seg_loss, losses.tdsnet_class_loss, losses.tdsnet_scene_loss]
    return "binary_crossentropy"


def without_dropout(model):
    """Set every Dropout rate to 0 (random masks differ between dtypes and backends); returns the model."""
    for layer in model.layers:
        if hasattr(layer, "rate") and type(layer).__name__ == "Dropout":
            layer.rate = 0.0
    return model


def probabilities(family, outputs):
    """The model's outputs as a list of float64 probabilities: exp of log-probabilities (``seg`` of the edema
    models and TDSNet), sigmoid of TDSNet's class logits and softmax of its scene logits."""
    if isinstance(outputs, dict):
        return [np.asarray(outputs["det"], np.float64), np.exp(np.asarray(outputs["seg"], np.float64))]
    if family == "tdsnet":
        seg, cls, scene = (np.asarray(o, np.float64) for o in outputs)
        scene = np.exp(scene - scene.max(axis=-1, keepdims=True))
        return [np.exp(seg), 1.0 / (1.0 + np.exp(-cls)), scene / scene.sum(axis=-1, keepdims=True)]
    return [np.asarray(outputs, np.float64)]
