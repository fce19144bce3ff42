"""retina_vessel/prepare_datasets_DRIVE.py on your own data (issue 22): --images/--masks [--fov] -> the six HDF5
files + split.json, then save_patch.py, train_retina.py, evaluate.py and predict.py unchanged.

References are independent of the code under test: the arrays written into the files by the test itself,
Pillow's own resize (bicubic image, nearest masks) for an image of another size, and the benchmark path's HDF5
arrays for the same files (compared per case by name).
"""

import json
import re

import numpy as np
import pytest
from PIL import Image

from common.data.synthetic import write_drive_dataset
from retina_vessel import evaluate, predict, prepare_datasets_DRIVE as prep, save_patch, train_retina
from _cli import error_line

H, W = 40, 32  # taller than wide, as DRIVE


def _load(work, kind, split):
    import h5py

    with h5py.File(prep.hdf5_path(work, kind, split), "r") as f:
        return f["image"][()]


def _by_name(work, names=None):
    """``{case: (imgs (3,H,W), truth (1,H,W), fov (1,H,W))}`` of a prepared work dir; own data: names from its
    split.json (train then val, test); the benchmark's: ``names`` = {split: [case names in sorted order]}."""
    if names is None:
        record = json.loads(prep.split_path(work).read_text())
        names = {"train": record["train"] + record["val"], "test": record["test"]}
    out = {}
    for split, keys in names.items():
        arrays = [_load(work, kind, split) for kind in prep.KINDS]
        assert all(len(a) == len(keys) for a in arrays)
        for i, key in enumerate(keys):
            out[key] = tuple(a[i] for a in arrays)
    return out


def _fundus(rng, rows, cols):
    image = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    vessels = (rng.random((rows, cols)) < 0.15).astype(np.uint8)
    fov = np.zeros((rows, cols), np.uint8)
    fov[2:-2, 3:-3] = 1
    return image, vessels, fov


def _own_folders(root, seed=0):
    """Nested, mixed extensions (tif/png/jpg), palette GIF, 16-bit and 0/1 vessel masks, one odd size.
    Returns ``{name: (image as decoded, vessels 0/1, fov 0/1)}``."""
    rng = np.random.default_rng(seed)
    cases = {}
    specs = [("e1", ".tif", "_manual1.gif", (H, W)), ("e2", ".png", "_manual1.png", (H, W)),
             ("s/e3", ".tif", "_gt.png", (H, W)), ("s/e4", ".png", ".png", (H, W)),
             ("e5", ".jpg", "_manual1.gif", (H, W)), ("e6", ".TIF", "_label.png", (H, W)),
             ("e7", ".png", "_manual1.png", (H, W)), ("e8", ".png", "_manual1.png", (H, W)),
             ("e9", ".png", "_manual1.png", (H, W)), ("odd", ".png", "_manual1.png", (31, 45))]
    for k, (name, ext, mask_ext, (rows, cols)) in enumerate(specs):
        image, vessels, fov = _fundus(rng, rows, cols)
        for sub in ("images", "masks", "fov"):
            (root / sub / name).parent.mkdir(parents=True, exist_ok=True)
        path = root / "images" / f"{name}{ext}"
        Image.fromarray(image).save(path, **({"quality": 100} if ext == ".jpg" else {}))
        image = np.asarray(Image.open(path).convert("RGB"))
        mask_path = root / "masks" / f"{name}{mask_ext}"
        if mask_ext.endswith(".gif"):  # palette: index 1 is the vessel
            img = Image.frombytes("P", (cols, rows), vessels.tobytes())
            img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
            img.save(mask_path)
        elif name == "s/e3":
            Image.fromarray(vessels.astype(np.uint16) * 65535).save(mask_path)
        elif name == "s/e4":
            Image.fromarray(vessels).save(mask_path)  # 0/1
        else:
            Image.fromarray(vessels * 255).save(mask_path)
        fov_path = root / "fov" / (f"{name}_mask.gif" if k % 2 else f"{name}.png")
        Image.fromarray(fov * 255).save(fov_path)
        cases[name] = (image, vessels, fov)
    return cases


