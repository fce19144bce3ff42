"""Training losses and Keras metrics, written with ``keras.ops`` so they run on any backend.

All are registered for serialization (package ``common``) so compiled models saved as ``.keras`` reload
without ``custom_objects``.
"""

import keras
from keras import ops

from common.run_options import MULTICLASS_LOSSES  # one place: the option's choices (Keras-free)


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
def bce_dice_loss(y_true, y_pred, per_pixel_dice=True, epsilon=1e-7):
    """BCE-Dice loss of the fingernail study: ``BCE - log(dice + eps)``.

    With ``Σ`` over the sum axes, ``dice = 2·Σ(y·p) / (Σ(y + p) + eps)`` and ``BCE`` Keras'
    ``binary_crossentropy`` (p clipped to [1e-7, 1 - 1e-7]):

    - ``per_pixel_dice=True`` (default, the original's exact loss, spec §3): Σ runs over the channel axis
      only, so with a one-channel mask the Dice is computed per pixel; returns the (B, H, W) map
      ``BCE - log(2·y·p / (y + p + eps) + eps)``. A background pixel (y = 0) contributes the constant
      ``-log(eps) ≈ 16.118`` with zero gradient; a foreground pixel ``-log(2p / (1 + p + eps) + eps)``.
      E.g. y = 0, p = 0.5 gives 16.8112; y = 1, p = 0.5 gives 1.0986.
    - ``per_pixel_dice=False`` (an option, the standard image-level Dice): Σ runs over H, W, C of each
      image; returns one value per image, ``mean_{H,W}(BCE) - log(dice_image + eps)``, shape (B,). Same
      eps and no smoothing, as the original; an image with an empty mask therefore gets the constant
      Dice term ``-log(eps)`` (no gradient), like a background pixel of the per-pixel variant.

    Keras averages the returned values over all their elements, as the original did.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    if keras.backend.standardize_dtype(y_pred.dtype) in ("float16", "bfloat16"):  # mixed precision: float32 loss
        y_pred = ops.cast(y_pred, "float32")
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

    ``BCEDiceLoss()`` is the original's loss (per-pixel Dice, its sums over the channel axis only);
    ``BCEDiceLoss(per_pixel_dice=False)`` uses the image-level Dice.
    """

    def __init__(self, per_pixel_dice=True, epsilon=1e-7, name=None, **kwargs):
        name = name or ("bce_dice_loss" if per_pixel_dice else "bce_dice_loss_image_level")
        super().__init__(name=name, **kwargs)
        self.per_pixel_dice = per_pixel_dice
        self.epsilon = epsilon

    def call(self, y_true, y_pred):
        return bce_dice_loss(y_true, y_pred, per_pixel_dice=self.per_pixel_dice, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "per_pixel_dice": self.per_pixel_dice, "epsilon": self.epsilon}


# ---------------------------------------------------------------------------------------------------------
# Retinal edema (AI Challenger 2018, ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation ``utils/loss.py``):
# weighted cross-entropy + (EL-)Dice on the 4-class segmentation, BCE on the 3-way presence head.
# Spec: shared/specs/retinal_edema.md section 2. Sums run over the WHOLE batch and all pixels.
#
# Segmentation ``y_pred`` is the models' output: log-probabilities (B, H, W, C) (log_softmax). log_softmax is
# re-applied inside (it is idempotent on log-probabilities), so raw logits are accepted too; probabilities
# are not. ``y_true`` is the integer label map (B, H, W) or (B, H, W, 1), values 0..C-1 or ``ignore_index``.
# ---------------------------------------------------------------------------------------------------------

EDEMA_CLASS_WEIGHTS = (1.0, 5.0, 10.0, 20.0)  # background, REA, SRF, PED
EDEMA_IGNORE_INDEX = 255


def _label_map(y_true):
    labels = ops.convert_to_tensor(y_true)
    if len(labels.shape) == 4:
        labels = ops.squeeze(labels, axis=-1)
    return ops.cast(labels, "int32")


