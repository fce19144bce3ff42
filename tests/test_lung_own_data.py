"""lung on your own data (issue 22 items 3, 5, 6): NIfTI volumes, 2-D slices, nnU-Net datasets.

References come from the documented recipe (specs/bcdu_net.md §3.3: HU clipped to [-512, 512] and min-max
scaled over the volume, body = image > 0 eroded, FOV = holes of body OR lung filled, target = FOV AND NOT lung,
only slices with lung) computed here with scipy, and from the Kaggle path's own arrays on the same files.
"""

import json
import shutil

import cv2
import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion, binary_fill_holes

from common.data import to_nnunet
from common.data.synthetic import write_lung_dataset
from lung import evaluate_performance, predict, prepare_data, train_lung
from _cli import error_line

SIZE = 32
ARRAYS = {"image": ("data_train", "data_test"), "lung": ("mask_train", "mask_test"),
          "target": ("Train_maska", "Test_maska"), "fov": ("FOV_tr", "FOV_te")}


def _kaggle(tmp_path, n_volumes=5, seed=0):
    return write_lung_dataset(tmp_path / "raw", n_volumes, 10, SIZE, n_empty=2, seed=seed)


def _own_volumes(tmp_path, written, transpose=False):
    """The Kaggle volumes renamed into a user's layout (nested, .nii and .nii.gz, masks with a suffix)."""
    for k, vol_id in enumerate(written["ids"]):
        sub = "site_a" if k % 2 else "site_b/deep"
        for kind, prefix, suffix in (("images", "IMG", ""), ("masks", "MASK", "_seg" if k % 2 else "_mask")):
            (tmp_path / kind / sub).mkdir(parents=True, exist_ok=True)
            src = tmp_path / "raw" / "3d_images" / f"{prefix}_{vol_id}.nii.gz"
            ext = ".nii" if k == 2 else ".nii.gz"
            if suffix == "_seg":  # not a mask suffix: the plain name pairs
                suffix = ""
            img = nib.load(src)
            data = np.asanyarray(img.dataobj)
            if transpose:  # the (x, y, z) layout of scanners: slices along axis 2
                data = np.transpose(data, (1, 2, 0))
            nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / kind / sub / f"ct{vol_id}{suffix}{ext}"))
    return tmp_path / "images", tmp_path / "masks"


def _arrays(work):
    return {key: [np.load(work / f"{name}.npy") for name in names] for key, names in ARRAYS.items()}


def _by_slice(work, names_key=("train", "test")):
    """{slice name: {key: array}} of a prepared folder (Kaggle: split.json train/test; own: *_slices)."""
    summary = json.loads((work / "split.json").read_text())
    arrays = _arrays(work)
    out = {}
    for part, key in enumerate(names_key):
        for i, name in enumerate(summary[key]):
            out[name] = {k: arrays[k][part][i] for k in ARRAYS}
    return out, summary


