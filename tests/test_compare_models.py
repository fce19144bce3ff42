"""compare_models.py (issue 23 items 1 and 4): every chosen model on one prepared dataset, one scorer.

A tiny synthetic fingernail study (32x32, 12 labelled photos) is compared once with two small models for one
epoch (module fixture); the tests then check the table, the JSON, both figures, the scores against NumPy /
common.metrics on the saved predictions and against the saved checkpoint, the skipped models, --resume,
the refusal without --overwrite and every bad input. The descriptors' load_prepared are checked on tiny
synthetic nerve and skin-lesion folders.
"""

import json
import math

import numpy as np
import pytest

import compare_models
from common.data.synthetic import write_fingernail_dataset
from common.metrics import surface_distances
from _cli import error_line

MODELS = ["unet2d_8_128", "unet2d_res_srnn_8_128"]
SKIPPED = ["tdsnet", "unet_nested"]


def _run(argv):
    return compare_models.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from fingernail import prepare_data

    root = tmp_path_factory.mktemp("compare")
    write_fingernail_dataset(root / "raw", n_labeled=17, n_unlabeled=1, sizes=((30, 38), (49, 65)), seed=0)
    prepare_data.main(["--raw-dir", str(root / "raw"), "--work-dir", str(root / "work"), "--rows", "32", "--cols",
                       "32", "--test-ratio", "0.25", "--quiet"])
    return root / "work" / "dataset1"


@pytest.fixture(scope="module")
def compared(study):
    out = study.parent / "cmp"
    _run(["--data", study, "--models", *MODELS, *SKIPPED, "--recipe", "budget", "--epochs", 1, "--out", out,
          "--verbose", 0])
    return out


def _dice(t, p):
    t, p = np.asarray(t).ravel() != 0, np.asarray(p).ravel() != 0
    return 2 * (t & p).sum() / (t.sum() + p.sum()) if t.sum() + p.sum() else math.nan