def _argv(root, work, *extra, fov=True):
    return ["--images", str(root / "images"), "--masks", str(root / "masks"),
            *(["--fov", str(root / "fov")] if fov else []), "--work-dir", str(work), "--quiet", *extra]


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("drive_own")
    cases = _own_folders(root)
    assert prep.main(_argv(root, root / "work", "--val-fraction", "0.2", "--test-fraction", "0.2")) == 0
    return root, cases


def test_own_folders_give_the_hdf5_files_and_a_split_file(own):
    root, cases = own
    work = root / "work"
    record = json.loads(prep.split_path(work).read_text())
    assert record["counts"] == {"train": 6, "val": 2, "test": 2}
    assert (record["height"], record["width"], record["fov"]) == (H, W, True)
    assert sorted(record["train"] + record["val"] + record["test"]) == sorted(cases)
    for split, n in (("train", 8), ("test", 2)):
        imgs, truth, fov = (_load(work, kind, split) for kind in prep.KINDS)
        assert imgs.shape == (n, 3, H, W) and truth.shape == fov.shape == (n, 1, H, W)
        assert imgs.dtype == truth.dtype == fov.dtype == np.float64
    for name, (imgs, truth, fov) in _by_name(work).items():
        image, vessels, border = cases[name]
        if name == "odd":  # 31x45 -> the most frequent size 40x32: Pillow bicubic / nearest
            image = np.asarray(Image.fromarray(image).resize((W, H), Image.BICUBIC))
            vessels, border = (np.asarray(Image.fromarray(m).resize((W, H), Image.NEAREST)) for m in (vessels, border))
        np.testing.assert_array_equal(imgs, image.transpose(2, 0, 1).astype(np.float64), err_msg=name)
        np.testing.assert_array_equal(truth[0], vessels * 255.0, err_msg=name)
        np.testing.assert_array_equal(fov[0], border * 255.0, err_msg=name)


def test_without_fov_the_whole_image_is_the_fov(tmp_path):
    _own_folders(tmp_path)
    prep.main(_argv(tmp_path, tmp_path / "work", fov=False))
    for split in ("train", "test"):
        assert np.all(_load(tmp_path / "work", "borderMasks", split) == 255)
    assert json.loads(prep.split_path(tmp_path / "work").read_text())["counts"] == {"train": 4, "val": 1, "test": 5}


def test_patches_train_on_the_val_images_then_evaluate_and_predict(own, tmp_path):
    root, cases = own
    work, run = root / "work", tmp_path / "run"
    save_patch.main(["--work-dir", str(work), "--patch", "16", "--n-patches", "80", "--quiet"])
    train_retina.main(["--work-dir", str(work), "--run-dir", str(run), "--epochs", "1", "--verbose", "0"])
    state = json.loads((run / "state.json").read_text())["settings"]
    assert (state["train"], state["validation"]) == (60, 20)  # 10 patches per image, the last 2 images validate
    evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--inference", "full", "--out-dir",
                   str(tmp_path / "eval"), "--quiet"])
    details = json.loads((tmp_path / "eval" / "details.json").read_text())[0]
    assert details["test images"] == 2
    predict.main([str(root / "images" / "s"), "--fov-dir", str(root / "fov" / "s"), "--out-dir",
                  str(tmp_path / "pred"), "--run-dir", str(run), "--quiet"])
    assert np.asarray(Image.open(tmp_path / "pred" / "e3_mask.png")).shape == (H, W)


def test_drive_files_through_the_own_folder_path_are_the_benchmark_arrays(tmp_path):
    """Synthetic DRIVE in its layout, renamed as the own-folder rule needs (images/21.tif, masks/21_manual1.gif,
    fov/21_mask.gif): every case's arrays are byte-identical to the benchmark path's."""
    drive = tmp_path / "DRIVE"
    ids = write_drive_dataset(drive, 4, 3, (H, W), seed=2)
    bench = tmp_path / "bench"
    prep.main(["--drive-dir", str(drive), "--work-dir", str(bench), "--n-train", "4", "--n-test", "3", "--height",
               str(H), "--width", str(W), "--quiet"])
    own = tmp_path / "own"
    for sub in ("images", "masks", "fov"):
        (own / sub).mkdir(parents=True)
    for split, folder in (("training", "training"), ("test", "test")):
        for key in ids[split]:
            name = f"{key}_{'training' if split == 'training' else 'test'}"
            (own / "images" / f"{key}.tif").symlink_to(drive / folder / "images" / f"{name}.tif")
            (own / "masks" / f"{key}_manual1.gif").symlink_to(drive / folder / "1st_manual" / f"{key}_manual1.gif")
            (own / "fov" / f"{key}_mask.gif").symlink_to(drive / folder / "mask" / f"{key}_{split}_mask.gif")
    prep.main(["--images", str(own / "images"), "--masks", str(own / "masks"), "--fov", str(own / "fov"),
               "--work-dir", str(tmp_path / "work"), "--quiet"])
    reference = _by_name(bench, {"train": ids["training"], "test": ids["test"]})
    mine = _by_name(tmp_path / "work")
    assert sorted(mine) == sorted(reference)
    for key in reference:
        for a, b in zip(reference[key], mine[key]):
            assert a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes(), key


