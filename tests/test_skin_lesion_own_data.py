"""skin_lesion on your own data (issue 22 items 3, 5, 6): folders of photos and masks, nnU-Net datasets.

References are written here from the documented rules (the README's "Train on your own data", the ISIC
split 1815/259/520 of specs/bcdu_net.md §3.1, Pillow's bilinear resize of the benchmark path), never read
from the code under test.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from common.data.io import write_image
from common.data.pairs import split_pairs
from common.data.synthetic import ISIC_IMAGE_DIR, ISIC_MASK_DIR, write_isic_dataset
from skin_lesion import evaluate, predict, prepare_isic2018, train_isic18
from _cli import error_line

SIZE = 16
PARTS = ("train", "val", "test")


def _resized(array):
    """The benchmark's documented resize: Pillow bilinear to SIZE x SIZE on uint8."""
    return np.asarray(Image.fromarray(array).resize((SIZE, SIZE), Image.BILINEAR))


def _photo(rng, h, w):
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 5: w // 2 + 1] = 1
    return image, mask


def _own_folders(root):
    """Photos and masks in every way a user may hold them. Returns {name: (image, 0/1 mask)}."""
    rng = np.random.default_rng(5)
    cases = {}
    layouts = [  # name, image ext, mask file (relative to masks/), how the mask is stored
        ("clinic_a/p01", ".jpg", "clinic_a/p01_segmentation.png", "0/255"),
        ("clinic_a/p02", ".png", "clinic_a/p02.png", "0/1"),
        ("clinic_a/deeper/p03", ".tif", "clinic_a/deeper/p03_mask.tif", "16-bit"),
        ("clinic_b/P04", ".BMP", "clinic_b/p04_gt.png", "palette"),
        ("clinic_b/p05", ".jpeg", "clinic_b/p05_label.png", "grey label 7"),
        ("p06", ".png", "p06.gif", "palette"),
        ("p07", ".jpg", "p07_mask.bmp", "0/255"),
        ("p08", ".png", "p08.png", "0/255"),
        ("p09", ".png", "p09.png", "0/1"),
        ("p10", ".png", "p10.png", "16-bit"),
    ]
    sizes = [(23, 31), (17, 45), (40, 29), (33, 33), (21, 19), (50, 61), (19, 27), (26, 22), (31, 18), (45, 37)]
    for (name, ext, mask_name, kind), (h, w) in zip(layouts, sizes):
        image, mask = _photo(rng, h, w)
        if ext in (".jpg", ".jpeg"):  # lossy: keep the decoded pixels as the reference
            write_image(root / "images" / f"{name}{ext}", image)
            image = np.asarray(Image.open(root / "images" / f"{name}{ext}").convert("RGB"))
        else:
            (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "images" / f"{name}{ext}")
        path = root / "masks" / mask_name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "0/255":
            Image.fromarray(mask * 255).save(path)
        elif kind == "0/1":
            Image.fromarray(mask).save(path)
        elif kind == "16-bit":
            Image.fromarray(mask.astype(np.uint16) * np.uint16(65535)).save(path)
        elif kind == "palette":  # index 1 drawn in a dark colour (its luminance is NOT the label)
            p = Image.fromarray(mask, mode="P")
            p.putpalette([255, 255, 255, 10, 20, 30] + [0] * 762)
            p.save(path)
        else:
            Image.fromarray(mask * 7).save(path)
        cases[name] = (image, mask)
    (root / "images" / "notes.txt").write_text("not an image")  # ignored
    return cases


def _arrays(work):
    return {part: (np.load(work / f"data_{part}.npy"), np.load(work / f"mask_{part}.npy")) for part in PARTS}


def test_default_fractions_give_the_originals_split_sizes():
    args = vars(prepare_isic2018.build_parser().parse_args([]))
    split = split_pairs([f"ISIC_{i:07d}" for i in range(2594)], val_fraction=args["val_fraction"],
                        test_fraction=args["test_fraction"], seed=0)
    assert [len(split[p]) for p in PARTS] == [1815, 259, 520]
    assert args["images"] is None and args["nnunet_dataset"] is None and args["group_by"] is None


