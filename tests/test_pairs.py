"""The own-data reader (common/data/pairs.py, issue 22) on synthetic files written here, and on the real
nerve frames of ../shared when present. Every expected pairing, label value and split property is written out
by hand (or follows from the values the test wrote into the files), never taken from the code under test."""

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data import pairs as own
from common.data.io import atomic_dir
from tests._cli import error_line

NERVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerve_jpeg"


def _write(path, array, mode=None, **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **save) if mode else Image.fromarray(array).save(path, **save)
    return path


def _grey(h, w, value=0):
    return np.full((h, w), value, np.uint8)


def _main_factory(binary=True, val_fraction=0.25, test_fraction=0.25):
    """A tiny prepare script: own data -> split -> read every pair -> <out>/masks.npz + split.json."""

    def main(argv=None):
        parser = argparse.ArgumentParser(prog="prepare")
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--seed", type=int, default=0)
        own.add_own_data_arguments(parser, val_fraction=val_fraction, test_fraction=test_fraction, binary=binary)
        args = parser.parse_args(argv)
        dataset = own.load_own_data(args, binary=binary)
        split = own.split_own_data(dataset, args)
        masks = {p.name: own.read_pair(p, binary=binary, foreground=getattr(args, "foreground", None),
                                       label_colours=dataset.label_colours)[1] for p in dataset.pairs}
        with atomic_dir(args.out) as tmp:
            np.savez(tmp / "masks.npz", **{k.replace("/", "__"): v for k, v in masks.items()})
            own.write_split(tmp / "split.json", split, source=dataset.source, seed=args.seed,
                            group_by=args.group_by, fractions=(args.val_fraction, args.test_fraction))
        return 0

    return main


def _bad(tmp_path, argv, *, binary=True, **fractions):
    """The one error line of the tiny prepare script, after checking that nothing was written."""
    out = tmp_path / "out"
    line = error_line(_main_factory(binary=binary, **fractions), argv + ["--out", str(out)])
    assert line.startswith("error: ")
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    return line


def _folders(tmp_path, names, mask_names, shape=(7, 9)):
    """Images ``names`` and 0/255 masks ``mask_names`` (relative paths) of one odd size."""
    for n in names:
        _write(tmp_path / "img" / n, _grey(*shape, 90))
    for n in mask_names:
        m = _grey(*shape)
        m[2:5, 3:6] = 255
        _write(tmp_path / "msk" / n, m)
    return ["--images", str(tmp_path / "img"), "--masks", str(tmp_path / "msk")]


# ------------------------------------------------------------------------------------------------ pairing

def test_pairing_nested_mixed_extensions_case_and_suffixes(tmp_path):
    images = ["a/b/Case1.JPG", "a/b/case2.png", "c3.tif", "sub/deeper/x.bmp", "y.jpeg", "z.PNG", "v.gif"]
    masks = ["a/b/case1_MASK.png", "a/b/case2.gif", "C3_segmentation.TIFF", "sub/deeper/x_manual1.gif",
             "y_gt.bmp", "z_labels.png", "v_label.tiff"]
    _folders(tmp_path, images, masks, shape=(13, 11))
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    (tmp_path / "msk" / ".hidden.png").write_bytes(b"")  # hidden: ignored
    found = own.find_pairs(tmp_path / "img", tmp_path / "msk")
    expected = [  # by hand, sorted by name ('C' < 'c' in code-point order)
        ("a/b/Case1", "a/b/Case1.JPG", "a/b/case1_MASK.png"),
        ("a/b/case2", "a/b/case2.png", "a/b/case2.gif"),
        ("c3", "c3.tif", "C3_segmentation.TIFF"),
        ("sub/deeper/x", "sub/deeper/x.bmp", "sub/deeper/x_manual1.gif"),
        ("v", "v.gif", "v_label.tiff"),
        ("y", "y.jpeg", "y_gt.bmp"),
        ("z", "z.PNG", "z_labels.png"),
    ]
    assert [(p.name, p.image, p.mask, p.volume) for p in found] == [
        (n, (tmp_path / "img" / i,), tmp_path / "msk" / m, False) for n, i, m in expected]


