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
