"""The fingernail task (specs/fingernail.md): loaders, split, metrics, scripts end to end, real dataset1.

The SpatialRNN2D layer and the four networks are tested in test_spatial_rnn.py and test_unet2d_family.py.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.cli import REPO_ROOT
from common.data.io import DataLayoutError, ImageReadError, write_image
from common.data.synthetic import write_fingernail_dataset
from fingernail import evaluate, prepare_data, train
from _cli import error_line as _error_line

ROWS, COLS = 32, 48  # tiny, divisible by 16
SMALL = ((30, 38), (49, 65))  # rows x cols: the real 150x191 and 246x328, scaled down


def _dataset1(tmp_path, **kw):
    kw = {"n_labeled": 6, "n_unlabeled": 2, "sizes": SMALL, "large_fraction": 0.5, "seed": 0, **kw}
    return write_fingernail_dataset(tmp_path / "raw", **kw)


def _dataset2(tmp_path, **kw):
    kw = {"n_labeled": 5, "layout": "dataset2", "sizes": ((40, 60), (36, 48)), "large_fraction": 0.5,
          "portrait_fraction": 0.6, "seed": 1, **kw}
    return write_fingernail_dataset(tmp_path / "raw", **kw)


def _original_mask_1(path):
    """load_image_data_1's mask, straight from the file with PIL as the original (reference)."""
    mask = np.array(Image.open(path).resize((COLS, ROWS))).mean(axis=2)
    mask[mask < 250] = 0
    mask[mask > 0] = 1
    return mask


def test_dataset1_loader_matches_the_original_on_synthetic_files(tmp_path):
    written = _dataset1(tmp_path)
    folder = tmp_path / "raw" / "dataset1"
    data = prepare_data.load_dataset1(folder, ROWS, COLS, verbose=False)
    assert data["names"] == sorted(written["labeled"])
    assert data["dropped"] == written["empty_masks"] and data["orphan_masks"] == written["orphan_masks"]
    assert data["unlabeled"] == written["unlabeled"]
    assert data["x"].shape == (6, ROWS, COLS, 3) and data["x"].dtype == np.uint8
    assert data["y"].shape == (6, ROWS, COLS, 1) and data["y"].dtype == np.uint8
    assert data["x_unlabeled"].shape == (2, ROWS, COLS, 3) and data["x_unlabeled"].dtype == np.uint8
    sizes = {Image.open(folder / "image" / n).size for n in written["labeled"]}
    assert len(sizes) == 2  # both real sizes are exercised
    for i, name in enumerate(data["names"]):
        np.testing.assert_array_equal(data["y"][i, :, :, 0], _original_mask_1(folder / "mask" / name))
        image = np.array(Image.open(folder / "image" / name).resize((COLS, ROWS)))
        np.testing.assert_array_equal(data["x"][i], image)
        assert data["y"][i].any()
    # the empty mask really is a painted mask that only fails the near-white test
    empty = np.array(Image.open(folder / "mask" / written["empty_masks"][0]))
    assert empty.max() > 150 and not _original_mask_1(folder / "mask" / written["empty_masks"][0]).any()


def test_dataset2_loader_rotates_portraits_and_dithers_masks(tmp_path):
    written = _dataset2(tmp_path)
    folder = tmp_path / "raw" / "dataset2"
    data = prepare_data.load_dataset2(folder, ROWS, COLS, verbose=False)
    assert data["names"] == sorted(written["labeled"]) and written["portrait"]
    assert data["x"].shape == (5, ROWS, COLS, 3) and data["x"].dtype == np.uint8
    assert data["y"].shape == (5, ROWS, COLS, 1) and set(np.unique(data["y"])) == {0, 1}
    for i, name in enumerate(data["names"]):  # the original's code path, straight from the files
        image, mask = Image.open(folder / "image" / name), Image.open(folder / "mask" / name).convert("1")
        assert (image.size[0] < image.size[1]) == (name in written["portrait"])
        if image.size[0] < image.size[1]:
            image, mask = image.rotate(90, expand=True), mask.rotate(90, expand=True)
        np.testing.assert_array_equal(data["x"][i], np.array(image.resize((COLS, ROWS))))
        np.testing.assert_array_equal(data["y"][i, :, :, 0], np.array(mask.resize((COLS, ROWS))).astype(np.uint8))


def test_dataset2_rotation_is_counter_clockwise(tmp_path):
    folder = tmp_path / "dataset2"
    image = np.zeros((64, 32, 3), np.uint8)  # portrait: 32 wide, 64 high
    mask = np.zeros((64, 32, 3), np.uint8)
    mask[:16, :8] = 255  # top-left corner
    image[:16, :8] = 200
    write_image(folder / "image" / "a.jpg", image)
    write_image(folder / "mask" / "a.jpg", mask)
    x, y = prepare_data.load_pair_2(folder / "image" / "a.jpg", folder / "mask" / "a.jpg", 16, 32)
    assert x.shape == (16, 32, 3) and y.shape == (16, 32, 1)
    # +90 degrees (counter-clockwise): the top-left corner goes to the bottom-left
    assert y[12:, :8].mean() > 0.9 and y[:8].sum() == 0 and y[:, 12:].sum() == 0
    assert x[12:, :8].mean() > 150


