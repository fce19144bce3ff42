"""Multi-class heads of the binary families (BCDU-Net family, nerve_unet, fingernail U-Nets): shapes, parameter
counts from the specs' numbers, losses and per-class scores against NumPy, label-map PNGs, a tiny training run."""

import warnings

import keras
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from common.data.io import write_label_map
from common.data.synthetic import multiclass_shapes
from common.losses import (MulticlassLoss, foreground_dice, foreground_dice_loss, foreground_soft_dice,
                           label_crossentropy)
from common.metrics import multiclass_scores
from common.models import build_model

# Spec numbers: (model, input shape used for the count, parameters of the default (1-channel sigmoid) model,
# parameters of its 1x1 output conv = C_in + 1). specs/bcdu_net.md §2 and §1.2 ("head 1154, 3"),
# specs/ultrasound_nerve.md §2 ("head 33"), specs/fingernail.md §2f and tests/test_unet2d_family.py's conv10 counts.
# Counts do not depend on H, W (fully convolutional; the specs say so), so small inputs build faster.
SPEC_HEADS = [
    ("bcdu_net_d3", (32, 32, 3), 20_660_869, 3),
    ("bcdu_net_d1", (32, 32, 3), 8_862_341, 3),
    ("bcdu_unet", (32, 32, 3), 9_091_461, 3),
    ("sedu_net_d3", (32, 32, 3), 27_891_901, 3),
    ("nerve_unet", (32, 32, 1), 7_759_521, 33),
    ("unet2d_8_128", (32, 48, 3), 485_817, 9),
    ("unet2d_res_32_512", (32, 48, 3), 15_527_681, 97),
    ("unet2d_res_srnn_32_512", (32, 48, 3), 14_449_857, 97),
    ("unet2d_res_srnn_8_128", (32, 48, 3), 914_865, 25),
]
OUTPUT_LAYER = {"nerve_unet": "head_conv", "unet2d_8_128": "conv10", "unet2d_res_32_512": "conv10",
                "unet2d_res_srnn_32_512": "conv10", "unet2d_res_srnn_8_128": "conv10"}


def _build(name, shape, **options):
    with warnings.catch_warnings():  # SpatialRNN2D: L exceeds these small maps
        warnings.simplefilter("ignore")
        return build_model(name, shape, **options)


@pytest.mark.parametrize("name, shape, default_params, head_params", SPEC_HEADS)
def test_parameter_counts_for_one_and_four_classes(name, shape, default_params, head_params):
    """K = 1: the original (sigmoid, spec count); K = 4: (K - 1)·(C_in·1·1 + 1) more, from the spec."""
    layer = OUTPUT_LAYER.get(name, "head_output")
    for k in (1,):
        model = _build(name, shape, num_classes=k)
        assert model.count_params() == default_params
        assert model.output_shape == (None,) + shape[:2] + (1,)
        assert model.get_layer(layer).activation is keras.activations.sigmoid
    four = _build(name, shape, num_classes=4)
    assert four.count_params() == default_params + (4 - 1) * head_params
    assert four.output_shape == (None,) + shape[:2] + (4,)
    assert four.get_layer(layer).activation is keras.activations.softmax
    assert four.get_layer(layer).get_weights()[0].shape[-1] == 4


def test_two_classes_is_the_binary_original():
    binary, two = (build_model("bcdu_net_d1", (16, 16, 1), **options) for options in ({}, {"num_classes": 2}))
    assert [(w.path, w.shape) for w in two.weights] == [(w.path, w.shape) for w in binary.weights]
    assert [layer.name for layer in two.layers] == [layer.name for layer in binary.layers]
    assert two.output_shape == (None, 16, 16, 1)


