"""The skin lesion task (specs/bcdu_net.md §3.1, §5, §6): synthetic ISIC layout, prepare, metrics, scripts end to end.

The BCDU-Net family itself (parameter and layer counts, ConvLSTM fusion, bidirectional option, .keras round
trip) is tested in test_bcdu_net.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.cli import REPO_ROOT
from common.data.io import DataLayoutError, ImageReadError, write_image
from common.data.synthetic import ISIC_IMAGE_DIR, ISIC_MASK_DIR, write_isic_dataset
from skin_lesion import evaluate, prepare_isic2018, train_isic18
from _cli import error_line as _error_line

SMALL = ((45, 60), (77, 102))  # the real 450x600 .. 768x1024 range, scaled down ten times
SIZE = 32


def _dataset(tmp_path, n=7, **kw):
    return write_isic_dataset(tmp_path / "raw", n, sizes=SMALL, seed=kw.pop("seed", 0), **kw)


def _original_dataset_normalized(imgs):
    """The original's dataset_normalized, verbatim in NumPy (global z-score, then per-image min-max x255)."""
    imgs = np.asarray(imgs, dtype=np.float64)
    normalized = (imgs - np.mean(imgs)) / np.std(imgs)
    for i in range(imgs.shape[0]):
        normalized[i] = (normalized[i] - normalized[i].min()) / (normalized[i].max() - normalized[i].min()) * 255
    return normalized


def test_synthetic_isic_names_sizes_and_values(tmp_path):
    written = write_isic_dataset(tmp_path, 3, seed=1, orphan_images=1, orphan_masks=1)
    assert len(written["pairs"]) == 3 and len(written["orphan_images"]) == 1 and len(written["orphan_masks"]) == 1
    images = sorted((tmp_path / ISIC_IMAGE_DIR).iterdir())
    masks = sorted((tmp_path / ISIC_MASK_DIR).iterdir())
    assert [p.name for p in images] == [f"{i}.jpg" for i in written["pairs"] + written["orphan_images"]]
    assert [p.name for p in masks] == [f"{i}_segmentation.png" for i in written["pairs"] + written["orphan_masks"]]
    for name in written["pairs"]:
        assert len(name) == 12 and name.startswith("ISIC_") and name[5:].isdigit()
        image, mask = Image.open(tmp_path / ISIC_IMAGE_DIR / f"{name}.jpg"), \
            Image.open(tmp_path / ISIC_MASK_DIR / f"{name}_segmentation.png")
        assert image.format == "JPEG" and image.mode == "RGB" and mask.format == "PNG" and mask.mode == "L"
        assert image.size == mask.size and 590 <= image.size[0] <= 1024 and 430 <= image.size[1] <= 800
        m, x = np.asarray(mask), np.asarray(image).astype(float)
        assert set(np.unique(m)) == {0, 255} and 0.02 < (m > 0).mean() < 0.5
        assert x[m > 0].mean() < 0.8 * x[m == 0].mean()  # the lesion is darker than the skin around it


def test_prepare_resizes_splits_in_sorted_order_and_streams_uint8(tmp_path):
    written = _dataset(tmp_path)
    work = tmp_path / "work"
    summary = prepare_isic2018.prepare(tmp_path / "raw", work, SIZE, (("train", 4), ("val", 1), ("test", 2)),
                                       verbose=False)
    ids = sorted(written["pairs"])
    assert summary["splits"] == {"train": ids[:4], "val": ids[4:5], "test": ids[5:]}
    assert json.loads((work / "split.json").read_text()) == summary
    for split, n in (("train", 4), ("val", 1), ("test", 2)):
        images, masks = prepare_isic2018.load_split(work, split)
        assert images.shape == (n, SIZE, SIZE, 3) and masks.shape == (n, SIZE, SIZE)
        assert images.dtype == masks.dtype == np.uint8
    images, masks = prepare_isic2018.load_split(work, "test", mmap=False)
    raw = tmp_path / "raw"
    for i, name in enumerate(ids[5:]):  # the original's scipy.misc.imresize(bilinear) == Pillow BILINEAR
        image = Image.open(raw / ISIC_IMAGE_DIR / f"{name}.jpg").resize((SIZE, SIZE), Image.BILINEAR)
        mask = Image.open(raw / ISIC_MASK_DIR / f"{name}_segmentation.png").resize((SIZE, SIZE), Image.BILINEAR)
        np.testing.assert_array_equal(images[i], np.asarray(image))
        np.testing.assert_array_equal(masks[i], np.asarray(mask))
    assert ((masks > 0) & (masks < 255)).any()  # lesion borders keep intermediate values (not re-binarised)
    assert sorted(p.name for p in work.iterdir()) == sorted(
        [f"{k}_{s}.npy" for k in ("data", "mask") for s in ("train", "val", "test")] + ["split.json"])


