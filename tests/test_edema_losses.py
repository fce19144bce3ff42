"""Retinal-edema losses and the torch-Adam optimizer against plain NumPy references (spec section 2, 4)."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from common import losses as L
from common.optimizers import AdamL2

W = np.array([1.0, 5.0, 10.0, 20.0])


# ----------------------------------------------------------------------- NumPy references (pixel loops)

def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def ref_wce(labels, logp, ignore=255):
    num = den = 0.0
    for y, lp in zip(labels.reshape(-1), logp.reshape(-1, logp.shape[-1])):
        if y == ignore:
            continue
        num += W[y] * -lp[y]
        den += W[y]
    return num / den


def ref_dice(labels, logp, ignore=255):
    p = np.exp(logp).reshape(-1, 4)
    y = labels.reshape(-1)
    keep = y != ignore
    p, y = p[keep], y[keep]
    dices, present = [], []
    for c in (1, 2, 3):
        g = (y == c).astype(float)
        present.append(g.sum() > 0)
        dices.append(2 * (p[:, c] * g).sum() / (p[:, c].sum() + g.sum()) if g.sum() > 0 else 1.0)
    return np.array(dices), np.array(present)


def ref_dice_loss(labels, logp):
    return 1.0 - ref_dice(labels, logp)[0].mean()


def ref_el_dice(labels, logp, gamma=0.5):
    dices, present = ref_dice(labels, logp)
    return sum((-np.log(d)) ** gamma if ok else 0.0 for d, ok in zip(dices, present)) / 3


def ref_targets(labels):
    return np.array([[float(np.any(lab == c)) for c in (1, 2, 3)] for lab in labels])


def ref_bce(targets, probs):
    with np.errstate(divide="ignore"):
        log_p, log_q = np.maximum(np.log(probs), -100), np.maximum(np.log(1 - probs), -100)
    return -np.mean(targets * log_p + (1 - targets) * log_q)


def ref_torch_adam(theta, grads, lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=1e-4):
    """torch.optim.Adam (amsgrad False, maximize False) written out."""
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * theta
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - betas[1] ** t) + eps
        theta = theta - lr / (1 - betas[0] ** t) * m / denom
    return theta


# ----------------------------------------------------------------------- hand examples

# Batch of 2 slices 2x3: REA (1) and PED (3) present, SRF (2) absent.
LABELS = np.array([[[0, 1, 1], [0, 0, 3]],
                   [[0, 0, 0], [1, 0, 0]]])
LOGITS = np.random.default_rng(42).normal(scale=2.0, size=(2, 2, 3, 4)).astype("float32")
LOGP = np_log_softmax(LOGITS.astype("float64"))
EMPTY = np.zeros_like(LABELS)  # all background
DET = np.array([[0.9, 0.2, 0.6], [0.3, 0.05, 0.1]], dtype="float32")


def f(x):
    return float(keras.ops.convert_to_numpy(x))


@pytest.mark.parametrize("labels", [LABELS, EMPTY], ids=["absent_class", "all_background"])
def test_weighted_nll(labels):
    assert f(L.weighted_nll(labels, LOGP.astype("float32"))) == pytest.approx(ref_wce(labels, LOGP), rel=1e-5)


def test_weighted_nll_hand_value_and_ignore():
    # Two pixels, uniform prediction: -log(1/4) each, weights 1 and 20 -> still ln 4 (normalised by weights).
    logp = np.full((1, 1, 2, 4), np.log(0.25), dtype="float32")
    assert f(L.weighted_nll(np.array([[[0, 3]]]), logp)) == pytest.approx(np.log(4.0), rel=1e-6)
    # Not the pixel-count mean: PED pixel predicted perfectly, background pixel at p=0.25.
    logp2 = np_log_softmax(np.array([[[[0, 0, 0, 0], [-50, -50, -50, 50]]]], dtype="float64"))
    expected = (1 * np.log(4.0) + 20 * 0.0) / 21
    assert f(L.weighted_nll(np.array([[[0, 3]]]), logp2.astype("float32"))) == pytest.approx(expected, rel=1e-5)
    ignored = LABELS.copy()
    ignored[0, 0, 1] = ignored[1, 1, 0] = 255
    assert f(L.weighted_nll(ignored, LOGP.astype("float32"))) == pytest.approx(ref_wce(ignored, LOGP), rel=1e-5)


@pytest.mark.parametrize("labels", [LABELS, EMPTY, LABELS[..., None]], ids=["absent_class", "all_background",
                                                                         "channel_axis"])
def test_dice_and_el_dice(labels):
    flat = labels[..., 0] if labels.ndim == 4 else labels
    logp = LOGP.astype("float32")
    dice, present = L.multiclass_soft_dice(labels, logp)
    ref_d, ref_present = ref_dice(flat, LOGP)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(dice), ref_d, rtol=1e-5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(present), ref_present)
    assert f(L.multiclass_dice_loss(labels, logp)) == pytest.approx(ref_dice_loss(flat, LOGP), rel=1e-5, abs=1e-7)
    assert f(L.exp_log_dice_loss(labels, logp)) == pytest.approx(ref_el_dice(flat, LOGP), rel=1e-5, abs=1e-7)


def test_absent_class_conventions():
    assert ref_dice(LABELS, LOGP)[0][1] == 1.0  # SRF absent -> dice 1
    assert f(L.multiclass_dice_loss(EMPTY, LOGP.astype("float32"))) == 0.0
    assert f(L.exp_log_dice_loss(EMPTY, LOGP.astype("float32"))) == 0.0


def test_logits_accepted_like_log_probs():
    references = {L.weighted_nll: ref_wce, L.multiclass_dice_loss: ref_dice_loss, L.exp_log_dice_loss: ref_el_dice}
    for loss, reference in references.items():  # raw logits in, the NumPy reference on their log_softmax
        assert f(loss(LABELS, LOGITS)) == pytest.approx(reference(LABELS, LOGP), rel=1e-5)


@pytest.mark.parametrize("labels", [LABELS, EMPTY], ids=["absent_class", "all_background"])
def test_gradients_finite(labels):
    logits = tf.Variable(LOGITS)
    for loss in (L.weighted_nll, L.multiclass_dice_loss, L.exp_log_dice_loss, L.mix_33):
        with tf.GradientTape() as tape:
            logp = tf.nn.log_softmax(logits)
            value = loss(labels, logp, DET) if loss is L.mix_33 else loss(labels, logp)
        grad = tape.gradient(value, logits).numpy()
        assert np.all(np.isfinite(grad)), loss.__name__
    # Absent classes get no gradient: with all background, the Dice terms are constant.
    with tf.GradientTape() as tape:
        value = L.exp_log_dice_loss(EMPTY, tf.nn.log_softmax(logits))
    assert not np.any(tape.gradient(value, logits).numpy())


def test_presence_targets_and_bce():
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(L.presence_targets(LABELS)),
                                  [[1, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(L.presence_targets(EMPTY)), np.zeros((2, 3)))
    for labels in (LABELS, EMPTY):
        t = ref_targets(labels)
        assert f(L.presence_bce(t, DET)) == pytest.approx(ref_bce(t, DET.astype("float64")), rel=1e-5)
        # Label maps are accepted as the target too.
        assert f(L.presence_bce(labels, DET)) == pytest.approx(ref_bce(t, DET.astype("float64")), rel=1e-5)
    # torch clamps log at -100: confident wrong answers cost exactly 100.
    t = np.array([[1.0, 0.0, 1.0]])
    p = np.array([[0.0, 1.0, 1.0]], dtype="float32")
    assert f(L.presence_bce(t, p)) == pytest.approx(200.0 / 3, rel=1e-6)


@pytest.mark.parametrize("labels", [LABELS, EMPTY], ids=["absent_class", "all_background"])
def test_mixes(labels):
    logp = LOGP.astype("float32")
    bce = ref_bce(ref_targets(labels), DET.astype("float64"))
    mix_3 = ref_wce(labels, LOGP) + ref_dice_loss(labels, LOGP) + bce
    mix_33 = ref_wce(labels, LOGP) + ref_el_dice(labels, LOGP) + bce
    assert f(L.mix_3(labels, logp, DET)) == pytest.approx(mix_3, rel=1e-5)
    assert f(L.mix_33(labels, logp, DET)) == pytest.approx(mix_33, rel=1e-5)
    # The per-output Keras losses sum to the same totals.
    for mix, total in (("mix_3", mix_3), ("mix_33", mix_33)):
        per_output = L.edema_losses(mix)
        value = f(per_output["seg"](labels, logp)) + f(per_output["det"](labels, DET))
        assert value == pytest.approx(total, rel=1e-5)


def test_loss_serialization():
    loss = L.EdemaSegmentationLoss("el_dice", gamma=0.3)  # not the default gamma: it must survive the trip
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, L.EdemaSegmentationLoss) and clone.dice == "el_dice"
    expected = ref_wce(LABELS, LOGP) + ref_el_dice(LABELS, LOGP, gamma=0.3)
    assert f(loss(LABELS, LOGP.astype("float32"))) == pytest.approx(expected, rel=1e-5)
    assert f(clone(LABELS, LOGP.astype("float32"))) == pytest.approx(expected, rel=1e-5)
    assert keras.saving.get_registered_object("common>mix_33") is L.mix_33
    with pytest.raises(ValueError):
        L.edema_losses("mix_2")


@pytest.mark.parametrize("options", [
    {},  # the edema defaults: lr 1e-3, betas (0.9, 0.99), eps 1e-8, weight_decay 1e-4
    # Large decay, small gradients and a large eps: here Keras Adam / AdamW differ from torch by > 0.2.
    dict(lr=0.1, eps=1e-3, weight_decay=0.5, grad_scale=1e-3),
], ids=["edema_defaults", "discriminating"])
def test_adam_l2_matches_torch_adam(options):
    options = dict(options)
    scale = options.pop("grad_scale", 1.0)
    rng = np.random.default_rng(0)
    theta0 = rng.normal(size=(5, 3))
    grads = [scale * rng.normal(size=(5, 3)) for _ in range(3)]
    keras_names = {"lr": "learning_rate", "eps": "epsilon", "weight_decay": "l2"}
    opt = AdamL2(**{keras_names[k]: v for k, v in options.items()})
    var = keras.Variable(theta0.astype("float32"))
    for k, g in enumerate(grads, start=1):
        opt.apply_gradients([(keras.ops.convert_to_tensor(g.astype("float32")), var)])
        expected = ref_torch_adam(theta0, grads[:k], **options)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(var), expected, rtol=1e-6, atol=1e-6)


def test_adam_l2_zero_gradient_and_config():
    # A zero gradient still moves the weights through the coupled L2 term.
    theta0 = np.linspace(-1, 1, 6).reshape(2, 3)
    var = keras.Variable(theta0.astype("float32"))
    AdamL2(l2=0.1).apply_gradients([(keras.ops.zeros((2, 3)), var)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(var),
                               ref_torch_adam(theta0, [np.zeros((2, 3))], weight_decay=0.1), rtol=1e-6)
    default = AdamL2()  # the original's torch.optim.Adam: betas (0.9, 0.99), eps 1e-8, weight_decay 1e-4 (spec)
    assert (default.l2, default.beta_2, default.epsilon) == (1e-4, 0.99, 1e-8)
    # non-default values: a get_config that dropped one would come back as the default
    clone = AdamL2.from_config(AdamL2(l2=0.3, beta_2=0.95, epsilon=1e-6).get_config())
    assert (clone.l2, clone.beta_2, clone.epsilon) == (0.3, 0.95, 1e-6)
    assert keras.optimizers.deserialize(keras.optimizers.serialize(clone)).l2 == 0.3


def test_compiled_training_step():
    from common.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("edema_unet", (32, 32, 3), feature_scale=16)
    model.compile(optimizer=AdamL2(), loss=L.edema_losses("mix_33"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 4, size=(2, 32, 32)).astype("uint8")
    labels[1] = 0
    # Evaluation (dropout off) reports the original's mix_33 total.
    out = model.predict(x, verbose=0)
    seg = out["seg"].astype("float64")
    expected = (ref_wce(labels, seg) + ref_el_dice(labels, seg)
                + ref_bce(ref_targets(labels), out["det"].astype("float64")))
    assert model.evaluate(x, {"seg": labels, "det": labels}, verbose=0, return_dict=True)["loss"] == \
        pytest.approx(expected, rel=1e-4)
    history = model.fit(x, {"seg": labels, "det": labels}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_compiled_model_reloads(tmp_path):
    from common.models import build_model

    model = build_model("edema_unet", (32, 32, 3), feature_scale=16)
    # non-default l2, gamma and Dice variant, so that none can come back as a default by accident
    model.compile(optimizer=AdamL2(l2=0.3), loss=L.edema_losses("mix_33", gamma=0.3))
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "compiled.keras")
    reloaded = keras.saving.load_model(tmp_path / "compiled.keras")
    assert isinstance(reloaded.optimizer, AdamL2) and reloaded.optimizer.l2 == pytest.approx(0.3)
    seg = reloaded.loss["seg"]
    assert isinstance(seg, L.EdemaSegmentationLoss) and (seg.dice, seg.gamma) == ("el_dice", pytest.approx(0.3))