def test_softmax_output_sums_to_one_and_bad_num_classes():
    model = build_model("nerve_unet", (32, 32, 1), filters=(4, 8, 16, 32, 64), num_classes=3)
    y = model.predict(np.random.default_rng(0).random((2, 32, 32, 1), np.float32), verbose=0)
    assert y.shape == (2, 32, 32, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(ValueError, match="num_classes"):
            build_model("bcdu_net_d1", (32, 32, 1), num_classes=bad)


# ---- losses against NumPy --------------------------------------------------------------------------------------

def _random_case(seed=0, k=4, shape=(2, 5, 6)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, shape)
    logits = rng.normal(size=shape + (k,))
    prob = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return labels, prob.astype(np.float32)


def _np_dice(labels, prob, smooth=1.0):
    k = prob.shape[-1]
    out = []
    for c in range(1, k):
        g = (labels == c).astype(np.float64)
        p = prob[..., c].astype(np.float64)
        out.append((2 * (g * p).sum() + smooth) / (g.sum() + p.sum() + smooth))
    return np.array(out)


def _np_ce(labels, prob, eps=1e-7):
    p = np.clip(prob.astype(np.float64), eps, 1 - eps)
    return -np.log(np.take_along_axis(p, labels[..., None], axis=-1)[..., 0]).mean()


@pytest.mark.parametrize("channel_axis", [False, True])
def test_multiclass_losses_match_numpy(channel_axis):
    labels, prob = _random_case()
    y = labels[..., None].astype(np.float32) if channel_axis else labels
    expected_dice = _np_dice(labels, prob)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(foreground_soft_dice(y, prob)), expected_dice, rtol=1e-5)
    np.testing.assert_allclose(float(foreground_dice_loss(y, prob)), 1 - expected_dice.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(keras.ops.mean(label_crossentropy(y, prob))), _np_ce(labels, prob), rtol=1e-5)
    np.testing.assert_allclose(float(MulticlassLoss("ce")(y, prob)), _np_ce(labels, prob), rtol=1e-5)
    np.testing.assert_allclose(float(MulticlassLoss("dice")(y, prob)), 1 - expected_dice.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(MulticlassLoss("ce_dice")(y, prob)),
                               _np_ce(labels, prob) + 1 - expected_dice.mean(), rtol=1e-5)
    # CE agrees with Keras's own sparse categorical cross-entropy
    np.testing.assert_allclose(float(MulticlassLoss("ce")(y, prob)),
                               float(keras.losses.SparseCategoricalCrossentropy()(labels, prob)), rtol=1e-5)


def test_perfect_prediction_and_hard_dice_metric():
    labels, _ = _random_case(1)
    one_hot = np.eye(4, dtype=np.float32)[labels]
    assert float(foreground_dice_loss(labels, one_hot)) == pytest.approx(0.0, abs=1e-6)
    assert float(foreground_dice(labels, one_hot)) == pytest.approx(1.0)
    wrong = np.eye(4, dtype=np.float32)[(labels + 1) % 4]
    assert float(foreground_dice(labels, wrong)) == pytest.approx(0.0)
    # metric = mean over classes 1..3 of the pooled hard Dice of the argmax
    _, prob = _random_case(2)
    pred = prob.argmax(-1)
    expected = np.mean([2 * np.sum((labels == c) & (pred == c)) / (np.sum(labels == c) + np.sum(pred == c))
                        for c in (1, 2, 3)])
    assert float(foreground_dice(labels, prob)) == pytest.approx(expected, rel=1e-5)


def test_multiclass_loss_serialization_and_bad_kind():
    loss = MulticlassLoss("ce_dice", smooth=0.5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, MulticlassLoss) and restored.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="kind"):
        MulticlassLoss("bce")


# ---- per-class scores against a brute-force NumPy computation ---------------------------------------------------

def _brute_surface(t, p):
    """HD95 / ASSD of two non-empty 2-D masks by brute force over all surface-pixel pairs."""
    def surface(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m))

    a, b = surface(t), surface(p)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    ab, ba = d.min(axis=0), d.min(axis=1)  # pred -> true, true -> pred
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), np.concatenate([ab, ba]).mean()


