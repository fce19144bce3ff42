"""nnU-Net v2 raw datasets: reading (common.data.nnunet) and writing (common.data.to_nnunet).

The datasets are written here by hand with Pillow / nibabel as nnU-Net's documentation describes them
(documentation/dataset_format.md), and read back against the arrays written.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from common.data import to_nnunet
from common.data.nnunet import case_identifier, read_nnunet_case, read_nnunet_dataset, write_nnunet_dataset
from tests._cli import error_line

nib = pytest.importorskip("nibabel")

RNG = np.random.default_rng(0)


def _json(folder, **meta):
    base = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1, "TZ": 2},
            "numTraining": 3, "file_ending": ".png"}
    base.update(meta)
    base = {k: v for k, v in base.items() if v is not None}
    (folder / "dataset.json").write_text(json.dumps(base))


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _nii(path, array, zooms=(1.0, 1.0, 1.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, np.diag([*zooms, 1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


def two_channel_png(root):
    """3 training cases of odd sizes, 2 grey channels, labels 0..2; 1 test case. Returns the arrays."""
    root.mkdir(parents=True, exist_ok=True)
    _json(root)
    arrays = {}
    for case, (h, w) in {"case_b": (7, 5), "case_a": (9, 11), "case_c": (6, 6)}.items():
        chans = [RNG.integers(0, 256, (h, w), dtype=np.uint8) for _ in range(2)]
        label = RNG.integers(0, 3, (h, w), dtype=np.uint8)
        for c, a in enumerate(chans):
            _png(root / "imagesTr" / f"{case}_{c:04d}.png", a)
        _png(root / "labelsTr" / f"{case}.png", label)
        arrays[case] = (np.stack(chans, -1), label)
    test = [RNG.integers(0, 256, (4, 8), dtype=np.uint8) for _ in range(2)]
    for c, a in enumerate(test):
        _png(root / "imagesTs" / f"t1_{c:04d}.png", a)
    arrays["t1"] = (np.stack(test, -1), None)
    return arrays


def read(path):
    return read_nnunet_dataset(path, verbose=False)


def test_two_channel_png(tmp_path):
    root = tmp_path / "Dataset001_X"
    arrays = two_channel_png(root)
    ds = read(root)
    assert ds.source == "nnunet"
    assert ds.labels == {0: "background", 1: "PZ", 2: "TZ"}
    assert [p.name for p in ds.pairs] == ["case_a", "case_b", "case_c"]
    assert ds.pairs[1].image == (root / "imagesTr/case_b_0000.png", root / "imagesTr/case_b_0001.png")
    assert ds.pairs[1].mask == root / "labelsTr/case_b.png" and not ds.pairs[1].volume
    assert [(p.name, p.mask) for p in ds.test] == [("t1", None)]
    for pair in ds.pairs + ds.test:
        image, label = read_nnunet_case(pair)
        np.testing.assert_array_equal(image, arrays[pair.name][0])
        if label is None:
            assert arrays[pair.name][1] is None
        else:
            np.testing.assert_array_equal(label, arrays[pair.name][1])


def test_rgb_png_is_three_channels(tmp_path):
    root = tmp_path / "rgb"
    root.mkdir()
    _json(root, channel_names={"0": "R", "1": "G", "2": "B"}, labels={"background": 0, "road": 1}, numTraining=1)
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    label = np.zeros((5, 7), np.uint8)
    label[1:3, 2:6] = 1
    _png(root / "imagesTr/img-11_0000.png", rgb)
    _png(root / "labelsTr/img-11.png", label)
    ds = read(root)
    assert [p.image for p in ds.pairs] == [(root / "imagesTr/img-11_0000.png",)]
    image, got = read_nnunet_case(ds.pairs[0])
    np.testing.assert_array_equal(image, rgb)
    np.testing.assert_array_equal(got, label)


def test_palette_and_16bit_labels(tmp_path):
    root = tmp_path / "pal"
    root.mkdir()
    _json(root, channel_names={"0": "x"}, numTraining=2)
    label = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    pal = Image.fromarray(label)  # putpalette makes an L image a palette image, keeping the indices
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    (root / "labelsTr").mkdir()
    pal.save(root / "labelsTr/a.png")
    sixteen = Image.fromarray(label.astype(np.uint16))
    assert sixteen.mode.startswith("I;16")
    sixteen.save(root / "labelsTr/b.png")
    for case in "ab":
        _png(root / f"imagesTr/{case}_0000.png", np.full((2, 3), 9, np.uint8))
    for pair in read(root).pairs:
        np.testing.assert_array_equal(read_nnunet_case(pair)[1], label)


def nifti_dataset(root):
    root.mkdir(parents=True)
    _json(root, file_ending=".nii.gz", numTraining=2)
    arrays = {}
    for case, shape in {"vol_2": (4, 5, 3), "vol_1": (6, 4, 2)}.items():
        chans = [RNG.normal(size=shape).astype(np.float32), RNG.integers(0, 900, shape).astype(np.int16)]
        label = RNG.integers(0, 3, shape).astype(np.uint8)
        for c, a in enumerate(chans):
            _nii(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", a, (0.7, 0.7, 2.5))
        _nii(root / "labelsTr" / f"{case}.nii.gz", label, (0.7, 0.7, 2.5))
        arrays[case] = (chans, label)
    for c in range(2):
        _nii(root / "imagesTs" / f"vol_9_{c:04d}.nii.gz", np.zeros((3, 3, 3), np.float32))
    return arrays


def test_nifti_volumes(tmp_path):
    root = tmp_path / "Dataset002_Vol"
    arrays = nifti_dataset(root)
    ds = read(root)
    assert [p.name for p in ds.pairs] == ["vol_1", "vol_2"] and all(p.volume for p in ds.pairs)
    assert [(p.name, p.mask, p.volume) for p in ds.test] == [("vol_9", None, True)]
    for pair in ds.pairs:
        image, label = read_nnunet_case(pair)
        chans, want = arrays[pair.name]
        assert image.shape == (*want.shape, 2)
        np.testing.assert_allclose(image[..., 0], chans[0])
        np.testing.assert_array_equal(image[..., 1], chans[1])
        np.testing.assert_array_equal(label, want)


# --- every bad case: one error line naming the file, exit 2 ----------------------------------------------------

def _main(argv):
    read_nnunet_dataset(argv[0], verbose=False)


def _bad(root, expect):
    line = error_line(_main, [str(root)])
    assert line.startswith("error: ")
    for text in expect:
        assert text in line, line
    return line


def _label_3(root):
    label = np.zeros((7, 5), np.uint8)
    label[0, 0] = 3
    _png(root / "labelsTr/case_b.png", label)


def _shape(root):
    _png(root / "labelsTr/case_b.png", np.zeros((7, 6), np.uint8))


# Cross-checked once by hand (nnunetv2 2.8.1 in a scratch venv, not a requirement): each of these datasets written
# by two_channel_png + the mutation, given to nnU-Net's own verify_dataset_integrity. nnU-Net rejects all of them
# (assertion / RuntimeError / JSONDecodeError) except "regions" and "ignore label", which are valid nnU-Net
# features this project does not support (refused on purpose); the unmutated dataset is accepted.
BAD = {
    "missing channel": (lambda r: (r / "imagesTr/case_b_0001.png").unlink(),
                        ["imagesTr/case_b_0001.png: missing", "channel 1 'ADC'"]),
    "label not in dataset.json": (_label_3, ["labelsTr/case_b.png", "label value(s) 3 not in dataset.json"]),
    "numTraining wrong": (lambda r: _json(r, numTraining=4), ["dataset.json: numTraining is 4", "3 case(s)"]),
    "labels not consecutive": (lambda r: _json(r, labels={"background": 0, "PZ": 1, "TZ": 3}),
                               ["dataset.json", "consecutive", "[0, 1, 3]"]),
    "no background": (lambda r: _json(r, labels={"bg": 0, "PZ": 1, "TZ": 2}), ["dataset.json", '"background": 0']),
    "shape mismatch": (_shape, ["labelsTr/case_b.png: label shape (7, 6) differs", "(7, 5)"]),
    "missing dataset.json": (lambda r: (r / "dataset.json").unlink(), ["dataset.json: not found"]),
    "missing key": (lambda r: _json(r, numTraining=None, file_ending=None),
                    ["dataset.json: missing key(s) numTraining, file_ending"]),
    "file_ending mismatch": (lambda r: _json(r, file_ending=".bmp"), ["case_a_0000.png", "file_ending '.bmp'"]),
    "regions": (lambda r: _json(r, labels={"background": 0, "whole": [1, 2], "TZ": 2}, regions_class_order=[1, 2]),
                ["dataset.json", "'whole' is the region [1, 2]", "not supported"]),
    "ignore label": (lambda r: _json(r, labels={"background": 0, "PZ": 1, "TZ": 2, "ignore": 3}),
                     ["'ignore' label"]),
    "missing label file": (lambda r: (r / "labelsTr/case_c.png").unlink(), ["labelsTr/case_c.png: missing"]),
    "no channel suffix": (lambda r: shutil.copy(r / "imagesTr/case_a_0000.png", r / "imagesTr/extra.png"),
                          ["imagesTr/extra.png: no 4-digit channel suffix"]),
    "extra channel": (lambda r: shutil.copy(r / "imagesTr/case_a_0000.png", r / "imagesTr/case_a_0002.png"),
                      ["case_a_0002.png: channel 2", "lists 2 channel(s)"]),
    "bad json": (lambda r: (r / "dataset.json").write_text("{'labels': 1"), ["dataset.json: not valid JSON"]),
    "missing labelsTr": (lambda r: shutil.rmtree(r / "labelsTr"), ["labelsTr: folder not found"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_dataset_is_one_error_line(tmp_path, case):
    root = tmp_path / "ds"
    two_channel_png(root)
    BAD[case][0](root)
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    _bad(root, BAD[case][1])
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before  # nothing written

def test_rgb_in_a_one_channel_dataset(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    _json(root, channel_names={"0": "grey"}, labels={"background": 0, "x": 1}, numTraining=1)
    _png(root / "imagesTr/a_0000.png", np.zeros((3, 4, 3), np.uint8))
    _png(root / "labelsTr/a.png", np.zeros((3, 4), np.uint8))
    _bad(root, ["a_0000.png: case 'a' has 3 channel(s)", "lists 1 (grey)"])


def test_nifti_spacing_mismatch(tmp_path):
    root = tmp_path / "vol"
    nifti_dataset(root)
    _nii(root / "labelsTr/vol_1.nii.gz", np.zeros((6, 4, 2), np.uint8), (1.0, 1.0, 1.0))
    _bad(root, ["labelsTr/vol_1.nii.gz: voxel spacing", "differs"])


def test_corrupt_image(tmp_path):
    root = tmp_path / "ds"
    two_channel_png(root)
    (root / "imagesTr/case_c_0001.png").write_bytes(b"\x89PNG not really")
    _bad(root, ["imagesTr/case_c_0001.png: cannot decode image"])


def test_missing_test_channel(tmp_path):
    root = tmp_path / "ds"
    two_channel_png(root)
    _png(root / "imagesTs/t2_0000.png", np.zeros((4, 8), np.uint8))
    _bad(root, ["imagesTs/t2_0001.png: missing"])


def test_missing_folder(tmp_path):
    _bad(tmp_path / "nope", ["nope: folder not found"])


# --- writing -----------------------------------------------------------------------------------------------------

def test_case_identifier():
    assert case_identifier("dataset1/a b.png") == "dataset1__a_b"
    assert case_identifier("ISIC_0000001") == "ISIC_0000001"
    assert case_identifier("vol.nii.gz") == "vol"


def _cases(shapes, channels, dtype=np.uint8, n_labels=2, with_labels=True, prefix="sub/case"):
    out = []
    for i, shape in enumerate(shapes):
        image = RNG.integers(0, 200, (*shape, channels)).astype(dtype)
        label = RNG.integers(0, n_labels, shape).astype(np.uint8) if with_labels else None
        out.append((f"{prefix} {i}", image, label))
    return out


@pytest.mark.parametrize("ending,channels,shapes", [
    (".png", 3, [(5, 7), (8, 3)]),            # RGB: one _0000 file
    (".png", 2, [(5, 7), (8, 3)]),            # two grey files
    (".nii.gz", 3, [(5, 7), (8, 3)]),         # 2-D as one-slice volumes
    (".nii.gz", 2, [(4, 5, 3), (2, 6, 2)]),   # volumes
])
def test_round_trip(tmp_path, ending, channels, shapes):
    train = _cases(shapes, channels, n_labels=3)
    test = _cases(shapes[:1], channels, with_labels=False, prefix="test")
    out = tmp_path / "Dataset010_RT"
    names = write_nnunet_dataset(out, train_cases=train, test_cases=test, labels={0: "bg", 1: "a", 2: "b"},
                                 channel_names=[f"c{i}" for i in range(channels)], file_ending=ending,
                                 dataset_name="RT", verbose=False)
    assert names == {"train": ["sub__case_0", "sub__case_1"], "test": ["test_0"]}
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "a": 1, "b": 2} and meta["numTraining"] == 2
    files = sorted(p.name for p in (out / "imagesTr").iterdir())
    n_files = 1 if ending == ".png" and channels == 3 else channels
    assert len(files) == 2 * n_files
    ds = read(out)
    assert [p.name for p in ds.pairs] == names["train"] and [p.name for p in ds.test] == names["test"]
    for pair, (_, image, label) in zip(ds.pairs + ds.test, train + test):
        got_image, got_label = read_nnunet_case(pair)
        if ending == ".nii.gz" and image.ndim == 3:  # 2-D: stored as (H, W, 1)
            got_image = got_image[:, :, 0]
            got_label = None if got_label is None else got_label[:, :, 0]
        np.testing.assert_array_equal(got_image, image)
        if label is not None:
            np.testing.assert_array_equal(got_label, label)


def test_writer_refuses_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    bad = _cases([(4, 4), (4, 4)], 1)
    bad[1] = (bad[1][0], bad[1][1], np.full((4, 4), 5, np.uint8))  # label 5 not listed
    with pytest.raises(Exception, match="label value"):
        write_nnunet_dataset(out, train_cases=bad, labels={0: "bg", 1: "x"}, channel_names=["g"], verbose=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    dup = _cases([(4, 4)], 1) * 2
    with pytest.raises(Exception, match="both become"):
        write_nnunet_dataset(out, train_cases=dup, labels={0: "bg", 1: "x"}, channel_names=["g"], verbose=False)
    assert list(tmp_path.iterdir()) == []


# --- the command line ------------------------------------------------------------------------------------------

def skin_lesion_prepared(folder):
    """skin_lesion's prepared layout: data_*.npy (N,S,S,3), mask_*.npy (N,S,S) 0..255, split.json."""
    folder.mkdir()
    data, split = {}, {}
    for part, n in (("train", 3), ("val", 1), ("test", 2)):
        images = RNG.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        masks = RNG.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        np.save(folder / f"data_{part}.npy", images)
        np.save(folder / f"mask_{part}.npy", masks)
        split[part] = [f"ISIC_{part}{i}" for i in range(n)]
        data[part] = (images, masks)
    (folder / "split.json").write_text(json.dumps({"size": 8, "splits": split}))
    return data, split