def test_split_is_seeded_rounded_up_and_concatenated(tmp_path):
    _dataset1(tmp_path, n_labeled=12)
    _dataset2(tmp_path, n_labeled=7)
    work = tmp_path / "work"
    s = prepare_data.prepare(tmp_path / "raw", work, ["dataset1", "dataset2"], ROWS, COLS, 0.1, 144, False)
    assert len(s["test"]) == math.ceil(0.1 * 12) + math.ceil(0.1 * 7) == 3
    assert len(s["train"]) == 10 + 6
    # [dataset1 part, dataset2 part] in each of train and test, as the original's combined run
    assert [n.split("/")[0] for n in s["train"]] == ["dataset1"] * 10 + ["dataset2"] * 6
    assert [n.split("/")[0] for n in s["test"]] == ["dataset1"] * 2 + ["dataset2"]
    (x_tr, y_tr), (x_te, y_te) = prepare_data.load_split(work, "dataset1+dataset2")
    assert x_tr.shape == (16, ROWS, COLS, 3) and y_te.shape == (3, ROWS, COLS, 1)
    assert x_tr.dtype == y_tr.dtype == x_te.dtype == np.uint8
    assert json.loads((work / "dataset1+dataset2" / "split.json").read_text())["test"] == s["test"]
    assert np.load(work / "dataset1+dataset2" / "x_unlabeled.npy").shape == (2, ROWS, COLS, 3)
    assert prepare_data.prepared_size(work, "dataset1+dataset2") == (ROWS, COLS)
    again = prepare_data.prepare(tmp_path / "raw", tmp_path / "w2", ["dataset1", "dataset2"], ROWS, COLS,
                                 0.1, 144, False)
    other = prepare_data.prepare(tmp_path / "raw", tmp_path / "w3", ["dataset1", "dataset2"], ROWS, COLS,
                                 0.1, 7, False)
    assert again["test"] == s["test"] and other["test"] != s["test"]


def test_bad_inputs_name_the_file(tmp_path):
    _dataset1(tmp_path)
    folder = tmp_path / "raw" / "dataset1"
    with pytest.raises(DataLayoutError, match=r"nothing[/\\]image: folder not found"):
        prepare_data.load_dataset1(tmp_path / "nothing", ROWS, COLS, verbose=False)
    name = sorted(folder.glob("mask/170517_*.png"))[0].name
    write_image(folder / "mask" / name, np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(DataLayoutError, match=rf"{name}: mask is 12x10 \(WxH\) but its image is"):
        prepare_data.load_dataset1(folder, ROWS, COLS, verbose=False)
    (folder / "mask" / name).write_bytes(b"not a png")
    work = tmp_path / "work"
    with pytest.raises(ImageReadError, match=rf"{name}: cannot decode"):
        prepare_data.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--quiet"])
    assert not work.exists() or not list(work.rglob("*.*"))  # nothing half-written

    _dataset2(tmp_path)
    (tmp_path / "raw" / "dataset2" / "mask" / "nail_002.jpg").unlink()
    with pytest.raises(DataLayoutError, match=r"no mask for .*nail_002\.jpg"):
        prepare_data.load_dataset2(tmp_path / "raw" / "dataset2", ROWS, COLS, verbose=False)


def test_script_reports_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "fingernail" / "prepare_data.py"),
                             "--raw-dir", str(tmp_path), "--work-dir", str(tmp_path / "w")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    expected = f"error: {tmp_path / 'dataset1' / 'image'}: folder not found (expected dataset1/image and dataset1/mask)"
    assert result.stderr.strip().splitlines()[-1] == expected


def test_dice_coefficient_is_pooled_strict_and_unsmoothed():
    rng = np.random.default_rng(0)
    y = (rng.random((3, 8, 8, 1)) < 0.3).astype(np.float32)
    p = rng.random((3, 8, 8, 1)).astype(np.float32)
    p[0, 0, 0, 0] = 0.3  # exactly at the threshold: background (p > 0.3 is strict)
    hat = p > 0.3
    expected = 2 * np.sum(y * hat) / (y.sum() + hat.sum())
    assert evaluate.dice_coefficient(y, p, 0.3) == pytest.approx(expected, abs=1e-12)
    assert evaluate.dice_coefficient(y, y, 0.5) == 1.0
    assert math.isnan(evaluate.dice_coefficient(np.zeros(4), np.zeros(4)))


def test_dice_metric_thresholds_and_pools_the_batch():
    rng = np.random.default_rng(1)
    y = (rng.random((2, 6, 5, 1)) < 0.4).astype(np.float32)
    p = rng.random((2, 6, 5, 1)).astype(np.float32)
    hat = p[..., 0] > 0.5
    expected = 2 * np.sum(y[..., 0] * hat) / (y.sum() + hat.sum() + 1e-7)
    assert float(train.dice_metric(y, p)) == pytest.approx(expected, rel=1e-6)