def _one_hot_valid(y_true, n_classes, ignore_index):
    """Flattened one-hot labels (N, C) with ignored pixels all-zero, and the validity mask (N,)."""
    labels = ops.reshape(_label_map(y_true), (-1,))
    valid = ops.not_equal(labels, ignore_index)
    one_hot = ops.one_hot(ops.where(valid, labels, 0), n_classes, dtype="float32")
    valid = ops.cast(valid, "float32")
    return one_hot * valid[:, None], valid


def _flat_log_probs(y_pred):
    y_pred = ops.cast(y_pred, "float32")
    return ops.reshape(ops.log_softmax(y_pred, axis=-1), (-1, ops.shape(y_pred)[-1]))


@keras.saving.register_keras_serializable(package="common")
def weighted_nll(y_true, y_pred, class_weights=EDEMA_CLASS_WEIGHTS, ignore_index=EDEMA_IGNORE_INDEX):
    """Class-weighted cross-entropy normalised by the pixel weights (torch ``NLLLoss(weight, 'mean')``).

    ``WCE = Σ_i w[y_i]·(-log p_i[y_i]) / Σ_i w[y_i]`` over all non-ignored pixels of the batch, with
    ``w = class_weights`` (edema: [1, 5, 10, 20]). This is *not* Keras' sample-weighted mean (which divides
    by the pixel count). NaN when every pixel is ignored (as torch).
    """
    log_p = _flat_log_probs(y_pred)
    one_hot, _ = _one_hot_valid(y_true, log_p.shape[-1], ignore_index)
    pixel_w = ops.sum(one_hot * ops.convert_to_tensor(class_weights, "float32"), axis=-1)
    nll = -ops.sum(one_hot * log_p, axis=-1)
    return ops.sum(pixel_w * nll) / ops.sum(pixel_w)


@keras.saving.register_keras_serializable(package="common")
def multiclass_soft_dice(y_true, y_pred, ignore_index=EDEMA_IGNORE_INDEX):
    """Per-class soft Dice over the whole batch (no smoothing), background excluded.

    For c = 1..C-1 with ``p = softmax``: ``dice_c = 2·Σ p_c·[y=c] / (Σ p_c + Σ [y=c])`` if class c occurs in
    the batch, else ``dice_c = 1`` (a constant without gradient). Ignored pixels are left out of all sums.

    Returns:
        ``(dice, present)``: float (C-1,) and bool (C-1,).
    """
    log_p = _flat_log_probs(y_pred)
    one_hot, valid = _one_hot_valid(y_true, log_p.shape[-1], ignore_index)
    p = ops.exp(log_p) * valid[:, None]
    intersection = ops.sum(p * one_hot, axis=0)[1:]
    p_sum = ops.sum(p, axis=0)[1:]
    y_sum = ops.sum(one_hot, axis=0)[1:]
    present = ops.greater(y_sum, 0.0)
    # Double where: the absent branch must not produce 0/0 (its gradient would be NaN).
    denominator = ops.where(present, p_sum + y_sum, 1.0)
    dice = ops.where(present, 2.0 * intersection / denominator, 1.0)
    return dice, present


@keras.saving.register_keras_serializable(package="common")
def multiclass_dice_loss(y_true, y_pred, ignore_index=EDEMA_IGNORE_INDEX):
    """The edema ``DiceLoss``: ``1 - mean_c dice_c`` over the lesion classes (absent class: dice 1)."""
    dice, _ = multiclass_soft_dice(y_true, y_pred, ignore_index)
    return 1.0 - ops.mean(dice)


