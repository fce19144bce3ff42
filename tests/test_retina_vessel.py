"""The retina_vessel task (specs/bcdu_net.md §3.2, §4, §5): DRIVE HDF5 files, patches, FOV scoring, predictors,
the scripts end to end on tiny synthetic DRIVE data, one-image mode and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from common.cli import REPO_ROOT
from common.data.io import DataLayoutError, ImageReadError, read_image, write_image
from common.data.preprocess import my_preproc
from common.data.synthetic import write_drive_dataset
from common.errors import UserError
from common.metrics import segmentation_scores
from retina_vessel import evaluate, prepare_datasets_DRIVE as prep, save_patch, train_retina

H, W = 40, 32  # tiny "DRIVE": taller than wide like 584 x 565, so the training crop is rows 4:36


def _drive(tmp_path, n_train=3, n_test=2, seed=0):
    write_drive_dataset(tmp_path / "DRIVE", n_train, n_test, (H, W), seed=seed)
    return tmp_path / "DRIVE"


def _prepare(drive, work, n_train=3, n_test=2):
    return prep.main(["--drive-dir", str(drive), "--work-dir", str(work), "--n-train", str(n_train),
                      "--n-test", str(n_test), "--height", str(H), "--width", str(W), "--quiet"])


def test_hdf5_files_have_the_original_names_keys_shapes_and_dtypes(tmp_path):
    import h5py

    drive = _drive(tmp_path)
    _prepare(drive, tmp_path / "work")
    folder = tmp_path / "work" / "DRIVE_datasets_training_testing"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"DRIVE_dataset_{k}_{s}.hdf5" for k in ("imgs", "groundTruth", "borderMasks") for s in ("train", "test"))
    for split, n, folder_name, first in (("train", 3, "training", "21_training.tif"),
                                         ("test", 2, "test", "01_test.tif")):
        for kind, channels in (("imgs", 3), ("groundTruth", 1), ("borderMasks", 1)):
            with h5py.File(folder / f"DRIVE_dataset_{kind}_{split}.hdf5", "r") as f:
                assert list(f.keys()) == ["image"]
                array = f["image"][()]
            assert array.shape == (n, channels, H, W) and array.dtype == np.float64
            if kind == "imgs":  # channels first, the RGB values of the TIFF, sorted order
                rgb = read_image(drive / folder_name / "images" / first, "rgb")
                np.testing.assert_array_equal(array[0], rgb.transpose(2, 0, 1))
            else:
                assert set(np.unique(array)) <= {0.0, 255.0} and array.max() == 255
    imgs, truth, fov = prep.load_split(tmp_path / "work", "test")
    assert imgs.shape == (2, H, W, 3) and truth.shape == fov.shape == (2, H, W, 1)


def test_bad_drive_folders_raise_one_line_errors_naming_the_file(tmp_path):
    drive = _drive(tmp_path)
    work = tmp_path / "work"
    with pytest.raises(DataLayoutError, match=r"training/images: expected 20 images, found 3"):
        prep.main(["--drive-dir", str(drive), "--work-dir", str(work), "--quiet"])
    with pytest.raises(ImageReadError, match=r"21_training\.tif: expected 584x565"):
        prep.main(["--drive-dir", str(drive), "--work-dir", str(work), "--n-train", "3", "--n-test", "2", "--quiet"])
    gif = drive / "test" / "1st_manual" / "02_manual1.gif"
    write_image(gif, np.full((H, W), 128, np.uint8))
    with pytest.raises(ImageReadError, match=r"02_manual1\.gif: expected only the values 0 and 255"):
        _prepare(drive, work)
    gif.unlink()
    with pytest.raises(ImageReadError, match=r"02_manual1\.gif: file not found"):
        _prepare(drive, work)
    path = drive / "test" / "images" / "02_test.tif"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageReadError, match=r"02_test\.tif: cannot decode"):
        _prepare(drive, work)
    assert not work.exists() or not any(work.rglob("*.hdf5"))  # nothing written when a test file is bad
    result = subprocess.run([sys.executable, str(REPO_ROOT / "retina_vessel" / "prepare_datasets_DRIVE.py"),
                             "--drive-dir", str(tmp_path / "nothing"), "--work-dir", str(work)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    missing = tmp_path / "nothing" / "training" / "images"
    assert result.stderr.strip().splitlines()[-1] == f"error: {missing}: folder not found"


def test_save_patch_crops_samples_seeded_patches_and_writes_the_arrays(tmp_path):
    drive = _drive(tmp_path)
    work = tmp_path / "work"
    _prepare(drive, work)
    save_patch.main(["--work-dir", str(work), "--patch", "16", "--n-patches", "30", "--seed", "5", "--quiet"])
    before = {p.name: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="a prepared DRIVE dataset is already there.*--overwrite"):
        _prepare(drive, work)  # never replaced without --overwrite
    with pytest.raises(UserError, match="patches_imgs_train.npy: patches are already there.*--overwrite"):
        save_patch.main(["--work-dir", str(work), "--patch", "8", "--n-patches", "6", "--quiet"])
    assert {p.name: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before
    x = np.load(work / "patches_imgs_train.npy")
    y = np.load(work / "patches_masks_train.npy")
    assert x.shape == y.shape == (30, 16, 16, 1) and x.dtype == np.float32 and y.dtype == np.uint8
    assert set(np.unique(y)) <= {0, 1} and 0 <= x.min() and x.max() <= 1
    imgs, truth, _ = prep.load_split(work, "train")
    pre, masks = my_preproc(imgs)[:, 4:36], (truth[:, 4:36] / 255).astype(np.uint8)  # the crop 9:574 of DRIVE
    for k in range(30):  # every patch is a window of its own image (10 per image, in image order)
        i = k // 10
        windows = sliding_window_view(pre[i, ..., 0], (16, 16))
        hit = np.argwhere((windows == x[k, ..., 0]).all(axis=(2, 3)))
        assert len(hit)
        np.testing.assert_array_equal(y[k, ..., 0], masks[i, hit[0][0]:hit[0][0] + 16, hit[0][1]:hit[0][1] + 16, 0])
    first = x.copy()
    save_patch.main(["--work-dir", str(work), "--patch", "16", "--n-patches", "30", "--seed", "5", "--quiet",
                     "--overwrite"])
    np.testing.assert_array_equal(np.load(work / "patches_imgs_train.npy"), first)
    from common.errors import OptionError

    with pytest.raises(OptionError, match=r"--n-patches: 31 is not a multiple of the number of training images"):
        save_patch.main(["--work-dir", str(work), "--n-patches", "31", "--patch", "16", "--quiet", "--overwrite"])


def test_scores_count_only_fov_pixels_and_kill_border_zeroes_outside():
    truth = np.array([[[0, 255, 255], [0, 0, 255]]])
    prob = np.array([[[0.9, 0.8, 0.2], [0.1, 0.7, 0.6]]], np.float32)
    fov = np.array([[[0, 255, 255], [255, 255, 255]]])
    # inside the FOV: truth 1,1,0,0,1 ; prediction 1,0,0,1,1 -> TP 2, FN 1, FP 1, TN 1
    s = segmentation_scores(truth, prob, fov=fov, legacy=True, curves=True)
    assert s["confusion"] == [[1, 1], [1, 2]]
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(1 / 2)
    assert s["accuracy"] == pytest.approx(3 / 5) and s["f1"] == pytest.approx(4 / 6)
    assert s["js_legacy"] == s["accuracy"] and s["jaccard"] == pytest.approx(2 / 4)
    killed = evaluate.kill_border(prob, fov)
    assert killed[0, 0, 0] == 0 and killed[0, 1, 2] == np.float32(0.6)
    assert segmentation_scores(truth, killed, fov=fov)["auc"] == s["auc"]


def test_overlap_and_full_predictors_agree_for_a_pointwise_model():
    import keras

    from common.inference import predict_sliding_window, predict_whole

    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs))
    x = np.random.default_rng(0).random((2, 37, 29, 1)).astype(np.float32)
    overlap = predict_sliding_window(model, x, 16, 5, batch_size=8, chunk_size=50)
    full = predict_whole(model, x)  # 37 x 29 padded to 40 x 32, then cropped
    assert overlap.shape == full.shape == x.shape and overlap.dtype == np.float32
    np.testing.assert_allclose(overlap, full, atol=1e-6)
    np.testing.assert_allclose(full, 1 / (1 + np.exp(-(x * model.get_weights()[0][0, 0, 0, 0]
                                                       + model.get_weights()[1][0]))), atol=1e-5)


def test_bcdu_net_d3_for_drive_has_the_paper_parameter_count():
    from common.models import build_model

    assert build_model("bcdu_net_d3", (64, 64, 1)).count_params() == 20_659_717


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The pipeline run once on tiny synthetic DRIVE data: prepare, 16x16 patches, 2 epochs."""
    root = tmp_path_factory.mktemp("retina")
    drive = _drive(root, n_train=4, n_test=2, seed=1)
    work, run = root / "work", root / "run"
    _prepare(drive, work, n_train=4, n_test=2)
    save_patch.main(["--work-dir", str(work), "--patch", "16", "--n-patches", "160", "--quiet"])
    train_retina.main(["--work-dir", str(work), "--run-dir", str(run), "--epochs", "2", "--lr", "1e-3",
                       "--seed", "0", "--prior-bias", "--verbose", "0"])
    return {"drive": drive, "work": work, "run": run}


