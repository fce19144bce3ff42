"""fingernail/prepare_data.py on your own data (issue 22): --images/--masks folders -> the benchmark's arrays.

References are independent of the code under test: Pillow's own resize of the files (bicubic photos, nearest
masks, +90 degree rotation of portrait photos), the benchmark path's arrays for the same files (compared per
case by name), and the split rule's counts.
"""

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from common.data.synthetic import write_fingernail_dataset
from fingernail import evaluate, predict, prepare_data, train
from _cli import error_line

ROWS, COLS = 32, 48  # tiny, divisible by 16


def _photo(rng, rows, cols):
    return rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)


def _nail_mask(rng, rows, cols):
    """An asymmetric 0/1 mask (a rectangle in the upper-left quarter), so a wrong rotation shows."""
    mask = np.zeros((rows, cols), np.uint8)
    mask[rows // 8: rows // 2, cols // 8: cols // 3] = 1
    return mask


def _own_folders(root, seed=0):
    """Own-data folders: nested, mixed extensions (png/jpg/bmp photos; png, palette gif, 16-bit png, 0/1
    masks), odd sizes, two portrait photos. Returns ``{name: (photo, mask 0/1)}``."""
    rng = np.random.default_rng(seed)
    cases = {}
    specs = [("a/p0", ".png", ".png", "0/255", (37, 53)), ("a/p1", ".jpg", "_mask.gif", "palette", (41, 59)),
             ("b/p2", ".bmp", "_gt.png", "16bit", (30, 46)), ("b/p3", ".png", ".png", "0/1", (55, 39)),
             ("p4", ".PNG", "_mask.png", "0/255", (43, 31)), ("p5", ".png", ".png", "0/255", (33, 51)),
             ("p6", ".png", ".png", "0/1", (38, 44)), ("p7", ".png", ".png", "0/255", (35, 47))]
    for name, ext, mask_ext, kind, (rows, cols) in specs:
        photo, mask = _photo(rng, rows, cols), _nail_mask(rng, rows, cols)
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "masks" / name).parent.mkdir(parents=True, exist_ok=True)
        if ext == ".jpg":
            Image.fromarray(photo).save(root / "images" / f"{name}{ext}", quality=100)
            photo = np.asarray(Image.open(root / "images" / f"{name}{ext}").convert("RGB"))  # as decoded
        else:
            Image.fromarray(photo).save(root / "images" / f"{name}{ext}")
        path = root / "masks" / f"{name}{mask_ext}"
        if kind == "0/255":
            Image.fromarray(mask * 255).save(path)
        elif kind == "0/1":
            Image.fromarray(mask).save(path)
        elif kind == "16bit":
            Image.fromarray((mask.astype(np.uint16) * 65535)).save(path)
        else:  # palette: index 1 = white nail (the index is the label)
            img = Image.frombytes("P", (cols, rows), mask.tobytes())
            img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
            img.save(path)
        cases[name] = (photo, mask)
    return cases


def _reference(photo, mask, rotate=True):
    """Pillow's own steps: portrait -> rotate both +90, photo bicubic, mask nearest."""
    img, msk = Image.fromarray(photo), Image.fromarray(mask)
    if rotate and img.size[0] < img.size[1]:
        img, msk = img.transpose(Image.Transpose.ROTATE_90), msk.transpose(Image.Transpose.ROTATE_90)
    return (np.asarray(img.resize((COLS, ROWS), Image.BICUBIC)),
            np.asarray(msk.resize((COLS, ROWS), Image.NEAREST)))


def _prepare(root, work, *extra):
    return prepare_data.main(["--images", str(root / "images"), "--masks", str(root / "masks"), "--work-dir",
                              str(work), "--rows", str(ROWS), "--cols", str(COLS), "--quiet", *extra])


def _by_name(folder):
    """``{case name: (x, y)}`` of a prepared study, from its split.json (train then val, test)."""
    record = json.loads((folder / "split.json").read_text())
    out = {}
    for part, names in (("train", record["train"] + record.get("val", [])), ("test", record["test"])):
        x, y = np.load(folder / f"x_{part}.npy"), np.load(folder / f"y_{part}.npy")
        assert len(x) == len(y) == len(names)
        for name, xi, yi in zip(names, x, y):
            if name.startswith("dataset1/"):  # the benchmark's names: dataset1/<file>.png
                name = name[len("dataset1/"):].rsplit(".", 1)[0]
            out[name] = (xi, yi)
    return out


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("fn_own")
    cases = _own_folders(root)
    record = _prepare(root, root / "work", "--val-fraction", "0.25", "--test-fraction", "0.25", "--seed", "3")
    return root, cases, record