@keras.saving.register_keras_serializable(package="common")
def exp_log_dice_loss(y_true, y_pred, gamma=0.5, ignore_index=EDEMA_IGNORE_INDEX):
    """Exponential-logarithmic Dice (Wong et al., MICCAI 2018, Dice half only), as the edema ``EL_DiceLoss``.

    ``L = (1/(C-1))·Σ_{c=1..C-1} (-ln dice_c)^gamma`` with gamma 0.5, no smoothing, no class weights; an
    absent class (dice 1) contributes 0 and gets no gradient. As in the original there is no epsilon, so
    the gradient is unbounded as a present class' dice tends to 1. ``-ln dice`` is clipped at 0 only to
    absorb float rounding of dice above 1.
    """
    dice, present = multiclass_soft_dice(y_true, y_pred, ignore_index)
    neg_log = ops.maximum(-ops.log(dice), 0.0)
    safe = ops.where(present, neg_log, 1.0)  # keeps pow's infinite slope at 0 out of the absent branch
    return ops.mean(ops.where(present, ops.power(safe, gamma), 0.0))


@keras.saving.register_keras_serializable(package="common")
def presence_targets(y_true, n_classes=4, ignore_index=EDEMA_IGNORE_INDEX):
    """Per-slice presence of each lesion class: (B, H, W[, 1]) labels -> float (B, C-1) of 0/1."""
    labels = _label_map(y_true)
    one_hot = ops.one_hot(ops.where(ops.equal(labels, ignore_index), 0, labels), n_classes, dtype="float32")
    return ops.max(ops.reshape(one_hot, (ops.shape(one_hot)[0], -1, n_classes)), axis=1)[:, 1:]


def _torch_log(x):
    # torch BCELoss: log clamped at -100; the where keeps log(0) (and its infinite slope) out of the graph.
    positive = ops.greater(x, 0.0)
    return ops.maximum(ops.where(positive, ops.log(ops.where(positive, x, 1.0)), -100.0), -100.0)


@keras.saving.register_keras_serializable(package="common")
def presence_bce(y_true, y_pred):
    """torch ``BCELoss`` (mean over B x 3) between presence probabilities and presence targets.

    ``y_true`` is either the (B, 3) 0/1 targets or the segmentation label map (B, H, W[, 1]), from which
    the targets are derived with ``presence_targets``. ``log`` is clamped at -100 as in torch.
    """
    p = ops.cast(y_pred, "float32")
    t = ops.convert_to_tensor(y_true)
    t = presence_targets(t, p.shape[-1] + 1) if len(t.shape) > 2 else ops.cast(t, "float32")
    return -ops.mean(t * _torch_log(p) + (1.0 - t) * _torch_log(1.0 - p))


@keras.saving.register_keras_serializable(package="common")
def mix_3(labels, seg_log_probs, det_probs, class_weights=EDEMA_CLASS_WEIGHTS, ignore_index=EDEMA_IGNORE_INDEX):
    """The edema ``mix_3`` total: ``WCE + Dice + BCE`` (weights 1), detection targets taken from ``labels``.

    For ``model.compile`` use ``edema_losses("mix_3")``, whose per-output terms sum to this value.
    """
    return (weighted_nll(labels, seg_log_probs, class_weights, ignore_index)
            + multiclass_dice_loss(labels, seg_log_probs, ignore_index)
            + presence_bce(presence_targets(labels, seg_log_probs.shape[-1], ignore_index), det_probs))


@keras.saving.register_keras_serializable(package="common")
def mix_33(labels, seg_log_probs, det_probs, gamma=0.5, class_weights=EDEMA_CLASS_WEIGHTS,
           ignore_index=EDEMA_IGNORE_INDEX):
    """The edema ``mix_33`` total: ``WCE + EL-Dice(gamma 0.5) + BCE`` (weights 1)."""
    return (weighted_nll(labels, seg_log_probs, class_weights, ignore_index)
            + exp_log_dice_loss(labels, seg_log_probs, gamma, ignore_index)
            + presence_bce(presence_targets(labels, seg_log_probs.shape[-1], ignore_index), det_probs))