def test_multiclass_scores_match_brute_force():
    rng = np.random.default_rng(3)
    _, truth = multiclass_shapes(6, size=24, seed=4)
    pred = truth.copy()
    pred = np.where(rng.random(pred.shape) < 0.1, rng.integers(0, 4, pred.shape), truth).astype(np.uint8)
    pred[0][pred[0] == 2] = 0  # class 2 missing from one prediction (an inf image, left out of the means)
    out = multiclass_scores(truth, pred, 4)
    for c in (1, 2, 3):
        g, q = truth == c, pred == c
        tp = np.sum(g & q)
        fp, fn = np.sum(~g & q), np.sum(g & ~q)
        row = out["classes"][c]
        assert row["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert row["iou"] == pytest.approx(tp / (tp + fp + fn))
        assert row["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert row["precision"] == pytest.approx(tp / (tp + fp))
        pairs = [_brute_surface(g[i], q[i]) for i in range(len(g)) if g[i].any() and q[i].any()]
        assert row["n_finite"] == len(pairs)
        assert row["hd95"] == pytest.approx(np.mean([h for h, _ in pairs]))
        assert row["assd"] == pytest.approx(np.mean([a for _, a in pairs]))
    for key in ("dice", "iou", "hd95", "assd"):
        assert out["mean"][key] == pytest.approx(np.mean([out["classes"][c][key] for c in (1, 2, 3)]))


def test_multiclass_scores_absent_class_and_bad_labels():
    truth = np.zeros((1, 8, 8), np.uint8)
    truth[0, 2:5, 2:5] = 1
    out = multiclass_scores(truth, truth, 3, spacing=0.5)
    assert out["classes"][1]["dice"] == 1.0 and out["classes"][1]["hd95"] == 0.0
    assert np.isnan(out["classes"][2]["dice"]) and np.isnan(out["classes"][2]["hd95"])
    assert out["mean"]["dice"] == 1.0  # NaN classes are skipped
    with pytest.raises(ValueError, match="labels 0..2"):
        multiclass_scores(truth, truth + 2, 3)
    with pytest.raises(ValueError, match="shape"):
        multiclass_scores(truth, truth[0], 3)


# ---- label maps as palette PNGs ---------------------------------------------------------------------------------

def test_write_label_map_round_trip(tmp_path):
    labels = np.random.default_rng(0).integers(0, 30, (7, 9))
    path = tmp_path / "sub" / "labels.png"
    write_label_map(path, labels[..., None])
    with Image.open(path) as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.array(image), labels)
        palette = np.array(image.getpalette()).reshape(-1, 3)
    assert tuple(palette[0]) == (0, 0, 0) and len({tuple(c) for c in palette[:30]}) == 30  # distinct colours
    write_label_map(path, labels, palette=[(0, 0, 0), (255, 255, 255)])
    with Image.open(path) as image:
        assert tuple(image.getpalette()[3:6]) == (255, 255, 255)
    assert [p.name for p in path.parent.iterdir()] == ["labels.png"]  # no temporary left
    for bad in (labels.astype(float), labels + 300, labels[None]):
        with pytest.raises(ValueError):
            write_label_map(tmp_path / "bad.png", bad)


# ---- a tiny multi-class training run beats the majority-class predictor ------------------------------------------

def test_small_model_learns_three_shapes():
    from common.multiclass import compile_multiclass

    keras.utils.set_random_seed(0)
    x, y = multiclass_shapes(128, size=32, seed=0)
    x_te, y_te = multiclass_shapes(16, size=32, seed=1)
    model = build_model("nerve_unet", (32, 32, 1), filters=(8, 16, 32, 64, 128), num_classes=4)
    compile_multiclass(model, loss="ce_dice", lr=3e-3)
    model.fit(x, y[..., None].astype(np.float32), batch_size=4, epochs=8, verbose=0)  # ~0.86 (0.0 after 1 epoch)
    pred = model.predict(x_te, verbose=0).argmax(-1)
    scores = multiclass_scores(y_te, pred, 4)
    majority = multiclass_scores(y_te, np.zeros_like(y_te), 4)  # background everywhere: Dice 0 per class
    assert np.nan_to_num(majority["mean"]["dice"]) == 0.0
    assert scores["mean"]["dice"] > 0.6, scores
    assert min(scores["classes"][c]["dice"] for c in (1, 2, 3)) > 0.4, scores


# ---- task scripts: --num-classes from the data, per-class evaluation ----------------------------------------------

def _error_line(main, argv):
    from tests._cli import error_line

    return error_line(main, argv)


def test_infer_and_resolve_num_classes():
    from common.errors import UserError
    from common.multiclass import infer_num_classes, resolve_num_classes

    rng = np.random.default_rng(0)
    binary = (rng.random((3, 8, 8)) > 0.5).astype(np.uint8)
    assert infer_num_classes(binary) == 2 and infer_num_classes(binary * 255) == 2
    for top in (255, 254):  # soft 0..255 masks (resized 0/255 ones), with or without 255 itself
        assert infer_num_classes(rng.integers(0, top + 1, (3, 8, 8)).astype(np.uint8)) == 2
    assert infer_num_classes(rng.random((3, 8, 8)).astype(np.float32)) == 2  # soft 0..1 masks
    labels = rng.integers(0, 4, (130, 8, 8)).astype(np.uint8)  # more than one chunk
    assert infer_num_classes(labels) == 4 and infer_num_classes(labels.astype(np.float32)) == 4
    assert resolve_num_classes(None, labels) == 4 and resolve_num_classes(6, labels) == 6
    assert resolve_num_classes(1, labels) == 1 and resolve_num_classes(2, binary * 255) == 2
    with pytest.raises(UserError, match="--num-classes: 3 classes need masks with integer labels 0..2, the "
                                        "training masks hold labels up to 3"):
        resolve_num_classes(3, labels)
    with pytest.raises(UserError, match="labels up to 255"):
        resolve_num_classes(4, binary * 255)


def _skin_label_arrays(work, size=16):
    """A prepared-looking skin_lesion work folder whose masks are label maps 0..3 (np.save, not the code)."""
    work.mkdir(parents=True)
    for split, n, seed in (("train", 16, 0), ("val", 4, 1), ("test", 4, 2)):
        x, y = multiclass_shapes(n, size=size, channels=3, seed=seed)
        np.save(work / f"data_{split}.npy", (x * 255).astype(np.uint8))
        np.save(work / f"mask_{split}.npy", y)


def test_skin_lesion_trains_and_evaluates_label_maps(tmp_path, monkeypatch):
    import json

    from skin_lesion import evaluate, train_isic18

    work, out = tmp_path / "work", tmp_path / "out"
    _skin_label_arrays(work)
    monkeypatch.setattr("common.cli.repo_path", lambda *parts: tmp_path.joinpath(*parts))
    assert "3 classes need masks with integer labels 0..2" in _error_line(
        train_isic18.main, ["--work-dir", str(work), "--num-classes", "3", "--model", "bcdu_unet"])
    assert "--restarts: applies to the original's binary head" in _error_line(
        train_isic18.main, ["--work-dir", str(work), "--model", "bcdu_unet", "--restarts", "1"])
    train_isic18.main(["--work-dir", str(work), "--model", "bcdu_unet", "--epochs", "1", "--batch-size", "4",
                       "--seed", "0", "--verbose", "0", "--multiclass-loss", "ce_dice"])
    run = tmp_path / "weights" / "skin_lesion" / "bcdu_unet_batch4_classes4_ce_dice"  # K read from the masks
    state = json.loads((run / "state.json").read_text())
    assert state["settings"]["num_classes"] == 4 and state["settings"]["multiclass_loss"] == "ce_dice"
    assert train_isic18.run_name("bcdu_unet") == "bcdu_unet"  # binary names unchanged
    assert evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out), "--quiet"]) == 0
    assert np.load(out / "pred_test.npy").shape == (4, 16, 16, 4)
    labels = np.load(out / "labels_test.npy")
    truth = np.load(work / "mask_test.npy")
    expected = multiclass_scores(truth, labels, 4)
    rows = json.loads((out / "scores.json").read_text())
    assert [r["class"] for r in rows] == ["1", "2", "3", "mean (foreground)"]
    for row, c in zip(rows, (1, 2, 3)):
        assert row["dice"] == pytest.approx(expected["classes"][c]["dice"], nan_ok=True)
    assert (out / "overlay.png").is_file() and (out / "multiclass.json").is_file()