def test_end_to_end_training_lowers_the_loss_and_evaluation_writes_everything(trained):
    work, run = trained["work"], trained["run"]
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3
    losses = [float(line.split(",")[history[0].split(",").index("loss")]) for line in history[1:]]
    assert losses[1] < losses[0]
    state = json.loads((run / "state.json").read_text())
    assert state["settings"]["train"] == 128 and state["settings"]["validation"] == 32  # the last 20 %
    y = np.load(work / "patches_masks_train.npy")
    assert state["settings"]["prior_bias"] == pytest.approx(y[:128].mean())  # --prior-bias: training part only
    assert (run / "best.keras").is_file()
    for inference in ("overlap", "full"):
        out = work / inference
        evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--stride", "4", "--inference", inference,
                       "--out-dir", str(out), "--quiet"])
        row = json.loads((out / "performances.json").read_text())
        assert row[1]["method"].startswith("paper") and row[1]["AUC"] == 0.9788
        before = (out / "performances.json").read_bytes()
        with pytest.raises(UserError, match="already holds results; pass --overwrite"):
            evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out), "--quiet"])
        assert (out / "performances.json").read_bytes() == before  # the earlier result is kept
        assert list(row[0])[:len(evaluate.COLUMNS)] == list(evaluate.COLUMNS)  # the original columns first
        assert list(row[0])[len(evaluate.COLUMNS):] == ["HD95", "ASSD"]
        record = json.loads((out / "run.json").read_text())
        assert record["model"] == "bcdu_net_d3" and record["weights"][0]["path"].endswith("best.keras")
        assert 0.5 < row[0]["AUC"] <= 1
        details = json.loads((out / "details.json").read_text())[0]
        fov = prep.load_split(work, "test")[2]
        assert details["FOV pixels"] == int((fov > 0).sum()) == sum(map(sum, details["confusion [[TN, FP], [FN, TP]]"]))
        pred = np.load(out / "pred_imgs.npy")
        assert pred.shape == (2, H, W, 1) and pred.dtype == np.float32 and np.all(pred[fov == 0] == 0)
        for name in ("roc_pr.png", "sample_results.png", "paper.md", "performances.md"):
            assert (out / name).is_file()