def test_prepare_reads_the_stored_grid_as_scipy_misc_imread_and_warns_about_orientation_tags(tmp_path):
    """The original's scipy.misc.imread (PIL.Image.open) ignores EXIF orientation: a phone photo tagged "rotate
    90 degrees" is prepared as stored, so it still matches its untagged mask, and one warning names it."""
    written = _dataset(tmp_path, n=3)
    name = sorted(written["pairs"])[0]
    path = tmp_path / "raw" / ISIC_IMAGE_DIR / f"{name}.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(path).convert("RGB").save(path, exif=exif, quality=95)
    work = tmp_path / "work"
    with pytest.warns(UserWarning, match=rf"1 of the training files carry an EXIF orientation tag: .*{name}\.jpg "
                                         r"\(tag 6\).*as stored.*scipy\.misc\.imread"):
        prepare_isic2018.prepare(tmp_path / "raw", work, SIZE, (("train", 1), ("val", 1), ("test", 1)),
                                 verbose=False)
    images, _ = prepare_isic2018.load_split(work, "train", mmap=False)
    np.testing.assert_array_equal(images[0], np.asarray(Image.open(path).resize((SIZE, SIZE), Image.BILINEAR)))


def test_prepare_default_split_is_the_originals():
    assert prepare_isic2018.SPLITS == (("train", 1815), ("val", 259), ("test", 520))
    assert prepare_isic2018.split_sizes(2594, prepare_isic2018.SPLITS) == [
        ("train", 0, 1815), ("val", 1815, 2074), ("test", 2074, 2594)]


def test_prepare_names_unmatched_files_and_bad_counts(tmp_path):
    written = _dataset(tmp_path, 4, orphan_images=1, orphan_masks=1)
    work = tmp_path / "work"
    splits = (("train", 2), ("val", 1), ("test", 1))
    lonely_image, lonely_mask = written["orphan_images"][0], written["orphan_masks"][0]
    with pytest.raises(DataLayoutError, match=rf"no mask for .*{lonely_image}\.jpg; "
                                              rf"no image for .*{lonely_mask}_segmentation\.png"):
        prepare_isic2018.prepare(tmp_path / "raw", work, SIZE, splits, verbose=False)
    (tmp_path / "raw" / ISIC_IMAGE_DIR / f"{lonely_image}.jpg").unlink()
    (tmp_path / "raw" / ISIC_MASK_DIR / f"{lonely_mask}_segmentation.png").unlink()
    with pytest.raises(DataLayoutError, match=r"found 4 image/mask pairs but the split asks for "
                                              r"2 train \+ 1 val \+ 2 test = 5"):
        prepare_isic2018.prepare(tmp_path / "raw", work, SIZE, (("train", 2), ("val", 1), ("test", 2)), False)
    first = sorted(written["pairs"])[0]
    mask_path = tmp_path / "raw" / ISIC_MASK_DIR / f"{first}_segmentation.png"
    write_image(mask_path, np.zeros((10, 12), np.uint8))
    with pytest.raises(DataLayoutError, match=rf"{first}_segmentation\.png: mask is 12x10 \(WxH\) but its image"):
        prepare_isic2018.prepare(tmp_path / "raw", work, SIZE, splits, verbose=False)
    width, height = Image.open(tmp_path / "raw" / ISIC_IMAGE_DIR / f"{first}.jpg").size
    write_image(mask_path, np.zeros((height, width), np.uint8))
    last = sorted(written["pairs"])[-1]
    (tmp_path / "raw" / ISIC_IMAGE_DIR / f"{last}.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ImageReadError, match=rf"{last}\.jpg: cannot decode"):
        prepare_isic2018.prepare(tmp_path / "raw", work, SIZE, splits, verbose=False)
    assert not work.exists() or not list(work.iterdir())  # nothing half-written, not even the first arrays


def test_npy_stream_matches_np_save_and_refuses_incomplete_arrays(tmp_path):
    items = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = tmp_path / "a.npy"
    with prepare_isic2018.npy_streams({path: (items.shape, np.uint8)}) as streams:
        for item in items:
            streams[path].append(item)
    np.testing.assert_array_equal(np.load(path), items)
    assert path.read_bytes() == _np_save_bytes(tmp_path / "ref.npy", items)
    with pytest.raises(ValueError, match="2 of 3 items written"):
        with prepare_isic2018.npy_streams({tmp_path / "b.npy": (items.shape, np.uint8)}) as streams:
            for item in items[:2]:
                streams[tmp_path / "b.npy"].append(item)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "ref.npy"]