def test_fingernail_trains_and_evaluates_label_maps(tmp_path, monkeypatch):
    import json

    from fingernail import evaluate, train

    study = tmp_path / "work" / "labels"
    study.mkdir(parents=True)
    for split, n, seed in (("train", 8, 0), ("test", 4, 1)):
        x, y = multiclass_shapes(n, size=32, channels=3, seed=seed)
        np.save(study / f"x_{split}.npy", (x * 255).astype(np.uint8))
        np.save(study / f"y_{split}.npy", y[..., None])
    (study / "split.json").write_text(json.dumps({"rows": 32, "cols": 32}))
    monkeypatch.setattr("common.cli.repo_path", lambda *parts: tmp_path.joinpath(*parts))
    common = ["--work-dir", str(tmp_path / "work"), "--study", "labels", "--epochs", "1"]
    train.main(common + ["--verbose", "0"])
    run = (tmp_path / "weights" / "fingernail" / "unet2d_8_128"
           / "Fingernail_labels_Unet_8x128_DICE_EP1_BS2_32x32_CLASSES4")  # K from the masks, ce_dice for bce_dice
    state = json.loads((run / "state.json").read_text())
    assert state["monitor"] == "val_foreground_dice" and state["settings"]["num_classes"] == 4
    assert state["settings"]["multiclass_loss"] == "ce_dice"
    assert train.run_id("dataset1", "unet2d_8_128", "bce", 220, 2, 160, 192) == \
        "Fingernail_dataset1_Unet_8x128_BCE_EP220_BS2_160x192"  # binary ids unchanged
    assert train.run_id("d", "unet2d_8_128", "bce", 1, 2, 32, 32, num_classes=3, multiclass_loss="dice") == \
        "Fingernail_d_Unet_8x128_BCE_EP1_BS2_32x32_CLASSES3_ML-dice"
    row = evaluate.main(common + ["--quiet"])  # the default run folder, found with K read from the masks
    out = tmp_path / "work" / "results" / run.name
    labels = np.load(out / "labels_test.npy")
    expected = multiclass_scores(np.load(study / "y_test.npy")[..., 0], labels, 4)
    assert row["num_classes"] == 4
    assert row["mean foreground Dice"] == pytest.approx(expected["mean"]["dice"], nan_ok=True)
    rows = json.loads((out / "scores.json").read_text())
    assert [r["class"] for r in rows] == ["1", "2", "3", "mean (foreground)"]
    assert (out / "run.json").is_file() and (out / "overlay.png").is_file()