def test_optimizer_and_loss_follow_the_original():
    import keras

    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(1, 1, activation="sigmoid")])
    train.compile_model(model, "bce_dice")
    opt = model.optimizer
    assert opt.epsilon == 1e-8 and opt.beta_1 == 0.9 and opt.beta_2 == 0.999
    schedule = opt._learning_rate
    for step in (0, 1000, 18_900):  # legacy Keras decay: lr / (1 + decay * iterations)
        assert float(schedule(step)) == pytest.approx(1e-5 / (1 + 1.99e-7 * step), rel=1e-6)
    assert model.loss.per_pixel_dice is True  # the default bce_dice is the original's per-pixel Dice
    assert train.make_loss("bce_dice", "image").per_pixel_dice is False
    assert isinstance(train.make_loss("bce"), keras.losses.BinaryCrossentropy)


def test_run_ids_are_the_originals_and_tag_every_changed_recipe_option():
    assert train.run_id("dataset1", "unet2d_res_srnn_32_512", "bce", 220, 2, 160, 192) == \
        "Fingernail_dataset1_Unet_Res_SRNN_32x512_BCE_EP220_BS2_160x192"
    assert train.run_id("dataset1", "unet2d_8_128", "bce_dice", 220, 2, 160, 192) == \
        "Fingernail_dataset1_Unet_8x128_DICE_EP220_BS2_160x192"
    base = ("dataset1", "unet2d_8_128", "bce_dice", 220, 2, 160, 192)
    variants = [{}, {"dice": "image"}, {"lr": 1e-3}, {"lr_decay": 0.0}, {"seed": 1}, {"shuffle": True}]
    ids = [train.run_id(*base, **v) for v in variants]
    assert len(set(ids)) == len(ids)  # no two recipes share a default run folder
    assert ids[1] == "Fingernail_dataset1_Unet_8x128_DICE_IMG_EP220_BS2_160x192"
    assert ids[5].endswith("_SHUFFLE") and ids[4].endswith("_SEED1")


def test_end_to_end_prepare_train_evaluate(tmp_path):
    _dataset1(tmp_path, n_labeled=8)
    work, run = tmp_path / "work", tmp_path / "run"
    prepare_data.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--rows", str(ROWS),
                       "--cols", str(COLS), "--quiet"])
    train.main(["--work-dir", str(work), "--model", "unet2d_8_128", "--loss", "bce_dice",
                "--epochs", "1", "--run-dir", str(run), "--verbose", "0"])
    for name in ("best.keras", "last.keras", "history.csv", "state.json"):
        assert (run / name).is_file()
    state = json.loads((run / "state.json").read_text())
    assert state["monitor"] == "val_dice_metric" and state["mode"] == "max"
    assert state["settings"]["batch_size"] == 2 and state["settings"]["shuffle"] is False
    assert state["settings"]["dice"] == "pixel"  # the original's loss, recorded
    # a killed run continues: the custom metric, loss and lr schedule reload from last.keras
    train.main(["--work-dir", str(work), "--loss", "bce_dice", "--epochs", "2",
                "--run-dir", str(run), "--resume", "--verbose", "0"])
    assert json.loads((run / "state.json").read_text())["epoch"] == 2
    assert len((run / "history.csv").read_text().splitlines()) == 3
    out = tmp_path / "results"
    row = evaluate.main(["--work-dir", str(work), "--model", "unet2d_8_128", "--run-dir", str(run),
                         "--out-dir", str(out), "--quiet"])
    assert row["model"] == "Unet_8x128" and row["test images"] == 1
    assert row["paper (nb, @0.3)"] == 0.820733 and row["dice"] == "pixel"
    keys = list(row)  # the original's columns first, unchanged; the surface distances after them
    assert keys.index("Dice@0.3") < keys.index("Dice@0.5") < keys.index("HD95@0.3 (px)") < keys.index("ASSD@0.3 (px)")
    assert json.loads((out / "run.json").read_text())["weights"][0]["path"].endswith("last.keras")
    assert json.loads((out / "dice.json").read_text())[0]["dice"] == "pixel"
    pred = np.load(out / "pred_test.npy")
    assert pred.shape == (1, ROWS, COLS, 1) and pred.dtype == np.float32
    _, (_, y_te) = prepare_data.load_split(work)
    assert row["Dice@0.3"] == evaluate.dice_coefficient(y_te, pred, 0.3)
    for name in ("dice.md", "dice.json", "paper.md", "overlay.png", "training_curves.png"):
        assert (out / name).is_file()
    assert len(json.loads((out / "paper.json").read_text())) == 16


# ---- the BCE-Dice loss: spec §3's definition, written out in NumPy ----------------------------------------