def _np_save_bytes(path, array):
    np.save(path, array)
    return path.read_bytes()


def test_training_input_is_the_originals_normalisation():
    rng = np.random.default_rng(0)
    images = rng.integers(20, 230, (3, 8, 8, 3)).astype(np.uint8)
    masks = rng.integers(0, 256, (3, 8, 8, 1)).astype(np.uint8)
    x, y = train_isic18.normalise_batch(images.astype(np.float32), masks.astype(np.float32))
    assert x.dtype == np.float32 and x.max() == pytest.approx(255) and x.min() == 0  # not divided by 255
    np.testing.assert_allclose(x, _original_dataset_normalized(images), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(y, masks / 255.0, rtol=1e-6)  # soft targets


def test_original_definition_metrics_reproduce_their_quirks():
    masks = np.array([0, 1, 127, 128, 255, 0], np.uint8)  # resized mask values (0..255)
    prob = np.array([0.2, 0.6, 0.7, 0.4, 0.9, 0.5], np.float32)
    s = evaluate.isic_scores(masks, prob)
    # original: truth = mask > 0.5 -> [0 1 1 1 1 0]; prediction = prob > 0.5 -> [0 1 1 0 1 0]
    # TP 3, FN 1, FP 0, TN 2
    old = s["original"]
    assert old["F1"] == pytest.approx(6 / 7) and old["SE"] == pytest.approx(3 / 4) and old["SP"] == 1
    assert old["ACC"] == pytest.approx(5 / 6) and old["PC"] == 1
    assert old["JS"] == old["ACC"] != pytest.approx(3 / 4)  # "Jaccard" is pixel accuracy, not IoU 3/4
    assert old["AUC"] == pytest.approx((3 / 4 + 1) / 2)  # ROC-AUC of the binarised scores = (SE + SP) / 2
    # correct: truth = mask >= 128 -> [0 0 0 1 1 0]; prediction = prob >= 0.5 -> [0 1 1 0 1 1]
    # TP 1, FN 1, FP 3, TN 1
    new = s["correct"]
    assert new["F1"] == pytest.approx(1 / 3) and new["SE"] == pytest.approx(1 / 2)
    assert new["SP"] == pytest.approx(1 / 4) and new["ACC"] == pytest.approx(1 / 3)
    assert new["PC"] == pytest.approx(1 / 4) and new["JS"] == pytest.approx(1 / 5)  # IoU
    assert new["AUC"] == pytest.approx(5 / 8)  # continuous scores: 5 of the 8 (pos, neg) pairs ordered right


def test_surface_columns_use_each_rows_definitions():
    masks = np.zeros((3, 24, 24), np.uint8)
    masks[:, 6:18, 6:18] = 255
    masks[:, 5, 6:18] = 100  # a soft border row: lesion for the original (> 0.5), background when rounded
    prob = np.zeros((3, 24, 24, 1), np.float32)
    prob[:2, 6:18, 6:18] = 0.9  # images 0 and 1: exactly the rounded ground truth
    # image 2: predicted empty -> one empty mask, left out of the means and counted
    s = evaluate.surface_columns(masks, prob)
    assert s["correct"]["HD95 px"] == 0 and s["correct"]["ASSD px"] == 0
    assert s["correct"]["both_non_empty"] == 2 and s["correct"]["one_empty"] == 1
    # original definitions: the soft row belongs to the truth, one pixel outside the prediction everywhere
    assert s["original"]["HD95 px"] == pytest.approx(1.0)
    assert 0 < s["original"]["ASSD px"] < 1  # only the top edge of the surface is off, by one pixel


def test_sample_pick_is_the_originals():
    masks = np.zeros((5, 20, 20), np.uint8)
    prob = np.zeros((5, 20, 20, 1), np.float32)
    prob[1, :15, :20] = 0.9  # 300 wrong pixels: not < 300
    prob[3, :5, :20] = 0.9  # 100 wrong pixels
    assert evaluate.good_predictions(masks, prob, n=4) == [0, 2, 3, 4]
    assert evaluate.good_predictions(masks, prob, max_errors=50, n=4) == [0, 2, 4, 0]  # padded with image 0


def test_end_to_end_prepare_train_evaluate(tmp_path, monkeypatch):
    _dataset(tmp_path, 9, seed=3)
    work, run, out = tmp_path / "work", tmp_path / "run", tmp_path / "out"
    assert prepare_isic2018.main(["--data-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--size",
                                  str(SIZE), "--n-train", "6", "--n-val", "1", "--n-test", "2", "--quiet"]) == 0
    checks = []

    def collapsed_first_time(model, images):  # --restarts rebuilds the first network, then training resumes
        checks.append(model)
        return len(checks) == 1

    monkeypatch.setattr(train_isic18, "head_collapsed", collapsed_first_time)
    train_isic18.main(["--work-dir", str(work), "--run-dir", str(run), "--epochs", "3", "--seed", "0",
                       "--restarts", "2", "--verbose", "0"])
    assert len(checks) == 2 and checks[0] is not checks[1]
    state = json.loads((run / "state.json").read_text())
    assert state["monitor"] == "val_loss" and state["mode"] == "min" and state["epoch"] == 3
    assert state["settings"]["attempt_seed"] == 1000  # the second attempt's seed
    assert state["settings"]["model"] == "bcdu_net_d3" and state["settings"]["batch_size"] == 8
    assert state["settings"]["lr"] == 1e-4
    history = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    loss = [float(row[history[0].index("loss")]) for row in history[1:]]
    assert len(loss) == 3 and loss[-1] < loss[0]
    assert evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out), "--quiet"]) == 0
    rows = json.loads((out / "scores.json").read_text())
    assert [r["F1"] for r in rows][0] == 0.847 and len(rows) == 3
    prob = np.load(out / "pred_test.npy")
    assert prob.shape == (2, SIZE, SIZE, 1) and prob.dtype == np.float32
    _, masks = prepare_isic2018.load_split(work, "test")
    truth, pred = masks.reshape(-1) >= 128, prob.reshape(-1) >= 0.5  # the correct row, counted by hand
    tp, fp, fn = (truth & pred).sum(), (~truth & pred).sum(), (truth & ~pred).sum()
    assert rows[2]["F1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"), nan_ok=True)
    for name in ("scores.md", "paper.md", "paper.json", "roc_pr.png", "overlay.png", "sample_results.png",
                 "surface.json"):
        assert (out / name).is_file()
    assert list(rows[1])[:9] == ["scores"] + list(evaluate.COLUMNS) and list(rows[1])[9:] == ["HD95 px", "ASSD px"]
    record = json.loads((out / "run.json").read_text())
    assert record["model"] == "bcdu_net_d3" and record["weights"][0]["path"] == str((run / "best.keras").resolve())
    assert record["options"]["tta"] == "none" and record["options"]["raw_input"] is False
    # nothing is replaced without --overwrite: the run, the results and the prepared dataset
    before = {p.name: p.stat().st_mtime_ns for p in list(run.iterdir()) + list(out.iterdir()) + list(work.iterdir())}
    assert "holds a run of 3 epochs (best val_loss" in _error_line(train_isic18.main, [
        "--work-dir", str(work), "--run-dir", str(run), "--epochs", "3"])
    assert _error_line(evaluate.main, ["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out)]) == (
        f"error: {out}: already exists; pass --overwrite to replace it, or choose another folder")
    assert "a prepared dataset is already there; pass --overwrite" in _error_line(prepare_isic2018.main, [
        "--data-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--size", str(SIZE)])
    after = {p.name: p.stat().st_mtime_ns for p in list(run.iterdir()) + list(out.iterdir()) + list(work.iterdir())}
    assert after == before


def _tiny_arrays(work, n=4, size=16, masks=None):
    """Prepared-looking uint8 arrays (np.save, not the code under test) for every split."""
    rng = np.random.default_rng(0)
    work.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        np.save(work / f"data_{split}.npy", rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8))
        np.save(work / f"mask_{split}.npy", (rng.random((n if masks is None else masks, size, size)) > 0.7)
                .astype(np.uint8) * 255)