def test_outputs_written(compared):
    for name in ("comparison.md", "comparison.json", "comparison_scores.png", "comparison_grid.png", "run.json"):
        assert (compared / name).is_file(), name
    for name in ("comparison_scores.png", "comparison_grid.png"):
        assert (compared / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (compared / "comparison.md").read_text()
    for model in MODELS:
        assert f"| {model} |" in table
    record = json.loads((compared / "comparison.json").read_text())
    assert [r["model"] for r in record["rows"]] == MODELS
    for row in record["rows"]:
        assert row["epochs_run"] == 1 and row["best_epoch"] == 1 and row["seeds"] == 1
        assert row["train_seconds"] > 0 and row["images_per_second"] > 0 and row["gflops"] > 0
    run = json.loads((compared / "run.json").read_text())
    assert run["model"] == MODELS and len(run["weights"]) == 2


def test_parameters_are_the_models(compared):
    """The table's parameter counts are those of the registered models at the data's input size."""
    from common.models import build_model

    rows = {r["model"]: r for r in json.loads((compared / "comparison.json").read_text())["rows"]}
    for model in MODELS:
        assert rows[model]["parameters"] == build_model(model, (32, 32, 3)).count_params()


def test_skipped_models_listed_with_reasons(compared):
    record = json.loads((compared / "comparison.json").read_text())
    assert sorted(record["skipped"]) == sorted(SKIPPED)
    assert "scene" in record["skipped"]["tdsnet"] and "edema" in record["skipped"]["unet_nested"]
    table = (compared / "comparison.md").read_text()
    for model in SKIPPED:
        assert f"- {model}: " in table


def test_scores_equal_independent_computation(study, compared):
    """Each row's scores = NumPy Dice / IoU and common.metrics' HD95 on the saved masks and the test masks."""
    y_test = np.load(study / "y_test.npy")[..., 0]
    record = json.loads((compared / "comparison.json").read_text())
    for row in record["rows"]:
        pred = np.load(compared / "runs" / row["model"] / "seed0" / "test_pred.npy")
        assert pred.shape == y_test.shape and set(np.unique(pred)) <= {0, 1}
        dice = np.array([_dice(t, p) for t, p in zip(y_test, pred)])
        iou = np.array([((t != 0) & (p != 0)).sum() / ((t != 0) | (p != 0)).sum() for t, p in zip(y_test, pred)])
        hd = np.array([surface_distances(t, p)["hd95"] for t, p in zip(y_test, pred)])
        finite = [d for d in dice if np.isfinite(d)]
        assert row["dice"] == pytest.approx(np.mean(finite)) and row["dice_sd"] == pytest.approx(np.std(finite,
                                                                                                       ddof=1))
        assert row["iou"] == pytest.approx(np.nanmean(iou))
        if np.isfinite(hd).any():
            assert row["hd95"] == pytest.approx(hd[np.isfinite(hd)].mean())
        else:
            assert row["hd95"] is None or math.isnan(row["hd95"])
        assert row["one_mask_empty"] == int(np.isinf(hd).sum())


def test_saved_masks_are_the_checkpoints_predictions(study, compared):
    """test_pred.npy = the best checkpoint on the test photos / 255 (fingernail's input), thresholded at 0.5."""
    import keras

    model = keras.models.load_model(compared / "runs" / MODELS[0] / "seed0" / "best.keras")
    prob = model.predict(np.load(study / "x_test.npy").astype(np.float32) / 255.0, verbose=0)[..., 0]
    np.testing.assert_array_equal(np.load(compared / "runs" / MODELS[0] / "seed0" / "test_pred.npy"),
                                  (prob >= 0.5).astype(np.uint8))


def test_refuses_existing_comparison(study, compared):
    before = (compared / "comparison.md").stat().st_mtime_ns
    line = error_line(compare_models.main, ["--data", str(study), "--models", MODELS[0], "--recipe", "budget",
                                            "--epochs", "1", "--out", str(compared)])
    assert line.startswith("error: ") and "--resume" in line and "--overwrite" in line
    assert (compared / "comparison.md").stat().st_mtime_ns == before


def test_resume_keeps_finished_models(study, compared, capsys):
    """--resume: a finished model is not retrained; one killed after training (no result.json) is only scored."""
    first, second = (compared / "runs" / m / "seed0" for m in MODELS)
    kept = {p: p.stat().st_mtime_ns for p in (first / "best.keras", first / "result.json", second / "best.keras")}
    (second / "result.json").unlink()
    _run(["--data", study, "--models", *MODELS, *SKIPPED, "--recipe", "budget", "--epochs", 1, "--out", compared,
          "--verbose", 0, "--resume"])
    out = capsys.readouterr().out
    assert f"{MODELS[0]} seed 0: finished before, not retrained" in out
    assert f"{MODELS[1]} seed 0: training" in out
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # no checkpoint rewritten, the first result kept
    assert (second / "result.json").is_file()
    state = json.loads((second / "state.json").read_text())
    assert state["epoch"] == 1


def test_resume_refuses_other_settings(study, compared):
    line = error_line(compare_models.main, ["--data", str(study), "--models", MODELS[0], "--recipe", "budget",
                                            "--epochs", "2", "--out", str(compared), "--resume"])
    assert line.startswith("error: ") and "epochs" in line


def _bad_inputs(study, tmp_path):
    odd = tmp_path / "odd"  # a fingernail study of 24x24 images: 24 is not a multiple of 16
    odd.mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("test", 2)):
        np.save(odd / f"x_{part}.npy", rng.integers(0, 256, (n, 24, 24, 3), dtype=np.uint8))
        np.save(odd / f"y_{part}.npy", rng.integers(0, 2, (n, 24, 24, 1), dtype=np.uint8))
    (odd / "split.json").write_text(json.dumps({"datasets": ["own"]}))
    labels = tmp_path / "labels"  # a 32x32 study whose masks hold three labels
    labels.mkdir()
    for part, n in (("train", 6), ("test", 2)):
        np.save(labels / f"x_{part}.npy", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
        np.save(labels / f"y_{part}.npy", rng.integers(0, 3, (n, 32, 32, 1), dtype=np.uint8))
    (labels / "split.json").write_text(json.dumps({"datasets": ["own"]}))
    common = ["--recipe", "budget", "--epochs", "1"]
    return {
        "unknown model": (["--data", study, "--models", "unet_9000", *common], "unet_9000"),
        "no prepared dataset": (["--data", tmp_path, "--models", MODELS[0], *common], "no prepared dataset"),
        "missing folder": (["--data", tmp_path / "nowhere", "--models", MODELS[0], *common], "no such folder"),
        "repeats 0": (["--data", study, "--models", MODELS[0], *common, "--repeats", "0"], "--repeats"),
        "epochs 0": (["--data", study, "--models", MODELS[0], "--recipe", "budget", "--epochs", "0"], "--epochs"),
        "minutes 0": (["--data", study, "--models", MODELS[0], "--recipe", "budget", "--minutes", "0"], "--minutes"),
        "size does not fit": (["--data", odd, "--models", "bcdu_net_d1", MODELS[0], *common], "divisible by 16"),
        "unknown task": (["--data", study, "--task", "nothing", "--models", MODELS[0], *common], "--task"),
        "only skipped models": (["--data", study, "--models", "tdsnet", *common], "none of them"),
        "multi-class masks": (["--data", labels, "--models", MODELS[0], *common], "labels up to 2"),
    }


@pytest.mark.parametrize("case", ["unknown model", "no prepared dataset", "missing folder", "repeats 0", "epochs 0",
                                  "minutes 0", "size does not fit", "unknown task", "only skipped models",
                                  "multi-class masks"])
def test_bad_input_one_line_nothing_written(study, tmp_path, case):
    argv, expected = _bad_inputs(study, tmp_path)[case]
    out = tmp_path / "out"
    line = error_line(compare_models.main, [str(a) for a in argv] + ["--out", str(out)])
    assert line.startswith("error: ") and expected in line
    assert not out.exists()
    assert not (study / "comparison").exists()


def test_paper_recipes_from_the_descriptors():
    """--recipe paper: each model with its own task's recipe (values of the specs, not read from the code)."""
    from fingernail import task as fingernail

    args = compare_models.build_parser().parse_args(["--data", "x"])
    compare_models.check_options(args)
    nail = compare_models.recipe_for("unet2d_8_128", fingernail, args)  # fingernail.md section 3
    assert (nail["lr"], nail["loss"], nail["batch_size"], nail["epochs"], nail["lr_decay"]) == \
        (1e-5, "bce_dice_pixel", 2, 220, 1.99e-7)
    assert nail["monitor"] == "val_dice" and nail["shuffle"] is False
    bcdu = compare_models.recipe_for("bcdu_net_d3", fingernail, args)  # bcdu_net.md 5.1, train_isic18.py
    assert (bcdu["lr"], bcdu["loss"], bcdu["batch_size"], bcdu["epochs"]) == (1e-4, "binary_crossentropy", 8, 100)
    assert bcdu["reduce_lr"]["factor"] == 0.1 and bcdu["reduce_lr"]["patience"] == 7
    nerve = compare_models.recipe_for("nerve_unet", fingernail, args)  # ultrasound_nerve.md
    assert (nerve["lr"], nerve["loss"], nerve["batch_size"], nerve["epochs"]) == (1e-5, "dice_coef_loss", 32, 20)
    capped = compare_models.build_parser().parse_args(["--data", "x", "--epochs", "3"])
    assert compare_models.recipe_for("nerve_unet", fingernail, capped)["epochs"] == 3
    budget = compare_models.build_parser().parse_args(["--data", "x", "--recipe", "budget", "--minutes", "5"])
    compare_models.check_options(budget)
    r = compare_models.recipe_for("nerve_unet", fingernail, budget)
    assert r["minutes"] == 5 and r["loss"] == "bce_dice_image" and r["epochs"] >= 1000


def test_nerve_load_prepared_kaggle_layout(tmp_path):
    """Kaggle layout: test = the last 20 % of the frames, val = the last 20 % of the rest; frames at 96x96,
    masks 0/1, mean/std over train + val."""
    import cv2

    from ultrasound_nerve import task

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (10, 42, 58), dtype=np.uint8)
    masks = np.zeros_like(imgs)
    masks[:, 10:30, 20:40] = 255
    np.save(tmp_path / "imgs_train.npy", imgs)
    np.save(tmp_path / "imgs_mask_train.npy", masks)
    assert task.is_prepared(tmp_path)
    data = task.load_prepared(tmp_path)
    assert [len(data[p][0]) for p in ("train", "val", "test")] == [6, 2, 2]
    ref = np.stack([cv2.resize(i.astype(np.float64), (96, 96), interpolation=cv2.INTER_LINEAR) for i in imgs])
    ref = ref.astype(np.uint8)[..., None]
    np.testing.assert_array_equal(np.concatenate([data["train"][0], data["val"][0], data["test"][0]]), ref)
    assert data["stats"]["mean"] == pytest.approx(ref[:8].mean())
    assert data["stats"]["std"] == pytest.approx(ref[:8].std())
    assert set(np.unique(data["test"][1])) == {0, 1} and data["test"][1].shape == (2, 96, 96, 1)