@pytest.mark.parametrize("fmt", ["png", "nifti"])
def test_cli_skin_lesion(tmp_path, fmt):
    data, split = skin_lesion_prepared(tmp_path / "prep")
    assert to_nnunet.main([str(tmp_path / "prep"), "--task", "skin_lesion", "--out", str(tmp_path / "raw"),
                           "--dataset-id", "7", "--format", fmt, "--quiet"]) == 0
    ds = read(tmp_path / "raw" / "Dataset007_skin_lesion")
    assert [p.name for p in ds.pairs] == sorted(split["train"] + split["val"])
    assert [p.name for p in ds.test] == sorted(split["test"])
    for pair in ds.pairs:
        part, i = ("val", 0) if "val" in pair.name else ("train", int(pair.name[-1]))
        image, label = read_nnunet_case(pair)
        image, label = image.reshape(8, 8, 3), label.reshape(8, 8)
        np.testing.assert_array_equal(image, data[part][0][i])
        np.testing.assert_array_equal(label, data[part][1][i] >= 128)
    assert (tmp_path / "raw/Dataset007_skin_lesion/labelsTs").is_dir()
    line = error_line(to_nnunet.main, [str(tmp_path / "prep"), "--task", "skin_lesion", "--out",
                                       str(tmp_path / "raw"), "--dataset-id", "7"])
    assert "Dataset007_skin_lesion: already exists; pass --overwrite" in line
    assert to_nnunet.main([str(tmp_path / "prep"), "--task", "skin_lesion", "--out", str(tmp_path / "raw"),
                           "--dataset-id", "7", "--overwrite", "--quiet"]) == 0