def test_own_volumes_equal_the_kaggle_arrays_on_the_same_files(tmp_path):
    written = _kaggle(tmp_path)
    bench = tmp_path / "bench"
    prepare_data.main(["--data-dir", str(tmp_path / "raw"), "--work-dir", str(bench), "--slice-size", str(SIZE),
                       "--erosion-size", "3", "--quiet"])
    images, masks = _own_volumes(tmp_path, written)
    own = tmp_path / "own"
    s = prepare_data.main(["--images", str(images), "--masks", str(masks), "--work-dir", str(own), "--slice-size",
                           str(SIZE), "--erosion-size", "3", "--quiet", "--seed", "1"])
    kaggle, _ = _by_slice(bench)
    ours, summary = _by_slice(own, ("train_slices", "test_slices"))
    assert s["n_train"] == summary["n_train"] and summary["input"] == "volumes" and summary["n_val"] > 0
    assert len(ours) == len(kaggle) == sum(len(v) for v in written["lung_slices"].values())
    for name, arrays in ours.items():
        case, z = name.rsplit(":", 1)
        vol_id = case.rsplit("ct", 1)[1]
        for key in ARRAYS:
            ref = kaggle[f"{vol_id}:{z}"][key]
            assert arrays[key].dtype == ref.dtype and arrays[key].tobytes() == ref.tobytes(), (name, key)
    # slices of one volume on one side; the train arrays hold the train cases' slices, then the val cases'
    split = {part: summary[part] for part in ("train", "val", "test")}
    assert sorted(sum(split.values(), [])) == sorted(summary["volumes"]) and all(split.values())
    order = [n.rsplit(":", 1)[0] for n in summary["train_slices"]]
    assert list(dict.fromkeys(order)) == split["train"] + split["val"]
    assert summary["n_val"] == sum(1 for c in order if c in split["val"])
    assert {n.rsplit(":", 1)[0] for n in summary["test_slices"]} == set(split["test"])
    # --slice-axis 2 on the same volumes stored (x, y, z) gives the same arrays
    shutil.copytree(tmp_path / "raw", tmp_path / "t" / "raw")
    t_images, t_masks = _own_volumes(tmp_path / "t", written, transpose=True)
    axis2 = tmp_path / "axis2"
    prepare_data.main(["--images", str(t_images), "--masks", str(t_masks), "--work-dir", str(axis2), "--slice-size",
                       str(SIZE), "--erosion-size", "3", "--quiet", "--seed", "1", "--slice-axis", "2"])
    for key, names in ARRAYS.items():
        for name in names:
            assert np.load(axis2 / f"{name}.npy").tobytes() == np.load(own / f"{name}.npy").tobytes()


def _reference(grey, lung, erosion, fill):
    """The recipe's FOV and target from scaled slices and a bool lung, with scipy (spec §3.3)."""
    body = np.stack([binary_erosion(s > 0, structure=np.ones((erosion, erosion))) for s in grey])
    fov = np.stack([binary_fill_holes(f, structure=np.ones((fill, fill))) for f in body | lung])
    return fov, fov & ~lung


def _slice_folders(root, written):
    """2-D slices of the Kaggle volumes, windowed to 8-bit grey: vol<id>/<z>.png (odd size for one volume,
    TIFF for another, 16-bit masks for a third), masks 0/255 or 0/1. Returns {name: (grey, lung)}."""
    cases = {}
    for k, vol_id in enumerate(written["ids"]):
        vol = np.asanyarray(nib.load(root / "raw" / "3d_images" / f"IMG_{vol_id}.nii.gz").dataobj)
        seg = np.asanyarray(nib.load(root / "raw" / "3d_images" / f"MASK_{vol_id}.nii.gz").dataobj)
        grey = np.rint((np.clip(vol, -512, 512) + 512) / 1024 * 255).astype(np.uint8)  # a user's own window
        for z in range(len(vol)):
            image, lung = grey[z], seg[z] == 255
            if k == 1:  # an odd size: resized to SIZE
                image = cv2.resize(image, (37, 29), interpolation=cv2.INTER_LINEAR)
                lung = cv2.resize(lung.astype(np.uint8), (37, 29), interpolation=cv2.INTER_NEAREST) > 0
            ext = ".tif" if k == 2 else ".png"
            name = f"vol{vol_id}/{z:03d}" if k % 2 else f"vol{vol_id}_slice{z:03d}"
            (root / "slices" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "labels" / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "slices" / f"{name}{ext}")
            stored = lung.astype(np.uint16) * np.uint16(65535) if k == 3 else lung.astype(np.uint8) * (255 if k else 1)
            Image.fromarray(stored).save(root / "labels" / f"{name}_mask.png")
            cases[name] = (image, lung)
    return root / "slices", root / "labels", cases