@keras.saving.register_keras_serializable(package="common")
class EdemaSegmentationLoss(keras.losses.Loss):
    """Keras loss for the ``"seg"`` output: ``weighted_nll + multiclass_dice_loss`` (``dice="dice"``) or
    ``weighted_nll + exp_log_dice_loss`` (``dice="el_dice"``); ``dice=None`` gives the WCE alone.

    The value is a batch-global scalar (as the original), so ``sample_weight`` is not meaningful here.
    """

    def __init__(self, dice="dice", class_weights=EDEMA_CLASS_WEIGHTS, ignore_index=EDEMA_IGNORE_INDEX,
                 gamma=0.5, name="edema_segmentation_loss", **kwargs):
        if dice not in ("dice", "el_dice", None):
            raise ValueError(f"dice must be 'dice', 'el_dice' or None, got {dice!r}")
        super().__init__(name=name, **kwargs)
        self.dice = dice
        self.class_weights = tuple(float(w) for w in class_weights)
        self.ignore_index = int(ignore_index)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        loss = weighted_nll(y_true, y_pred, self.class_weights, self.ignore_index)
        if self.dice == "dice":
            loss = loss + multiclass_dice_loss(y_true, y_pred, self.ignore_index)
        elif self.dice == "el_dice":
            loss = loss + exp_log_dice_loss(y_true, y_pred, self.gamma, self.ignore_index)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(dice=self.dice, class_weights=list(self.class_weights), ignore_index=self.ignore_index,
                      gamma=self.gamma)
        return config


@keras.saving.register_keras_serializable(package="common")
class PresenceBCE(keras.losses.Loss):
    """Keras loss for the ``"det"`` output: ``presence_bce`` (y_true = (B, 3) targets or the label map)."""

    def __init__(self, name="presence_bce", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return presence_bce(y_true, y_pred)


def edema_losses(mix="mix_3", multi_task=True, class_weights=EDEMA_CLASS_WEIGHTS, gamma=0.5):
    """Per-output losses for ``model.compile(loss=...)`` reproducing the original's ``--loss`` choice.

    ``mix="mix_3"``: ``{"seg": WCE + Dice, "det": BCE}``; ``mix="mix_33"``: ``{"seg": WCE + EL-Dice,
    "det": BCE}``. With loss weights 1 Keras sums them, which equals ``mix_3`` / ``mix_33`` when the ``"det"``
    target is the label map (or ``presence_targets`` of it). ``multi_task=False`` drops ``"det"`` (the
    README's "WCE+Dice" rows without detection).
    """
    dice = {"mix_3": "dice", "mix_33": "el_dice"}.get(mix)
    if dice is None:
        raise ValueError(f"mix must be 'mix_3' or 'mix_33', got {mix!r}")
    losses = {"seg": EdemaSegmentationLoss(dice, class_weights, gamma=gamma)}
    if multi_task:
        losses["det"] = PresenceBCE()
    return losses


# --------------------------------------------------------------------------------------------------------------
# TDSNet (Ren et al., IEEE TIP 2020): segmentation, class-presence, sync-regularisation and scene losses.
#
# Conventions: the segmentation output is log-probabilities (log_softmax, B x H x W x C) and its target a
# one-hot mask (B x H x W x C); class and scene outputs are logits. The original trains with batch 1 and
# reads class/sync targets from sample 0 only; here they are computed per sample (identical at batch 1).

#: Loss weights (alpha: class presence, beta: sync, gamma: scene) of the last, all-joint stage of the original
#: train.sh. Its staged schedule is (0, 0, 0) -> (0.2, 0, 0) -> (0.2, 0.6, 0) -> (0.2, 0.6, 0.2); the CLI
#: defaults of train.py (0.2, 0.4, 0.2) were not what was run.
TDSNET_LOSS_WEIGHTS = (0.2, 0.6, 0.2)


def _pixels_by_class(x):
    """(B, H, W, C) -> (B·H·W, C) float32."""
    x = ops.cast(x, "float32")
    return ops.reshape(x, (-1, ops.shape(x)[-1]))


@keras.saving.register_keras_serializable(package="common")
def tdsnet_jaccard_loss(y_true, y_pred, eps=1e-15):
    """TDSNet's soft Jaccard term: ``Σ_c J_c`` over ALL classes (background included), summed, not averaged.

    With ``P = exp(y_pred)`` (softmax) and ``T = y_true`` (one-hot), pooled over batch and pixels:
    ``J_c = 1 - (I_c + eps) / (U_c - I_c + eps)``, ``I_c = Σ P_c·T_c``, ``U_c = Σ P_c + Σ T_c`` when class ``c``
    is present in ``T``; an absent class adds the constant 1 if ``Σ P_c != 0`` (always, for a softmax) else 0,
    without gradient, so false positives of absent classes are not penalised by this term.

    Args:
        y_true: one-hot mask (B, H, W, C).
        y_pred: log-probabilities (B, H, W, C).
        eps: smoothing of the original (1e-15).

    Returns:
        Scalar loss in [0, C].
    """
    t = _pixels_by_class(y_true)
    p = ops.exp(_pixels_by_class(y_pred))
    intersection = ops.sum(p * t, axis=0)
    p_sum = ops.sum(p, axis=0)
    union = p_sum + ops.sum(t, axis=0)
    soft = 1.0 - (intersection + eps) / (union - intersection + eps)
    absent = ops.stop_gradient(ops.cast(ops.not_equal(p_sum, 0.0), "float32"))
    present = ops.sum(t, axis=0) > 0
    return ops.sum(ops.where(present, soft, absent))


@keras.saving.register_keras_serializable(package="common")
def tdsnet_seg_loss(y_true, y_pred, jaccard_weight=0.5):
    """TDSNet's hybrid segmentation loss (``LossHybrid``): ``(1 - w)·NLL + w·Σ_c J_c``, ``w = 0.5``.

    NLL is the mean over all pixels of ``-log P[argmax T]``; ``Σ_c J_c`` is :func:`tdsnet_jaccard_loss`.

    Args:
        y_true: one-hot mask (B, H, W, C).
        y_pred: log-probabilities (B, H, W, C).
        jaccard_weight: ``w`` (0.5 in the original).
    """
    logp = _pixels_by_class(y_pred)
    labels = ops.one_hot(ops.argmax(_pixels_by_class(y_true), axis=-1), ops.shape(logp)[-1])
    nll = -ops.mean(ops.sum(labels * logp, axis=-1))
    return (1.0 - jaccard_weight) * nll + jaccard_weight * tdsnet_jaccard_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="common")