def test_nerve_load_prepared_split_json(tmp_path):
    """Own data (split.json with counts): train, val from imgs_train.npy, test with imgs_mask_test_true.npy."""
    from ultrasound_nerve import task

    rng = np.random.default_rng(1)
    np.save(tmp_path / "imgs_train.npy", rng.integers(0, 256, (7, 32, 32), dtype=np.uint8))
    np.save(tmp_path / "imgs_mask_train.npy", np.zeros((7, 32, 32), np.uint8))
    np.save(tmp_path / "imgs_test.npy", rng.integers(0, 256, (3, 32, 32), dtype=np.uint8))
    np.save(tmp_path / "imgs_mask_test_true.npy", np.full((3, 32, 32), 255, np.uint8))
    (tmp_path / "split.json").write_text(json.dumps({"counts": {"train": 5, "val": 2, "test": 3}}))
    data = task.load_prepared(tmp_path, img_size=32)
    assert [len(data[p][0]) for p in ("train", "val", "test")] == [5, 2, 3]
    assert data["test"][1].min() == 1
    (tmp_path / "imgs_mask_test_true.npy").unlink()
    with pytest.raises(ValueError, match="imgs_mask_test_true"):
        task.load_prepared(tmp_path, img_size=32)


def test_skin_lesion_load_prepared(tmp_path):
    from skin_lesion import task

    rng = np.random.default_rng(2)
    for part, n in (("train", 4), ("val", 2), ("test", 3)):
        np.save(tmp_path / f"data_{part}.npy", rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8))
        np.save(tmp_path / f"mask_{part}.npy", rng.integers(0, 256, (n, 16, 16), dtype=np.uint8))
    assert task.is_prepared(tmp_path) and compare_models.find_task(tmp_path).NAME == "skin_lesion"
    data = task.load_prepared(tmp_path)
    raw = np.load(tmp_path / "mask_test.npy")
    np.testing.assert_array_equal(data["test"][1][..., 0], (raw >= 128).astype(np.uint8))
    x = np.load(tmp_path / "data_val.npy")
    low, high = x.reshape(2, -1).min(1), x.reshape(2, -1).max(1)
    ref = (x - low[:, None, None, None]) / (high - low)[:, None, None, None] * 255.0  # dataset_normalized
    np.testing.assert_allclose(task.prepared_input(x), ref, rtol=1e-5, atol=1e-3)


