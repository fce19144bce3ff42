"""The retinal-edema task (specs/retinal_edema.md): slice stacking, loaders and their errors, the challenge
metric's NaN rule, lr schedules, fusion, and the scripts end to end on tiny synthetic OCT cubes.

The networks and losses are tested in test_unet_plusplus.py and test_edema_losses.py.
"""

import json
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from common.cli import REPO_ROOT
from common.data.io import DataLayoutError, ImageReadError, read_image, write_image
from common.data.synthetic import EDEMA_GREY_CODES, write_retinal_edema_dataset
from common.metrics import lesion_dice_per_class, nan_skipping_means, per_class_auc
from common.report import read_history
from common import cli
from retinal_edema import dataset, gen_image, model_io, predict, test, train
from retinal_edema import eval as evaluate
from _cli import error_line as _error

SHAPE = (32, 16)  # rows x cols, multiples of 16 (the real slices are 1024 x 512)


def _raw(tmp_path, **kw):
    kw = {"n_train": 2, "n_val": 1, "n_test": 1, "n_slices": 4, "shape": SHAPE, "seed": 0, **kw}
    return write_retinal_edema_dataset(tmp_path / "data", **kw)


def _cube_dir(tmp_path, folder="Edema_trainingset", kind="original_images", index=0):
    return sorted((tmp_path / "data" / folder / kind).iterdir())[index]


def test_slice_stacking_order_and_edges(tmp_path):
    cube = tmp_path / "data" / "Edema_testset" / "original_images" / "P0001_cube_z.img"
    for k in range(4):  # slice k (1-based file k+1) is filled with 10*(k+1), with a marker column
        scan = np.full((3, 2), 10 * (k + 1), np.uint8)
        scan[:, 1] = 200 + k
        write_image(cube / f"{k + 1}.bmp", scan)
    write_image(cube / "10.bmp", np.zeros((3, 2), np.uint8))  # numeric, not lexicographic order: a gap
    with pytest.raises(DataLayoutError, match=r"P0001_cube_z\.img: slices are not numbered 1\.\.5 .*missing \[5"):
        gen_image.gen_cube(cube.parents[1], cube.name, False)
    (cube / "10.bmp").unlink()
    paths, labels = gen_image.gen_cube(cube.parents[1], cube.name, False)
    assert labels is None and [p.rsplit("/", 1)[1] for p in paths] == ["000.png", "001.png", "002.png", "003.png"]
    stacked = cube.parents[1] / "trans3channel_images" / cube.name
    rgb = [np.array(Image.open(stacked / f"{k:03d}.png").convert("RGB")) for k in range(4)]
    # PIL (the original's loader): R = next slice, G = current, B = previous; edges replicated
    expected = [(20, 10, 10), (30, 20, 10), (40, 30, 20), (40, 40, 30)]
    for k in range(4):
        assert tuple(rgb[k][0, 0]) == expected[k]
        assert rgb[k].shape == (3, 2, 3) and rgb[k].dtype == np.uint8
    # the same file the original writes with OpenCV from [slice i-1, slice i, slice i+1] (BGR order)
    bgr = cv2.imread(str(stacked / "001.png"), cv2.IMREAD_UNCHANGED)
    assert tuple(bgr[0, 0]) == (10, 20, 30) and tuple(bgr[0, 1]) == (200, 201, 202)
    np.testing.assert_array_equal(gen_image.stack_slices(np.arange(3)[:, None, None])[..., 0].ravel(), [1, 2, 2])