def _spec_bce_dice(y, p, image_level=False, eps=1e-7):
    """Spec §3 in float64: Keras BCE (p clipped to [eps, 1 - eps], mean over the last axis) minus
    log(dice + eps), dice = 2·Σ(y·p) / (Σ(y + p) + eps) with Σ over the channel axis only (the original) or
    over H, W, C of each image (the image-level option); Keras then takes the mean of what is left."""
    y, p = y.astype(np.float64), p.astype(np.float64)
    q = np.clip(p, eps, 1 - eps)
    bce = -(y * np.log(q) + (1 - y) * np.log(1 - q)).mean(axis=-1)  # (B, H, W)
    if image_level:
        dice = 2 * (y * p).sum(axis=(1, 2, 3)) / ((y + p).sum(axis=(1, 2, 3)) + eps)
        return float((bce.mean(axis=(1, 2)) - np.log(dice + eps)).mean())
    dice = 2 * (y * p).sum(axis=-1) / ((y + p).sum(axis=-1) + eps)
    return float((bce - np.log(dice + eps)).mean())


def test_default_bce_dice_is_the_originals_per_pixel_loss():
    rng = np.random.default_rng(3)
    y = (rng.random((3, 7, 5, 1)) < 0.3).astype(np.float32)
    p = rng.uniform(0.01, 0.99, (3, 7, 5, 1)).astype(np.float32)
    default = float(train.make_loss("bce_dice")(y, p))
    assert default == pytest.approx(_spec_bce_dice(y, p), rel=1e-5)
    image = float(train.make_loss("bce_dice", "image")(y, p))
    assert image == pytest.approx(_spec_bce_dice(y, p, image_level=True), rel=1e-5)
    assert abs(default - image) > 1.0  # the two are really different losses
    # the spec's verified values: y = 0, p = 0.5 -> 16.8112 per pixel; y = 1, p = 0.5 -> 1.0986
    half = np.full((1, 1, 1, 1), 0.5, np.float32)
    assert float(train.make_loss("bce_dice")(0 * half, half)) == pytest.approx(16.8112, abs=1e-4)
    assert float(train.make_loss("bce_dice")(0 * half + 1, half)) == pytest.approx(1.0986, abs=1e-4)


def test_image_level_run_is_recorded_and_not_compared_with_the_paper(tmp_path):
    _dataset1(tmp_path, n_labeled=8)
    work, run, out = tmp_path / "work", tmp_path / "run", tmp_path / "out"
    prepare_data.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--rows", str(ROWS),
                       "--cols", str(COLS), "--quiet"])
    train.main(["--work-dir", str(work), "--dice", "image", "--epochs", "1", "--run-dir", str(run), "--verbose", "0"])
    settings = json.loads((run / "state.json").read_text())["settings"]
    assert settings["dice"] == "image" and "image-level" in settings["loss_label"]
    row = evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out), "--quiet"])
    assert row["dice"] == "image" and math.isnan(row["paper (nb, @0.3)"])
    assert "not comparable" in row["paper comparison"]
    saved = json.loads((out / "dice.json").read_text())[0]
    assert saved["dice"] == "image" and "image-level" in saved["loss variant"]
    # a run written before the setting existed (per_pixel_dice False = the image-level Dice) reads the same
    state = json.loads((run / "state.json").read_text())
    state["settings"] = {k: v for k, v in settings.items() if k not in ("dice", "loss_label")}
    state["settings"]["per_pixel_dice"] = False
    (run / "state.json").write_text(json.dumps(state))
    assert evaluate.run_settings(run)["dice"] == "image"
    state["settings"]["per_pixel_dice"] = True
    (run / "state.json").write_text(json.dumps(state))
    assert evaluate.run_settings(run)["dice"] == "pixel"