def test_ultrasound_nerve_trains_on_label_maps_and_writes_palette_pngs(tmp_path, monkeypatch):
    import json

    from ultrasound_nerve import train

    work = tmp_path / "work"
    work.mkdir()
    x, y = multiclass_shapes(10, size=64, seed=0)
    np.save(work / "imgs_train.npy", (x[..., 0] * 255).astype(np.uint8))
    np.save(work / "imgs_mask_train.npy", y)
    np.save(work / "imgs_test.npy", (x[:3, ..., 0] * 255).astype(np.uint8))
    np.save(work / "imgs_id_test.npy", np.array([1, 2, 3], np.int32))
    # nearest-neighbour label resizing never invents a label between two classes (bilinear would)
    small = train.preprocess_labels(y, 32)[..., 0]
    np.testing.assert_array_equal(small, y[:, ::2, ::2])  # cv2's nearest samples the even rows/cols at 1/2
    monkeypatch.setattr("common.cli.repo_path", lambda *parts: tmp_path.joinpath(*parts))
    train.main(["--work-dir", str(work), "--epochs", "1", "--batch-size", "4", "--img-size", "32", "--seed", "0",
                "--verbose", "0"])
    run = tmp_path / "weights" / "ultrasound_nerve" / "nerve_unet_batch4_size32_classes4"
    state = json.loads((run / "state.json").read_text())
    assert state["settings"]["num_classes"] == 4 and state["settings"]["multiclass_loss"] == "dice"
    assert train.run_name() == "nerve_unet"  # binary names unchanged
    pred = np.load(work / "imgs_mask_test.npy")
    assert pred.shape == (3, 32, 32, 4)
    for i in (1, 2, 3):
        with Image.open(work / "preds" / f"{i}_pred.png") as image:
            assert image.mode == "P"
            np.testing.assert_array_equal(np.array(image), pred[i - 1].argmax(-1))