def test_each_script_reports_bad_options_and_bad_files_in_one_line(tmp_path):
    # prepare: a bad option, then a corrupt photo
    assert _error_line(prepare_isic2018.main, ["--size", "12"]) == (
        "error: --size: must be a positive multiple of 8 (the networks pool three times), got 12")
    written = _dataset(tmp_path, 3)
    bad = tmp_path / "raw" / ISIC_IMAGE_DIR / f"{sorted(written['pairs'])[1]}.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    line = _error_line(prepare_isic2018.main, ["--data-dir", str(tmp_path / "raw"), "--work-dir",
                                               str(tmp_path / "w"), "--n-train", "1", "--n-val", "1", "--n-test", "1",
                                               "--size", "16", "--quiet"])
    assert line.startswith(f"error: {bad}: cannot decode image")
    assert not (tmp_path / "w").exists() or not list((tmp_path / "w").iterdir())  # nothing, not even hidden files
    # train: incompatible options, mismatched arrays, a wrong --encoder-weights file
    assert _error_line(train_isic18.main, ["--model", "bcdu_unet", "--bidirectional"]) == (
        "error: --bidirectional: needs a model with ConvLSTM fusions (not bcdu_unet)")
    assert _error_line(train_isic18.main, ["--encoder-weights", "none"]) == (
        "error: --encoder-weights: only sedu_net_d3 has a VGG16 encoder, not bcdu_net_d3")
    assert _error_line(train_isic18.main, ["--resume", "--overwrite", "--run-dir", str(tmp_path / "r")]) == (
        "error: --resume/--overwrite: choose one (continue the run, or replace it)")
    work = tmp_path / "work"
    _tiny_arrays(work, masks=3)
    line = _error_line(train_isic18.main, ["--work-dir", str(work), "--run-dir", str(tmp_path / "run")])
    assert line == (f"error: {work}: data_train.npy (4, 16, 16, 3) and mask_train.npy (3, 16, 16) do not match")
    _tiny_arrays(work)
    not_weights = tmp_path / "vgg16.h5"
    not_weights.write_bytes(b"this is not an HDF5 file")
    line = _error_line(train_isic18.main, ["--work-dir", str(work), "--run-dir", str(tmp_path / "run"), "--model",
                                           "sedu_net_d3", "--encoder-weights", str(not_weights)])
    assert line.startswith(f"error: {not_weights}: not a Keras VGG16 notop weights file") and line.endswith(
        "pass --encoder-weights imagenet, none or the path of Keras's VGG16 notop weights file")
    assert not (tmp_path / "run" / "state.json").exists()
    # evaluate: a bad option, a missing checkpoint, a checkpoint that is not a model
    assert _error_line(evaluate.main, ["--batch-size", "0"]) == "error: --batch-size: must be positive, got 0"
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    line = _error_line(evaluate.main, ["--work-dir", str(work), "--run-dir", str(run)])
    assert line == f"error: {run / 'best.keras'}: not found; run skin_lesion/train_isic18.py first"
    (run / "best.keras").write_bytes(b"garbage")
    line = _error_line(evaluate.main, ["--work-dir", str(work), "--run-dir", str(run), "--out-dir",
                                       str(tmp_path / "out")])
    assert line.startswith(f"error: {run / 'best.keras'}: cannot load the model")
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.parametrize("script", ["prepare_isic2018.py", "train_isic18.py", "evaluate.py", "predict.py", "demo.py"])
def test_help_works_from_any_directory(tmp_path, script):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "skin_lesion" / script), "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "usage:" in result.stdout


