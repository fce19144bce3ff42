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


@keras.saving.register_keras_serializable(package="common")
def bce_dice_loss(y_true, y_pred, per_pixel_dice=False, epsilon=1e-7):
    """BCE-Dice loss of the fingernail study: ``BCE - log(dice + eps)``.

    With ``Σ`` over the sum axes, ``dice = 2·Σ(y·p) / (Σ(y + p) + eps)`` and ``BCE`` Keras'
    ``binary_crossentropy`` (p clipped to [1e-7, 1 - 1e-7]):

    - ``per_pixel_dice=False`` (default, the standard image-level Dice): Σ runs over H, W, C of each
      image; returns one value per image, ``mean_{H,W}(BCE) - log(dice_image + eps)``, shape (B,). Same
      eps and no smoothing, as the original; an image with an empty mask therefore gets the constant
      Dice term ``-log(eps)`` (no gradient), like a background pixel of the per-pixel variant.
    - ``per_pixel_dice=True`` (the original's exact loss): Σ runs over the channel axis only, so with a
      one-channel mask the Dice is computed per pixel; returns the (B, H, W) map
      ``BCE - log(2·y·p / (y + p + eps) + eps)``. A background pixel (y = 0) contributes the constant
      ``-log(eps) ≈ 16.118`` with zero gradient; a foreground pixel ``-log(2p / (1 + p + eps) + eps)``.
      E.g. y = 0, p = 0.5 gives 16.8112; y = 1, p = 0.5 gives 1.0986.

    Keras averages the returned values over all their elements, as the original did.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    bce = keras.losses.binary_crossentropy(y_true, y_pred)  # mean over the channel axis: (B, H, W)
    if per_pixel_dice:
        axes = -1
    else:
        axes = tuple(range(1, len(y_pred.shape)))
        bce = ops.mean(bce, axis=tuple(range(1, len(bce.shape))))
    dice = 2.0 * ops.sum(y_true * y_pred, axis=axes) / (ops.sum(y_true + y_pred, axis=axes) + epsilon)
    return bce - ops.log(dice + epsilon)


@keras.saving.register_keras_serializable(package="common")
class BCEDiceLoss(keras.losses.Loss):
    """:func:`bce_dice_loss` as a configurable ``keras.losses.Loss``.

    ``BCEDiceLoss(per_pixel_dice=True)`` is the original's loss (per-pixel Dice quirk); the default uses
    the image-level Dice.
    """

    def __init__(self, per_pixel_dice=False, epsilon=1e-7, name=None, **kwargs):
        name = name or ("bce_dice_loss_per_pixel" if per_pixel_dice else "bce_dice_loss")
        super().__init__(name=name, **kwargs)
        self.per_pixel_dice = per_pixel_dice
        self.epsilon = epsilon

    def call(self, y_true, y_pred):
        return bce_dice_loss(y_true, y_pred, per_pixel_dice=self.per_pixel_dice, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "per_pixel_dice": self.per_pixel_dice, "epsilon": self.epsilon}