def test_minutes_budget_stops_after_the_epoch_that_reaches_it(study, tmp_path):
    """--minutes: the run ends after the epoch in which the budget is used up (here the first), and the time
    is kept in state.json for --resume."""
    out = tmp_path / "minutes"
    _run(["--data", study, "--models", MODELS[0], "--recipe", "budget", "--minutes", "0.001", "--out", out,
          "--verbose", 0])
    row = json.loads((out / "comparison.json").read_text())["rows"][0]
    assert row["epochs_run"] == 1
    state = json.loads((out / "runs" / MODELS[0] / "seed0" / "state.json").read_text())
    assert state["epoch"] == 1 and state["callbacks"]["TimeBudget"]["elapsed"] == pytest.approx(row["train_seconds"])
    assert "0.001 min" in (out / "comparison.md").read_text()


def test_paper_number_only_for_the_real_dataset1(compared):
    """The paper's dataset-1 Dice stands beside ours only for prepare_data.py's dataset1 of 192 labelled photos."""
    from fingernail import task as fingernail
    from skin_lesion import task as skin

    real = {"info": {"datasets": ["dataset1"], "train": ["a"] * 172, "test": ["b"] * 20}}
    assert compare_models.study_of(fingernail, real) == "dataset1"
    assert compare_models.PAPER[("fingernail", "dataset1", "unet2d_res_srnn_32_512")] == 0.932680  # spec section 5
    for other in ({"info": {"datasets": ["dataset1"], "train": ["a"] * 9, "test": ["b"] * 3}},
                  {"info": {**real["info"], "counts": {"train": 150, "val": 22, "test": 20}}}):
        assert compare_models.study_of(fingernail, other) is None
    assert compare_models.study_of(skin, real) is None
    rows = json.loads((compared / "comparison.json").read_text())["rows"]
    assert all(r["paper_dice"] is None for r in rows)  # the synthetic study is not the paper's


