"""Training losses and Keras metrics, written with ``keras.ops`` so they run on any backend.

All are registered for serialization (package ``common``) so compiled models saved as ``.keras`` reload
without ``custom_objects``.
"""

import keras
from keras import ops


def _flatten_per_sample(x, per_image):
    x = ops.cast(x, "float32")
    return ops.reshape(x, (ops.shape(x)[0], -1)) if per_image else ops.reshape(x, (-1,))


@keras.saving.register_keras_serializable(package="common")
def dice_coef(y_true, y_pred, smooth=1.0, per_image=False):
    """Soft Dice ``(2·Σ y·p + smooth) / (Σ y + Σ p + smooth)``.

    ``per_image=False`` flattens the whole batch into one vector (the Kaggle nerve tutorial's batch-level
    Dice); ``per_image=True`` computes one Dice per sample and averages them.
    """
    y = _flatten_per_sample(y_true, per_image)
    p = _flatten_per_sample(y_pred, per_image)
    axis = -1
    dice = (2.0 * ops.sum(y * p, axis=axis) + smooth) / (ops.sum(y, axis=axis) + ops.sum(p, axis=axis) + smooth)
    return ops.mean(dice)


@keras.saving.register_keras_serializable(package="common")
def dice_coef_loss(y_true, y_pred):
    """The nerve tutorial's loss: ``-dice_coef`` (smooth 1, batch level), so it lies in [-1, 0)."""
    return -dice_coef(y_true, y_pred)
