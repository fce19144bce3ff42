"""ultrasound_nerve on the user's own folders (issue 22): data.py --images/--masks -> train.py -> evaluate.py."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.synthetic import write_nerve_dataset
from tests._cli import error_line
from ultrasound_nerve import data, evaluate, predict, train

NERVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerve_jpeg"


def _save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def _own_folder(root, rng, shapes=None):
    """5 subjects x 3 frames, nested folders, .png/.tif/.jpg frames, 0/255, 0/1 and palette masks, two
    frames of another size and one 16-bit frame. Returns {name: (frame path, mask path)}."""
    files = {}
    for subject in range(1, 6):
        for n in range(1, 4):
            name = f"{subject}_{n}"
            shape = (shapes or {}).get(name, (40, 56))
            frame = rng.integers(0, 256, shape, dtype=np.uint8)
            mask = np.zeros(shape, np.uint8)
            mask[5 + n:20 + n, 10 + subject:30 + subject] = 1
            sub = f"s{subject}" if subject % 2 else f"group/s{subject}"
            ext = [".png", ".tif", ".jpg"][n - 1]
            if name == "2_2":  # 16-bit frame: read as its high byte (v >> 8)
                img_path = _save(root / "images" / sub / f"{name}.png", frame.astype(np.uint16) * 257)
            else:
                img_path = _save(root / "images" / sub / f"{name}{ext.upper() if subject == 3 else ext}", frame,
                                 **({"quality": 95} if ext == ".jpg" else {}))
            if n == 1:
                mask_path = _save(root / "masks" / sub / f"{name}_mask.png", mask * 255)
            elif n == 2:
                mask_path = _save(root / "masks" / sub / f"{name}.png", mask)  # 0/1
            else:
                palette = Image.fromarray(mask, mode="P")
                palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
                mask_path = root / "masks" / sub / f"{name}_mask.png"
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                palette.save(mask_path)
            files[name] = (img_path, mask_path)
    return files


def _reference_frame(path, rows, cols):
    """The frame as Pillow reads it (16-bit -> high byte), resized by the bilinear formula when its size
    differs (float64 values, before the truncation to uint8)."""
    with Image.open(path) as img:
        array = np.asarray(img)
        if array.dtype == np.uint16 or img.mode.startswith("I"):
            array = (array.astype(np.uint32) >> 8).astype(np.uint8)
        elif img.mode != "L":
            array = np.asarray(img.convert("L"))
    if array.shape != (rows, cols):
        return _bilinear(array, rows, cols)
    return array


def _assert_truncated(actual, expected, name):
    """``actual`` uint8 == ``expected`` truncated; where ``expected`` is an integer up to 1e-6, one grey level
    below is accepted too (the resize's float64 rounding decides the truncation there)."""
    expected = np.asarray(expected, np.float64)
    exact = np.abs(expected - np.round(expected)) < 1e-6
    ok = np.where(exact, (actual == np.round(expected)) | (actual == np.round(expected) - 1),
                  actual == np.floor(expected))
    assert ok.all(), f"{name}: {np.count_nonzero(~ok)} pixels differ"


def _bilinear(array, rows, cols):
    """Bilinear resize by its formula, truncated to uint8: sample (i + 0.5) * in / out - 0.5 of each axis,
    clamped to the frame (edge pixels repeated; the original's scikit-image resize equals it inside the
    frame, README deviation 5)."""
    def axis(n_out, n_in):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(int)
        return low, np.minimum(low + 1, n_in - 1), pos - low

    (r0, r1, fr), (c0, c1, fc) = axis(rows, array.shape[0]), axis(cols, array.shape[1])
    a = array.astype(np.float64)
    top = a[r0][:, c0] * (1 - fc) + a[r0][:, c1] * fc
    bottom = a[r1][:, c0] * (1 - fc) + a[r1][:, c1] * fc
    return top * (1 - fr)[:, None] + bottom * fr[:, None]


def _reference_mask(path, rows, cols):
    """0/255 mask as Pillow reads it (any nonzero value or palette index is foreground), resized with
    Pillow's NEAREST when its size differs."""
    with Image.open(path) as img:
        mask = Image.fromarray(np.where(np.asarray(img) > 0, 255, 0).astype(np.uint8))
    if mask.size != (cols, rows):
        mask = mask.resize((cols, rows), Image.NEAREST)
    return np.asarray(mask)


def _subjects(names):
    return {re.match(r"(\d+)_", n.rsplit("/", 1)[-1])[1] for n in names}


def test_own_folder_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    files = _own_folder(tmp_path, rng, shapes={"4_1": (30, 44), "5_3": (50, 50)})
    work = tmp_path / "work"
    assert data.main(["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                      "--work-dir", str(work), "--val-fraction", "0.2", "--test-fraction", "0.2", "--seed", "3",
                      "--quiet"]) == 0
    split = json.loads((work / "split.json").read_text())
    assert split["counts"] == {"train": 9, "val": 3, "test": 3} and split["group_by"] == r"^(\d+)_"
    parts = [_subjects(split[k]) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == 5 and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    imgs, masks = data.load_train_data(work)
    test_imgs, ids = data.load_test_data(work)
    truths = np.load(work / data.TRUE_MASKS)
    # most frames are 40x56: every frame is stacked at that size, the others resized
    assert imgs.shape == masks.shape == (12, 40, 56) and test_imgs.shape == truths.shape == (3, 40, 56)
    assert ids.dtype == np.int32 and list(ids) == [0, 1, 2]
    order = split["train"] + split["val"]
    for stacked, stacked_masks, names in ((imgs, masks, order), (test_imgs, truths, split["test"])):
        for i, name in enumerate(names):
            image_path, mask_path = files[Path(name).name]
            _assert_truncated(stacked[i], _reference_frame(image_path, 40, 56), name)
            np.testing.assert_array_equal(stacked_masks[i], _reference_mask(mask_path, 40, 56), err_msg=name)

    # train.py validates on the val part of split.json (stored last), whatever --val-split says
    x = np.arange(12)
    (x_tr,), (x_val,) = train.split_validation(work, 0.5, x)
    assert list(x_tr) == list(range(9)) and list(x_val) == [9, 10, 11]
    run = tmp_path / "run"
    train.main(["--work-dir", str(work), "--run-dir", str(run), "--epochs", "1", "--batch-size", "4",
                "--img-size", "16", "--seed", "0", "--verbose", "0"])
    pred = np.load(work / "imgs_mask_test.npy")
    assert pred.shape == (3, 16, 16, 1)
    assert evaluate.main(["--work-dir", str(work), "--min-pixels", "0"]) == 0
    scores = json.loads((work / "evaluation" / "scores.json").read_text())[0]
    assert scores["frames"] == 3 and 0 <= scores["dice_per_image_mean"] <= 1
    for name in ("scores.md", "per_image.csv", "scores.png", "examples.png"):
        assert (work / "evaluation" / name).is_file()
    with open(work / "evaluation" / "per_image.csv") as f:
        assert [row["name"] for row in csv.DictReader(f)] == split["test"]
    assert "already exists; pass --overwrite" in error_line(evaluate.main, ["--work-dir", str(work)])
    # predict.py segments new frames of the own folder's formats (.png, .tif, .jpg) at their own size
    out = tmp_path / "predicted"
    assert predict.main([str(tmp_path / "images" / "s1"), "--run-dir", str(run), "--out-dir", str(out),
                         "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*_mask.tif")) == ["1_1_mask.tif", "1_2_mask.tif", "1_3_mask.tif"]
    assert all(Image.open(p).size == (56, 40) for p in out.glob("*_mask.tif"))


def _dice(t, p):
    t, p = t != 0, p != 0
    return 1.0 if not (t.any() or p.any()) else 2 * (t & p).sum() / (t.sum() + p.sum())


def test_evaluate_scores_against_known_masks(tmp_path):
    """Predictions equal to the truth score Dice 1 and HD95 0; a square shifted by 3 pixels has HD95 3 and
    the Dice of the overlap; an empty prediction scores 0 and is counted."""
    work = tmp_path / "work"
    work.mkdir()
    truths = np.zeros((3, 30, 40), np.uint8)
    truths[:, 5:15, 5:15] = 255
    preds = truths.astype(np.float32)[..., None] / 255
    preds[1] = np.roll(preds[1], 3, axis=1)  # shifted right by 3 pixels
    preds[2] = 0
    np.save(work / data.TRUE_MASKS, truths)
    np.save(work / "imgs_test.npy", truths)
    np.save(work / "imgs_id_test.npy", np.arange(3, dtype=np.int32))
    np.save(work / "imgs_mask_test.npy", preds)
    evaluate.main(["--work-dir", str(work), "--min-pixels", "0"])
    scores = json.loads((work / "evaluation" / "scores.json").read_text())[0]
    shifted = 2 * 70 / 200  # 10x10 squares overlapping in 10x7 pixels
    assert scores["dice_per_image_mean"] == pytest.approx((1 + shifted + 0) / 3)
    assert scores["dice_pooled"] == pytest.approx(2 * (100 + 70) / (300 + 200))
    assert scores["hd95_mean_px"] == pytest.approx((0 + 3) / 2) and scores["hd95_frames"] == 2
    assert scores["one_mask_empty"] == 1 and scores["empty_predictions"] == 1
    truths_per_image = [_dice(t, p[..., 0] > 0.5) for t, p in zip(truths, preds)]
    assert scores["dice_per_image_median"] == pytest.approx(np.median(truths_per_image))


def test_own_folder_equals_the_benchmark_path(tmp_path):
    """The Kaggle layout read as an own folder (images and masks in one folder) gives the benchmark's arrays,
    frame by frame (same 420x580 size: no resize)."""
    raw = tmp_path / "raw"
    write_nerve_dataset(raw, n_subjects=3, images_per_subject=2, n_test=1, seed=0)
    data.main(["--raw-dir", str(raw), "--work-dir", str(tmp_path / "bench"), "--quiet"])
    data.main(["--images", str(raw / "train"), "--masks", str(raw / "train"), "--work-dir", str(tmp_path / "own"),
               "--val-fraction", "0.3", "--test-fraction", "0.3", "--quiet"])
    bench_imgs, bench_masks = data.load_train_data(tmp_path / "bench")
    bench_names = [f"{s}_{n}" for s in range(1, 4) for n in range(1, 3)]  # the benchmark's (subject, n) order
    split = json.loads((tmp_path / "own" / "split.json").read_text())
    own_imgs, own_masks = data.load_train_data(tmp_path / "own")
    own = dict(zip(split["train"] + split["val"], zip(own_imgs, own_masks)))
    own.update(zip(split["test"], zip(np.load(tmp_path / "own" / "imgs_test.npy"),
                                      np.load(tmp_path / "own" / data.TRUE_MASKS))))
    assert sorted(own) == sorted(bench_names)
    for i, name in enumerate(bench_names):
        assert own[name][0].tobytes() == bench_imgs[i].tobytes() and own[name][0].shape == (420, 580)
        assert own[name][1].tobytes() == bench_masks[i].tobytes()


def test_frame_size_option_and_test_fraction_zero(tmp_path):
    rng = np.random.default_rng(1)
    _own_folder(tmp_path, rng)
    work = tmp_path / "work"
    data.main(["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--work-dir", str(work),
               "--test-fraction", "0", "--frame-size", "32x48", "--quiet"])
    imgs, _ = data.load_train_data(work)
    test_imgs, ids = data.load_test_data(work)
    assert imgs.shape == (15, 32, 48) and test_imgs.shape == (0, 32, 48) and len(ids) == 0
    assert not (work / data.TRUE_MASKS).exists()


def _bad_folder(tmp_path, case):
    rng = np.random.default_rng(2)
    _own_folder(tmp_path, rng)
    images, masks = tmp_path / "images", tmp_path / "masks"
    argv = ["--images", str(images), "--masks", str(masks), "--work-dir", str(tmp_path / "work"), "--quiet"]
    if case == "unpaired":
        _save(images / "s1" / "1_9.png", np.zeros((40, 56), np.uint8))
        return argv, "1_9"
    if case == "size":
        _save(masks / "s1" / "1_1_mask.png", np.zeros((41, 56), np.uint8))
        return argv, "an image and its mask must have the same size"
    if case == "three values":
        _save(masks / "s1" / "1_1_mask.png", np.tile(np.array([0, 1, 2], np.uint8), (40, 19))[:, :56])
        return argv, "--foreground"
    if case == "group":
        return argv + ["--group-by", "^case(\\d+)"], "--group-by"
    if case == "empty split":
        return argv + ["--test-fraction", "0.01"], "--test-fraction"
    if case == "no val":
        return argv + ["--val-fraction", "0"], "--val-fraction"
    if case == "frame size":
        return argv + ["--frame-size", "0x10"], "--frame-size"
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return ["--images", str(tmp_path / "empty"), "--masks", str(masks), "--work-dir", str(tmp_path / "work")], \
            str(tmp_path / "empty")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["unpaired", "size", "three values", "group", "empty split", "no val",
                                  "frame size", "empty folder"])
def test_bad_own_data_one_line_and_nothing_written(tmp_path, case):
    argv, expected = _bad_folder(tmp_path, case)
    line = error_line(data.main, argv)
    assert line.startswith("error: ") and expected in line
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_existing_arrays_are_kept_without_overwrite(tmp_path):
    _own_folder(tmp_path, np.random.default_rng(3))
    argv = ["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
            "--work-dir", str(tmp_path / "work"), "--quiet"]
    data.main(argv)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").iterdir()}
    assert "pass --overwrite" in error_line(data.main, argv)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").iterdir()} == before
    assert data.main(argv + ["--overwrite", "--seed", "5"]) == 0


@pytest.mark.skipif(not NERVE.is_dir(), reason="../shared/data/nerve_jpeg is absent")
def test_real_nerve_frames_equal_the_files(tmp_path):
    """Real Kaggle frames (256x256 RGB JPEG, JPEG masks): the prepared arrays equal the files as Pillow decodes
    them (grey, masks >= 128), with the subjects kept apart."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    chosen = []
    for subject in range(1, 6):  # three frames of each of five subjects
        chosen += sorted((NERVE / "images").glob(f"{subject}_*.jpg"))[:3]
    for p in chosen:
        (images / p.name).symlink_to(p)
        (masks / f"{p.stem}_mask.jpg").symlink_to(NERVE / "masks" / f"{p.stem}_mask.jpg")
    work = tmp_path / "work"
    data.main(["--images", str(images), "--masks", str(masks), "--work-dir", str(work), "--quiet",
               "--val-fraction", "0.2", "--test-fraction", "0.2"])
    split = json.loads((work / "split.json").read_text())
    parts = [_subjects(split[k]) for k in ("train", "val", "test")]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    imgs, stacked_masks = data.load_train_data(work)
    arrays = dict(zip(split["train"] + split["val"], zip(imgs, stacked_masks)))
    arrays.update(zip(split["test"], zip(np.load(work / "imgs_test.npy"), np.load(work / data.TRUE_MASKS))))
    assert sorted(arrays) == sorted(p.stem for p in chosen)
    for name, (frame, mask) in arrays.items():
        with Image.open(NERVE / "images" / f"{name}.jpg") as img:
            expected = np.asarray(img.convert("L"))
        with Image.open(NERVE / "masks" / f"{name}_mask.jpg") as img:
            expected_mask = np.where(np.asarray(img.convert("L")) >= 128, 255, 0).astype(np.uint8)
        assert frame.shape == (256, 256)
        np.testing.assert_array_equal(frame, expected, err_msg=name)
        np.testing.assert_array_equal(mask, expected_mask, err_msg=name)


def test_nnunet_dataset(tmp_path):
    """An nnU-Net v2 raw dataset (imagesTr/labelsTr, imagesTs without labels): imagesTs is the test part (no
    imgs_mask_test_true.npy), the rest split by subject; the arrays are the cases as written."""
    from common.data.nnunet import write_nnunet_dataset

    rng = np.random.default_rng(4)
    cases = {}
    for subject in range(1, 6):
        for n in range(1, 3):
            frame = rng.integers(0, 256, (24, 32), dtype=np.uint8)
            label = np.zeros((24, 32), np.uint8)
            label[3:9 + n, 4:12 + subject] = 1
            cases[f"{subject}_{n}"] = (frame, label)
    tests = {f"9{i}_1": rng.integers(0, 256, (24, 32), dtype=np.uint8) for i in range(2)}
    dataset = tmp_path / "Dataset001_Nerve"
    write_nnunet_dataset(dataset, train_cases=[(k, f[..., None], m) for k, (f, m) in cases.items()],
                         test_cases=[(k, f[..., None], None) for k, f in tests.items()],
                         labels={0: "background", 1: "nerve"}, channel_names=["ultrasound"], verbose=False)
    work = tmp_path / "work"
    data.main(["--nnunet-dataset", str(dataset), "--work-dir", str(work), "--val-fraction", "0.2", "--quiet"])
    split = json.loads((work / "split.json").read_text())
    assert split["source"] == "nnunet" and sorted(split["test"]) == sorted(tests)
    assert split["counts"]["train"] + split["counts"]["val"] == 10 and split["counts"]["val"] > 0
    assert not _subjects(split["train"]) & _subjects(split["val"])
    imgs, masks = data.load_train_data(work)
    for i, name in enumerate(split["train"] + split["val"]):
        np.testing.assert_array_equal(imgs[i], cases[name][0])
        np.testing.assert_array_equal(masks[i], cases[name][1] * 255)
    test_imgs, ids = data.load_test_data(work)
    for i, name in enumerate(split["test"]):
        np.testing.assert_array_equal(test_imgs[i], tests[name])
    assert not (work / data.TRUE_MASKS).exists()


def test_evaluate_bad_input_one_line(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    assert error_line(evaluate.main, ["--work-dir", str(work)]) == (
        f"error: {work / data.TRUE_MASKS}: not found; evaluate.py scores data.py's own-data arrays "
        f"(--images/--masks) whose test part has masks (the Kaggle test set has none: submission.py writes its CSV)")
    np.save(work / data.TRUE_MASKS, np.zeros((2, 8, 8), np.uint8))
    np.save(work / "imgs_test.npy", np.zeros((2, 8, 8), np.uint8))
    np.save(work / "imgs_id_test.npy", np.arange(3, dtype=np.int32))
    np.save(work / "imgs_mask_test.npy", np.zeros((3, 4, 4, 1), np.float32))
    assert "3 predictions for 2 test masks" in error_line(evaluate.main, ["--work-dir", str(work)])
    assert error_line(evaluate.main, ["--work-dir", str(work), "--threshold", "1"]).startswith("error: --threshold")
    assert not (work / "evaluation").exists()