def test_real_drive_through_the_own_folder_path_gives_the_benchmark_arrays(drive_training, tmp_path):
    """The 20 real DRIVE training images: byte-identical per case to prepare_datasets_DRIVE.py's DRIVE layout."""
    images = sorted((drive_training / "images").glob("*_training.tif"))
    root = tmp_path / "DRIVE"
    for sub in ("images", "1st_manual", "mask"):  # the benchmark reads training/ and test/: both the 20 images
        for split in ("training", "test"):
            (root / split / sub).mkdir(parents=True)
    own = tmp_path / "own"
    for sub in ("images", "masks", "fov"):
        (own / sub).mkdir(parents=True)
    for path in images:
        key = path.name[:2]
        for split in ("training", "test"):
            (root / split / "images" / path.name).symlink_to(path)
            (root / split / "1st_manual" / f"{key}_manual1.gif").symlink_to(
                drive_training / "1st_manual" / f"{key}_manual1.gif")
            (root / split / "mask" / f"{key}_{split}_mask.gif").symlink_to(
                drive_training / "mask" / f"{key}_training_mask.gif")
        (own / "images" / f"{key}.tif").symlink_to(path)
        (own / "masks" / f"{key}_manual1.gif").symlink_to(drive_training / "1st_manual" / f"{key}_manual1.gif")
        (own / "fov" / f"{key}_mask.gif").symlink_to(drive_training / "mask" / f"{key}_training_mask.gif")
    prep.main(["--drive-dir", str(root), "--work-dir", str(tmp_path / "bench"), "--quiet"])
    prep.main(["--images", str(own / "images"), "--masks", str(own / "masks"), "--fov", str(own / "fov"),
               "--work-dir", str(tmp_path / "work"), "--quiet"])
    keys = [p.name[:2] for p in images]
    reference = _by_name(tmp_path / "bench", {"train": keys})
    mine = _by_name(tmp_path / "work")
    assert sorted(mine) == sorted(reference) and len(mine) == 20
    for key in keys:
        for a, b in zip(reference[key], mine[key]):
            assert a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes(), key
    counts = json.loads(prep.split_path(tmp_path / "work").read_text())["counts"]
    assert counts == {"train": 8, "val": 2, "test": 10}  # DRIVE's proportions: half test, 10 % validation