def test_gen_image_lists_pairs_and_loaders(tmp_path):
    written = _raw(tmp_path)
    summary = gen_image.gen_image(tmp_path / "data", tmp_path / "lists", verbose=False)
    assert {k: v["slices"] for k, v in summary.items() if k in gen_image.SETS} == {"train": 8, "val": 4, "test": 4}
    images, labels = dataset.read_list(tmp_path / "lists", "train")
    assert len(images) == len(labels) == 8
    cube = written["Edema_trainingset"][0]
    assert images[2] == f"Edema_trainingset/trans3channel_images/{cube}/002.png"
    assert labels[2] == f"Edema_trainingset/label_images/{cube[:-4]}_labelMark/3.bmp"  # k.png <-> (k+1).bmp
    x, y = dataset.load_pair(tmp_path / "data", images[2], labels[2])
    assert x.shape == SHAPE + (3,) and x.dtype == np.uint8 and y.shape == SHAPE and y.dtype == np.uint8
    grey = np.array(Image.open(tmp_path / "data" / labels[2]))
    np.testing.assert_array_equal(np.asarray(EDEMA_GREY_CODES, np.uint8)[y], grey)  # 255/191/128 -> 1/2/3
    np.testing.assert_array_equal(x[..., 1], np.array(Image.open(
        tmp_path / "data" / "Edema_trainingset" / "original_images" / cube / "3.bmp")))

    val_images, val_labels = dataset.read_list(tmp_path / "lists", "val")
    cx, cy = dataset.load_cube(tmp_path / "data", val_images[0], val_labels[0])
    assert cx.shape == (4,) + SHAPE + (3,) and cy.shape == (4,) + SHAPE and set(np.unique(cy)) <= {0, 1, 2, 3}
    assert dataset.cube_name(val_images[0]) == written["Edema_validationset"][0][:-4]
    assert dataset.read_list(tmp_path / "lists", "test", labels=False)[0].endswith(".img")
    mean, std = dataset.read_stats(tmp_path / "lists")
    pixels = np.stack([read_image(tmp_path / "data" / p, "rgb") for p in images]) / 255.0
    np.testing.assert_allclose(mean, pixels.reshape(-1, 3).mean(0), atol=1e-5)
    np.testing.assert_allclose(std, pixels.reshape(-1, 3).std(0), atol=1e-5)
    with pytest.raises(DataLayoutError, match=r"trans3channel_images: already exists .*pass --overwrite"):
        gen_image.gen_image(tmp_path / "data", tmp_path / "lists2", original_stats=True, verbose=False)
    assert not (tmp_path / "lists2").exists()
    gen_image.gen_image(tmp_path / "data", tmp_path / "lists2", original_stats=True, verbose=False, overwrite=True)
    assert json.loads((tmp_path / "lists2" / "info_test.json").read_text()) == dataset.ORIGINAL_TEST_STATS


def test_training_input_flips_image_and_label_together(tmp_path):
    _raw(tmp_path, n_train=1)
    gen_image.gen_image(tmp_path / "data", tmp_path / "lists", verbose=False)
    images, labels = dataset.read_list(tmp_path / "lists", "train")
    mean, std = np.float32([0.2, 0.3, 0.4]), np.float32([0.5, 0.5, 0.25])
    ds = dataset.training_dataset(tmp_path / "data", images, labels, 4, mean, std, flip=True, seed=3,
                                  shuffle=False)
    x, y = next(iter(ds))
    x, seg, det = x.numpy(), y["seg"].numpy(), y["det"].numpy()
    raw = [dataset.load_pair(tmp_path / "data", i, l) for i, l in zip(images[:4], labels[:4])]
    flipped = 0
    for k, (image, label) in enumerate(raw):
        norm = (image / 255.0 - mean) / std
        was_flipped = not np.allclose(x[k], norm, atol=1e-5)
        flipped += was_flipped
        np.testing.assert_allclose(x[k], norm[:, ::-1] if was_flipped else norm, atol=1e-5)
        np.testing.assert_array_equal(seg[k], label[:, ::-1] if was_flipped else label)
        np.testing.assert_array_equal(det[k], [(label == c).any() for c in (1, 2, 3)])
    assert x.dtype == np.float32 and seg.dtype == np.int32 and 0 < flipped < 4  # seed 3: a mix


def test_training_input_is_the_same_with_parallel_calls(tmp_path):
    """--data-workers: the first epoch's batches (order, flips, labels) do not depend on the map calls."""
    _raw(tmp_path, n_train=2)
    gen_image.gen_image(tmp_path / "data", tmp_path / "lists", verbose=False)
    images, labels = dataset.read_list(tmp_path / "lists", "train")
    mean, std = np.float32([0.2, 0.3, 0.4]), np.float32([0.5, 0.5, 0.25])

    def epoch(calls):
        ds = dataset.training_dataset(tmp_path / "data", images, labels, 2, mean, std, flip=True, seed=5,
                                      num_parallel_calls=calls)
        return [(x.numpy(), y["seg"].numpy(), y["det"].numpy()) for x, y in ds]

    serial, parallel = epoch(1), epoch(3)
    assert len(serial) == len(parallel) == len(images) // 2
    for a, b in zip(serial, parallel):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    raw = {dataset.load_pair(tmp_path / "data", i, l)[0].tobytes() for i, l in zip(images, labels)}
    seen = [(x * std + mean) * 255.0 for x, _, _ in serial]
    images_seen = [np.rint(b).astype(np.uint8) for batch in seen for b in batch]
    # every slice once per epoch, as read or flipped left-right
    assert sum(im.tobytes() in raw or im[:, ::-1].tobytes() in raw for im in images_seen) == len(images)