def test_prepare_is_all_or_nothing_and_never_replaces_a_study_silently(tmp_path):
    written = _dataset1(tmp_path)
    _dataset2(tmp_path)
    work = tmp_path / "work"
    args = ["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--rows", str(ROWS), "--cols", str(COLS),
            "--quiet"]
    prepare_data.main(args)
    before = {p.name: p.read_bytes() for p in (work / "dataset1").iterdir()}
    with pytest.raises(DataLayoutError, match=r"dataset1: holds a prepared study; pass --overwrite"):
        prepare_data.main(args)
    # a corrupt file in the SECOND dataset: nothing of the first is written either
    (tmp_path / "raw" / "dataset2" / "mask" / "nail_001.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ImageReadError, match=r"nail_001\.jpg"):
        prepare_data.main(args + ["--datasets", "dataset1", "dataset2"])
    assert not (work / "dataset1+dataset2").exists()
    assert sorted(p.name for p in work.iterdir()) == ["dataset1"]  # no temporary folder left behind
    # --overwrite replaces the study in one step; a failing --overwrite leaves the old one intact
    (tmp_path / "raw" / "dataset1" / "image" / written["labeled"][0]).write_bytes(b"not a png")
    with pytest.raises(ImageReadError):
        prepare_data.main(args + ["--overwrite"])
    assert {p.name: p.read_bytes() for p in (work / "dataset1").iterdir()} == before
    assert sorted(p.name for p in work.iterdir()) == ["dataset1"]


def test_repro_bench_runs_cells_reports_absent_data_and_keeps_results(tmp_path):
    import bench.fingernail_repro as repro

    raw, out = tmp_path / "raw", tmp_path / "bench"
    _dataset1(tmp_path, n_labeled=10, sizes=((150, 191),))
    args = ["--raw-dir", str(raw), "--out-dir", str(out), "--epochs", "1", "--losses", "bce_dice",
            "--time-steps", "0", "--verbose", "0"]
    repro.main(args)
    table = json.loads((out / "table.json").read_text())
    assert len(table) == 8  # 4 models x 2 studies, the paper's layout
    unet_ds1 = table[0]
    assert unet_ds1["Model"] == "U-Net2D (8-128)" and unet_ds1["Data"] == "DS1"
    assert unet_ds1["BCE-Dice paper (nb / README)"] == "0.820733 / 0.82"
    assert "reduced budget" in unet_ds1["BCE-Dice ours"] and unet_ds1["BCE ours"] == "not run"
    assert all(row["BCE-Dice ours"] == "data absent" for row in table[4:])  # no dataset2 here
    cell_json = out / "results" / "Fingernail_dataset1_Unet_8x128_DICE_EP1_BS2_160x192" / "cell.json"
    cell = json.loads(cell_json.read_text())
    n_test = math.ceil(0.1 * 10)
    assert cell["dice"] == "pixel" and cell["paper (nb)"] == 0.820733
    assert (cell["train"], cell["test"]) == (10 - n_test, n_test)
    pred = np.load(cell_json.parent / "pred_test.npy")
    _, (_, y_te) = prepare_data.load_split(out)
    assert cell["Dice@0.3"] == evaluate.dice_coefficient(y_te, pred, 0.3)
    assert (out / "table.png").is_file() and (out / "table.md").is_file()
    stamp = cell_json.read_bytes()
    repro.main(args)  # a second run keeps the earlier result
    assert cell_json.read_bytes() == stamp
    # a finished run whose cell result is missing is evaluated again, not trained again
    cell_json.unlink()
    last = (out / "runs" / cell_json.parent.name / "last.keras").stat().st_mtime_ns
    repro.main(args[:-4] + ["--time-steps", "1", "--time-models", "unet2d_8_128", "--verbose", "0"])
    again = json.loads(cell_json.read_text())
    assert again["Dice@0.3"] == cell["Dice@0.3"] and again["train wall s"] is None
    assert (out / "runs" / cell_json.parent.name / "last.keras").stat().st_mtime_ns == last
    timing = json.loads((out / "timing_table.json").read_text())
    assert [t["model"] for t in timing] == ["U-Net2D (8-128)"] and timing[0]["parameters"] == 485_817


def test_repro_bench_times_a_training_step():
    import bench.fingernail_repro as repro

    t = repro.time_model("unet2d_8_128", "dataset1", steps=1, warmup=1)
    assert t["parameters"] == 485_817 and t["steps/epoch"] == 86
    assert t["wall s/epoch"] == pytest.approx(86 * t["wall s/step"], rel=0.01, abs=0.1) and t["wall s/step"] > 0


@pytest.mark.parametrize("script", ["fingernail/prepare_data.py", "fingernail/train.py", "fingernail/evaluate.py",
                                    "fingernail/demo.py", "fingernail/predict.py", "bench/fingernail_repro.py"])
def test_help_works_from_any_directory(tmp_path, script):
    result = subprocess.run([sys.executable, str(REPO_ROOT / script), "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "usage:" in result.stdout


def test_real_dataset1_counts(fingernail_dataset1):
    data = prepare_data.load_dataset1(fingernail_dataset1, verbose=False)
    assert data["x"].shape == (192, 160, 192, 3) and data["y"].shape == (192, 160, 192, 1)
    assert data["dropped"] == ["None_20170426-183042_80000_EXACT.png"]
    assert data["orphan_masks"] == ["170517_3_L_1.png"]
    assert len(data["unlabeled"]) == 21 and data["x_unlabeled"].shape == (21, 160, 192, 3)
    assert sum(n.startswith("None_") for n in data["unlabeled"]) == 16
    assert sum(n.startswith("170517_") for n in data["unlabeled"]) == 5
    assert data["y"].mean() == pytest.approx(0.040, abs=0.002)  # spec §4: about 4.0 % foreground
    train_idx, test_idx = prepare_data.split_indices(len(data["x"]))
    assert (len(train_idx), len(test_idx)) == (172, 20)


def test_real_dataset1_few_epochs_beat_all_background(fingernail_dataset1, tmp_path):
    """Four epochs (80x96 input, lr 1e-3, batch 4) of unet2d_8_128 beat the all-background prediction."""
    work, run, out = tmp_path / "work", tmp_path / "run", tmp_path / "out"
    prepare_data.main(["--raw-dir", str(fingernail_dataset1.parent), "--work-dir", str(work), "--rows", "80",
                       "--cols", "96", "--quiet"])
    train.main(["--work-dir", str(work), "--epochs", "4", "--lr", "1e-3", "--lr-decay", "0", "--batch-size", "4",
                "--shuffle", "--seed", "0", "--run-dir", str(run), "--verbose", "0"])
    row = evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out), "--quiet"])
    _, (_, y_te) = prepare_data.load_split(work)
    assert y_te.shape == (20, 80, 96, 1)
    prob = np.load(out / "pred_test.npy")
    background_accuracy = float((y_te == 0).mean())
    assert float(((prob > 0.5) == (y_te == 1)).mean()) > background_accuracy
    assert row["Dice@0.3"] > 0.5  # all-background scores 0