def test_bad_own_input_is_one_error_line_and_writes_nothing(tmp_path):
    root = tmp_path / "d"
    _own_folders(root)
    work = tmp_path / "work"

    def fails(pattern, *extra, fov=True):
        line = error_line(prep.main, _argv(root, work, *extra, fov=fov))
        assert re.fullmatch(pattern, line), line
        assert not work.exists() or not any(work.rglob("*.*"))

    fails(r"error: --val-fraction: must be above 0.*", "--val-fraction", "0")
    fails(r"error: --test-fraction: 0.05 leaves the test split empty.*", "--test-fraction", "0.05")
    fails(r"error: --group-by: 'zzz' matches none of the 10 names.*", "--group-by", "zzz")
    assert error_line(prep.main, ["--fov", str(root / "fov"), "--work-dir", str(work)]).startswith(
        "error: --fov: goes with --images/--masks")
    # an image without a FOV mask
    (root / "fov" / "e1.png").rename(root / "e1_fov.png")
    fails(r"error: --fov: FOV masks are paired with the images like the masks: .*1 image\(s\) without a mask: "
          r"e1\.tif.*")
    (root / "e1_fov.png").rename(root / "fov" / "e1.png")
    # a FOV mask of another size than its image
    good = (root / "fov" / "e1.png").read_bytes()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "fov" / "e1.png")
    fails(r"error: .*e1\.png: mask is 10x10 \(rows x cols\) but its image .*e1\.tif is 40x32.*")
    # a FOV mask with three values
    Image.fromarray(np.array([[0, 128, 255] * 10 + [0, 0]] * H, np.uint8)).save(root / "fov" / "e1.png")
    fails(r"error: .*e1\.png: mask has 3 values .* but the task is binary.*")
    (root / "fov" / "e1.png").write_bytes(good)
    # a name matching two masks; an empty images folder
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks" / "e7_gt.png")
    fails(r"error: .*1 name\(s\) matching two files: e7 \(masks e7_gt\.png, e7_manual1\.png\).*")
    (root / "masks" / "e7_gt.png").unlink()
    (tmp_path / "empty").mkdir()
    line = error_line(prep.main, ["--images", str(tmp_path / "empty"), "--masks", str(root / "masks"), "--work-dir",
                                  str(work), "--quiet"])
    assert re.fullmatch(r"error: .*empty: no image files .*--images.*", line), line
    # unpaired vessel masks, then --skip-unpaired goes on
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks" / "ghost_manual1.png")
    fails(r"error: .*1 mask\(s\) without an image: ghost_manual1\.png.*--skip-unpaired.*")
    assert prep.main(_argv(root, work, "--skip-unpaired")) == 0
    # a prepared dataset is not replaced without --overwrite
    before = prep.hdf5_path(work, "imgs", "train").read_bytes()
    line = error_line(prep.main, _argv(root, work))
    assert "a prepared DRIVE dataset is already there" in line and "--overwrite" in line
    assert prep.hdf5_path(work, "imgs", "train").read_bytes() == before


def test_an_nnunet_dataset_gives_the_same_arrays(tmp_path, capsys):
    """RGB PNG fundus photos (one _0000 file), 0/1 vessel labels, imagesTs: the whole image is the FOV."""
    rng = np.random.default_rng(4)
    folder = tmp_path / "Dataset002_Vessels"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    cases = {}
    for i in range(6):
        image, vessels, _ = _fundus(rng, H, W)
        Image.fromarray(image).save(folder / "imagesTr" / f"eye_{i:03d}_0000.png")
        Image.fromarray(vessels).save(folder / "labelsTr" / f"eye_{i:03d}.png")
        cases[f"eye_{i:03d}"] = (image, vessels)
    Image.fromarray(_fundus(rng, H, W)[0]).save(folder / "imagesTs" / "new_000_0000.png")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "vessel": 1},
        "numTraining": 6, "file_ending": ".png"}))
    work = tmp_path / "work"
    assert prep.main(["--nnunet-dataset", str(folder), "--work-dir", str(work), "--quiet"]) == 0
    assert "imagesTs cases (1) have no masks and are not used" in capsys.readouterr().err
    record = json.loads(prep.split_path(work).read_text())
    assert record["counts"] == {"train": 2, "val": 1, "test": 3} and record["source"] == "nnunet"
    for name, (imgs, truth, fov) in _by_name(work).items():
        np.testing.assert_array_equal(imgs, cases[name][0].transpose(2, 0, 1).astype(np.float64))
        np.testing.assert_array_equal(truth[0], cases[name][1] * 255.0)
        assert np.all(fov == 255)
    line = error_line(prep.main, ["--nnunet-dataset", str(folder), "--fov", str(tmp_path), "--work-dir",
                                  str(tmp_path / "w2")])
    assert line.startswith("error: --fov: goes with --images/--masks")
    assert not (tmp_path / "w2").exists()