def test_decode_cache_gives_the_same_batches_once_normalised_on_the_device(tmp_path):
    """--decode-cache: the batches gathered from the decoded uint8 slices, normalised by the training step's
    transform, equal the batches read from the files (order, flips, labels, presence), bit for bit."""
    _raw(tmp_path, n_train=2)
    gen_image.gen_image(tmp_path / "data", tmp_path / "lists", verbose=False)
    images, labels = dataset.read_list(tmp_path / "lists", "train")
    mean, std = np.float32([0.2, 0.3, 0.4]), np.float32([0.5, 0.5, 0.25])
    cache = dataset.decoded_slices(tmp_path / "data", images, labels, tmp_path / "cache", verbose=False)
    transform = dataset.device_normalise(mean, std)

    def epochs(**kw):
        ds = dataset.training_dataset(tmp_path / "data", images, labels, 2, mean, std, flip=True, seed=5, **kw)
        return [(x.numpy(), y["seg"].numpy(), y["det"].numpy()) for _ in range(2) for x, y in ds]

    files, cached = epochs(), epochs(cache=cache, num_parallel_calls=2)
    assert len(files) == len(cached) == 2 * (len(images) // 2)
    as_read = {dataset.load_pair(tmp_path / "data", i, l)[0].tobytes() for i, l in zip(images, labels)}
    flips = 0
    for (x, seg, det), (xc, segc, detc) in zip(files, cached):
        assert xc.dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(transform(xc)), x)
        np.testing.assert_array_equal(segc, seg)
        np.testing.assert_array_equal(detc, det)
        flips += sum(a.tobytes() not in as_read for a in xc)
    assert flips > 0  # some slices came flipped, and the flips agree


def test_bad_inputs_name_the_file(tmp_path):
    written = _raw(tmp_path)
    data = tmp_path / "data"
    label_dir = _cube_dir(tmp_path, kind="label_images", index=1)
    write_image(label_dir / "2.bmp", np.full(SHAPE, 100, np.uint8))
    with pytest.raises(DataLayoutError, match=r"labelMark[/\\]2\.bmp: unexpected label grey values \[100\]"):
        gen_image.gen_image(data, tmp_path / "lists", verbose=False)
    write_image(label_dir / "2.bmp", np.zeros((16, 16), np.uint8))
    with pytest.raises(ImageReadError, match=r"2\.bmp: expected 32x16 \(rows x cols\), got 16x16"):
        gen_image.gen_image(data, tmp_path / "lists", verbose=False)
    (label_dir / "2.bmp").unlink()
    with pytest.raises(DataLayoutError, match=r"labelMark: slices are not numbered 1\.\.3"):
        gen_image.gen_image(data, tmp_path / "lists", verbose=False)
    image_dir = _cube_dir(tmp_path, index=1)
    label_dir.rename(label_dir.with_name("P9999_cube_z_labelMark"))
    with pytest.raises(DataLayoutError, match=rf"{written['Edema_trainingset'][1][:-4]}_labelMark: label folder "
                                              "not found"):
        gen_image.gen_image(data, tmp_path / "lists", verbose=False)
    (image_dir.parent / "P9999_cube_z.img").mkdir()
    (image_dir / "1.bmp").write_bytes(b"not a bmp")
    with pytest.raises(ImageReadError, match=r"1\.bmp: cannot decode"):
        gen_image.gen_cube(image_dir.parents[1], image_dir.name, False)
    with pytest.raises(DataLayoutError, match=r"nothing[/\\]Edema_trainingset: folder not found"):
        gen_image.gen_image(tmp_path / "nothing", tmp_path / "lists", verbose=False)
    assert not (tmp_path / "lists").exists()  # nothing written by the failed runs
    assert not list(data.glob("*/trans3channel_images")) and not list(data.glob("*/.trans3channel_images*"))
    with pytest.raises(FileNotFoundError, match=r"train_images\.txt: not found; run retinal_edema/gen_image\.py"):
        dataset.read_list(tmp_path / "lists", "train")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "retinal_edema" / "gen_image.py"), "-d",
                             str(tmp_path / "nothing"), "-l", str(tmp_path / "l")], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'nothing' / 'Edema_trainingset'}: folder not found (unzip the challenge's training "
        f"set into {tmp_path / 'nothing'})")


def test_challenge_dice_skips_absent_classes_and_auc_per_class():
    truth = np.zeros((2, 2, 4), np.uint8)
    pred = np.zeros((2, 2, 4), np.uint8)
    truth[0, 0, :3] = 1  # REA: 3 pixels, 2 predicted right + 1 false positive
    pred[0, 0, :2] = 1
    pred[1, 1, 3] = 1
    pred[1, 0, 0] = 2  # SRF predicted but absent from the truth: NaN, no penalty
    truth[1, 1, :2] = 3  # PED: 2 pixels, none predicted
    dice = lesion_dice_per_class(truth, pred)
    assert dice[0] == pytest.approx(2 * 2 / (3 + 3)) and np.isnan(dice[1]) and dice[2] == 0.0
    # per class, the mean over cubes skipping NaN; final = mean of the class means
    final, means = nan_skipping_means([dice, [0.5, 0.9, float("nan")], [float("nan")] * 3])
    assert means == pytest.approx([(2 / 3 + 0.5) / 2, 0.9, 0.0])
    assert final == pytest.approx(np.mean(means))
    final, means = nan_skipping_means([[float("nan"), 1.0, 0.5]])  # a class absent from every cube
    assert np.isnan(means[0]) and final == pytest.approx(0.75)
    assert np.isnan(nan_skipping_means([[float("nan")] * 3])[0])
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.2, 0.3], [0.4, 0.3, 0.4], [0.5, 0.4, 0.5]])
    aucs = per_class_auc(targets, scores)
    assert aucs[0] == pytest.approx(0.75) and np.isnan(aucs[1]) and np.isnan(aucs[2])