def test_one_image_mode_returns_maps_of_the_input_size(trained, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (45, 37, 3), dtype=np.uint8)  # any size, not a multiple of anything
    fov = np.zeros((45, 37), np.uint8)
    fov[5:40, 4:30] = 255
    write_image(tmp_path / "eye.tif", image)
    write_image(tmp_path / "eye_fov.gif", fov)
    for inference in ("overlap", "full"):
        evaluate.main(["--run-dir", str(trained["run"]), "--image", str(tmp_path / "eye.tif"), "--fov",
                       str(tmp_path / "eye_fov.gif"), "--out-dir", str(tmp_path / inference), "--stride", "3",
                       "--inference", inference, "--quiet"])
        prob = np.load(tmp_path / inference / "eye_prob.npy")
        assert prob.shape == (45, 37) and prob.dtype == np.float32 and np.all(prob[fov == 0] == 0)
        mask = read_image(tmp_path / inference / "eye_mask.png")
        assert mask.shape == (45, 37) and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, prob >= 0.5)
        assert read_image(tmp_path / inference / "eye_prob.png").shape == (45, 37)
    with pytest.raises(ImageReadError, match=r"small_fov\.gif: expected 45x37"):
        write_image(tmp_path / "small_fov.gif", fov[:10])
        evaluate.main(["--run-dir", str(trained["run"]), "--image", str(tmp_path / "eye.tif"), "--fov",
                       str(tmp_path / "small_fov.gif"), "--quiet"])