# ---- predict.py: the user's own photos -> masks at each photo's size -----------------------------------------

def _tiny_model(path):
    """An untrained U-Net2D at 32x48 saved as .keras (random weights, not flip- or rotation-invariant)."""
    import keras

    from common.models import build_model

    keras.utils.set_random_seed(5)
    model = build_model("unet2d_8_128", (ROWS, COLS, 3))
    model.save(path)
    return model


def _reference_mask(model, image, threshold=0.3):
    """The spec's pipeline written out: (portrait: PIL rotate +90) -> bicubic resize -> /255 -> network ->
    bilinear resize back -> (rotate -90) -> > threshold."""
    pil = Image.fromarray(image)
    portrait = pil.size[0] < pil.size[1]
    if portrait:
        pil = pil.rotate(90, expand=True)
    x = np.asarray(pil.resize((COLS, ROWS), Image.BICUBIC), np.float32)[None] / 255.0
    prob = Image.fromarray(model.predict(x, verbose=0)[0, ..., 0].astype(np.float32)).resize(pil.size, Image.BILINEAR)
    if portrait:
        prob = prob.rotate(-90, expand=True)
    return np.where(np.asarray(prob) > threshold, 255, 0).astype(np.uint8)


def test_predict_writes_masks_at_each_photos_size(tmp_path):
    from fingernail import predict

    model = _tiny_model(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    shapes = {"wide.png": (30, 38), "big.jpg": (49, 65), "portrait.jpg": (60, 40)}  # (rows, cols)
    for name, (h, w) in shapes.items():
        write_image(photos / name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (photos / "notes.txt").write_text("not a photo")  # ignored: not a photo extension
    out = tmp_path / "out"
    status = predict.main([str(photos), "--out-dir", str(out), "--model", str(tmp_path / "m.keras"), "--overlay",
                           "--save-probabilities", "--quiet"])
    assert status == 0
    expected = {f"{Path(n).stem}{s}.png" for n in shapes for s in ("", "_overlay", "_prob")} | {"run.json"}
    assert {p.name for p in out.iterdir()} == expected
    for name, (h, w) in shapes.items():
        stem = Path(name).stem
        mask = Image.open(out / f"{stem}.png")
        assert mask.mode == "L" and mask.size == (w, h)
        values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255}
        photo = np.asarray(Image.open(photos / name).convert("RGB"))
        np.testing.assert_array_equal(values, _reference_mask(model, photo))
        assert Image.open(out / f"{stem}_overlay.png").size == (2 * w, h)
        assert Image.open(out / f"{stem}_prob.png").size == (w, h)
    record = json.loads((out / "run.json").read_text())
    assert record["model"] == "Unet_8x128" and len(record["inputs"]) == 3 and record["weights"][0]["sha256"]
    # a second run refuses to overwrite
    from common.errors import UserError

    with pytest.raises(UserError, match="already exists"):
        predict.main([str(photos), "--out-dir", str(out), "--model", str(tmp_path / "m.keras"), "--quiet"])


def test_predict_refuses_an_empty_folder_and_a_corrupt_photo(tmp_path):
    from common.errors import UserError
    from fingernail import predict

    _tiny_model(tmp_path / "m.keras")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"empty: no input files"):
        predict.main([str(empty), "--out-dir", str(out), "--model", str(tmp_path / "m.keras"), "--quiet"])
    photos = tmp_path / "photos"
    write_image(photos / "a_good.png", np.full((30, 38, 3), 120, np.uint8))
    (photos / "b_bad.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(ImageReadError, match=r"b_bad\.png"):
        predict.main([str(photos), "--out-dir", str(out), "--model", str(tmp_path / "m.keras"), "--quiet"])
    assert not (out / "b_bad.png").exists()
    status = predict.main([str(photos), "--out-dir", str(tmp_path / "out2"), "--model", str(tmp_path / "m.keras"),
                           "--skip-bad", "--quiet"])
    assert status == 1 and (tmp_path / "out2" / "a_good.png").is_file()
    assert not (tmp_path / "out2" / "b_bad.png").exists()


def test_flip_tta_averages_the_flipped_predictions(tmp_path):
    model = _tiny_model(tmp_path / "m.keras")
    x = np.random.default_rng(2).integers(0, 256, (2, ROWS, COLS, 3), dtype=np.uint8)
    f = x.astype(np.float32) / 255.0
    plain = model.predict(f, verbose=0)
    h = model.predict(f[:, :, ::-1].copy(), verbose=0)[:, :, ::-1]
    v = model.predict(f[:, ::-1].copy(), verbose=0)[:, ::-1]
    np.testing.assert_allclose(evaluate.predict_probabilities(model, x), plain, atol=1e-6)
    np.testing.assert_allclose(evaluate.predict_probabilities(model, x, tta="flip"), (plain + h + v) / 3, atol=1e-6)
    assert np.abs(plain - h).max() > 1e-4  # the model is not flip-invariant, so the test can fail


# ---- the original's defaults, pinned (spec §3, §4, §5) -----------------------------------------------------

ORIGINAL_DEFAULTS = {  # written from specs/fingernail.md, not from the code
    "prepare_data": {"rows": 160, "cols": 192, "test_ratio": 0.1, "seed": 144, "datasets": ["dataset1"]},
    "train": {"model": "unet2d_8_128", "study": "dataset1", "loss": "bce_dice", "dice": "pixel", "epochs": 220,
              "batch_size": 2, "lr": 1e-5, "lr_decay": 1.99e-7, "seed": 144, "shuffle": False,
              "mixed_precision": "off", "jit_compile": False, "resume": False, "overwrite": False},
    "evaluate": {"loss": "bce_dice", "dice": "pixel", "epochs": 220, "batch_size": 2, "weights": "last",
                 "thresholds": [0.3, 0.5], "tta": "none", "mixed_precision": "off"},
    "predict": {"weights": "last", "threshold": 0.3, "tta": "none", "mixed_precision": "off"},
    "bench": {"epochs": 220, "dice": "pixel", "losses": ["bce_dice", "bce"],
              "studies": ["dataset1", "dataset1+dataset2"]},
}


def _parser(script):
    import bench.fingernail_repro as repro
    from fingernail import predict

    return {"prepare_data": prepare_data, "train": train, "evaluate": evaluate, "predict": predict,
            "bench": repro}[script].build_parser()


@pytest.mark.parametrize("script", sorted(ORIGINAL_DEFAULTS))
def test_defaults_are_the_originals(script):
    argv = ["x.png", "--out-dir", "o"] if script == "predict" else []
    defaults = vars(_parser(script).parse_args(argv))
    for name, value in ORIGINAL_DEFAULTS[script].items():
        assert defaults[name] == value, f"{script} --{name.replace('_', '-')}"


def test_default_recipe_builds_the_originals_optimizer_and_loss():
    import keras

    args = train.build_parser().parse_args([])
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(1, 1, activation="sigmoid")])
    train.compile_model(model, args.loss, args.dice, args.lr, args.lr_decay)
    assert model.optimizer.epsilon == 1e-8 and model.loss.per_pixel_dice is True
    assert float(model.optimizer._learning_rate(0)) == pytest.approx(1e-5)