def test_own_folders_give_the_benchmark_arrays_and_a_split_file(own):
    root, cases, record = own
    folder = root / "work" / "own"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy", "x_unlabeled.npy", "split.json"])
    split = json.loads((folder / "split.json").read_text())
    assert split["counts"] == {"train": 4, "val": 2, "test": 2}  # 8 cases: 25 % val, 25 % test
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(cases)
    assert (split["rows"], split["cols"], split["seed"], split["mask_rule"]) == (ROWS, COLS, 3, "labels")
    assert prepare_data.prepared_size(root / "work", "own") == (ROWS, COLS)
    assert prepare_data.val_count(root / "work", "own") == 2
    for part, n in (("train", 6), ("test", 2)):
        x, y = np.load(folder / f"x_{part}.npy"), np.load(folder / f"y_{part}.npy")
        assert x.shape == (n, ROWS, COLS, 3) and y.shape == (n, ROWS, COLS, 1)
        assert x.dtype == y.dtype == np.uint8
    assert np.load(folder / "x_unlabeled.npy").shape == (0, ROWS, COLS, 3)
    for name, (x, y) in _by_name(folder).items():
        ref_x, ref_y = _reference(*cases[name])
        np.testing.assert_array_equal(x, ref_x, err_msg=name)
        np.testing.assert_array_equal(y[..., 0], ref_y, err_msg=name)
        assert y.max() == 1  # every mask kept its nail (palette index, 16-bit 65535, 0/1 and 0/255 all read as 1)


def test_no_rotate_keeps_portrait_photos(tmp_path):
    cases = _own_folders(tmp_path)
    _prepare(tmp_path, tmp_path / "work", "--no-rotate")
    for name, (x, y) in _by_name(tmp_path / "work" / "own").items():
        ref_x, ref_y = _reference(*cases[name], rotate=False)
        np.testing.assert_array_equal(x, ref_x)
        np.testing.assert_array_equal(y[..., 0], ref_y)


def test_train_validates_on_the_val_part_then_evaluate_and_predict_run(own, tmp_path):
    root, cases, _ = own
    run = tmp_path / "run"
    train.main(["--work-dir", str(root / "work"), "--study", "own", "--epochs", "1", "--batch-size", "2",
                "--run-dir", str(run), "--verbose", "0"])
    state = json.loads((run / "state.json").read_text())["settings"]
    assert (state["train"], state["validation"], state["test"]) == (4, 2, 2)
    assert state["study"] == "own"
    out = tmp_path / "eval"
    row = evaluate.main(["--work-dir", str(root / "work"), "--study", "own", "--run-dir", str(run), "--out-dir",
                         str(out), "--quiet"])
    assert row["test images"] == 2 and 0 <= row["Dice@0.3"] <= 1
    assert row["paper (nb, @0.3)"] != row["paper (nb, @0.3)"]  # NaN: no paper cell for own data
    predict.main([str(root / "images" / "a"), "--out-dir", str(tmp_path / "pred"), "--run-dir", str(run),
                  "--quiet"])
    for name in ("p0", "p1"):
        mask = np.asarray(Image.open(tmp_path / "pred" / f"{name}.png"))
        assert mask.shape == cases[f"a/{name}"][0].shape[:2]


def test_dataset1_through_the_photo_rule_is_the_benchmark_path_case_by_case(tmp_path):
    """Synthetic dataset1 (blacked-out photo masks, unlabeled images, an orphan mask, an empty mask)."""
    written = write_fingernail_dataset(tmp_path / "raw", n_labeled=10, n_unlabeled=2, sizes=((30, 38), (49, 65)),
                                       large_fraction=0.5, seed=0)
    work = tmp_path / "work"
    prepare_data.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--rows", str(ROWS), "--cols",
                       str(COLS), "--quiet"])
    ds1 = tmp_path / "raw" / "dataset1"
    assert error_line(prepare_data.main, ["--images", str(ds1 / "image"), "--masks", str(ds1 / "mask"),
                                          "--mask-rule", "photo", "--work-dir", str(work), "--quiet"]).startswith(
        "error: ")  # unpaired files: an error unless --skip-unpaired, as pairs' rule says
    prepare_data.main(["--images", str(ds1 / "image"), "--masks", str(ds1 / "mask"), "--mask-rule", "photo",
                       "--skip-unpaired", "--work-dir", str(work), "--rows", str(ROWS), "--cols", str(COLS),
                       "--quiet"])
    bench, mine = _by_name(work / "dataset1"), _by_name(work / "own")
    assert sorted(mine) == sorted(bench) == sorted(n[:-4] for n in written["labeled"])
    for name in bench:
        for a, b in zip(bench[name], mine[name]):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    record = json.loads((work / "own" / "split.json").read_text())
    assert record["dropped"] == [n[:-4] for n in written["empty_masks"]]