def test_help_works_from_any_directory(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "retina_vessel" / "prepare_datasets_DRIVE.py"), "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "usage:" in result.stdout


@pytest.mark.parametrize("module", [save_patch, train_retina, evaluate, "demo", "predict"])
def test_every_script_has_help(module, capsys):
    if module == "demo":
        from retina_vessel import demo as module
    elif module == "predict":
        from retina_vessel import predict as module
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


# The original's settings, written from ../shared/specs/bcdu_net.md (§3.2 DRIVE preparation and patches, §4
# test-time inference, §5.1 training), NOT from the code: a silent change of a default fails here.
SPEC_DEFAULTS = {
    prep: {"n_train": 20, "n_test": 20, "height": 584, "width": 565},            # §3.2: 20 + 20, 584 x 565
    save_patch: {"patch": 64, "n_patches": 200_000, "inside_fov": False},        # §3.2: the FOV rule never applies
    train_retina: {"epochs": 50, "batch_size": 8, "lr": 1e-4, "val_split": 0.2,   # §5.1
                   "seed": None, "bidirectional": False, "prior_bias": False, "resume": False},
    evaluate: {"stride": 5, "batch_size": 16, "threshold": 0.5, "inference": "overlap", "weights": "best",
               "bidirectional": False, "prior_bias": False},                     # §4, §5.2 (score >= 0.5)
}


@pytest.mark.parametrize("module", list(SPEC_DEFAULTS), ids=lambda m: m.__name__.split(".")[-1])
def test_argparse_defaults_are_the_originals(module):
    defaults = vars(module.build_parser().parse_args([]))
    assert {k: defaults[k] for k in SPEC_DEFAULTS[module]} == SPEC_DEFAULTS[module]


def test_training_recipe_constants_are_the_originals():
    import keras

    from common.models import build_model

    # §5.1: ReduceLROnPlateau(val_loss, factor 0.1, patience 7, epsilon (= min_delta) 1e-4, cooldown 0, min_lr 0)
    assert train_retina.REDUCE_LR == {"factor": 0.1, "patience": 7, "min_delta": 1e-4, "cooldown": 0, "min_lr": 0.0}
    # Adam(lr=1e-4) of Keras 2: beta_1 0.9, beta_2 0.999, epsilon K.epsilon() = 1e-7; binary cross-entropy
    inputs = keras.Input((8, 8, 1))
    model = train_retina.compile_model(keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs)))
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.Adam) and float(opt.learning_rate) == pytest.approx(1e-4)
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.amsgrad) == (0.9, 0.999, 1e-7, False)
    assert model.loss == "binary_crossentropy"
    assert train_retina.MODEL == "bcdu_net_d3" and build_model  # §5.1 model BCDU_net_D3 (64, 64, 1)