def test_images_and_masks_in_one_folder(tmp_path):
    for n in ("p1.png", "p2.jpg"):
        _write(tmp_path / "d" / n, _grey(5, 5))
    for n in ("p1_mask.png", "p2_gt.png"):
        _write(tmp_path / "d" / n, _grey(5, 5))
    found = own.find_pairs(tmp_path / "d", tmp_path / "d")
    assert [(p.name, p.image[0].name, p.mask.name) for p in found] == [
        ("p1", "p1.png", "p1_mask.png"), ("p2", "p2.jpg", "p2_gt.png")]
    for n in ("q1.png", "q2.png"):  # a masks folder inside the images folder: not searched for images
        _write(tmp_path / "e" / n, _grey(5, 5))
        _write(tmp_path / "e" / "masks" / n, _grey(5, 5))
    found = own.find_pairs(tmp_path / "e", tmp_path / "e" / "masks")
    assert [(p.name, p.mask) for p in found] == [("q1", tmp_path / "e" / "masks" / "q1.png"),
                                                 ("q2", tmp_path / "e" / "masks" / "q2.png")]


def test_unpaired_files_on_both_sides_one_error(tmp_path):
    argv = _folders(tmp_path, ["a.png", "b.png", "sub/c.png", "d.png"], ["a_mask.png", "sub/c.png", "e_mask.png",
                                                                          "f.png"])
    line = _bad(tmp_path, argv)
    assert re.search(r"2 image\(s\) without a mask: b\.png, d\.png", line), line
    assert re.search(r"2 mask\(s\) without an image: e_mask\.png, f\.png", line), line
    assert "--skip-unpaired" in line


def test_more_than_ten_unpaired_listed_first_ten_and_count(tmp_path):
    names = [f"i{k:02d}.png" for k in range(13)]
    argv = _folders(tmp_path, names + ["ok.png"], ["ok.png"])
    line = _bad(tmp_path, argv)
    assert "13 image(s) without a mask: " + ", ".join(names[:10]) + " (+3 more)" in line, line