def test_learning_rate_schedules_and_presets():
    assert train.learning_rate(19, 1e-3, "step", 100, 20) == pytest.approx(1e-3)
    assert train.learning_rate(45, 1e-3, "step", 100, 20) == pytest.approx(1e-5)
    assert train.learning_rate(50, 1e-3, "poly", 100, 20) == pytest.approx(1e-3 * 0.5 ** 0.9)
    assert train.learning_rate(0, 1e-3, "poly", 100, 20) == pytest.approx(1e-3)
    assert train.preset("unet") == {**train.COMMON, "loss": "mix_3", "batch_size": 32, "lr_mode": "step"}
    assert train.preset("unet_nested")["loss"] == "mix_33" and train.preset("unet_nested")["batch_size"] == 16


def test_fusion_averages_softmax_and_detection():
    import keras

    from common.models import build_model

    keras.utils.set_random_seed(0)
    models = [build_model(n, SHAPE + (3,)) for n in ("edema_unet", "unet_nested")]
    x = np.random.default_rng(0).normal(size=(3,) + SHAPE + (3,)).astype(np.float32)
    pred, det = evaluate.predict_cube(models, x, batch=2)
    outs = [m(x, training=False) for m in models]
    prob = np.mean([np.exp(np.asarray(o["seg"])) for o in outs], axis=0)
    np.testing.assert_array_equal(pred, prob.argmax(-1))
    np.testing.assert_allclose(det, np.mean([np.asarray(o["det"]) for o in outs], axis=0), atol=1e-6)
    assert pred.dtype == np.uint8 and det.dtype == np.float32 and det.shape == (3, 3)