def test_every_variant_has_its_own_default_run_and_result_folders():
    names = {train_retina.run_name(b, p) for b in (False, True) for p in (False, True)}
    assert names == {"bcdu_net_d3", "bcdu_net_d3_bidirectional", "bcdu_net_d3_prior_bias",
                     "bcdu_net_d3_bidirectional_prior_bias"}
    assert train_retina.default_run_dir() == train_retina.DEFAULT_RUN  # the faithful run keeps its folder
    for flags, name in (([], "bcdu_net_d3"), (["--bidirectional"], "bcdu_net_d3_bidirectional"),
                        (["--prior-output-bias"], "bcdu_net_d3_prior_bias"),
                        (["--epochs", "50", "--lr", "1e-4", "--batch-size", "8"], "bcdu_net_d3"),  # the defaults
                        (["--epochs", "10", "--lr", "1e-3", "--seed", "3"], "bcdu_net_d3_e10_lr0.001_seed3"),
                        (["--batch-size", "16", "--val-split", "0.1", "--mixed-precision", "float16",
                          "--init-weights", "x/weight_lstm.hdf5"],
                         "bcdu_net_d3_b16_val0.1_init-weight_lstm_mp-float16")):
        args = train_retina.build_parser().parse_args(flags)
        assert train_retina.default_run_dir(
            args.bidirectional, args.prior_bias, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            val_split=args.val_split, seed=args.seed, init_weights=args.init_weights,
            mixed_precision=args.mixed_precision).name == name


def _fails(main, argv, capsys, pattern):
    """``main(argv)`` through ``common.cli.run`` exits 2 with one ``error:`` line matching ``pattern``."""
    import re

    from common import cli

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert re.fullmatch(pattern, err.strip().splitlines()[-1]), err


def test_every_script_refuses_a_bad_option_and_a_bad_file_in_one_line(trained, tmp_path, capsys):
    work, run = str(trained["work"]), str(trained["run"])
    drive = _drive(tmp_path / "bad", n_train=3, n_test=2)
    # prepare_datasets_DRIVE.py
    _fails(prep.main, ["--drive-dir", str(drive), "--n-train", "0", "--quiet"], capsys, r"error: --n-train: 0 must .*")
    tif = drive / "training" / "images" / "22_training.tif"
    tif.write_bytes(tif.read_bytes()[:300])
    _fails(prep.main, ["--drive-dir", str(drive), "--work-dir", str(tmp_path / "w"), "--n-train", "3", "--n-test",
                       "2", "--height", str(H), "--width", str(W), "--quiet"], capsys,
           r"error: .*22_training\.tif: cannot decode.*")
    # save_patch.py
    _fails(save_patch.main, ["--work-dir", work, "--patch", "16", "--n-patches", "7", "--quiet", "--overwrite"], capsys,
           r"error: --n-patches: 7 is not a multiple of the number of training images \(4\)")
    bad_work = tmp_path / "badwork" / prep.HDF5_DIR
    bad_work.mkdir(parents=True)
    for kind in prep.KINDS:
        (bad_work / f"DRIVE_dataset_{kind}_train.hdf5").write_bytes(b"not an HDF5 file")
    _fails(save_patch.main, ["--work-dir", str(bad_work.parent), "--quiet"], capsys,
           r"error: .*DRIVE_dataset_imgs_train\.hdf5: not a DRIVE HDF5 file.*")
    # train_retina.py: a bad option, an existing run, mismatched patch files
    _fails(train_retina.main, ["--work-dir", work, "--run-dir", str(tmp_path / "r"), "--val-split", "1.5"], capsys,
           r"error: --val-split: 1\.5 must lie strictly between 0 and 1")
    _fails(train_retina.main, ["--work-dir", work, "--run-dir", run], capsys,
           rf"error: {run}: holds a run of 2 epochs \(best val_loss .*\); pass --resume to continue it, --overwrite "
           r"to replace it, or another --run-dir")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / save_patch.IMGS_FILE, np.zeros((10, 16, 16, 1), np.float32))
    np.save(mixed / save_patch.MASKS_FILE, np.zeros((12, 16, 16, 1), np.uint8))
    _fails(train_retina.main, ["--work-dir", str(mixed), "--run-dir", str(tmp_path / "r2")], capsys,
           r"error: .*patches_masks_train\.npy: shape \(12, 16, 16, 1\) does not match the images "
           r"\(10, 16, 16, 1\).*")
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2" / "best.keras").exists()
    # evaluate.py: a bad option, a corrupt checkpoint
    _fails(evaluate.main, ["--work-dir", work, "--run-dir", run, "--stride", "0"], capsys,
           r"error: --stride: 0 must be at least 1")
    broken = tmp_path / "broken_run"
    broken.mkdir()
    (broken / "best.keras").write_bytes(b"garbage")
    _fails(evaluate.main, ["--work-dir", work, "--run-dir", str(broken), "--out-dir", str(tmp_path / "e")], capsys,
           r"error: .*best\.keras: cannot load the model.*")
    assert not (tmp_path / "e").exists()