def test_lung_trains_label_map_targets(tmp_path, monkeypatch):
    import json

    from lung import train_lung
    from lung.prepare_data import OUTPUTS

    work = tmp_path / "work"
    work.mkdir()
    x, y = multiclass_shapes(10, size=16, seed=0)
    np.save(work / f"{OUTPUTS['image'][0]}.npy", (x[..., 0] * 255).astype(np.float32))
    np.save(work / f"{OUTPUTS['target'][0]}.npy", y)
    monkeypatch.setattr("common.cli.repo_path", lambda *parts: tmp_path.joinpath(*parts))
    run = train_lung.main(["--work-dir", str(work), "--model", "bcdu_net_d1", "--epochs", "1", "--batch-size", "4",
                           "--verbose", "0", "--multiclass-loss", "dice"])
    assert run.name == "bcdu_net_d1_epochs1_batch4_classes4_dice"
    state = json.loads((run / "state.json").read_text())
    assert state["settings"]["num_classes"] == 4 and state["settings"]["multiclass_loss"] == "dice"
    assert train_lung.run_name("bcdu_net_d3") == "bcdu_net_d3"


def _brute_surface_mm(t, p, spacing):
    """HD95 / ASSD of two non-empty 2-D masks by brute force, the pixel coordinates scaled by ``spacing`` (mm)."""
    def surface(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m)) * np.asarray(spacing, float)

    a, b = surface(t), surface(p)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    ab, ba = d.min(axis=0), d.min(axis=1)
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), np.concatenate([ab, ba]).mean()