def test_fingernail_own_data_uses_split_json_val_part(tmp_path):
    """Own photos through prepare_data.py --images/--masks --val-fraction: load_prepared's val part is the last
    counts.val cases of x_train.npy (train then val) and its test part x_test.npy, as split.json says."""
    from PIL import Image

    from fingernail import prepare_data
    from fingernail import task as fingernail

    rng = np.random.default_rng(3)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        mask = np.zeros((40, 48), np.uint8)
        mask[10:20, 10 + i:20 + i] = 255
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "masks" / f"img{i}.png")
    (tmp_path / "images").mkdir()
    for p in tmp_path.glob("img*.png"):
        p.rename(tmp_path / "images" / p.name)
    prepare_data.main(["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--work-dir",
                       str(tmp_path / "work"), "--rows", "32", "--cols", "32", "--val-fraction", "0.2",
                       "--test-fraction", "0.2", "--quiet"])
    folder = tmp_path / "work" / "own"
    split = json.loads((folder / "split.json").read_text())
    assert compare_models.find_task(folder).NAME == "fingernail"
    data = fingernail.load_prepared(folder)
    counts = split["counts"]
    assert [len(data[p][0]) for p in ("train", "val", "test")] == [counts["train"], counts["val"], counts["test"]]
    x_train = np.load(folder / "x_train.npy")
    np.testing.assert_array_equal(data["val"][0], x_train[counts["train"]:])
    np.testing.assert_array_equal(data["test"][1], np.load(folder / "y_test.npy"))
    assert compare_models.study_of(fingernail, data) is None


def _per_image_dice(truth, pred):
    return [_dice(t, p) for t, p in zip(truth, pred)]


def test_lung_prepared_data_compared_on_the_around_lung_target(tmp_path):
    """lung: prepare_data.py's slices and around-lung targets; validation = the last 20 % (the original's
    validation_split); the saved masks are the checkpoint's predictions on data_test / 255 and the Dice is that of
    Test_maska (NumPy)."""
    import keras

    from common.data.synthetic import write_lung_dataset
    from lung import prepare_data
    from lung import task as lung

    write_lung_dataset(tmp_path / "raw", n_volumes=3, n_slices=6, size=16, n_empty=1, seed=2)
    work = tmp_path / "work"
    prepare_data.main(["--data-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--slice-size", "16",
                       "--erosion-size", "3", "--fill-size", "3", "--quiet"])
    data = lung.load_prepared(work)
    x, y = np.load(work / "data_train.npy"), np.load(work / "Train_maska.npy")
    n_val = len(x) - int(np.floor(len(x) * 0.8))
    np.testing.assert_array_equal(data["train"][0][..., 0], x[:len(x) - n_val])
    np.testing.assert_array_equal(data["val"][1][..., 0], y[len(x) - n_val:])
    np.testing.assert_array_equal(data["test"][1][..., 0], np.load(work / "Test_maska.npy"))
    assert "around-lung" in data["split"]
    out = tmp_path / "cmp"
    assert _run(["--data", work, "--models", MODELS[0], "--recipe", "budget", "--epochs", 1, "--out", out,
                 "--verbose", 0]) == 0
    run = out / "runs" / MODELS[0] / "seed0"
    model = keras.models.load_model(run / "best.keras")
    test_x, truth = np.load(work / "data_test.npy"), np.load(work / "Test_maska.npy")
    prob = model.predict(test_x[..., None].astype(np.float32) / 255.0, verbose=0)[..., 0]
    np.testing.assert_allclose(compare_models.predict(model, data["test"][0], lung, {})[0], prob, atol=1e-6)
    expected = prob >= 0.5
    pred = np.load(run / "test_pred.npy")
    np.testing.assert_array_equal(pred, expected.astype(np.uint8))
    result = json.loads((run / "result.json").read_text())["per_image"]["dice"]
    np.testing.assert_allclose(result, _per_image_dice(truth, pred), equal_nan=True)
    assert "around-lung region" in (out / "comparison.md").read_text()