def _eyes(folder, sizes=((45, 37), (30, 52))):
    """Synthetic fundus photos of several sizes and formats with FOV masks named the DRIVE way."""
    rng = np.random.default_rng(5)
    (folder / "images").mkdir(parents=True)
    (folder / "fov").mkdir()
    names = []
    for k, (h, w) in enumerate(sizes):
        name = f"eye{k}.tif" if k % 2 == 0 else f"eye{k}.png"
        write_image(folder / "images" / name, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        fov = np.zeros((h, w), np.uint8)
        fov[3:h - 3, 2:w - 4] = 255
        write_image(folder / "fov" / f"eye{k}_mask.gif", fov)
        names.append(name)
    return names


def test_predict_writes_masks_of_each_input_size_and_run_json(trained, tmp_path):
    from retina_vessel import predict

    names = _eyes(tmp_path)
    out = tmp_path / "out"
    status = predict.main([str(tmp_path / "images"), "--fov-dir", str(tmp_path / "fov"), "--run-dir",
                           str(trained["run"]), "--out-dir", str(out), "--save-probabilities", "--overlay",
                           "--quiet"])
    assert status == 0
    stems = [n.rsplit(".", 1)[0] for n in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_{k}" for s in stems for k in ("prob.png", "mask.png", "prob.npy", "overlay.png")] + ["run.json"])
    for stem, (h, w) in zip(stems, ((45, 37), (30, 52))):
        prob = np.load(out / f"{stem}_prob.npy")
        fov = read_image(tmp_path / "fov" / f"{stem}_mask.gif")
        assert prob.shape == (h, w) and prob.dtype == np.float32 and np.all(prob[fov == 0] == 0)
        mask = read_image(out / f"{stem}_mask.png")
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, prob >= 0.5)
        np.testing.assert_array_equal(read_image(out / f"{stem}_prob.png"), np.rint(prob * 255).astype(np.uint8))
        assert read_image(out / f"{stem}_overlay.png", "rgb").shape == (h, 2 * w, 3)
    record = json.loads((out / "run.json").read_text())
    assert record["model"] == "bcdu_net_d3" and len(record["weights"][0]["sha256"]) == 64
    assert sorted(Path(p).name for p in record["inputs"]) == sorted(names)
    # the full pass of predict = evaluate's full inference of the same image; flips are a different mean
    from common.data.preprocess import my_preproc

    model, _ = evaluate.load_model(trained["run"])
    rgb = read_image(tmp_path / "images" / names[1], "rgb")
    direct = evaluate.segment(model, my_preproc(rgb[None]), "full")[0, ..., 0]
    fov = read_image(tmp_path / "fov" / "eye1_mask.gif") > 0
    np.testing.assert_allclose(np.load(out / "eye1_prob.npy")[fov], direct[fov], atol=1e-6)
    # existing outputs are kept without --overwrite
    with pytest.raises(UserError, match="already exists"):
        predict.main([str(tmp_path / "images"), "--run-dir", str(trained["run"]), "--out-dir", str(out), "--quiet"])


def test_predict_refuses_empty_folders_corrupt_files_and_unmatched_fov(trained, tmp_path, capsys):
    from retina_vessel import predict

    _eyes(tmp_path)
    run = str(trained["run"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: no input files"):
        predict.main([str(tmp_path / "empty"), "--run-dir", run, "--out-dir", str(tmp_path / "o1"), "--quiet"])
    bad = tmp_path / "images" / "eye1.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(ImageReadError, match=r"eye1\.png"):
        predict.main([str(tmp_path / "images"), "--run-dir", run, "--out-dir", str(tmp_path / "o2"), "--quiet"])
    assert not any((tmp_path / "o2").glob("eye1*"))  # nothing for the bad input (eye0, before it, is written)
    assert predict.main([str(tmp_path / "images"), "--run-dir", run, "--out-dir", str(tmp_path / "o3"),
                         "--skip-bad", "--quiet"]) == 1
    assert sorted(p.name for p in (tmp_path / "o3").iterdir()) == ["eye0_mask.png", "eye0_prob.png", "run.json"]
    (tmp_path / "fov" / "eye0_mask.gif").unlink()
    with pytest.raises(UserError, match=r"eye0\.tif: no FOV mask named eye0_mask\.<ext> or eye0\.<ext>"):
        predict.main([str(tmp_path / "images" / "eye0.tif"), "--fov-dir", str(tmp_path / "fov"), "--run-dir", run,
                      "--out-dir", str(tmp_path / "o4"), "--quiet"])
    assert not (tmp_path / "o4").exists()
    _fails(predict.main, [str(tmp_path / "images"), "--run-dir", run, "--out-dir", str(tmp_path / "o5"),
                          "--fov", "a.gif", "--fov-dir", str(tmp_path / "fov")], capsys, r"error: --fov/--fov-dir: .*")
    garbage = tmp_path / "weight_lstm.hdf5"
    garbage.write_bytes(b"not HDF5")
    _fails(predict.main, [str(tmp_path / "images"), "--init-weights", str(garbage), "--out-dir", str(tmp_path / "o6")],
           capsys, r"error: .*weight_lstm\.hdf5: .*")
    assert not (tmp_path / "o6").exists()


def test_the_demo_passes_only_when_the_thresholded_mask_is_good_too():
    from common import cli
    from retina_vessel import demo

    base = {"metric": "FOV scores", "pass": demo.PASS_AUC, "checks": demo.CHECKS, "seconds": 1.0}
    assert dict(demo.CHECKS) == {"auc": 0.85, "f1": 0.6}
    ok, line = cli.demo_line("retina_vessel", dict(base, auc=0.97, f1=0.0), "auc")  # background only: fails
    assert not ok and "f1 = 0.000 (BELOW pass mark 0.6)" in line and "auc = 0.970 (ok" in line
    assert cli.demo_line("retina_vessel", dict(base, auc=0.97, f1=0.7), "auc")[0]
    assert not cli.demo_line("retina_vessel", dict(base, auc=0.80, f1=0.7), "auc")[0]
    assert cli.demo_line("x", {"metric": "m", "pass": 0.5, "dice": 0.6, "seconds": 1}, "dice")[0]  # one score