# ---- one line, exit status 2, for a bad option and a bad file in every script ------------------------------


def test_every_script_reports_a_bad_option_and_a_bad_file_in_one_line(tmp_path, capsys):
    import bench.fingernail_repro as repro
    from fingernail import predict

    _dataset1(tmp_path, n_labeled=6)
    raw, work = tmp_path / "raw", tmp_path / "work"
    prepare = ["--raw-dir", str(raw), "--work-dir", str(work), "--quiet"]
    assert _error_line(prepare_data.main, prepare + ["--rows", "100"]).startswith(
        "error: --rows/--cols: must be positive multiples of 16")
    mask = sorted((raw / "dataset1" / "mask").iterdir())[0]
    good_mask = mask.read_bytes()
    mask.write_bytes(b"\x89PNG\r\n broken")
    assert _error_line(prepare_data.main, prepare).startswith(f"error: {mask}: ")
    assert not work.exists()
    mask.write_bytes(good_mask)
    prepare_data.main(prepare + ["--rows", str(ROWS), "--cols", str(COLS)])

    assert _error_line(train.main, ["--work-dir", str(work), "--loss", "bce", "--dice", "image"]) == \
        "error: --dice: applies to --loss bce_dice only, not bce; drop it"
    assert _error_line(train.main, ["--work-dir", str(work), "--epochs", "0"]) == \
        "error: --epochs: must be at least 1, got 0"
    split = work / "dataset1" / "split.json"
    good_split = split.read_text()
    split.write_text("{ not json")
    assert _error_line(train.main, ["--work-dir", str(work)]).startswith(
        f"error: {split}: not prepare_data.py's split.json")
    split.write_text(good_split)

    run = tmp_path / "run"
    run.mkdir()
    (run / "last.keras").write_bytes(b"not a keras file")
    evaluate_args = ["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(tmp_path / "res"), "--quiet"]
    assert _error_line(evaluate.main, evaluate_args + ["--thresholds", "1.5"]).startswith(
        "error: --thresholds: each must lie in [0, 1)")
    assert _error_line(evaluate.main, evaluate_args).startswith(f"error: {run / 'last.keras'}: cannot load")
    assert not (tmp_path / "res").exists()

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff broken jpeg")
    _tiny_model(tmp_path / "m.keras")
    predict_args = [str(photo), "--out-dir", str(tmp_path / "pred"), "--model", str(tmp_path / "m.keras"), "--quiet"]
    assert _error_line(predict.main, predict_args + ["--threshold", "2"]).startswith(
        "error: --threshold: must lie in [0, 1)")
    assert _error_line(predict.main, predict_args).startswith(f"error: {photo}: ")
    assert not (tmp_path / "pred" / "photo.png").exists()

    bench_args = ["--raw-dir", str(raw), "--out-dir", str(tmp_path / "b"), "--losses", "bce", "--studies", "dataset1",
                  "--time-steps", "0", "--verbose", "0"]
    assert _error_line(repro.main, bench_args + ["--epochs", "0"]).startswith("error: --epochs/--time-steps:")
    mask.write_bytes(b"\x89PNG\r\n broken")
    assert _error_line(repro.main, bench_args).startswith(f"error: {mask}: ")


def test_paper_comparison_names_every_recipe_difference():
    assert evaluate.recipe_differences({"epochs": 220, "batch_size": 2, "lr": 1e-5, "shuffle": False}) == []
    note = evaluate.comparison_note("same model, data and loss", {"epochs": 12, "lr": 1e-3, "shuffle": True,
                                                                 "rows": 160})
    assert note == "same model, data and loss; but the recipe differs: epochs 12, lr 0.001, shuffle True"


def _brute_hd95_assd(a, b):
    """Brute force: surfaces = mask minus its face-connected erosion, all pairwise Euclidean distances."""
    from scipy.ndimage import binary_erosion
    from scipy.spatial.distance import cdist

    sa = np.argwhere(a & ~binary_erosion(a, border_value=0))
    sb = np.argwhere(b & ~binary_erosion(b, border_value=0))
    d = cdist(sa, sb)
    ab, ba = d.min(axis=1), d.min(axis=0)
    return max(np.percentile(ab, 95), np.percentile(ba, 95)), np.concatenate([ab, ba]).mean()


def test_evaluate_adds_hd95_and_assd_after_the_originals_columns():
    rng = np.random.default_rng(4)
    y = np.zeros((3, 16, 20, 1), np.uint8)
    prob = np.zeros((3, 16, 20, 1), np.float32)
    y[0, 3:9, 4:12], y[1, 5:10, 5:9], y[2, 2:6, 2:6] = 1, 1, 1
    prob[0, 4:10, 6:13] = 0.9
    prob[2] = rng.random((16, 20, 1)) * 0.6  # noisy: some pixels above 0.3
    columns = evaluate.surface_columns(y, prob, 0.3)  # image 1 has an empty prediction: left out, counted
    refs = [_brute_hd95_assd(y[i, ..., 0] == 1, prob[i, ..., 0] > 0.3) for i in (0, 2)]
    assert columns["HD95@0.3 (px)"] == pytest.approx(np.mean([r[0] for r in refs]), rel=1e-9)
    assert columns["ASSD@0.3 (px)"] == pytest.approx(np.mean([r[1] for r in refs]), rel=1e-9)
    assert columns["images without HD95 (an empty mask)"] == 1


def test_two_recipes_with_default_run_folders_keep_both_runs(tmp_path, monkeypatch):
    from common import cli

    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path / "repo")  # default folders under a temporary "repository"
    _dataset1(tmp_path, n_labeled=8)
    work = tmp_path / "work"
    prepare_data.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--rows", str(ROWS),
                       "--cols", str(COLS), "--quiet"])
    common = ["--work-dir", str(work), "--epochs", "1", "--verbose", "0"]
    pixel = train.main(common)
    image = train.main(common + ["--dice", "image"])
    assert pixel != image
    assert pixel.parent == image.parent == tmp_path / "repo" / "weights" / "fingernail" / "unet2d_8_128"
    assert json.loads((pixel / "state.json").read_text())["settings"]["dice"] == "pixel"
    assert json.loads((image / "state.json").read_text())["settings"]["dice"] == "image"
    from common.errors import UserError

    with pytest.raises(UserError, match="holds a run of 1 epochs"):  # the same recipe again: refused, kept
        train.main(common)
    assert json.loads((pixel / "state.json").read_text())["epoch"] == 1


def test_mixed_precision_run_is_tagged_and_not_compared_with_the_paper(tmp_path):
    from common.devices import set_precision

    _dataset1(tmp_path, n_labeled=8)
    work, out = tmp_path / "work", tmp_path / "out"
    prepare_data.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--rows", str(ROWS),
                       "--cols", str(COLS), "--quiet"])
    try:
        run = train.main(["--work-dir", str(work), "--epochs", "1", "--verbose", "0", "--mixed-precision", "bfloat16",
                          "--run-dir", str(tmp_path / "run")])
        assert json.loads((run / "state.json").read_text())["settings"]["mixed_precision"] == "bfloat16"
        row = evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out), "--quiet",
                             "--mixed-precision", "bfloat16"])
    finally:
        set_precision("off")  # the global policy must not leak into other tests
    assert math.isnan(row["paper (nb, @0.3)"]) and "mixed-precision bfloat16" in row["paper comparison"]
    assert np.load(out / "pred_test.npy").dtype == np.float32
    assert train.run_id("dataset1", "unet2d_8_128", "bce_dice", 220, 2, 160, 192, mixed_precision="bfloat16") \
        .endswith("_BFLOAT16")