def test_retina_vessel_patches_train_and_whole_test_images_score(tmp_path):
    """retina_vessel: train / val = save_patch.py's patches (the last 20 % validate), test = the whole prepared
    test images: the saved masks are the checkpoint's weights in a network built here at the padded image size,
    on my_PreProc of the test images, 0 outside the FOV, >= 0.5; Dice against the ground truth / 255 (NumPy)."""
    import h5py
    import keras

    from common.data.preprocess import my_preproc
    from common.data.synthetic import write_drive_dataset
    from common.models import build_model
    from retina_vessel import prepare_datasets_DRIVE as prep
    from retina_vessel import save_patch
    from retina_vessel import task as retina

    write_drive_dataset(tmp_path / "raw", n_train=4, n_test=2, shape=(40, 36), seed=1)
    work = tmp_path / "work"
    prep.main(["--drive-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--n-train", "4", "--n-test", "2",
               "--height", "40", "--width", "36", "--quiet"])
    save_patch.main(["--work-dir", str(work), "--patch", "16", "--n-patches", "40", "--quiet"])
    data = retina.load_prepared(work)
    assert len(data["train"][0]) == 32 and len(data["val"][0]) == 8  # validation_split 0.2 of 40 patches
    out = tmp_path / "cmp"
    assert _run(["--data", work, "--models", MODELS[0], "--recipe", "budget", "--epochs", 1, "--out", out,
                 "--verbose", 0]) == 0
    run = out / "runs" / MODELS[0] / "seed0"

    def hdf5(kind):
        with h5py.File(prep.hdf5_path(work, kind, "test"), "r") as f:
            return f["image"][()].transpose(0, 2, 3, 1)

    imgs, truth, fov = hdf5("imgs"), hdf5("groundTruth")[..., 0] / 255.0, hdf5("borderMasks")[..., 0] > 0
    padded = build_model(MODELS[0], (48, 48, 1))  # 40x36 -> the next multiples of 16
    padded.set_weights(keras.models.load_model(run / "best.keras").get_weights())
    x = np.pad(my_preproc(imgs), ((0, 0), (0, 8), (0, 12), (0, 0)))
    prob = padded.predict(x, verbose=0)[:, :40, :36, 0]
    trained = keras.models.load_model(run / "best.keras")  # the whole-image rule, before the threshold
    np.testing.assert_allclose(compare_models.predict(trained, data["test"][0], retina, {}, model_name=MODELS[0])[0],
                               prob, atol=1e-5)
    expected = ((prob * fov) >= 0.5).astype(np.uint8)
    pred = np.load(run / "test_pred.npy")
    np.testing.assert_array_equal(pred, expected)
    result = json.loads((run / "result.json").read_text())["per_image"]["dice"]
    np.testing.assert_allclose(result, _per_image_dice(truth, pred), equal_nan=True)
    assert "whole test images" in (out / "comparison.md").read_text()