def test_script_reports_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "skin_lesion" / "prepare_isic2018.py"),
                             "--data-dir", str(tmp_path), "--work-dir", str(tmp_path / "w")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / ISIC_IMAGE_DIR}: folder not found"


def test_prior_output_bias_is_the_logit_of_the_mean_mask():
    import keras

    from common.training import foreground_fraction, set_output_prior

    masks = np.zeros((5, 4, 4), np.uint8)
    masks[:, :2, :] = 255  # half foreground ...
    masks[0, 2, 0] = 51  # ... plus one soft border pixel (0.2)
    fraction = foreground_fraction(masks, scale=255.0, chunk=2)
    assert fraction == pytest.approx((5 * 8 + 0.2) / 80)
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid", name="head_output")(inputs))
    kernel = model.get_layer("head_output").get_weights()[0]
    set_output_prior(model, 0.2)
    new_kernel, bias = model.get_layer("head_output").get_weights()
    np.testing.assert_array_equal(new_kernel, kernel)
    assert bias[0] == pytest.approx(np.log(0.2 / 0.8))
    assert float(model(np.zeros((1, 4, 4, 2), np.float32))[0, 0, 0, 0]) == pytest.approx(0.2, abs=1e-6)


def test_head_collapsed_when_no_output_raising_channel_is_active():
    import keras

    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="head_conv")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid", name="head_output")(x))
    images = np.random.default_rng(0).random((2, 6, 6, 3), dtype=np.float32)
    head, output = model.get_layer("head_conv"), model.get_layer("head_output")
    kernel = np.full((3, 3, 3, 2), 0.1, np.float32)
    output.set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 2, 1), np.zeros(1, np.float32)])
    head.set_weights([kernel, np.zeros(2, np.float32)])  # both channels active
    assert not train_isic18.head_collapsed(model, images)
    head.set_weights([kernel, np.array([0.0, -10.0], np.float32)])  # the lowering channel died: still fine
    assert not train_isic18.head_collapsed(model, images)
    head.set_weights([kernel, np.array([-10.0, 0.0], np.float32)])  # only the lowering channel is left
    assert train_isic18.head_collapsed(model, images)
    assert np.max(model.predict(images, verbose=0)) <= 0.5  # it cannot predict foreground any more
    head.set_weights([kernel, np.array([-10.0, -10.0], np.float32)])  # both dead: a constant output
    assert train_isic18.head_collapsed(model, images) and np.ptp(model.predict(images, verbose=0)) == 0