def test_lung_evaluates_and_predicts_label_maps(tmp_path, monkeypatch):
    """A K = 3 lung run: evaluate_performance.py scores it per class (Dice / IoU / HD95 in mm against NumPy and
    brute force, from the network's own softmax recomputed here), predict.py writes NIfTI label maps (the argmax
    of the softmax recomputed here from the HU volume); the binary-only options are refused in one line."""
    import json

    import nibabel as nib

    from lung import evaluate_performance, predict, train_lung
    from lung.prepare_data import OUTPUTS

    work, size = tmp_path / "work", 16
    work.mkdir()
    for part, n, seed in ((0, 8, 0), (1, 4, 1)):
        x, y = multiclass_shapes(n, size=size, seed=seed)
        np.save(work / f"{OUTPUTS['image'][part]}.npy", (x[..., 0] * 255).astype(np.float32))
        np.save(work / f"{OUTPUTS['target'][part]}.npy", np.where(y == 3, 0, y).astype(np.uint8))  # K = 3
    spacing = {"v0": [2.5, 0.5, 0.8], "v1": [2.0, 0.7, 0.7]}
    (work / "split.json").write_text(json.dumps({"spacing": spacing, "test_slices": ["v0:0", "v0:1", "v1:0",
                                                                                        "v1:1"]}))
    monkeypatch.setattr("common.cli.repo_path", lambda *parts: tmp_path.joinpath(*parts))
    run = train_lung.main(["--work-dir", str(work), "--model", "bcdu_net_d1", "--epochs", "1", "--batch-size", "4",
                           "--seed", "0", "--verbose", "0"])
    assert run.name == "bcdu_net_d1_epochs1_batch4_seed0_classes3"
    out = tmp_path / "eval"
    scores = evaluate_performance.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out),
                                        "--quiet"])
    import keras

    import common.layers  # noqa: F401

    model = keras.models.load_model(run / "best.keras", compile=False)
    test_x = np.load(work / "data_test.npy")
    truth = np.load(work / "Test_maska.npy")
    softmax = model.predict(test_x[..., None] / 255.0, verbose=0)
    pred = np.load(out / "pred_test.npy")
    assert pred.shape == (4, size, size, 3)
    np.testing.assert_allclose(pred, softmax, atol=1e-5)
    labels = softmax.argmax(-1)
    np.testing.assert_array_equal(np.load(out / "labels_test.npy"), labels)
    rows = [{k: np.nan if v is None else v for k, v in r.items()}  # JSON null = NaN
            for r in json.loads((out / "scores.json").read_text())]
    assert [r["class"] for r in rows] == ["1", "2", "mean (foreground)"]
    mm = [spacing["v0"][1:]] * 2 + [spacing["v1"][1:]] * 2
    finite = 0
    for row, c in zip(rows, (1, 2)):
        g, q = truth == c, labels == c
        tp, fp, fn = np.sum(g & q), np.sum(~g & q), np.sum(g & ~q)
        assert row["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan, nan_ok=True)
        assert row["iou"] == pytest.approx(tp / (tp + fp + fn) if tp + fp + fn else np.nan, nan_ok=True)
        assert scores["classes"][c]["dice"] == pytest.approx(row["dice"], nan_ok=True)
        pairs = [_brute_surface_mm(g[i], q[i], mm[i]) for i in range(4) if g[i].any() and q[i].any()]
        finite += len(pairs)
        assert row["hd95"] == pytest.approx(np.mean([h for h, _ in pairs]) if pairs else np.nan, nan_ok=True)
        assert row["assd"] == pytest.approx(np.mean([a for _, a in pairs]) if pairs else np.nan, nan_ok=True)
    assert finite > 0  # the surface distances were compared on at least one slice
    assert (out / "overlay.png").is_file() and (out / "run.json").is_file()
    assert not (out / "performances.md").exists()  # no FOV rows for a K-class run

    # the default run folder of a K-class run names its classes (K read from the training targets)
    default = tmp_path / "weights" / "lung" / "bcdu_net_d1_classes3" / "best.keras"
    assert _error_line(evaluate_performance.main, ["--work-dir", str(work), "--model", "bcdu_net_d1"]) == \
        f"error: {default}: not found; train a network with lung/train_lung.py first (or give --run-dir / --model " \
        f"FILE.keras)"
    assert _error_line(evaluate_performance.main, ["--work-dir", str(work), "--run-dir", str(run), "--fov", "body",
                                                   "--out-dir", str(tmp_path / "e2"), "--quiet"]).startswith(
        "error: --fov: turns the binary around-lung prediction into a lung; bcdu_net_d1 has 3 classes")
    binary = tmp_path / "binary"
    binary.mkdir()
    train_lung.build("bcdu_net_d1", size).save(binary / "best.keras")
    assert _error_line(evaluate_performance.main, ["--work-dir", str(work), "--run-dir", str(binary), "--out-dir",
                                                   str(tmp_path / "e3"), "--quiet"]) == \
        (f"error: {work / 'Test_maska.npy'}: holds label maps 0..2; {binary / 'best.keras'} is a binary around-lung "
         f"network: evaluate a run trained with train_lung.py --num-classes K on these targets")
    assert not (tmp_path / "e2").exists() and not (tmp_path / "e3").exists()

    # predict.py: a NIfTI volume in HU -> a NIfTI label map (the argmax), the softmax as a 4-D NIfTI
    rng = np.random.default_rng(5)
    hu = rng.integers(-1000, 600, (3, size, size)).astype(np.int16)
    volume = tmp_path / "ct" / "IMG_0007.nii.gz"
    volume.parent.mkdir()
    nib.save(nib.Nifti1Image(hu, np.diag([0.7, 0.7, 2.5, 1.0])), volume)
    v = hu.astype(np.float64)
    low, high = np.clip([v.min(), v.max()], -512, 512)
    scaled = (np.clip(v, -512, 512) - low) / (high - low) * 255.0
    expected = model.predict((scaled / 255.0)[..., None].astype(np.float32), verbose=0)
    masks = tmp_path / "masks"
    assert predict.main([str(volume), "--model", str(run / "best.keras"), "--out-dir", str(masks),
                         "--save-probabilities", "--overlay", "--quiet"]) == 0
    written = nib.load(masks / "MASK_0007.nii.gz")
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected.argmax(-1))
    np.testing.assert_allclose(written.affine, np.diag([0.7, 0.7, 2.5, 1.0]))
    prob = np.asarray(nib.load(masks / "PROB_0007.nii.gz").dataobj)
    assert prob.shape == (3, size, size, 3)
    np.testing.assert_allclose(prob, expected, atol=1e-5)
    assert (masks / "MASK_0007_overlay.png").is_file()
    assert _error_line(predict.main, [str(volume), "--model", str(run / "best.keras"), "--out-dir",
                                      str(tmp_path / "m2"), "--keep-largest", "2", "--quiet"]) == \
        "error: --keep-largest: applies to the binary lung mask; bcdu_net_d1 has 3 classes and writes label maps 0..2"
    assert not (tmp_path / "m2").exists()