def test_retinal_edema_data_is_refused_in_one_line(tmp_path):
    """gen_image.py's folders (data dir or list dir) are recognised and refused with the reason, before anything
    is written."""
    (tmp_path / "data" / "Edema_trainingset" / "trans3channel_images").mkdir(parents=True)
    (tmp_path / "lists").mkdir()
    for name in ("train_images.txt", "info.json"):
        (tmp_path / "lists" / name).write_text("")
    for folder in ("data", "lists"):
        line = error_line(compare_models.main, ["--data", str(tmp_path / folder), "--models", MODELS[0]])
        assert line.startswith(f"error: {tmp_path / folder}: a prepared retinal_edema dataset: its prepared data are "
                               f"3-slice OCT stacks with 4-class lesion label maps"), line
        assert not (tmp_path / folder / "comparison").exists()
    line = error_line(compare_models.main, ["--data", str(tmp_path / "data"), "--task", "retinal_edema"])
    assert line.startswith("error: --task: retinal_edema: its prepared data are 3-slice OCT stacks"), line


def test_robotic_scene_data_is_refused_in_one_line(tmp_path):
    """robotic_scene/prepare.py's output (its --work-dir and its cropted_train/) is recognised and refused with the
    reason (12-class maps for the multi-task TDSNet), exit 2, before anything is written."""
    from common.data.synthetic import write_robotic_scene_dataset
    from robotic_scene import prepare

    write_robotic_scene_dataset(tmp_path / "raw", prepare.CLASS_COLOURS, {1: 0, 2: 1}, 1, (32, 64), seed=0)
    prepare.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(tmp_path / "work"), "--height", "32",
                  "--width", "64", "--quiet"])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    reason = ("its prepared data are EndoVis frames with 12-class label maps for TDSNet, a multi-task network "
              "(segmentation + instrument classes + surgical scene); compare_models.py compares binary segmentation "
              "models, which cannot take 12-class maps: train and score TDSNet with robotic_scene/train.py and "
              "test.py")
    for folder in (tmp_path / "work", tmp_path / "work" / "cropted_train"):
        assert error_line(compare_models.main, ["--data", str(folder), "--models", MODELS[0]]) == \
            f"error: {folder}: a prepared robotic_scene dataset: {reason}"
    assert error_line(compare_models.main, ["--data", str(tmp_path / "work"), "--task", "robotic_scene", "--out",
                                            str(tmp_path / "cmp")]) == f"error: --task: robotic_scene: {reason}"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_lung_keep_labels_data_is_refused_in_one_line(tmp_path):
    """A lung folder of label-map targets (prepare_data.py --keep-labels; here written as it writes them) is read
    by lung's load_prepared and refused by the binary check, naming the labels, exit 2, nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("train", 10), ("test", 3)):
        np.save(work / f"data_{part}.npy", rng.uniform(0, 255, (n, 16, 16)).astype(np.float32))
        np.save(work / f"{part.capitalize()}_maska.npy", rng.integers(0, 3, (n, 16, 16)).astype(np.uint8))
    (work / "split.json").write_text(json.dumps({"n_val": 2, "num_classes": 3, "target": "labels"}))
    assert error_line(compare_models.main, ["--data", str(work), "--models", MODELS[0], "--out",
                                            str(tmp_path / "cmp")]) == (
        f"error: {work}: the train masks hold labels up to 2; compare_models.py compares binary segmentation: "
        f"prepare the data with one foreground (--foreground; not --keep-labels)")
    assert not (tmp_path / "cmp").exists()


def test_lung_load_prepared_own_split(tmp_path):
    """Own lung data: split.json's n_val last training slices validate (train_lung.py's rule), not the last 20 %."""
    from lung import task as lung

    rng = np.random.default_rng(0)
    for part, n in (("train", 10), ("test", 3)):
        np.save(tmp_path / f"data_{part}.npy", rng.random((n, 16, 16)).astype(np.float32) * 255)
        np.save(tmp_path / f"{part.capitalize()}_maska.npy", rng.integers(0, 2, (n, 16, 16), dtype=np.uint8))
    (tmp_path / "split.json").write_text(json.dumps({"n_val": 4}))
    data = lung.load_prepared(tmp_path)
    x = np.load(tmp_path / "data_train.npy")
    assert (len(data["train"][0]), len(data["val"][0]), len(data["test"][0])) == (6, 4, 3)
    np.testing.assert_array_equal(data["val"][0][..., 0], x[6:])
    np.testing.assert_allclose(lung.prepared_input(data["val"][0][:1]), x[6:7, ..., None] / 255.0, rtol=1e-6)
    assert compare_models.find_task(tmp_path).NAME == "lung"