def test_cli_nerve_and_fingernail(tmp_path):
    nerve = tmp_path / "nerve"
    nerve.mkdir()
    imgs = RNG.integers(0, 256, (2, 6, 10), dtype=np.uint8)
    masks = np.zeros((2, 6, 10), np.uint8)
    masks[1, 2:4, 3:8] = 255
    np.save(nerve / "imgs_train.npy", imgs)
    np.save(nerve / "imgs_mask_train.npy", masks)
    np.save(nerve / "imgs_test.npy", imgs[:1])
    np.save(nerve / "imgs_id_test.npy", np.array([42], np.int32))
    to_nnunet.main([str(nerve), "--task", "ultrasound_nerve", "--out", str(tmp_path / "n"), "--quiet"])
    ds = read(tmp_path / "n")
    assert [p.name for p in ds.pairs] == ["case_00000", "case_00001"] and [p.name for p in ds.test] == ["test_42"]
    image, label = read_nnunet_case(ds.pairs[1])
    np.testing.assert_array_equal(image[..., 0], imgs[1])
    np.testing.assert_array_equal(label, masks[1] // 255)

    nails = tmp_path / "dataset1"
    nails.mkdir()
    x = RNG.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
    y = RNG.integers(0, 2, (2, 4, 6, 1), dtype=np.uint8)
    for part in ("train", "test"):
        np.save(nails / f"x_{part}.npy", x)
        np.save(nails / f"y_{part}.npy", y)
    (nails / "split.json").write_text(json.dumps({"train": ["dataset1/b.png", "dataset1/a.png"],
                                                  "test": ["dataset1/c.png", "dataset1/d.png"]}))
    to_nnunet.main([str(nails), "--task", "fingernail", "--out", str(tmp_path / "f"), "--quiet"])
    ds = read(tmp_path / "f")
    assert [p.name for p in ds.pairs] == ["dataset1__a", "dataset1__b"]
    image, label = read_nnunet_case(ds.pairs[0])  # a.png is the second train array
    np.testing.assert_array_equal(image, x[1])
    np.testing.assert_array_equal(label, y[1, ..., 0])


def test_cli_retina_vessel(tmp_path):
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "work" / "DRIVE_datasets_training_testing"
    folder.mkdir(parents=True)
    imgs = RNG.integers(0, 256, (2, 3, 5, 4)).astype(np.float64)
    truth = np.zeros((2, 1, 5, 4))
    truth[0, 0, 1, 1] = 255
    for part in ("train", "test"):
        for kind, array in (("imgs", imgs), ("groundTruth", truth), ("borderMasks", truth)):
            with h5py.File(folder / f"DRIVE_dataset_{kind}_{part}.hdf5", "w") as f:
                f.create_dataset("image", data=array)
    to_nnunet.main([str(tmp_path / "work"), "--task", "retina_vessel", "--out", str(tmp_path / "d"), "--quiet"])
    ds = read(tmp_path / "d")
    assert [p.name for p in ds.pairs] == ["train_00000", "train_00001"]
    image, label = read_nnunet_case(ds.pairs[0])
    np.testing.assert_array_equal(image, imgs[0].transpose(1, 2, 0))
    np.testing.assert_array_equal(label, truth[0, 0] / 255)


def test_cli_retina_vessel_label_maps(tmp_path):
    """An own dataset prepared with --keep-labels (groundTruth = labels 0..2, split.json num_classes 3): the
    labels are exported as stored, not thresholded at 128 (which would make them all background)."""
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "work" / "DRIVE_datasets_training_testing"
    folder.mkdir(parents=True)
    imgs = RNG.integers(0, 256, (2, 3, 5, 4)).astype(np.float64)
    truth = RNG.integers(0, 3, (2, 1, 5, 4)).astype(np.float64)
    for part in ("train", "test"):
        for kind, array in (("imgs", imgs), ("groundTruth", truth), ("borderMasks", np.full_like(truth, 255))):
            with h5py.File(folder / f"DRIVE_dataset_{kind}_{part}.hdf5", "w") as f:
                f.create_dataset("image", data=array)
    (folder / "split.json").write_text(json.dumps({"train": ["a"], "val": ["b"], "test": ["c", "d"],
                                                   "num_classes": 3}))
    to_nnunet.main([str(tmp_path / "work"), "--task", "retina_vessel", "--out", str(tmp_path / "d"), "--quiet"])
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["labels"] == {
        "background": 0, "class_1": 1, "class_2": 2}
    ds = read(tmp_path / "d")
    assert [p.name for p in ds.pairs] == ["a", "b"]
    for k in range(2):
        np.testing.assert_array_equal(read_nnunet_case(ds.pairs[k])[1], truth[k, 0])


@pytest.mark.parametrize("argv,expect", [
    (["--task", "retinal_edema"], "--task: retinal_edema is not supported yet"),
    (["--task", "robotic_scene"], "no seq_<N> folders"),
    (["--task", "nope"], "--task: unknown task 'nope'"),
    (["--task", "skin_lesion"], "data_train.npy: not found"),
    (["--task", "fingernail", "--dataset-id", "1000"], "--dataset-id: 1000"),
])
def test_cli_errors(tmp_path, argv, expect):
    (tmp_path / "prep").mkdir()
    line = error_line(to_nnunet.main, [str(tmp_path / "prep"), "--out", str(tmp_path / "out"), *argv])
    assert expect in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]


def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        to_nnunet.main(["--help"])
    out = capsys.readouterr().out
    assert "Examples" in out and "--task skin_lesion" in out