def class_presence(y_true):
    """Per-sample class-presence vector (B, C): 1 where class ``c`` occurs anywhere in the one-hot mask (B, H, W, C)."""
    y = ops.cast(y_true, "float32")
    return ops.cast(ops.max(ops.reshape(y, (ops.shape(y)[0], -1, ops.shape(y)[-1])), axis=1) > 0, "float32")


@keras.saving.register_keras_serializable(package="common")
def tdsnet_class_loss(y_true, y_pred):
    """Class-presence loss: mean over classes (and batch) of ``BCE(sigmoid(z_c), y_c)``.

    Args:
        y_true: presence targets (B, C) in {0, 1}, or a one-hot mask (B, H, W, C) reduced by
            :func:`class_presence`.
        y_pred: class logits (B, C).
    """
    if len(ops.shape(y_true)) == 4:
        y_true = class_presence(y_true)
    bce = ops.binary_crossentropy(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"), from_logits=True)
    return ops.mean(bce)


@keras.saving.register_keras_serializable(package="common")
def sync_targets(seg_log_probs, threshold=0.5):
    """Sync-regularisation targets (B, C): 1 where some pixel has softmax probability ``P_c > threshold``.

    Built from the current segmentation output and wrapped in ``stop_gradient``: a constant target, as in the
    original (a Python list there). Not the same as "c appears in the argmax map".
    """
    p = ops.exp(ops.cast(seg_log_probs, "float32"))
    p_max = ops.max(ops.reshape(p, (ops.shape(p)[0], -1, ops.shape(p)[-1])), axis=1)
    return ops.stop_gradient(ops.cast(p_max > threshold, "float32"))


@keras.saving.register_keras_serializable(package="common")
def tdsnet_sync_loss(seg_log_probs, class_logits):
    """Sync-regularisation: ``mean_c BCE(sigmoid(z_c), q_c)`` with ``q = sync_targets(seg_log_probs)``.

    Pulls the class head (and the shared features) towards the segmentation's verdict; no gradient reaches
    the segmentation branch through ``q``.

    Args:
        seg_log_probs: segmentation output, log-probabilities (B, H, W, C).
        class_logits: class output (B, C).
    """
    return tdsnet_class_loss(sync_targets(seg_log_probs), class_logits)


@keras.saving.register_keras_serializable(package="common")
def tdsnet_scene_loss(y_true, y_pred):
    """Scene loss: softmax cross-entropy of the scene logits (B, S) with integer scene ids (B,) or (B, 1)."""
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    return ops.mean(ops.sparse_categorical_crossentropy(labels, ops.cast(y_pred, "float32"), from_logits=True))


@keras.saving.register_keras_serializable(package="common")
def tdsnet_loss_terms(seg_true, class_true, scene_true, seg_pred, class_pred, scene_pred,
                      weights=TDSNET_LOSS_WEIGHTS, jaccard_weight=0.5):
    """All TDSNet loss terms and ``total = L_seg + alpha·L_class + beta·L_sync + gamma·L_scene``.

    Args:
        seg_true: one-hot mask (B, H, W, C).
        class_true: presence targets (B, C), or None to derive them from ``seg_true``.
        scene_true: scene ids (B,).
        seg_pred, class_pred, scene_pred: the three model outputs (log-probs, logits, logits).
        weights: ``(alpha, beta, gamma)``; default :data:`TDSNET_LOSS_WEIGHTS` = (0.2, 0.6, 0.2), the final stage
            of the original train.sh. Zero-weighted terms are still computed (for logging).
        jaccard_weight: of :func:`tdsnet_seg_loss`.

    Returns:
        dict with scalars ``seg``, ``cls``, ``sync``, ``scene`` and ``total``.
    """
    alpha, beta, gamma = weights
    terms = {
        "seg": tdsnet_seg_loss(seg_true, seg_pred, jaccard_weight),
        "cls": tdsnet_class_loss(seg_true if class_true is None else class_true, class_pred),
        "sync": tdsnet_sync_loss(seg_pred, class_pred),
        "scene": tdsnet_scene_loss(scene_true, scene_pred),
    }
    terms["total"] = terms["seg"] + alpha * terms["cls"] + beta * terms["sync"] + gamma * terms["scene"]
    return terms


@keras.saving.register_keras_serializable(package="common")
def tdsnet_total_loss(seg_true, class_true, scene_true, seg_pred, class_pred, scene_pred,
                      weights=TDSNET_LOSS_WEIGHTS, jaccard_weight=0.5):
    """``L_seg + alpha·L_class + beta·L_sync + gamma·L_scene`` (see :func:`tdsnet_loss_terms`)."""
    return tdsnet_loss_terms(seg_true, class_true, scene_true, seg_pred, class_pred, scene_pred,
                             weights, jaccard_weight)["total"]


# --------------------------------------------------------------------------------------------------------------
# Multi-class heads of the binary families (``build_model(..., num_classes=K)``, K > 2): the output is softmax
# probabilities (B, H, W, K), the target an integer label map (B, H, W) or (B, H, W, 1) with values 0..K-1
# (0 = background). Sums run over the whole batch.
# --------------------------------------------------------------------------------------------------------------



def _probabilities(y_pred):
    return ops.cast(y_pred, "float32")  # mixed precision: the loss in float32


@keras.saving.register_keras_serializable(package="common")
def foreground_soft_dice(y_true, y_pred, smooth=1.0):
    """Soft Dice of each foreground class, pooled over the batch: for c = 1..K-1,
    ``dice_c = (2·Σ p_c·[y=c] + smooth) / (Σ p_c + Σ [y=c] + smooth)``, with ``p`` the softmax probabilities.

    ``smooth`` 1 as the nerve tutorial's ``dice_coef``: a class absent from the batch and not predicted scores
    about 1. Returns a float32 (K-1,) tensor.
    """
    p = _probabilities(y_pred)
    k = p.shape[-1]
    p = ops.reshape(p, (-1, k))
    y = ops.reshape(ops.one_hot(_label_map(y_true), k, dtype="float32"), (-1, k))
    intersection = ops.sum(p * y, axis=0)[1:]
    total = ops.sum(p, axis=0)[1:] + ops.sum(y, axis=0)[1:]
    return (2.0 * intersection + smooth) / (total + smooth)


@keras.saving.register_keras_serializable(package="common")
def foreground_dice_loss(y_true, y_pred, smooth=1.0):
    """Multi-class soft Dice loss: ``1 - mean_{c=1..K-1} dice_c`` (:func:`foreground_soft_dice`)."""
    return 1.0 - ops.mean(foreground_soft_dice(y_true, y_pred, smooth))


@keras.saving.register_keras_serializable(package="common")
def label_crossentropy(y_true, y_pred, epsilon=1e-7):
    """Categorical cross-entropy of softmax probabilities against an integer label map, per pixel:
    ``-log(clip(p[y], eps, 1 - eps))`` (Keras' sparse categorical cross-entropy); returns (B, H, W)."""
    p = ops.clip(_probabilities(y_pred), epsilon, 1.0 - epsilon)
    y = ops.one_hot(_label_map(y_true), p.shape[-1], dtype="float32")
    return -ops.sum(y * ops.log(p), axis=-1)


@keras.saving.register_keras_serializable(package="common")
def foreground_dice(y_true, y_pred):
    """Training metric: Dice of the argmax prediction per foreground class, pooled over the batch, averaged
    over the classes; a class absent from both the batch's labels and its prediction counts 1."""
    p = _probabilities(y_pred)
    k = p.shape[-1]
    hard = ops.reshape(ops.one_hot(ops.argmax(p, axis=-1), k, dtype="float32"), (-1, k))[:, 1:]
    y = ops.reshape(ops.one_hot(_label_map(y_true), k, dtype="float32"), (-1, k))[:, 1:]
    total = ops.sum(hard, axis=0) + ops.sum(y, axis=0)
    dice = ops.where(total > 0, 2.0 * ops.sum(hard * y, axis=0) / ops.maximum(total, 1.0), 1.0)
    return ops.mean(dice)


@keras.saving.register_keras_serializable(package="common")
class MulticlassLoss(keras.losses.Loss):
    """Loss of a K-class softmax head on integer label maps.

    ``kind``: ``"ce"`` = :func:`label_crossentropy` (mean over pixels); ``"dice"`` = :func:`foreground_dice_loss`
    (batch-pooled soft Dice averaged over the foreground classes); ``"ce_dice"`` = their sum.
    """

    def __init__(self, kind="ce", smooth=1.0, name=None, **kwargs):
        if kind not in MULTICLASS_LOSSES:
            raise ValueError(f"kind must be one of {', '.join(MULTICLASS_LOSSES)}, got {kind!r}")
        super().__init__(name=name or f"multiclass_{kind}", **kwargs)
        self.kind = kind
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        loss = 0.0
        if self.kind in ("ce", "ce_dice"):
            loss = label_crossentropy(y_true, y_pred)  # (B, H, W): Keras takes the mean
        if self.kind in ("dice", "ce_dice"):
            loss = loss + foreground_dice_loss(y_true, y_pred, self.smooth)
        return loss

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "smooth": self.smooth}