def test_own_folders_give_resized_arrays_and_a_split_file(tmp_path):
    cases = _own_folders(tmp_path)
    work = tmp_path / "work"
    assert prepare_isic2018.main(["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                                  "--work-dir", str(work), "--size", str(SIZE), "--quiet", "--seed", "3",
                                  "--val-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    split = json.loads((work / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(cases)
    assert split["counts"] == {"train": 6, "val": 2, "test": 2} and split["seed"] == 3
    assert split["source"] == "folders" and split["val_fraction"] == 0.2
    arrays = _arrays(work)
    for part in PARTS:
        images, masks = arrays[part]
        assert images.shape == (len(split[part]), SIZE, SIZE, 3) and images.dtype == np.uint8
        assert masks.shape == (len(split[part]), SIZE, SIZE) and masks.dtype == np.uint8
        assert split[part] == sorted(split[part])
        for i, name in enumerate(split[part]):
            image, mask = cases[name]
            np.testing.assert_array_equal(images[i], _resized(image), err_msg=name)
            np.testing.assert_array_equal(masks[i], _resized(mask * 255), err_msg=name)
    # the same seed gives the same split; another seed another one
    again = tmp_path / "again"
    prepare_isic2018.main(["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                           "--work-dir", str(again), "--size", str(SIZE), "--quiet", "--seed", "3",
                           "--val-fraction", "0.2", "--test-fraction", "0.2"])
    assert json.loads((again / "split.json").read_text())["train"] == split["train"]


def test_own_folders_equal_the_benchmark_arrays_on_the_same_files(tmp_path):
    written = write_isic_dataset(tmp_path / "raw", 7, sizes=((45, 60), (77, 102)), seed=4)
    bench = tmp_path / "bench"
    prepare_isic2018.main(["--data-dir", str(tmp_path / "raw"), "--work-dir", str(bench), "--size", str(SIZE),
                           "--n-train", "4", "--n-val", "1", "--n-test", "2", "--quiet"])
    for k, name in enumerate(written["pairs"]):  # the same files renamed into a user's layout
        folder = f"batch{k % 2}"
        for sub in ("photos", "labels"):
            (tmp_path / sub / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "raw" / ISIC_IMAGE_DIR / f"{name}.jpg", tmp_path / "photos" / folder / f"lesion{k}.JPG")
        shutil.copy(tmp_path / "raw" / ISIC_MASK_DIR / f"{name}_segmentation.png",
                    tmp_path / "labels" / folder / f"lesion{k}_mask.png")
    own = tmp_path / "own"
    prepare_isic2018.main(["--images", str(tmp_path / "photos"), "--masks", str(tmp_path / "labels"),
                           "--work-dir", str(own), "--size", str(SIZE), "--quiet"])
    bench_arrays, own_arrays = _arrays(bench), _arrays(own)
    by_id = {}
    for part, (start, stop) in zip(PARTS, ((0, 4), (4, 5), (5, 7))):
        for i, name in enumerate(written["pairs"][start:stop]):
            by_id[name] = (bench_arrays[part][0][i], bench_arrays[part][1][i])
    split = json.loads((own / "split.json").read_text())
    seen = 0
    for part in PARTS:
        for i, name in enumerate(split[part]):
            k = int(name.rsplit("lesion", 1)[1])
            image, mask = by_id[written["pairs"][k]]
            assert own_arrays[part][0][i].tobytes() == image.tobytes()
            assert own_arrays[part][1][i].tobytes() == mask.tobytes()
            seen += 1
    assert seen == 7


def _nnunet_dataset(root, n=12, n_test=2):
    """An nnU-Net v2 raw dataset of RGB PNG photos (one _0000 file each) and 0/1 labels, odd sizes."""
    rng = np.random.default_rng(9)
    cases = {}
    for k in range(n + n_test):
        name = f"skin_{k:03d}"
        image, mask = _photo(rng, 20 + 3 * k, 41 - k)
        folder = "imagesTr" if k < n else "imagesTs"
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / folder / f"{name}_0000.png")
        if k < n:
            (root / "labelsTr").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "labelsTr" / f"{name}.png")
            cases[name] = (image, mask)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": n, "file_ending": ".png"}))
    return cases


def test_nnunet_dataset_input(tmp_path, capsys):
    cases = _nnunet_dataset(tmp_path / "Dataset501_Skin")
    work = tmp_path / "work"
    prepare_isic2018.main(["--nnunet-dataset", str(tmp_path / "Dataset501_Skin"), "--work-dir", str(work),
                           "--size", str(SIZE), "--quiet"])
    assert "imagesTs case(s) have no masks and are not prepared" in capsys.readouterr().err
    split = json.loads((work / "split.json").read_text())
    assert split["source"] == "nnunet" and sorted(split["train"] + split["val"] + split["test"]) == sorted(cases)
    arrays = _arrays(work)
    for part in PARTS:
        assert len(split[part]) >= 1
        for i, name in enumerate(split[part]):
            np.testing.assert_array_equal(arrays[part][0][i], _resized(cases[name][0]))
            np.testing.assert_array_equal(arrays[part][1][i], _resized(cases[name][1] * 255))