def test_real_dataset1_through_the_own_folder_path_gives_the_benchmark_arrays(fingernail_dataset1, tmp_path):
    """The 192 real pairs: byte-identical x and y per case (the splits differ: split_pairs vs scikit-learn)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset1").symlink_to(fingernail_dataset1)
    work = tmp_path / "work"
    prepare_data.main(["--raw-dir", str(raw), "--work-dir", str(work), "--quiet"])
    prepare_data.main(["--images", str(fingernail_dataset1 / "image"), "--masks", str(fingernail_dataset1 / "mask"),
                       "--mask-rule", "photo", "--skip-unpaired", "--work-dir", str(work), "--quiet"])
    bench, mine = _by_name(work / "dataset1"), _by_name(work / "own")
    assert len(bench) == 192 and sorted(mine) == sorted(bench)
    for name in bench:
        for a, b in zip(bench[name], mine[name]):
            assert a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    record = json.loads((work / "own" / "split.json").read_text())
    assert record["dropped"] == ["None_20170426-183042_80000_EXACT"]  # the benchmark drops it too
    assert record["counts"] == {"train": 173, "val": 0, "test": 19}  # 10 % test, as the benchmark's 20 of 192


def _nothing_written(work):
    return not (work / "own").exists() and not any(work.glob("**/*.npy"))


def test_bad_own_input_is_one_error_line_and_writes_nothing(tmp_path):
    root = tmp_path / "d"
    _own_folders(root)
    work = tmp_path / "work"
    base = ["--images", str(root / "images"), "--masks", str(root / "masks"), "--work-dir", str(work), "--rows",
            str(ROWS), "--cols", str(COLS), "--quiet"]

    def fails(pattern, *extra):
        line = error_line(prepare_data.main, [*base, *extra])
        assert re.fullmatch(pattern, line), line
        assert _nothing_written(work)

    fails(r"error: --study: 'a/b' must be a plain folder name.*", "--study", "a/b")
    fails(r"error: --mask-rule: photo reads the masks as photos.*", "--mask-rule", "photo", "--foreground", "all")
    fails(r"error: --test-fraction: 0 with --val-fraction 0 .*", "--test-fraction", "0")
    fails(r"error: --test-fraction: 0.01 leaves the test split empty.*", "--test-fraction", "0.01")
    fails(r"error: --group-by: 'zzz' matches none of the 8 names.*", "--group-by", "zzz")
    # an unpaired image
    extra = root / "images" / "lonely.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(extra)
    fails(r"error: .*1 image\(s\) without a mask: lonely\.png.*--skip-unpaired.*")
    extra.unlink()
    # a name matching two masks
    shutil.copy(root / "masks" / "p5.png", root / "masks" / "p5_mask.png")
    fails(r"error: .*1 name\(s\) matching two files: p5 \(masks p5\.png, p5_mask\.png\).*")
    (root / "masks" / "p5_mask.png").unlink()
    # an empty images folder
    (tmp_path / "empty").mkdir()
    line = error_line(prepare_data.main, [*base[:1], str(tmp_path / "empty"), *base[2:]])
    assert re.fullmatch(r"error: .*empty: no image files .*--images.*", line), line
    assert _nothing_written(work)
    # a colour-coded mask with a colour not in --label-colours
    colours = tmp_path / "colours.json"
    colours.write_text(json.dumps({"0": [0, 0, 0], "1": [255, 0, 0]}))
    good = (root / "masks" / "p5.png").read_bytes()
    rgb = np.zeros((33, 51, 3), np.uint8)
    rgb[:10, :10] = (255, 0, 0)
    rgb[20:, 20:] = (0, 255, 0)
    Image.fromarray(rgb).save(root / "masks" / "p5.png")
    fails(r"error: .*p5\.png: colour\(s\) \[0, 255, 0\] not in --label-colours.*", "--label-colours", str(colours))
    (root / "masks" / "p5.png").write_bytes(good)
    # a mask of another size than its photo
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "masks" / "p5.png")
    fails(r"error: .*p5\.png: mask is 20x20 .* but its image .*p5\.png is 33x51.*")
    # a 3-value mask in this binary task, then --foreground takes it
    Image.fromarray(np.array([[0, 1, 2] * 17] * 33, np.uint8)).save(root / "masks" / "p5.png")
    fails(r"error: .*p5\.png: mask has 3 values \(0, 1, 2\) but the task is binary; pass --foreground.*")
    assert prepare_data.main([*base, "--foreground", "2"])["counts"]["test"] == 1
    # an existing study is not replaced without --overwrite
    before = (work / "own" / "x_train.npy").read_bytes()
    (root / "masks" / "p5.png").write_bytes(good)
    line = error_line(prepare_data.main, base)
    assert line.startswith("error: ") and "--overwrite" in line
    assert (work / "own" / "x_train.npy").read_bytes() == before
    # the benchmark options stay the benchmark's
    assert error_line(prepare_data.main, ["--study", "x", "--work-dir", str(tmp_path / "w2")]).startswith(
        "error: --study: names the folder of --images/--masks")
    shutil.rmtree(work)


def _nnunet_dataset(root, n=6, n_test=2, seed=0):
    """An nnU-Net v2 raw dataset written by hand: RGB PNG photos as one _0000 file, 0/1 label PNGs, imagesTs."""
    rng = np.random.default_rng(seed)
    folder = root / "Dataset001_Nails"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    cases = {}
    for i in range(n):
        photo, mask = _photo(rng, 30 + i, 40), _nail_mask(rng, 30 + i, 40)
        Image.fromarray(photo).save(folder / "imagesTr" / f"nail_{i:03d}_0000.png")
        Image.fromarray(mask).save(folder / "labelsTr" / f"nail_{i:03d}.png")
        cases[f"nail_{i:03d}"] = (photo, mask)
    for i in range(n_test):
        Image.fromarray(_photo(rng, 30, 40)).save(folder / "imagesTs" / f"new_{i:03d}_0000.png")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "nail": 1},
        "numTraining": n, "file_ending": ".png"}))
    return folder, cases


def test_an_nnunet_dataset_gives_the_same_arrays(tmp_path, capsys):
    folder, cases = _nnunet_dataset(tmp_path)
    record = prepare_data.main(["--nnunet-dataset", str(folder), "--work-dir", str(tmp_path / "work"), "--rows",
                                str(ROWS), "--cols", str(COLS), "--test-fraction", "0.34", "--quiet"])
    assert "imagesTs cases (2) have no masks and are not used" in capsys.readouterr().err
    assert record["counts"] == {"train": 4, "val": 0, "test": 2} and record["source"] == "nnunet"
    mine = _by_name(tmp_path / "work" / "own")
    assert sorted(mine) == sorted(cases)
    for name, (x, y) in mine.items():
        ref_x, ref_y = _reference(*cases[name])
        np.testing.assert_array_equal(x, ref_x)
        np.testing.assert_array_equal(y[..., 0], ref_y)
    # a label not in dataset.json: one error line, nothing written
    Image.fromarray(np.full((30, 40), 2, np.uint8)).save(folder / "labelsTr" / "nail_000.png")
    line = error_line(prepare_data.main, ["--nnunet-dataset", str(folder), "--work-dir", str(tmp_path / "w2")])
    assert line.startswith("error: ") and "nail_000.png" in line
    assert not (tmp_path / "w2").exists()


def test_an_own_study_with_a_val_part_exports_to_nnunet_under_its_case_names(own, tmp_path):
    from common.data import to_nnunet

    root, cases, _ = own
    to_nnunet.main([str(root / "work" / "own"), "--task", "fingernail", "--out", str(tmp_path / "nn"), "--quiet"])
    split = json.loads((root / "work" / "own" / "split.json").read_text())
    exported = sorted(p.name[:-len("_0000.png")] for p in (tmp_path / "nn" / "imagesTr").glob("*_0000.png"))
    assert exported == sorted(n.replace("/", "__") for n in split["train"] + split["val"])  # train then val
    tested = sorted(p.name[:-len("_0000.png")] for p in (tmp_path / "nn" / "imagesTs").glob("*_0000.png"))
    assert tested == sorted(n.replace("/", "__") for n in split["test"])
