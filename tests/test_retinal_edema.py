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
from retinal_edema import dataset, gen_image, test, train
from retinal_edema import eval as evaluate

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
    gen_image.gen_image(tmp_path / "data", tmp_path / "lists2", original_stats=True, verbose=False)
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


def test_end_to_end_train_eval_test_and_reload(tmp_path):
    import keras

    _raw(tmp_path, n_train=3)
    lists, data, run = tmp_path / "lists", tmp_path / "data", tmp_path / "run"
    gen_image.main(["-d", str(data), "-l", str(lists), "--quiet"])
    paths = ["-d", str(data), "-l", str(lists)]
    train.main(paths + ["--name", "unet", "--epochs", "3", "--batch-size", "4", "--lr-mode", "poly",
                        "--seed", "0", "--run-dir", str(run), "--verbose", "0"])
    history = read_history(run / "history.csv")
    assert history["loss"][-1] < history["loss"][0]
    assert history["learning_rate"] == pytest.approx([1e-3 * (1 - e / 3) ** 0.9 for e in range(3)], rel=1e-5)
    state = json.loads((run / "state.json").read_text())
    assert state["monitor"] == "dice_val" and state["best"] == pytest.approx(max(history["dice_val"]))
    assert (run / "training_curves.png").stat().st_size > 0

    row = evaluate.main(paths + ["--checkpoints", str(run / "best.keras"), "--out-dir", str(tmp_path / "ev"),
                                 "--quiet"])
    assert row["Dice"] == pytest.approx(state["best"])  # eval.py reproduces train.py's validation score
    for name in ("dice.md", "dice.json", "summary.json", "paper.md", "dice.png", "roc.png", "overlay.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 0

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