TRAIN_ARGS = ["--name", "unet", "--epochs", "3", "--batch-size", "4", "--lr-mode", "poly", "--seed", "0",
              "--verbose", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """gen_image + train.py into its DEFAULT run folder (the repository root moved to a tmp folder)."""
    tmp = tmp_path_factory.mktemp("edema")
    write_retinal_edema_dataset(tmp / "data", n_train=3, n_val=1, n_test=1, n_slices=4, shape=SHAPE, seed=0)
    lists, data = tmp / "lists", tmp / "data"
    gen_image.main(["-d", str(data), "-l", str(lists), "--quiet"])
    paths = ["-d", str(data), "-l", str(lists)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "REPO_ROOT", tmp / "repo")
        run = train.main(paths + TRAIN_ARGS)
    return {"tmp": tmp, "data": data, "lists": lists, "paths": paths, "run": run}


def test_end_to_end_train_eval_test_and_reload(trained, tmp_path):
    import keras

    data, lists, run, paths = trained["data"], trained["lists"], trained["run"], trained["paths"]
    # the default run folder: the original's result folder name + the settings that differ from the preset
    assert run == trained["tmp"] / "repo" / "weights" / "retinal_edema" / "unet_nopre_mix_3_0.001_b4_e3_poly_seed0"
    history = read_history(run / "history.csv")
    assert history["loss"][-1] < history["loss"][0]
    assert history["learning_rate"] == pytest.approx([1e-3 * (1 - e / 3) ** 0.9 for e in range(3)], rel=1e-5)
    state = json.loads((run / "state.json").read_text())
    assert state["monitor"] == "dice_val" and state["best"] == pytest.approx(max(history["dice_val"]))
    assert (run / "training_curves.png").stat().st_size > 0

    row = evaluate.main(paths + ["--checkpoints", str(run / "best.keras"), "--out-dir", str(tmp_path / "ev"),
                                 "--quiet"])
    assert row["Dice"] == pytest.approx(state["best"])  # eval.py reproduces train.py's validation score
    for name in ("dice.md", "dice.json", "summary.json", "paper.md", "dice.png", "roc.png", "overlay.png",
                 "run.json"):
        assert (tmp_path / "ev" / name).stat().st_size > 0
    rows = json.loads((tmp_path / "ev" / "dice.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    first_cube = rows[0]
    assert list(first_cube)[:5] == ["cube", "Dice REA", "Dice SRF", "Dice PED", "Dice (cube)"]  # original's first
    assert {"HD95 REA", "ASSD REA", "HD95 SRF", "ASSD SRF", "HD95 PED", "ASSD PED"} <= set(first_cube)
    record = json.loads((tmp_path / "ev" / "run.json").read_text())
    assert record["weights"][0]["path"] == str((run / "best.keras").resolve()) and len(record["inputs"]) == 1

    reloaded = keras.models.load_model(run / "last.keras")  # compiled: AdamL2 and the edema losses
    assert type(reloaded.optimizer).__name__ == "AdamL2" and reloaded.optimizer.l2 == pytest.approx(1e-4)
    x = dataset.normalise(dataset.load_cube(data, dataset.read_list(lists, "test", labels=False)[0])[0],
                          *dataset.read_stats(lists, test=True))
    archive = test.main(paths + ["--checkpoints", str(run / "last.keras"), "--out-dir", str(tmp_path / "sub"),
                                 "--quiet"])
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
    assert len(names) == 2 and names[0].endswith("_labelMark_detections.npy")
    volume = np.load(tmp_path / "sub" / "segment" / names[1])
    detections = np.load(tmp_path / "sub" / "segment" / names[0])
    assert volume.shape == (4,) + SHAPE and volume.dtype == np.uint8 and volume.max() <= 3
    assert detections.shape == (4, 3) and detections.dtype == np.float32
    expected = reloaded(x, training=False)
    np.testing.assert_array_equal(volume, np.asarray(expected["seg"]).argmax(-1))
    np.testing.assert_allclose(detections, np.asarray(expected["det"]), atol=1e-6)


def test_decode_cache_trains_as_the_files_do(trained, tmp_path):
    """train.py --decode-cache: decoded once into <list-dir>/decoded, then the same training as from the files
    (the fixture's run, same seed and batches): the same losses and validation Dice."""
    run = tmp_path / "cached"
    train.main(trained["paths"] + TRAIN_ARGS + ["--run-dir", str(run), "--decode-cache"])
    assert len(list((trained["lists"] / "decoded").glob("*/part0.npy"))) == 1
    cached, files = read_history(run / "history.csv"), read_history(trained["run"] / "history.csv")
    np.testing.assert_allclose(cached["loss"], files["loss"], rtol=1e-5)
    np.testing.assert_allclose(cached["dice_val"], files["dice_val"], rtol=1e-5, atol=1e-6)
    assert json.loads((run / "state.json").read_text())["settings"]["decode_cache"] == str(trained["lists"] /
                                                                                            "decoded")


def test_a_run_is_never_replaced_without_overwrite(trained, capsys, monkeypatch):
    run, paths = trained["run"], trained["paths"]
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    state = json.loads((run / "state.json").read_text())
    monkeypatch.setattr(cli, "REPO_ROOT", trained["tmp"] / "repo")
    line = _error(train.main, paths + TRAIN_ARGS)
    assert line == (f"error: {run}: holds a run of 3 epochs (best dice_val {state['best']:.6g}); pass --resume to "
                    f"continue it, --overwrite to replace it, or another --run-dir")
    assert _error(train.main, paths + TRAIN_ARGS + ["--resume", "--overwrite"]).startswith(
        "error: --resume/--overwrite: choose one")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == before  # nothing touched
    # another recipe goes to its own default folder: both runs intact
    other = train.main(paths + TRAIN_ARGS[:3] + ["1"] + TRAIN_ARGS[4:] + ["--no-flip"])
    assert other.name == "unet_nopre_mix_3_0.001_b4_e1_poly_seed0_noflip" and other != run
    assert json.loads((other / "state.json").read_text())["epoch"] == 1
    assert json.loads((run / "state.json").read_text())["epoch"] == 3
    # evaluate output folders are keyed by the run and the checkpoint; results are not replaced silently
    row = evaluate.main(paths + ["--checkpoints", str(other / "best.keras"), "--quiet"])
    out = trained["tmp"] / "repo" / "work" / "retinal_edema" / "eval" / f"{other.name}_best"
    assert json.loads((out / "summary.json").read_text())[0]["Dice"] == pytest.approx(row["Dice"])
    line = _error(evaluate.main, paths + ["--checkpoints", str(other / "best.keras"), "--quiet"])
    assert line == (f"error: --out-dir: {out} already holds results (dice.md, dice.json, summary.json); pass "
                    f"--overwrite to replace them, or another --out-dir")
    assert evaluate.default_out_dir("eval", [run / "best.keras"], "test", "flip", 5).name == \
        "unet_nopre_mix_3_0.001_b4_e3_poly_seed0_best_test_tta-flip_min5"


def test_default_run_names_change_with_every_recipe_option():
    base = model_io.run_name("unet", "mix_3", 1e-3)
    assert base == "unet_nopre_mix_3_0.001"  # the original's result folder name
    variants = [dict(batch_size=8), dict(epochs=12), dict(lr_mode="poly"), dict(step=10), dict(weight_decay=0.0),
                dict(flip=False), dict(multi_task=False), dict(seed=1)]
    names = [model_io.run_name("unet", "mix_3", 1e-3, **v) for v in variants]
    names += [model_io.run_name("unet", "mix_33", 1e-3), model_io.run_name("unet", "mix_3", 1e-4),
              model_io.run_name("unet_nested", "mix_3", 1e-3)]
    assert len(set(names + [base])) == len(names) + 1
    # the preset's own values do not change the name
    assert model_io.run_name("unet", "mix_3", 1e-3, batch_size=32, epochs=100, lr_mode="step", step=20,
                             weight_decay=1e-4, seed=1234) == base


def test_scripts_do_not_import_each_other():
    """No import cycle between the task's modules (eval.py and train.py imported each other)."""
    import ast

    folder = REPO_ROOT / "retinal_edema"
    graph = {}
    for path in folder.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "retinal_edema":
                    deps |= {a.name for a in node.names}
                elif node.module.startswith("retinal_edema."):
                    deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("retinal_edema.")}
        graph[path.stem] = deps - {path.stem}

    def reaches(start, target, seen=()):
        return any(d == target or (d not in seen and reaches(d, target, seen + (d,))) for d in graph.get(start, ()))

    assert not [m for m in graph if reaches(m, m)], graph
    assert "train" not in graph["eval"] and "eval" not in graph["train"]


def test_script_defaults_are_the_originals():
    """Argparse defaults against the original's values (spec sections 3-5), written here, not read from the code."""
    import keras

    args = train.build_parser().parse_args([])
    assert (args.name, args.no_flip, args.no_detection, args.resume, args.overwrite) == \
        ("unet_nested", False, False, False, False)
    assert (args.mixed_precision, args.jit_compile, args.strategy) == ("off", False, "default")
    spec = {  # README commands (main.sh) + train.py defaults
        "unet": {"loss": "mix_3", "batch_size": 32, "lr_mode": "step", "epochs": 100, "lr": 1e-3,
                 "weight_decay": 1e-4, "step": 20, "seed": 1234},
        "unet_nested": {"loss": "mix_33", "batch_size": 16, "lr_mode": "poly", "epochs": 100, "lr": 1e-3,
                        "weight_decay": 1e-4, "step": 20, "seed": 1234},
    }
    for name, values in spec.items():
        assert model_io.preset(name) == values
    # Adam betas (0.9, 0.99), eps 1e-8, coupled L2 1e-4
    model = train.compile_model(keras.Sequential([keras.Input((2,))]), "mix_3", 1e-3, 1e-4)
    opt = model.optimizer
    assert (opt.beta_1, opt.beta_2, opt.epsilon, opt.l2) == (0.9, 0.99, 1e-8, 1e-4)
    assert train.learning_rate(20, 1e-3, "step", 100, 20) == pytest.approx(1e-4)
    args = evaluate.build_parser().parse_args([])
    assert (args.batch, args.phase, args.weights, args.tta, args.min_size, args.fusion) == \
        (8, "val", "best", "none", 0, False)
    assert model_io.FUSION == ("unet_nested", "unet") and model_io.VAL_BATCH == 16
    args = test.build_parser().parse_args([])
    assert (args.batch, args.train_stats, args.tta, args.min_size) == (8, False, "none", 0)  # info_test.json
    args = gen_image.build_parser().parse_args([])
    assert (args.original_stats, args.overwrite) == (False, False) and gen_image.STATS_IMAGES == 2000
    args = predict.build_parser().parse_args(["x", "--out-dir", "o"])
    assert (args.batch_size, args.tta, args.min_size, args.weights) == (8, "none", 0, "best")


def test_flip_tta_and_small_regions_bookkeeping():
    import keras

    from common.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("edema_unet", SHAPE + (3,))
    x = np.random.default_rng(2).normal(size=(3,) + SHAPE + (3,)).astype(np.float32)
    pred, det, prob = model_io.predict_cube([model], x, batch=2, tta="flip", probabilities=True)

    def run(a):
        out = model(a, training=False)
        return np.exp(np.asarray(out["seg"])), np.asarray(out["det"])

    p0, d0 = run(x)
    p1, d1 = run(x[:, :, ::-1].copy())
    p2, d2 = run(x[:, ::-1].copy())
    reference = (p0 + p1[:, :, ::-1] + p2[:, ::-1]) / 3
    assert not np.allclose(p0, p1[:, :, ::-1], atol=1e-3)  # the network is not flip-invariant
    np.testing.assert_allclose(prob, reference, atol=1e-5)
    np.testing.assert_array_equal(pred, reference.argmax(-1))
    np.testing.assert_allclose(det, (d0 + d1 + d2) / 3, atol=1e-6)
    labels = np.zeros((2, 6, 6), np.uint8)
    labels[0, :3, :3] = 1  # 9 px: kept at 5
    labels[0, 5, 5] = 2  # 1 px: removed
    labels[1, 4:, 4:] = 3  # 4 px: removed
    out = model_io.postprocess_cube(labels, 5)
    expected = labels.copy()
    expected[0, 5, 5] = 0
    expected[1] = 0
    np.testing.assert_array_equal(out, expected)


def _reference_labels(model, slices, mean, std):
    """Independent of predict.py: stack [next, current, previous], normalise, argmax, grey codes."""
    n = len(slices)
    rgb = np.stack([slices[np.minimum(np.arange(n) + 1, n - 1)], slices, slices[np.maximum(np.arange(n) - 1, 0)]],
                   axis=-1)
    out = model((rgb / 255.0 - mean) / std, training=False)
    return np.array([0, 255, 191, 128], np.uint8)[np.asarray(out["seg"]).argmax(-1)], np.asarray(out["det"])


def test_predict_writes_challenge_label_slices_and_detections(trained, tmp_path, capsys):
    import keras

    run, data = trained["run"], trained["data"]
    cubes = data / "Edema_testset" / "original_images"
    cube = sorted(cubes.iterdir())[0]
    out = tmp_path / "pred"
    assert predict.main([str(cubes), "--run-dir", str(run), "--out-dir", str(out), "--overlay",
                         "--save-probabilities", "--quiet"]) == 0
    stem = cube.name[:-4]
    names = sorted(p.name for p in (out / f"{stem}_labelMark").iterdir())
    assert names == ["1.bmp", "2.bmp", "3.bmp", "4.bmp"]
    model = keras.models.load_model(run / "best.keras", compile=False)
    state = json.loads((run / "state.json").read_text())["settings"]
    slices = np.stack([np.array(Image.open(cube / f"{k}.bmp")) for k in range(1, 5)])
    labels, det = _reference_labels(model, slices, np.float32(state["mean"]), np.float32(state["std"]))
    for k in range(4):
        with Image.open(out / f"{stem}_labelMark" / f"{k + 1}.bmp") as img:
            assert img.format == "BMP" and img.size == SHAPE[::-1]
            got = np.array(img.convert("L"))
        assert set(np.unique(got)) <= {0, 128, 191, 255}
        np.testing.assert_array_equal(got, labels[k])
    rows = (out / f"{stem}_labelMark_detections.csv").read_text().splitlines()
    assert rows[0] == "slice,REA,SRF,PED" and len(rows) == 5 and rows[1].startswith("1.bmp,")
    np.testing.assert_allclose([[float(v) for v in r.split(",")[1:]] for r in rows[1:]], det, atol=1e-5)
    assert np.load(out / f"{stem}_prob.npy").shape == (4,) + SHAPE + (4,)
    assert np.array(Image.open(out / f"{stem}_overlay.png")).shape == (SHAPE[0], 2 * SHAPE[1], 3)
    assert json.loads((out / "run.json").read_text())["inputs"] == [str(cube)]

    # any slice size: 30x20 is padded to 32x32 and cropped back
    odd = tmp_path / "odd" / "P0002_cube_z.img"
    odd_slices = np.random.default_rng(0).integers(0, 255, (3, 30, 20)).astype(np.uint8)
    for k, s in enumerate(odd_slices, 1):
        write_image(odd / f"{k}.bmp", s)
    assert predict.main([str(odd), "--model", str(run / "best.keras"), "--out-dir", str(tmp_path / "p2"),
                         "--quiet"]) == 0
    assert np.array(Image.open(tmp_path / "p2" / "P0002_cube_z_labelMark" / "3.bmp")).shape == (30, 20)

    # refused: an empty folder, a corrupt slice (nothing written for it), an existing output, a bad option
    (tmp_path / "empty").mkdir()
    assert _error(predict.main, [str(tmp_path / "empty"), "--model", str(run / "best.keras"), "--out-dir",
                                         str(tmp_path / "p3")]) == (
        f"error: {tmp_path / 'empty'}: no .bmp slices and no cube folders with .bmp slices in it")
    (odd / "2.bmp").write_bytes(b"BM not really")
    line = _error(predict.main, [str(odd), "--model", str(run / "best.keras"), "--out-dir",
                                         str(tmp_path / "p3"), "--quiet"])
    assert line.startswith(f"error: {odd / '2.bmp'}: ") and not (tmp_path / "p3" / "P0002_cube_z_labelMark").exists()
    assert predict.main([str(odd), str(cube), "--model", str(run / "best.keras"), "--out-dir", str(tmp_path / "p3"),
                         "--skip-bad", "--quiet"]) == 1
    assert (tmp_path / "p3" / f"{stem}_labelMark" / "4.bmp").is_file()
    assert not (tmp_path / "p3" / "P0002_cube_z_labelMark").exists()
    assert _error(predict.main, [str(cube), "--model", str(run / "best.keras"), "--out-dir",
                                         str(tmp_path / "p3")]).endswith("pass --overwrite to replace, or another "
                                                                         "--out-dir")
    assert _error(predict.main, [str(cube), "--model", str(run / "best.keras"), "--out-dir",
                                         str(tmp_path / "p4"), "--batch-size", "0"]) == (
        "error: --batch-size: must be positive, got 0")


def test_every_script_reports_bad_options_and_files_in_one_line(trained, tmp_path, capsys):
    paths = trained["paths"]
    garbage = tmp_path / "run" / "best.keras"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a zip")
    assert _error(train.main, paths + ["--epochs", "0", "--run-dir", str(tmp_path / "r")]) == \
        "error: --epochs: must be positive, got 0"
    assert _error(train.main, ["-d", str(trained["data"]), "-l", str(tmp_path / "nolists"), "--run-dir",
                                       str(tmp_path / "r")]) == (
        f"error: {tmp_path / 'nolists' / 'train_images.txt'}: not found; run retinal_edema/gen_image.py first")
    assert not (tmp_path / "r").exists()
    assert _error(evaluate.main, paths + ["--batch", "0", "--checkpoints", str(garbage)]) == \
        "error: --batch: must be positive, got 0"
    line = _error(evaluate.main, paths + ["--checkpoints", str(garbage), "--out-dir", str(tmp_path / "e")])
    assert line.startswith(f"error: {garbage}: not a readable Keras model")
    assert _error(test.main, paths + ["--min-size", "-1", "--checkpoints", str(garbage)]) == \
        "error: --min-size: must be >= 0, got -1"
    assert _error(test.main, paths + ["--checkpoints", str(tmp_path / "missing.keras"), "--out-dir",
                                              str(tmp_path / "t")]) == \
        f"error: {tmp_path / 'missing.keras'}: not found; run retinal_edema/train.py first"
    assert not (tmp_path / "e").exists() and not (tmp_path / "t").exists()
    assert _error(gen_image.main, ["-d", str(tmp_path / "none"), "-l", str(tmp_path / "l")]).startswith(
        f"error: {tmp_path / 'none' / 'Edema_trainingset'}: folder not found")
    assert _error(gen_image.main, paths) .startswith("error: ")  # the stacked slices exist already


def test_gen_image_is_all_or_nothing_across_sets(tmp_path):
    _raw(tmp_path)
    data = tmp_path / "data"
    label_dir = _cube_dir(tmp_path, folder="Edema_validationset", kind="label_images")
    write_image(label_dir / "3.bmp", np.full(SHAPE, 7, np.uint8))  # a bad label in the SECOND set
    with pytest.raises(DataLayoutError, match=r"3\.bmp: unexpected label grey values \[7\]"):
        gen_image.gen_image(data, tmp_path / "lists", verbose=False)
    assert not (data / "Edema_trainingset" / "trans3channel_images").exists()  # the first set left nothing
    assert not [p for p in data.rglob("*") if "trans3channel" in p.name] and not (tmp_path / "lists").exists()


def _brute_surface(truth, pred):
    """MONAI's HD95 / ASSD by brute force: surfaces = mask minus its (face-connected) erosion, all pairwise
    Euclidean distances between the two surfaces."""
    from scipy.ndimage import binary_erosion
    from scipy.spatial.distance import cdist

    st = np.argwhere(truth & ~binary_erosion(truth))
    sp = np.argwhere(pred & ~binary_erosion(pred))
    d = cdist(sp, st)
    to_truth, to_pred = d.min(axis=1), d.min(axis=0)
    hd95 = max(np.percentile(to_truth, 95), np.percentile(to_pred, 95))
    return hd95, np.concatenate([to_truth, to_pred]).mean()


def test_surface_distance_columns_against_brute_force():
    rng = np.random.default_rng(5)
    truth = np.zeros((4, 12, 10), np.uint8)
    pred = np.zeros_like(truth)
    truth[1:3, 2:8, 2:7] = 1
    pred[1:4, 3:9, 2:6] = 1
    truth[0, 9:11, 1:4] = 3  # PED only in the truth: inf; SRF in neither: NaN
    pred[rng.random(pred.shape) < 0.02] = 1  # speckles of false positives
    cols = model_io.surface_columns(truth, pred)
    hd95, assd = _brute_surface(truth == 1, pred == 1)
    assert cols["HD95 REA"] == pytest.approx(hd95) and cols["ASSD REA"] == pytest.approx(assd)
    assert np.isnan(cols["HD95 SRF"]) and np.isnan(cols["ASSD SRF"])
    assert np.isinf(cols["HD95 PED"]) and np.isinf(cols["ASSD PED"])