def test_skip_unpaired_warns_and_goes_on(tmp_path, capsys):
    argv = _folders(tmp_path, ["a.png", "b.png", "c.png", "d.png", "lonely.png"],
                    ["a.png", "b.png", "c.png", "d.png", "orphan_mask.png"])
    out = tmp_path / "out"
    assert _main_factory()(argv + ["--skip-unpaired", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "lonely.png" in err and "orphan_mask.png" in err
    split = json.loads((out / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == ["a", "b", "c", "d"]


def test_name_matching_two_masks(tmp_path):
    argv = _folders(tmp_path, ["a.png", "x.png"], ["a.png", "x.png", "x_mask.png"])
    line = _bad(tmp_path, argv)
    assert re.search(r"1 name\(s\) matching two files: x \(masks x\.png, x_mask\.png\)", line), line
    argv = _folders(tmp_path / "two", ["a.png", "Y.png", "y.JPG"], ["a.png", "y_mask.png"])
    line = _bad(tmp_path / "two", argv)
    assert re.search(r": 1 name\(s\) matching two files: Y \(images Y\.png, y\.JPG\)\. The mask", line), line


def test_empty_folder(tmp_path):
    (tmp_path / "img").mkdir()
    _write(tmp_path / "msk" / "a.png", _grey(4, 4))
    line = _bad(tmp_path, ["--images", str(tmp_path / "img"), "--masks", str(tmp_path / "msk")])
    assert line.startswith(f"error: {tmp_path / 'img'}: no image files"), line


def test_missing_masks_option(tmp_path):
    (tmp_path / "img").mkdir()
    line = _bad(tmp_path, ["--images", str(tmp_path / "img")])
    assert line.startswith("error: --images: needs --masks"), line


def test_load_own_data_none_without_options():
    args = argparse.Namespace(images=None, masks=None, nnunet_dataset=None)
    assert own.load_own_data(args) is None


# ------------------------------------------------------------------------------------------------ sizes

def test_sizes_may_differ_between_pairs_but_not_within(tmp_path):
    _write(tmp_path / "img" / "a.png", _grey(7, 9))
    _write(tmp_path / "msk" / "a.png", _grey(7, 9))
    _write(tmp_path / "img" / "b.png", _grey(31, 17))
    _write(tmp_path / "msk" / "b.png", _grey(31, 17))
    found = own.find_pairs(tmp_path / "img", tmp_path / "msk")
    assert [own.read_pair(p)[0].shape for p in found] == [(7, 9), (31, 17)]
    _write(tmp_path / "img" / "c.png", _grey(12, 10))
    _write(tmp_path / "msk" / "c_mask.png", _grey(10, 12))
    line = _bad(tmp_path, ["--images", str(tmp_path / "img"), "--masks", str(tmp_path / "msk")], val_fraction=0.3,
                test_fraction=0.3)
    assert str(tmp_path / "msk" / "c_mask.png") in line and str(tmp_path / "img" / "c.png") in line, line
    assert "10x12" in line and "12x10" in line, line


# ------------------------------------------------------------------------------------------------ masks

def test_binary_masks_0_255_and_0_1(tmp_path):
    m = _grey(5, 7)
    m[1:3, 2:6] = 255
    expected = np.zeros((5, 7), np.uint8)
    expected[1:3, 2:6] = 1
    np.testing.assert_array_equal(own.read_label_map(_write(tmp_path / "a.png", m)), expected)
    np.testing.assert_array_equal(own.read_label_map(_write(tmp_path / "b.png", expected)), expected)
    np.testing.assert_array_equal(own.read_label_map(_write(tmp_path / "c.bmp", m)), expected)


def test_grey_label_maps_8_and_16_bit_as_stored(tmp_path):
    m8 = np.array([[0, 1, 2], [3, 3, 0]], np.uint8)
    np.testing.assert_array_equal(own.read_label_map(_write(tmp_path / "a.png", m8)), m8)
    m16 = np.array([[0, 300, 1000], [65535, 2, 0]], np.uint16)  # would be 0, 1, 3, 255, 0 if shifted >> 8
    path = tmp_path / "b.png"
    Image.fromarray(m16).save(path)
    assert Image.open(path).mode.startswith("I")
    got = own.read_label_map(path)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, m16)


def test_palette_png_index_is_the_label(tmp_path):
    indices = np.array([[0, 0, 2, 2, 1], [1, 3, 3, 0, 2], [0, 0, 0, 1, 1]], np.uint8)
    img = Image.fromarray(indices, mode="P")
    # palette colours whose luminance is nothing like the index: 0 white, 1 black, 2 red, 3 blue
    img.putpalette([255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 - 4) * 3)
    path = tmp_path / "p.png"
    img.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(own.read_label_map(path), indices)


def test_rgb_colour_map_default_order_and_label_colours_file(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[0, :3] = (255, 0, 0)     # red
    rgb[1, 2:] = (0, 255, 0)     # green
    rgb[3, 5] = (0, 0, 255)      # blue
    path = _write(tmp_path / "c.png", rgb)
    # default: black 0, then sorted by (r, g, b): blue (0,0,255) 1, green (0,255,0) 2, red (255,0,0) 3
    expected = np.zeros((4, 6), np.uint8)
    expected[0, :3] = 3
    expected[1, 2:] = 2
    expected[3, 5] = 1
    np.testing.assert_array_equal(own.read_label_map(path), expected)
    table = tmp_path / "colours.json"
    table.write_text(json.dumps({"0": [0, 0, 0], "4": [255, 0, 0], "9": {"name": "vessel", "colour": [0, 255, 0]},
                                 "2": [0, 0, 255]}))
    expected = np.zeros((4, 6), np.uint8)
    expected[0, :3] = 4
    expected[1, 2:] = 9
    expected[3, 5] = 2
    np.testing.assert_array_equal(own.read_label_map(path, label_colours=table), expected)
    colours, names = own.read_label_colours(table)
    assert colours == {0: (0, 0, 0), 4: (255, 0, 0), 9: (0, 255, 0), 2: (0, 0, 255)}
    assert names[9] == "vessel"


def test_colour_table_over_the_whole_dataset(tmp_path):
    """Labels agree between files: a mask holding only green gets green's label of the whole dataset."""
    a = np.zeros((3, 3, 3), np.uint8)
    a[0, 0] = (255, 0, 0)
    a[1, 1] = (0, 255, 0)
    b = np.zeros((3, 3, 3), np.uint8)
    b[2, 2] = (0, 255, 0)
    for n, m in (("a", a), ("b", b)):
        _write(tmp_path / "img" / f"{n}.png", _grey(3, 3))
        _write(tmp_path / "msk" / f"{n}.png", m)
    args = argparse.Namespace(images=tmp_path / "img", masks=tmp_path / "msk", nnunet_dataset=None,
                              skip_unpaired=False, label_colours=None)
    dataset = own.load_own_data(args, binary=False)
    assert dataset.label_colours == {0: (0, 0, 0), 1: (0, 255, 0), 2: (255, 0, 0)}
    got_b = own.read_pair(dataset.pairs[1], binary=False, label_colours=dataset.label_colours)[1]
    expected_b = np.zeros((3, 3))
    expected_b[2, 2] = 1
    np.testing.assert_array_equal(got_b, expected_b)


def test_colour_not_in_label_colours(tmp_path):
    rgb = np.zeros((5, 5, 3), np.uint8)
    rgb[1, 1] = (255, 0, 0)
    rgb[2, 2] = (12, 34, 56)
    _write(tmp_path / "img" / "a.png", _grey(5, 5))
    _write(tmp_path / "msk" / "a.png", rgb)
    table = tmp_path / "colours.json"
    table.write_text(json.dumps({"0": [0, 0, 0], "1": [255, 0, 0]}))
    line = _bad(tmp_path, ["--images", str(tmp_path / "img"), "--masks", str(tmp_path / "msk"),
                           "--label-colours", str(table), "--val-fraction", "0", "--test-fraction", "0"])
    assert line.startswith(f"error: {tmp_path / 'msk' / 'a.png'}: colour(s) [12, 34, 56] not in --label-colours"), line


def test_jpeg_mask_binarised_at_128_note_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(own, "_NOTED", set())
    m = np.zeros((32, 48), np.uint8)
    m[:16, 16:32] = 200  # 8x8-block aligned, so JPEG keeps the block interiors near their values
    m[16:, 32:] = 100    # below 128: background
    paths = [_write(tmp_path / f"m{k}.jpg", m, quality=90) for k in range(2)]
    expected = np.zeros((32, 48), np.uint8)
    expected[:16, 16:32] = 1
    for path in paths:
        got = own.read_label_map(path)
        inner = np.zeros_like(expected, bool)  # away from the block edges (JPEG ringing)
        for r0, c0 in ((0, 0), (0, 16), (0, 32), (16, 0), (16, 16), (16, 32)):
            inner[r0 + 3:r0 + 13, c0 + 3:c0 + 13] = True
        np.testing.assert_array_equal(got[inner], expected[inner])
        assert set(np.unique(got).tolist()) <= {0, 1}
    err = capsys.readouterr().err
    assert err.count("note: JPEG masks") == 1 and "128" in err


def test_three_value_mask_needs_foreground(tmp_path):
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 1:3] = 1
    labels[4:, 5:] = 2
    _write(tmp_path / "img" / "a.png", _grey(6, 8))
    _write(tmp_path / "msk" / "a.png", labels)
    argv = ["--images", str(tmp_path / "img"), "--masks", str(tmp_path / "msk"), "--val-fraction", "0",
            "--test-fraction", "0"]
    line = _bad(tmp_path, argv)
    assert line.startswith(f"error: {tmp_path / 'msk' / 'a.png'}: mask has 3 values (0, 1, 2)"), line
    assert "--foreground" in line
    for fg, want in (("2", labels == 2), ("1,2", labels > 0), ("all", labels > 0)):
        out = tmp_path / f"out_{fg}"
        assert _main_factory()(argv + ["--foreground", fg, "--out", str(out)]) == 0
        np.testing.assert_array_equal(np.load(out / "masks.npz")["a"], want)
    line = error_line(_main_factory(), argv + ["--foreground", "x", "--out", str(tmp_path / "o")])
    assert line.startswith("error: --foreground:"), line


def test_multiclass_task_keeps_labels(tmp_path):
    labels = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    _write(tmp_path / "img" / "a.png", _grey(2, 3))
    _write(tmp_path / "msk" / "a.png", labels)
    pair, = own.find_pairs(tmp_path / "img", tmp_path / "msk")
    np.testing.assert_array_equal(own.read_pair(pair, binary=False)[1], labels)


def test_rgb_image_mode(tmp_path):
    rgb = np.zeros((5, 3, 3), np.uint8)
    rgb[..., 0] = 200
    _write(tmp_path / "img" / "a.png", rgb)
    _write(tmp_path / "msk" / "a.png", _grey(5, 3))
    pair, = own.find_pairs(tmp_path / "img", tmp_path / "msk")
    image, mask = own.read_pair(pair, mode="rgb")
    np.testing.assert_array_equal(image, rgb)
    assert mask.dtype == bool and not mask.any()


# ------------------------------------------------------------------------------------------------ split

def _subject_names():
    # 10 subjects with 1..10 frames each (55 names)
    return [f"{s}_{f}" for s in range(1, 11) for f in range(1, s + 1)]


def test_split_keeps_groups_on_one_side_and_is_seeded():
    names = _subject_names()
    split = own.split_pairs(names, val_fraction=0.2, test_fraction=0.2, seed=3, group_by=r"^(\d+)_")
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(names)
    sides = {}
    for part, members in split.items():
        for name in members:
            sides.setdefault(name.split("_")[0], set()).add(part)
    assert all(len(s) == 1 for s in sides.values()), sides
    assert all(split[p] for p in ("train", "val", "test"))
    assert split == own.split_pairs(list(reversed(names)), val_fraction=0.2, test_fraction=0.2, seed=3,
                                    group_by=r"^(\d+)_")
    others = [own.split_pairs(names, val_fraction=0.2, test_fraction=0.2, seed=s, group_by=r"^(\d+)_")
              for s in range(4, 9)]
    assert any(o != split for o in others)


def test_split_without_groups_follows_the_fractions():
    names = [f"case{k:03d}" for k in range(200)]
    split = own.split_pairs(names, val_fraction=0.15, test_fraction=0.25, seed=0)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (120, 30, 50)


def test_split_group_regex_on_basename_of_nested_names():
    names = ["siteA/7_1", "siteA/7_2", "siteB/8_1", "siteB/8_2", "siteB/9_1", "siteB/9_2", "x/10_1", "x/10_2"]
    split = own.split_pairs(names, val_fraction=0.25, test_fraction=0.25, seed=1, group_by=r"^(\d+)_")
    for part in split.values():
        subjects = {n.split("/")[1].split("_")[0] for n in part}
        assert len(part) == 2 * len(subjects)


def test_fraction_leaving_a_split_empty(tmp_path):
    argv = _folders(tmp_path, ["a.png", "b.png", "c.png"], ["a.png", "b.png", "c.png"])
    line = _bad(tmp_path, argv + ["--val-fraction", "0.1", "--test-fraction", "0"])
    assert line.startswith("error: --val-fraction: 0.1 leaves the val split empty"), line
    line = _bad(tmp_path, argv + ["--val-fraction", "0", "--test-fraction", "0.05"])
    assert line.startswith("error: --test-fraction: 0.05 leaves the test split empty"), line
    line = _bad(tmp_path, argv + ["--val-fraction", "0.6", "--test-fraction", "0.5"])
    assert line.startswith("error: --val-fraction:"), line


def test_group_regex_matching_nothing(tmp_path):
    argv = _folders(tmp_path, ["a_1.png", "a_2.png", "b_1.png"], ["a_1.png", "a_2.png", "b_1.png"])
    line = _bad(tmp_path, argv + ["--group-by", r"^(\d+)_"])
    assert line.startswith(r"error: --group-by: '^(\\d+)_' matches none of the 3 names"), line


def test_write_split_layout_and_counts(tmp_path, capsys):
    split = {"train": ["a", "b", "c"], "val": ["d"], "test": ["e", "f"]}
    own.write_split(tmp_path / "split.json", split, source="folders", seed=7, group_by="^(\\d+)_",
                    fractions=(0.1, 0.2))
    assert json.loads((tmp_path / "split.json").read_text()) == {
        "train": ["a", "b", "c"], "val": ["d"], "test": ["e", "f"], "seed": 7, "group_by": "^(\\d+)_",
        "val_fraction": 0.1, "test_fraction": 0.2, "source": "folders", "counts": {"train": 3, "val": 1, "test": 2}}
    assert "train 3 / val 1 / test 2" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]


# ------------------------------------------------------------------------------------------------ real data

def test_real_nerve_frames():
    if not (NERVE / "images").is_dir():
        pytest.skip(f"{NERVE} not present")
    found = own.find_pairs(NERVE / "images", NERVE / "masks")
    assert len(found) == 1857
    assert all(p.mask.name == p.image[0].stem + "_mask.jpg" for p in found)
    names = [p.name for p in found]
    split = own.split_pairs(names, val_fraction=0.1, test_fraction=0.2, seed=0, group_by=r"^(\d+)_")
    side = {}
    for part, members in split.items():
        for name in members:
            side.setdefault(int(name.split("_")[0]), set()).add(part)
    assert sorted(side) == list(range(1, 38)) and all(len(s) == 1 for s in side.values())
    assert all(split[p] for p in split)


# ------------------------------------------------------------------------------------------------ more

def test_palette_indices_0_255_read_as_binary(tmp_path):
    indices = np.array([[0, 255, 255], [0, 0, 255]], np.uint8)
    img = Image.fromarray(indices, mode="P")
    img.putpalette([v for k in range(256) for v in (k, k, k)])
    img.save(tmp_path / "p.gif")
    np.testing.assert_array_equal(own.read_label_map(tmp_path / "p.gif"), indices // 255)


def test_nifti_volume_pairs(tmp_path):
    nib = pytest.importorskip("nibabel")
    vol = np.arange(3 * 5 * 4, dtype=np.int16).reshape(3, 5, 4) - 30
    labels = np.zeros((3, 5, 4), np.uint8)
    labels[1, 2:4, 1:3] = 1
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "img" / "ct1.nii.gz")
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "msk" / "ct1_mask.nii.gz")
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "img" / "ct2.nii")
    nib.save(nib.Nifti1Image(labels[:, :4], np.eye(4)), tmp_path / "msk" / "ct2.nii")
    found = own.find_pairs(tmp_path / "img", tmp_path / "msk")
    assert [(p.name, p.image[0].name, p.mask.name, p.volume) for p in found] == [
        ("ct1", "ct1.nii.gz", "ct1_mask.nii.gz", True), ("ct2", "ct2.nii", "ct2.nii", True)]
    image, mask = own.read_pair(found[0])
    np.testing.assert_array_equal(image, vol)
    np.testing.assert_array_equal(mask, labels == 1)
    with pytest.raises(own.UserError, match=r"ct2\.nii: mask is 3x4x4 but its image .*ct2\.nii is 3x5x4"):
        own.read_pair(found[1])


def test_help_lists_the_own_data_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _main_factory()(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--images", "--masks", "--nnunet-dataset", "--skip-unpaired", "--foreground", "--label-colours",
                   "--val-fraction", "--test-fraction", "--group-by"):
        assert option in out


def test_nnunet_reader_missing_is_one_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "common.data.nnunet", None)
    (tmp_path / "ds").mkdir()
    line = _bad(tmp_path, ["--nnunet-dataset", str(tmp_path / "ds")])
    assert line.startswith("error: --nnunet-dataset: the nnU-Net reader"), line


def test_images_and_nnunet_dataset_together(tmp_path):
    line = _bad(tmp_path, ["--nnunet-dataset", str(tmp_path), "--images", str(tmp_path), "--masks", str(tmp_path)])
    assert line.startswith("error: --nnunet-dataset: give either"), line