def test_own_2d_slices_keep_volumes_together_and_build_the_recipes_targets(tmp_path):
    written = _kaggle(tmp_path)
    slices, labels, cases = _slice_folders(tmp_path, written)
    work = tmp_path / "work"
    prepare_data.main(["--images", str(slices), "--masks", str(labels), "--work-dir", str(work), "--slice-size",
                       str(SIZE), "--erosion-size", "3", "--quiet"])
    ours, summary = _by_slice(work, ("train_slices", "test_slices"))
    assert summary["input"] == "slices" and summary["hu_range"] is None
    kept = {name for name, (_, lung) in cases.items() if lung.any()}
    assert set(ours) == kept  # only slices with lung
    for name, arrays in ours.items():
        image, lung = cases[name]
        if image.shape != (SIZE, SIZE):
            image = cv2.resize(image.astype(np.float64), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            lung = cv2.resize(lung.astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST) > 0
        fov, target = _reference(image[None], lung[None], 3, 5)
        np.testing.assert_allclose(arrays["image"], image, rtol=1e-6, err_msg=name)
        np.testing.assert_array_equal(arrays["lung"], lung * 255)
        np.testing.assert_array_equal(arrays["fov"], fov[0])
        np.testing.assert_array_equal(arrays["target"], target[0])
    # the slices of one volume (folder, or name without the slice number) are on one side
    side = {}
    for part in ("train", "val", "test"):
        for name in summary[part]:
            volume = name.split("/")[0].split("_slice")[0]
            assert side.setdefault(volume, part) == part, name
    assert len(side) == 5 and all(summary[p] for p in ("train", "val", "test"))
    assert summary["spacing"]["vol0002/005"][1:] == pytest.approx([29 / SIZE, 37 / SIZE])


def _nnunet_volumes(root, written, tmp_path):
    """An nnU-Net v2 raw dataset of the Kaggle volumes as (x, y, z) NIfTI, labels 0/1, one imagesTs case."""
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for k, vol_id in enumerate(written["ids"]):
        vol = np.asanyarray(nib.load(tmp_path / "raw" / "3d_images" / f"IMG_{vol_id}.nii.gz").dataobj)
        seg = np.asanyarray(nib.load(tmp_path / "raw" / "3d_images" / f"MASK_{vol_id}.nii.gz").dataobj)
        nib.save(nib.Nifti1Image(np.transpose(vol, (1, 2, 0)), np.eye(4)), str(root / "imagesTr" /
                                                                               f"lung_{vol_id}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(np.transpose(seg // 255, (1, 2, 0)).astype(np.uint8), np.eye(4)),
                 str(root / "labelsTr" / f"lung_{vol_id}.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((SIZE, SIZE, 3), np.int16), np.eye(4)), str(root / "imagesTs" /
                                                                                    "new_0000.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0,
                                                   "lung": 1}, "numTraining": len(written["ids"]),
                                                   "file_ending": ".nii.gz"}))
    return root