# The original's settings, written from specs/bcdu_net.md (§3.1, §5.1, §5.2, §1.1), NOT read from the code:
# a silent change of a default fails here.
ORIGINAL_TRAIN = {"model": "bcdu_net_d3", "epochs": 100, "batch_size": 8, "lr": 1e-4, "bidirectional": False,
                  "encoder_weights": "imagenet", "seed": None, "prior_output_bias": False, "restarts": 0,
                  "resume": False, "overwrite": False, "mixed_precision": "off", "jit_compile": False,
                  "strategy": "default", "run_dir": None}
ORIGINAL_PREPARE = {"size": 256, "n_train": 1815, "n_val": 259, "n_test": 520, "overwrite": False}
# raw_input False is deviation 2 of the README (the original predicted on the raw images): pinned as documented
ORIGINAL_EVALUATE = {"weights": "best", "batch_size": 8, "raw_input": False, "tta": "none", "model": "bcdu_net_d3",
                     "bidirectional": False, "mixed_precision": "off", "overwrite": False}


def test_script_defaults_are_the_originals():
    from skin_lesion import predict

    def defaults(parser, argv=()):
        return vars(parser.parse_args(list(argv)))

    train = defaults(train_isic18.build_parser())
    assert {k: train[k] for k in ORIGINAL_TRAIN} == ORIGINAL_TRAIN
    prepare = defaults(prepare_isic2018.build_parser())
    assert {k: prepare[k] for k in ORIGINAL_PREPARE} == ORIGINAL_PREPARE
    ev = defaults(evaluate.build_parser())
    assert {k: ev[k] for k in ORIGINAL_EVALUATE} == ORIGINAL_EVALUATE
    pr = defaults(predict.build_parser(), ["x.jpg", "--out-dir", "o"])
    assert (pr["weights"], pr["tta"], pr["raw_input"], pr["mixed_precision"]) == ("best", "none", False, "off")
    assert predict.THRESHOLD == 0.5 and evaluate.GOOD_PREDICTION_ERRORS == 300
    # ReduceLROnPlateau(val_loss, factor 0.1, patience 7, epsilon(min_delta) 1e-4), Adam(1e-4, 0.9, 0.999, 1e-7)
    assert {k: train_isic18.REDUCE_LR[k] for k in ("factor", "patience", "min_delta")} == {
        "factor": 0.1, "patience": 7, "min_delta": 1e-4}
    model = train_isic18.build("bcdu_unet", (16, 16, 3))
    opt = model.optimizer
    assert type(opt).__name__ == "Adam" and float(opt.learning_rate) == pytest.approx(1e-4)
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.9, 0.999, 1e-7) and model.loss == "binary_crossentropy"


def test_default_run_folders_keep_every_variant_apart(tmp_path, monkeypatch):
    from common import cli

    base = train_isic18.run_name("bcdu_net_d3")
    variants = [train_isic18.run_name("bcdu_net_d3", True),
                train_isic18.run_name("bcdu_net_d3", prior_output_bias=True),
                train_isic18.run_name("bcdu_net_d3", restarts=3), train_isic18.run_name("bcdu_net_d3", lr=1e-3),
                train_isic18.run_name("bcdu_net_d3", batch_size=16),
                train_isic18.run_name("bcdu_net_d3", mixed_precision="bfloat16"),
                train_isic18.run_name("sedu_net_d3", encoder_weights="none"), train_isic18.run_name("sedu_net_d3")]
    assert base == "bcdu_net_d3" and len(set(variants + [base])) == len(variants) + 1
    # two variants trained with their default folders: both runs are there afterwards
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    work = tmp_path / "work"
    _tiny_arrays(work)
    common = ["--work-dir", str(work), "--model", "bcdu_unet", "--epochs", "1", "--batch-size", "4", "--seed", "0",
              "--verbose", "0"]
    train_isic18.main(common)
    train_isic18.main(common + ["--prior-output-bias"])
    first = tmp_path / "weights" / "skin_lesion" / "bcdu_unet_batch4"
    second = tmp_path / "weights" / "skin_lesion" / "bcdu_unet_prior-bias_batch4"
    for run, prior in ((first, False), (second, True)):
        state = json.loads((run / "state.json").read_text())
        assert state["epoch"] == 1 and state["settings"]["prior_output_bias"] is prior
        assert (run / "best.keras").is_file()