def _label_folders(root, seed=7):
    """Eight RGB fundus-like images with label-map masks 0..2 (grey PNG, 1 = thin vessels, 2 = a disc) and FOV
    masks; one image of another size. Returns ``{name: (image, labels, fov)}``."""
    rng = np.random.default_rng(seed)
    cases = {}
    for k in range(8):
        name = f"c{k}"
        rows, cols = (H, W) if k != 5 else (44, 36)
        image, vessels, fov = _fundus(rng, rows, cols)
        labels = vessels.astype(np.uint8)
        yy, xx = np.mgrid[:rows, :cols]
        labels[(yy - rows // 2) ** 2 + (xx - cols // 3) ** 2 <= 16] = 2
        for sub in ("images", "masks", "fov"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(labels).save(root / "masks" / f"{name}_label.png")
        Image.fromarray(fov * 255).save(root / "fov" / f"{name}_mask.png")
        cases[name] = (image, labels, fov)
    return cases


def _dice(truth, pred, c):
    g, q = truth == c, pred == c
    tp, fp, fn = np.sum(g & q), np.sum(~g & q), np.sum(g & ~q)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan


def test_label_masks_train_a_k_class_head_scored_per_class(tmp_path, monkeypatch):
    """--keep-labels: label maps 0..2 stored as they are (Pillow nearest for the odd size), patches keep them,
    train_retina.py trains a 3-channel softmax head (K read from the patches, default folder ``_classes3``),
    evaluate.py scores it per class inside the FOV (Dice against NumPy on the network's softmax recomputed here
    with a network built at the image size), predict.py writes palette label maps (the argmax recomputed here)."""
    import keras

    from common.data.preprocess import my_preproc
    from common.models import build_model

    root, work = tmp_path / "d", tmp_path / "work"
    cases = _label_folders(root)
    assert "--foreground makes them one binary foreground" in error_line(
        prep.main, _argv(root, work, "--keep-labels", "--foreground", "1"))
    assert error_line(prep.main, ["--keep-labels", "--work-dir", str(work)]).startswith(
        "error: --keep-labels: goes with --images/--masks or --nnunet-dataset")
    assert prep.main(_argv(root, work, "--keep-labels", "--val-fraction", "0.2", "--test-fraction", "0.25")) == 0
    record = json.loads(prep.split_path(work).read_text())
    assert record["num_classes"] == 3 and record["counts"] == {"train": 4, "val": 2, "test": 2}
    for name, (_, truth, _) in _by_name(work).items():
        labels = cases[name][1]
        if labels.shape != (H, W):  # 44x36 -> 40x32: Pillow nearest keeps the labels
            labels = np.asarray(Image.fromarray(labels).resize((W, H), Image.NEAREST))
        np.testing.assert_array_equal(truth[0], labels.astype(np.float64), err_msg=name)

    save_patch.main(["--work-dir", str(work), "--patch", "16", "--n-patches", "60", "--quiet"])
    patches = np.load(work / save_patch.MASKS_FILE)
    from retina_vessel import task

    data = task.load_prepared(work)  # compare_models.py's reader: the last 2 of 6 images' patches validate
    assert (len(data["train"][0]), len(data["val"][0])) == (40, 20)
    np.testing.assert_array_equal(data["test"][1][..., 0], _load(work, "groundTruth", "test")[:, 0])  # labels kept
    import compare_models

    assert "the train masks hold labels up to 2; compare_models.py compares binary segmentation" in error_line(
        compare_models.main, ["--data", str(work), "--models", "unet2d_8_128", "--out", str(tmp_path / "cmp")])
    assert not (tmp_path / "cmp").exists()
    assert set(np.unique(patches)) == {0, 1, 2}
    crops = [t[0, 4:36].astype(np.uint8) for t in _load(work, "groundTruth", "train")]  # rows (40 - 32) // 2 ..
    for i, crop in enumerate(crops):  # every image's first patch is a window of its cropped label map
        windows = np.lib.stride_tricks.sliding_window_view(crop, (16, 16))
        assert (windows == patches[i * 10, ..., 0]).all(axis=(-2, -1)).any()

    monkeypatch.setattr("common.cli.repo_path", lambda *parts: tmp_path.joinpath(*parts))
    assert "--prior-output-bias: belongs to the original's binary head, not a 3-class softmax head" in error_line(
        train_retina.main, ["--work-dir", str(work), "--epochs", "1", "--prior-output-bias", "--verbose", "0"])
    assert train_retina.main(["--work-dir", str(work), "--epochs", "1", "--seed", "0", "--verbose", "0"]) == 0
    run = tmp_path / "weights" / "retina_vessel" / "bcdu_net_d3_e1_seed0_classes3"
    state = json.loads((run / "state.json").read_text())["settings"]
    assert state["num_classes"] == 3 and state["multiclass_loss"] == "ce"
    assert train_retina.run_name() == "bcdu_net_d3"  # the original's folder unchanged

    # evaluate: the run folder is passed; the default folder of a 3-class dataset is bcdu_net_d3_classes3
    assert error_line(evaluate.main, ["--work-dir", str(work), "--quiet"]) == (
        f"error: {tmp_path / 'weights' / 'retina_vessel' / 'bcdu_net_d3_classes3' / 'best.keras'}: checkpoint not "
        f"found; train first, or give --run-dir / --model")
    out = tmp_path / "eval"
    assert evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--inference", "full", "--out-dir",
                          str(out), "--quiet"]) == 0
    trained = keras.models.load_model(run / "best.keras", compile=False)
    full = build_model("bcdu_net_d3", (H, W, 1), num_classes=3)  # built here at the image size
    full.set_weights(trained.get_weights())
    imgs, truth, fov = (_load(work, kind, "test").transpose(0, 2, 3, 1) for kind in prep.KINDS)
    softmax = full.predict(my_preproc(imgs), verbose=0)
    inside = fov[..., 0] > 0
    pred = np.load(out / "pred_imgs.npy")
    np.testing.assert_allclose(pred[inside], softmax[inside], atol=1e-5)
    np.testing.assert_array_equal(pred[~inside], np.tile([1.0, 0.0, 0.0], ((~inside).sum(), 1)))
    labels = np.where(inside, softmax.argmax(-1), 0)
    truth = np.where(inside, truth[..., 0], 0)
    rows = [{k: np.nan if v is None else v for k, v in r.items()}  # JSON null = NaN
            for r in json.loads((out / "scores.json").read_text())]
    assert [r["class"] for r in rows] == ["1", "2", "mean (foreground)"]
    for row, c in zip(rows, (1, 2)):
        assert row["dice"] == pytest.approx(_dice(truth, labels, c), nan_ok=True)
    assert (out / "overlay.png").is_file() and (out / "run.json").is_file()
    binary = tmp_path / "binary"
    binary.mkdir()
    build_model("bcdu_net_d3", (16, 16, 1)).save(binary / "best.keras")
    assert error_line(evaluate.main, ["--work-dir", str(work), "--run-dir", str(binary), "--out-dir",
                                      str(tmp_path / "e2"), "--quiet"]).startswith(
        f"error: {prep.hdf5_path(work, 'groundTruth', 'test')}: holds label maps of 3 classes (prepared with "
        f"--keep-labels); {binary / 'best.keras'} is a binary network")
    assert not (tmp_path / "e2").exists()

    # predict: one photo -> a palette label map, the argmax of the softmax recomputed here, background outside FOV
    name = record["test"][0]
    image, _, border = cases[name]
    assert predict.main([str(root / "images" / f"{name}.png"), "--fov", str(root / "fov" / f"{name}_mask.png"),
                         "--run-dir", str(run), "--out-dir", str(tmp_path / "pred"), "--save-probabilities",
                         "--overlay", "--quiet"]) == 0
    expected = np.where(border > 0, full.predict(my_preproc(image[None]), verbose=0)[0].argmax(-1), 0)
    with Image.open(tmp_path / "pred" / f"{name}_mask.png") as written:
        assert written.mode == "P"
        np.testing.assert_array_equal(np.array(written), expected)
    assert np.load(tmp_path / "pred" / f"{name}_prob.npy").shape == (H, W, 3)
    assert not (tmp_path / "pred" / f"{name}_prob.png").exists()


def test_keep_labels_refuses_labels_above_63(tmp_path):
    root, work = tmp_path / "d", tmp_path / "work"
    cases = _label_folders(root)
    labels = cases["c1"][1].copy()
    labels[0, 0] = 70
    Image.fromarray(labels).save(root / "masks" / "c1_label.png")
    line = error_line(prep.main, _argv(root, work, "--keep-labels"))
    assert re.fullmatch(r"error: .*c1_label\.png: labels 0\.\.70; --keep-labels takes label maps 0\.\.63 "
                        r"\(0 = background\)", line), line
    assert not work.exists() or not any(work.rglob("*.*"))