def test_nnunet_volumes_and_2d_export_roundtrip(tmp_path, capsys):
    written = _kaggle(tmp_path)
    bench = tmp_path / "bench"
    prepare_data.main(["--data-dir", str(tmp_path / "raw"), "--work-dir", str(bench), "--slice-size", str(SIZE),
                       "--erosion-size", "3", "--quiet"])
    dataset = _nnunet_volumes(tmp_path / "Dataset510_Lung", written, tmp_path)
    work = tmp_path / "work"
    prepare_data.main(["--nnunet-dataset", str(dataset), "--work-dir", str(work), "--slice-size", str(SIZE),
                       "--erosion-size", "3", "--quiet", "--slice-axis", "2"])
    assert "1 imagesTs case(s) have no masks and are not prepared" in capsys.readouterr().err
    kaggle, _ = _by_slice(bench)
    ours, summary = _by_slice(work, ("train_slices", "test_slices"))
    assert summary["source"] == "nnunet" and len(ours) == len(kaggle)
    for name, arrays in ours.items():
        case, z = name.rsplit(":", 1)
        for key in ARRAYS:
            assert arrays[key].tobytes() == kaggle[f"{case[len('lung_'):]}:{z}"][key].tobytes()

    # the Kaggle arrays exported by to_nnunet (2-D PNG slices, label lung) read back as a 2-D nnU-Net dataset
    to_nnunet.main([str(bench), "--task", "lung", "--out", str(tmp_path / "export"), "--quiet"])
    meta = json.loads((tmp_path / "export" / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "lung": 1} and meta["channel_names"] == {"0": "grey"}
    kaggle_train = json.loads((bench / "split.json").read_text())["train"]
    first = kaggle_train[0]
    png = np.asarray(Image.open(tmp_path / "export" / "imagesTr" / f"{first.replace(':', '_')}_0000.png"))
    label = np.asarray(Image.open(tmp_path / "export" / "labelsTr" / f"{first.replace(':', '_')}.png"))
    np.testing.assert_array_equal(png, np.clip(np.rint(kaggle[first]["image"]), 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(label, kaggle[first]["lung"] // 255)
    back = tmp_path / "back"
    prepare_data.main(["--nnunet-dataset", str(tmp_path / "export"), "--work-dir", str(back), "--slice-size",
                       str(SIZE), "--erosion-size", "3", "--quiet"])
    again, summary = _by_slice(back, ("train_slices", "test_slices"))
    assert summary["input"] == "slices"
    for part in ("train", "val"):  # imagesTs (the Kaggle test part) is not prepared: no masks read from it
        for name in summary[part]:
            volume = name.split("_")[0]
            assert all(n.split("_")[0] != volume for p in ("train", "val", "test") if p != part
                       for n in summary[p])
    for name, arrays in again.items():
        ref = kaggle[name.replace("_", ":")]
        np.testing.assert_array_equal(arrays["image"], np.clip(np.rint(ref["image"]), 0, 255))
        np.testing.assert_array_equal(arrays["lung"], ref["lung"])


def test_own_data_prepare_train_evaluate_predict(tmp_path):
    written = _kaggle(tmp_path, n_volumes=4)
    images, masks = _own_volumes(tmp_path, written)
    work, run, out = tmp_path / "work", tmp_path / "run", tmp_path / "out"
    s = prepare_data.main(["--images", str(images), "--masks", str(masks), "--work-dir", str(work),
                           "--slice-size", str(SIZE), "--erosion-size", "3", "--quiet", "--val-fraction", "0.25",
                           "--test-fraction", "0.25"])
    train_lung.main(["--work-dir", str(work), "--run-dir", str(run), "--epochs", "1", "--seed", "0", "--verbose",
                     "0"])
    settings = json.loads((run / "state.json").read_text())["settings"]
    assert settings["validation"] == s["n_val"] and settings["train"] == s["n_train"] - s["n_val"]
    assert settings["val_split"] == "split.json n_val"
    rows = evaluate_performance.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out),
                                      "--quiet"])
    assert list(rows) == ["lung-gt", "body"]
    assert np.load(out / "pred_test.npy").shape == (s["n_test"], SIZE, SIZE)
    volume = next(images.rglob("*.nii.gz"))
    predict.main([str(volume), "--run-dir", str(run), "--out-dir", str(tmp_path / "pred"), "--quiet"])
    written_masks = list((tmp_path / "pred").glob("MASK_*.nii.gz"))
    assert len(written_masks) == 1 and nib.load(written_masks[0]).shape == nib.load(volume).shape


def _bad(root, case):
    written = write_lung_dataset(root / "raw", 6, 8, 16, n_empty=2, seed=0)
    for vol_id in written["ids"]:
        for kind, prefix in (("images", "IMG"), ("masks", "MASK")):
            (root / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(root / "raw" / "3d_images" / f"{prefix}_{vol_id}.nii.gz", root / kind / f"{vol_id}.nii.gz")
    if case == "mixed":
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "images" / "s.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "s.png")
    elif case == "unpaired":
        (root / "masks" / "0002.nii.gz").unlink()
    elif case == "4-D":
        nib.save(nib.Nifti1Image(np.zeros((8, 16, 16, 2), np.int16), np.eye(4)), str(root / "images" / "x.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros((8, 16, 16, 2), np.uint8), np.eye(4)), str(root / "masks" / "x.nii.gz"))
    elif case == "no lung":
        for vol_id in written["ids"][1:]:
            nib.save(nib.Nifti1Image(np.zeros((8, 16, 16), np.uint8), np.eye(4)), str(root / "masks" /
                                                                                       f"{vol_id}.nii.gz"))
    elif case == "nan":
        nib.save(nib.Nifti1Image(np.full((8, 16, 16), np.nan, np.float32), np.eye(4)),
                 str(root / "images" / "0002.nii.gz"))
    elif case == "sizes":
        nib.save(nib.Nifti1Image(np.zeros((8, 16, 15), np.uint8), np.eye(4)), str(root / "masks" / "0002.nii.gz"))
    return root


@pytest.mark.parametrize("case,extra,expect", [
    ("mixed", [], "a NIfTI volume among 2-D slices"),
    ("unpaired", [], "1 image(s) without a mask: 0002.nii.gz"),
    ("4-D", ["--skip-unpaired"], "expected a 3-D volume"),
    ("no lung", [], "hold no slice with lung"),
    ("nan", [], "voxels are NaN or infinite"),
    ("sizes", [], "but its image"),
    (None, ["--val-fraction", "0"], "--val-fraction: 0.0: lung needs a validation and a test part"),
    (None, ["--test-fraction", "0.8", "--val-fraction", "0.3"], "--val-fraction: 0.3 + --test-fraction 0.8"),
    (None, ["--group-by", "^zz(\\d)"], "--group-by: '^zz(\\\\d)' matches none"),
    (None, ["--train-fraction", "0.5"], "--train-fraction: is for the Kaggle layout"),
    (None, ["--data-dir", "elsewhere"], "--data-dir: give either --data-dir"),
])
def test_bad_own_input_is_one_line_and_writes_nothing(tmp_path, case, extra, expect):
    root = _bad(tmp_path / "in", case)
    line = error_line(prepare_data.main, ["--images", str(root / "images"), "--masks", str(root / "masks"),
                                          "--work-dir", str(tmp_path / "work"), "--slice-size", "16",
                                          "--erosion-size", "1", "--quiet", *extra])
    assert line.startswith("error: ") and expect in line, line
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_slice_axis_is_refused_on_the_kaggle_layout_and_outputs_are_kept(tmp_path):
    _kaggle(tmp_path, n_volumes=3)
    assert "--slice-axis: is for your own volumes" in error_line(prepare_data.main, [
        "--data-dir", str(tmp_path / "raw"), "--work-dir", str(tmp_path / "w"), "--slice-axis", "2"])
    root = _bad(tmp_path / "in", None)
    argv = ["--images", str(root / "images"), "--masks", str(root / "masks"), "--work-dir", str(tmp_path / "work"),
            "--slice-size", "16", "--erosion-size", "1", "--quiet", "--val-fraction", "0.34", "--test-fraction",
            "0.33"]
    prepare_data.main(argv)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").iterdir()}
    assert "already holds a prepared dataset" in error_line(prepare_data.main, argv)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").iterdir()} == before


# ------------------------------------------------------------------ --keep-labels: label maps as the targets

def _label_volumes(root, sizes=(16, 16, 16, 32), depth=6, seed=0):
    """Own NIfTI volumes in HU (slice axis 0) and label maps 0..2 (1 = a left block, 2 = a right block) on the
    middle slices; the first and last slice of each volume have no label. Returns {case: (hu, labels)}."""
    rng = np.random.default_rng(seed)
    cases = {}
    for k, size in enumerate(sizes):
        hu = rng.integers(-1000, 600, (depth, size, size)).astype(np.int16)
        labels = np.zeros((depth, size, size), np.uint8)
        for z in range(1, depth - 1):
            r0, c0 = (int(v) * size // 16 for v in rng.integers(1, 5, 2))
            labels[z, r0:r0 + size // 2, c0:c0 + size // 4] = 1
            labels[z, r0:r0 + size // 4, size // 2 + c0 // 2:size // 2 + c0 // 2 + size // 4] = 2
        for kind, array in (("images", hu), ("masks", labels)):
            (root / kind).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.6, 2.5, 1.0])), str(root / kind / f"v{k}.nii.gz"))
        cases[f"v{k}"] = (hu, labels)
    return cases


def _keep_argv(root, work, *extra):
    return ["--images", str(root / "images"), "--masks", str(root / "masks"), "--work-dir", str(work),
            "--slice-size", "16", "--erosion-size", "3", "--quiet", "--val-fraction", "0.25", "--test-fraction",
            "0.25", *extra]


def test_keep_labels_prepares_label_map_targets_trains_and_scores_per_class(tmp_path, monkeypatch):
    """--keep-labels: the targets are the label maps (nearest-neighbour resize = every other pixel for 32 -> 16),
    the slices are the recipe's HU window (2x2 block means for 32 -> 16), only slices with a label are kept, no
    lung mask or FOV; train_lung.py trains a 3-class head (K from split.json) and evaluate_performance.py scores
    it per class (Dice / IoU against NumPy on the network's own softmax recomputed here)."""
    import keras

    import common.layers  # noqa: F401

    root, work = tmp_path / "in", tmp_path / "work"
    cases = _label_volumes(root)
    binary = tmp_path / "binary"  # an earlier binary prepare of the same folder, replaced below with --overwrite
    prepare_data.main(_keep_argv(root, binary, "--foreground", "all"))
    shutil.copytree(binary, work)
    assert "already holds a prepared dataset" in error_line(prepare_data.main, _keep_argv(root, work,
                                                                                          "--keep-labels"))
    record = prepare_data.main(_keep_argv(root, work, "--keep-labels", "--overwrite"))
    assert record["num_classes"] == 3 and record["target"] == "labels"
    assert json.loads((work / "split.json").read_text())["num_classes"] == 3
    assert sorted(p.name for p in work.iterdir()) == ["Test_maska.npy", "Train_maska.npy", "data_test.npy",
                                                      "data_train.npy", "split.json"]  # no lung masks, no FOVs
    rows = {"train": (np.load(work / "data_train.npy"), np.load(work / "Train_maska.npy")),
            "test": (np.load(work / "data_test.npy"), np.load(work / "Test_maska.npy"))}
    assert rows["train"][1].dtype == np.uint8 and set(np.unique(rows["train"][1])) == {0, 1, 2}
    names = {"train": record["train_slices"], "test": record["test_slices"]}
    assert len(names["train"]) == len(rows["train"][0]) and len(names["test"]) == len(rows["test"][0])
    assert sorted(names["train"] + names["test"]) == sorted(f"v{k}:{z}" for k in range(4) for z in range(1, 5))
    for part, (images, targets) in rows.items():
        for i, name in enumerate(names[part]):
            case, z = name.split(":")
            hu, labels = cases[case]
            v = hu.astype(np.float64)
            low, high = np.clip([v.min(), v.max()], -512, 512)
            scaled = (np.clip(v[int(z)], -512, 512) - low) / (high - low) * 255.0
            label = labels[int(z)]
            if scaled.shape[0] == 32:  # resized to 16: area mean of 2x2 blocks, nearest = every other pixel
                scaled = scaled.reshape(16, 2, 16, 2).mean(axis=(1, 3))
                label = label[::2, ::2]
            np.testing.assert_allclose(images[i], scaled, rtol=1e-5, atol=1e-3, err_msg=name)
            np.testing.assert_array_equal(targets[i], label, err_msg=name)
    assert record["spacing"]["v3"] == pytest.approx([0.8, 1.2, 5.0])  # (slice, rows, cols), rows/cols scaled x2

    # nnU-Net export of the prepared folder: the label maps as the labels
    to_nnunet.main([str(work), "--task", "lung", "--out", str(tmp_path / "nn"), "--quiet"])
    dataset = json.loads((tmp_path / "nn" / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "class_1": 1, "class_2": 2}
    name = record["train_slices"][0]
    exported = np.array(Image.open(tmp_path / "nn" / "labelsTr" / f"{name.replace(':', '_')}.png"))
    np.testing.assert_array_equal(exported, rows["train"][1][0])

    monkeypatch.setattr("common.cli.repo_path", lambda *parts: tmp_path.joinpath(*parts))
    run = train_lung.main(["--work-dir", str(work), "--model", "bcdu_net_d1", "--epochs", "1", "--batch-size", "4",
                           "--seed", "0", "--verbose", "0"])
    assert run.name == "bcdu_net_d1_epochs1_batch4_seed0_classes3"
    settings = json.loads((run / "state.json").read_text())["settings"]
    assert settings["num_classes"] == 3 and settings["validation"] == record["n_val"]
    out = tmp_path / "eval"
    scores = evaluate_performance.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out),
                                        "--quiet"])
    model = keras.models.load_model(run / "best.keras", compile=False)
    assert model.output_shape[-1] == 3
    softmax = model.predict(rows["test"][0][..., None] / 255.0, verbose=0)
    np.testing.assert_allclose(np.load(out / "pred_test.npy"), softmax, atol=1e-5)
    labels, truth = softmax.argmax(-1), rows["test"][1]
    table = [{k: np.nan if v is None else v for k, v in r.items()} for r in json.loads((out / "scores.json")
                                                                                        .read_text())]
    assert [r["class"] for r in table] == ["1", "2", "mean (foreground)"]
    dice = []
    for row, c in zip(table, (1, 2)):
        g, q = truth == c, labels == c
        tp, fp, fn = np.sum(g & q), np.sum(~g & q), np.sum(g & ~q)
        dice.append(2 * tp / (2 * tp + fp + fn))
        assert row["dice"] == pytest.approx(dice[-1])
        assert row["iou"] == pytest.approx(tp / (tp + fp + fn))
        assert scores["classes"][c]["dice"] == pytest.approx(dice[-1])
    assert table[2]["dice"] == pytest.approx(np.mean(dice))


def test_keep_labels_with_labels_0_1_is_the_binary_recipe_and_bad_input_is_one_line(tmp_path, capsys):
    root = tmp_path / "in"
    cases = _label_volumes(root, sizes=(16, 16, 16, 16))
    for k, (hu, labels) in cases.items():  # labels 0/1 only
        nib.save(nib.Nifti1Image((labels != 0).astype(np.uint8), np.eye(4)), str(root / "masks" / f"{k}.nii.gz"))
    plain, kept = tmp_path / "plain", tmp_path / "kept"
    prepare_data.main(_keep_argv(root, plain))
    capsys.readouterr()
    record = prepare_data.main(_keep_argv(root, kept, "--keep-labels"))
    assert "the masks hold the labels 0/1 only: prepared as the binary recipe" in capsys.readouterr().err
    assert record["num_classes"] == 2 and record["target"] == "around-lung"
    for name in ARRAYS.values():
        for stored in name:
            np.testing.assert_array_equal(np.load(kept / f"{stored}.npy"), np.load(plain / f"{stored}.npy"))

    argv = _keep_argv(root, tmp_path / "w", "--keep-labels")
    assert error_line(prepare_data.main, argv + ["--foreground", "1"]) == (
        "error: --keep-labels: keeps every label of the masks; --foreground makes them one binary foreground: give "
        "one of the two")
    assert error_line(prepare_data.main, ["--keep-labels", "--work-dir", str(tmp_path / "w")]) == (
        "error: --keep-labels: goes with --images/--masks or --nnunet-dataset (the Kaggle masks are binary lung "
        "masks)")
    labels = cases["v2"][1].copy()
    labels[2, 0, 0] = 70
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(root / "masks" / "v2.nii.gz"))
    assert error_line(prepare_data.main, argv) == (
        f"error: {root / 'masks' / 'v2.nii.gz'}: labels 0..70; --keep-labels takes label maps 0..63 (0 = background)")
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())