def test_own_data_prepare_train_evaluate_predict(tmp_path):
    _own_folders(tmp_path)
    work, run, out = tmp_path / "work", tmp_path / "run", tmp_path / "out"
    prepare_isic2018.main(["--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
                           "--work-dir", str(work), "--size", str(SIZE), "--quiet", "--val-fraction", "0.2",
                           "--test-fraction", "0.3"])
    train_isic18.main(["--work-dir", str(work), "--run-dir", str(run), "--epochs", "1", "--seed", "0",
                       "--verbose", "0"])
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 1
    assert evaluate.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out), "--quiet"]) == 0
    assert np.load(out / "pred_test.npy").shape == (3, SIZE, SIZE, 1)
    predict.main([str(tmp_path / "images" / "p08.png"), "--run-dir", str(run), "--out-dir", str(tmp_path / "pred"),
                  "--size", str(SIZE), "--quiet"])
    mask = np.asarray(Image.open(tmp_path / "pred" / "p08_segmentation.png"))
    assert mask.shape == (26, 22) and set(np.unique(mask)) <= {0, 255}  # the photo's own size, ISIC format


def _write_pair(root, name, image, mask, mask_name=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray(mask).save(root / "masks" / f"{mask_name or name}.png")


def _bad_layout(root, case):
    rng = np.random.default_rng(0)
    for k in range(6):
        image, mask = _photo(rng, 20, 24)
        _write_pair(root, f"a{k}_{k}", image, mask * 255)
    image, mask = _photo(rng, 20, 24)
    if case == "unpaired":
        Image.fromarray(image).save(root / "images" / "lonely.png")
    elif case == "two masks":
        _write_pair(root, "a0_0", image, mask * 255, mask_name="a0_0_mask")
    elif case == "sizes":
        _write_pair(root, "odd", image, np.zeros((21, 24), np.uint8))
    elif case == "three values":
        stripes = np.broadcast_to((np.arange(24) % 2 == 0)[None], mask.shape)
        _write_pair(root, "tri", image, np.where(mask == 1, 2, stripes).astype(np.uint8))  # labels 0, 1, 2
    elif case == "empty":
        shutil.rmtree(root / "images")
        (root / "images").mkdir()
    elif case == "volume":
        import nibabel as nib

        nib.save(nib.Nifti1Image(np.zeros((4, 20, 24), np.int16), np.eye(4)), str(root / "images" / "v.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros((4, 20, 24), np.uint8), np.eye(4)), str(root / "masks" / "v.nii.gz"))


@pytest.mark.parametrize("case,extra,expect", [
    ("unpaired", [], "1 image(s) without a mask: lonely.png"),
    ("two masks", [], "name(s) matching two files"),
    ("sizes", [], "mask is 21x24 (rows x cols) but its image"),
    ("three values", [], "tri.png"),
    ("empty", [], "no image files"),
    ("volume", [], "v.nii.gz: a NIfTI volume; skin_lesion takes 2-D photos"),
    (None, ["--val-fraction", "0.01"], "--val-fraction: 0.01 leaves the val split empty"),
    (None, ["--test-fraction", "0.7", "--val-fraction", "0.3"], "--val-fraction: 0.3 + --test-fraction 0.7"),
    (None, ["--group-by", "^zz(\\d)"], "--group-by: '^zz(\\\\d)' matches none of the 6 names"),
    (None, ["--n-train", "5"], "--n-train: counts the benchmark layout's split"),
    (None, ["--data-dir", "elsewhere"], "--data-dir: give either --data-dir"),
    (None, ["--masks-only"], None),
])
def test_bad_own_input_is_one_line_and_writes_nothing(tmp_path, case, extra, expect):
    _bad_layout(tmp_path / "in", case)
    argv = ["--images", str(tmp_path / "in" / "images"), "--masks", str(tmp_path / "in" / "masks"),
            "--work-dir", str(tmp_path / "work"), "--size", str(SIZE), "--quiet", *extra]
    if extra == ["--masks-only"]:
        argv = ["--masks", str(tmp_path / "in" / "masks"), "--work-dir", str(tmp_path / "work")]
        expect = "--masks: needs --images DIR too"
    line = error_line(prepare_isic2018.main, argv)
    assert line.startswith("error: ") and expect in line, line
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_three_value_mask_with_foreground_and_existing_output(tmp_path):
    _bad_layout(tmp_path / "in", "three values")
    argv = ["--images", str(tmp_path / "in" / "images"), "--masks", str(tmp_path / "in" / "masks"),
            "--work-dir", str(tmp_path / "work"), "--size", str(SIZE), "--quiet"]
    prepare_isic2018.main(argv + ["--foreground", "2"])
    split = json.loads((tmp_path / "work" / "split.json").read_text())
    part = next(p for p in PARTS if "tri" in split[p])
    mask = np.load(tmp_path / "work" / f"mask_{part}.npy")[split[part].index("tri")]
    rng = np.random.default_rng(0)
    for _ in range(7):
        _, truth = _photo(rng, 20, 24)
    np.testing.assert_array_equal(mask, _resized(truth * 255))  # label 2 = the lesion; label 1 (stripes) not
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").iterdir()}
    assert "a prepared dataset is already there; pass --overwrite" in error_line(prepare_isic2018.main, argv)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").iterdir()} == before