def _save_tiny_model(path, size=16):
    """A saved, untrained, NOT flip-invariant network (a random bcdu_unet) for the predict tests."""
    import keras

    from common.models import build_model

    keras.utils.set_random_seed(3)
    model = build_model("bcdu_unet", (size, size, 3))
    model.save(path)
    return model


def _reference_prob(model, image, size):
    """The ISIC pipeline from independent pieces: Pillow bilinear resize, the original's dataset_normalized
    (verbatim NumPy above), the network, Pillow bilinear back to the photo's size."""
    small = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    x = _original_dataset_normalized(small[None]).astype(np.float32)
    prob = np.asarray(model(x))[0, :, :, 0]
    return np.asarray(Image.fromarray(prob.astype(np.float32)).resize(image.shape[1::-1], Image.BILINEAR))


def test_predict_writes_isic_masks_at_each_photos_size(tmp_path):
    from skin_lesion import predict

    model_file = tmp_path / "model.keras"
    model = _save_tiny_model(model_file)
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    sizes = {"ISIC_0000001.jpg": (45, 60), "ISIC_0000002.png": (33, 70), "other.jpeg": (16, 16)}
    for name, (h, w) in sizes.items():
        write_image(photos / name, rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
    (photos / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "masks"
    assert predict.main([str(photos), "--model", str(model_file), "--out-dir", str(out), "--overlay",
                         "--save-probabilities", "--quiet"]) == 0
    expected = sorted([f"{Path(n).stem}_{kind}.png" for n in sizes for kind in ("segmentation", "prob", "overlay")]
                      + ["run.json"])
    assert sorted(p.name for p in out.iterdir()) == expected
    for name, (h, w) in sizes.items():
        stem = Path(name).stem
        mask = Image.open(out / f"{stem}_segmentation.png")
        assert mask.format == "PNG" and mask.mode == "L" and mask.size == (w, h)
        mask = np.asarray(mask)
        assert set(np.unique(mask)) <= {0, 255}
        ref = _reference_prob(model, np.asarray(Image.open(photos / name).convert("RGB")), 16)
        decided = np.abs(ref - 0.5) > 1e-4  # pixels not within float rounding of the threshold
        np.testing.assert_array_equal((mask > 0)[decided], (ref > 0.5)[decided])
        prob = np.asarray(Image.open(out / f"{stem}_prob.png"))
        assert prob.shape == (h, w) and np.abs(prob.astype(float) - ref * 255).max() <= 1
        assert np.asarray(Image.open(out / f"{stem}_overlay.png")).shape == (h, 2 * w, 3)
    record = json.loads((out / "run.json").read_text())
    assert record["model"] == model.name and len(record["inputs"]) == 3
    # existing outputs are never replaced without --overwrite
    assert "already exists" in _error_line(predict.main, [str(photos), "--model", str(model_file), "--out-dir",
                                                          str(out), "--quiet"])


def test_predict_segments_a_tagged_phone_photo_as_stored_like_prepare(tmp_path):
    """A photo with an EXIF "rotate 90 degrees" tag is segmented on its stored pixel grid, as prepare reads the
    training photos (scipy.misc.imread): the mask has the stored grid's size and matches its pixels."""
    from skin_lesion import predict

    model_file = tmp_path / "model.keras"
    model = _save_tiny_model(model_file)
    photo = np.random.default_rng(1).integers(0, 256, (30, 50, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "photos").mkdir()
    Image.fromarray(photo).save(tmp_path / "photos" / "phone.png", exif=exif)  # lossless, tagged
    out = tmp_path / "masks"
    assert predict.main([str(tmp_path / "photos"), "--model", str(model_file), "--out-dir", str(out),
                         "--quiet"]) == 0
    mask = np.asarray(Image.open(out / "phone_segmentation.png"))
    assert mask.shape == (30, 50)  # the stored grid, not the 50x30 a viewer shows
    ref = _reference_prob(model, photo, 16)
    decided = np.abs(ref - 0.5) > 1e-4
    np.testing.assert_array_equal((mask > 0)[decided], (ref > 0.5)[decided])


def test_predict_flip_tta_is_the_mean_over_flipped_photos(tmp_path):
    from skin_lesion import predict

    model_file = tmp_path / "model.keras"
    model = _save_tiny_model(model_file)
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    _, plain = predict.segment(model, image)
    _, flipped = predict.segment(model, image, tta="flip")
    x = _original_dataset_normalized(image[None]).astype(np.float32)
    ref = (np.asarray(model(x)) + np.asarray(model(x[:, :, ::-1]))[:, :, ::-1]
           + np.asarray(model(x[:, ::-1]))[:, ::-1]) / 3
    np.testing.assert_allclose(flipped, ref[0, :, :, 0], atol=1e-5)
    assert np.abs(plain - flipped).max() > 1e-4  # the network is not flip-invariant: the test can fail


def test_predict_refuses_an_empty_folder_and_a_corrupt_photo(tmp_path):
    from skin_lesion import predict

    model_file = tmp_path / "model.keras"
    _save_tiny_model(model_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert _error_line(predict.main, [str(empty), "--model", str(model_file), "--out-dir", str(out)]) == (
        f"error: {empty}: no input files (.jpg, .jpeg, .png) in this folder")
    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", np.full((20, 30, 3), 90, np.uint8))
    (photos / "b.jpg").write_bytes(b"\xff\xd8 truncated")
    line = _error_line(predict.main, [str(photos), "--model", str(model_file), "--out-dir", str(out), "--quiet"])
    assert line.startswith(f"error: {photos / 'b.jpg'}: cannot decode image")
    assert not (out / "b_segmentation.png").exists()
    # --skip-bad: the good photo is written, the bad one listed, exit status 1
    assert predict.main([str(photos), "--model", str(model_file), "--out-dir", str(tmp_path / "o2"), "--skip-bad",
                         "--quiet", ]) == 1
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["a_segmentation.png", "run.json"]


def test_authors_keras2_checkpoint_in_evaluate_and_predict(tmp_path):
    """--init-weights: a file in the legacy Keras-2 HDF5 layout (no extension, as weight_isic18) gives the
    source network's own predictions in evaluate.py and predict.py."""
    from test_legacy_weights import write_keras2_file

    from skin_lesion import predict

    source = _save_tiny_model(tmp_path / "source.keras")
    legacy = tmp_path / "weight_isic18"
    write_keras2_file(legacy, source, full_model=True)
    work = tmp_path / "work"
    _tiny_arrays(work)
    assert evaluate.main(["--work-dir", str(work), "--model", "bcdu_unet", "--init-weights", str(legacy),
                          "--quiet"]) == 0
    out = work / "results" / "weight_isic18"
    images, _ = prepare_isic2018.load_split(work, "test")
    x = _original_dataset_normalized(images).astype(np.float32)
    np.testing.assert_allclose(np.load(out / "pred_test.npy"), np.asarray(source(x)), atol=1e-5)
    assert json.loads((out / "run.json").read_text())["weights"][0]["path"] == str(legacy.resolve())
    photos = tmp_path / "photos"
    write_image(photos / "p.jpg", np.random.default_rng(2).integers(0, 256, (30, 40, 3)).astype(np.uint8))
    for name, argv in (("legacy", ["--init-weights", str(legacy), "--network", "bcdu_unet", "--size", "16"]),
                       ("keras", ["--model", str(tmp_path / "source.keras")])):
        assert predict.main([str(photos), "--out-dir", str(tmp_path / name), "--save-probabilities", "--quiet"]
                            + argv) == 0
    for kind in ("segmentation", "prob"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "legacy" / f"p_{kind}.png")),
                                      np.asarray(Image.open(tmp_path / "keras" / f"p_{kind}.png")))
    # a file of another architecture: one line naming the file
    assert _error_line(predict.main, [str(photos), "--out-dir", str(tmp_path / "x"), "--init-weights", str(legacy),
                                      "--size", "16"]).startswith(f"error: {legacy}: holds weights for")
    assert _error_line(train_isic18.main, ["--init-weights", str(legacy), "--resume"]) == (
        "error: --init-weights: cannot be combined with --resume (the checkpoint sets every weight)")
