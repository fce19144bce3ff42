"""retinal_edema on your own data (issue 22 items 3, 5, 6): slice folders, NIfTI volumes and nnU-Net datasets ->
gen_image.py -> train / eval / test / predict, the benchmark's files on the same slices, one-line errors."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from common import cli
from common.data.io import read_image, write_image
from common.data.synthetic import EDEMA_GREY_CODES, write_retinal_edema_dataset
from retinal_edema import eval as evaluate, gen_image, predict, test, train
from _cli import error_line as _error

SHAPE = (32, 16)
GREY = np.asarray(EDEMA_GREY_CODES, np.uint8)  # class -> the challenge's grey code


def _own_from_benchmark(data, own):
    """The challenge's files renamed into the own layout: images/<cube>/<k>.bmp, masks/<cube>/<k>_label.bmp."""
    for image in sorted(data.glob("*/original_images/*.img/*.bmp")):
        set_dir, cube = image.parents[2], image.parent.name[:-4]
        (own / "images" / cube).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, own / "images" / cube / image.name)
        label = set_dir / "label_images" / f"{cube}_labelMark" / image.name
        if label.is_file():
            (own / "masks" / cube).mkdir(parents=True, exist_ok=True)
            shutil.copy(label, own / "masks" / cube / f"{image.stem}_label.bmp")


def test_own_slice_folders_give_the_benchmark_files(tmp_path, capsys):
    data = tmp_path / "data"
    write_retinal_edema_dataset(data, n_train=4, n_val=1, n_test=1, n_slices=4, shape=SHAPE, seed=2)
    gen_image.main(["-d", str(data), "-l", str(tmp_path / "lists"), "--quiet"])
    _own_from_benchmark(data, tmp_path / "own")
    mine = tmp_path / "mine"
    summary = gen_image.main(["--images", str(tmp_path / "own" / "images"), "--masks", str(tmp_path / "own" / "masks"),
                              "-d", str(mine), "-l", str(mine / "lists"), "--quiet"])
    assert summary["size"] == list(SHAPE)  # multiples of 16 already: no padding
    split = json.loads((mine / "lists" / "split.json").read_text())
    # 6 cubes, val 0.15 and test 0.15 of the cubes -> one cube each (a cube's slices stay together)
    assert split["counts"] == {"train": 4, "val": 1, "test": 1} and split["split_unit"] == "cube"
    bench = {p.parent.name[:-4] + "/" + p.name: p for p in data.glob(f"*/{gen_image.STACKED}/*/*.png")}
    own = {p.parent.name + "/" + p.name: p for p in mine.glob(f"*/{gen_image.STACKED}/*/*.png")}
    assert len(bench) == 24 and sorted(bench) == sorted(own)
    for key in bench:  # the stacked 3-channel slices, byte for byte
        assert bench[key].read_bytes() == own[key].read_bytes(), key
    labels = sorted(mine.glob("*/label_images/*_labelMark/*.bmp"))
    assert len(labels) == 24
    for path in labels:  # the label slices: the challenge's grey codes, pixel for pixel
        original = next(data.glob(f"*/label_images/{path.parent.name}/{path.name}"))
        np.testing.assert_array_equal(read_image(path, "gray"), read_image(original, "gray"))
    lines = (mine / "lists" / "train_images.txt").read_text().split()
    assert len(lines) == 16 and all(line.startswith("Edema_trainingset/trans3channel_images/") for line in lines)
    assert len((mine / "lists" / "val_images.txt").read_text().split()) == 1
    assert "split.json: train 4 cubes (16 slices) / val 1 cubes (4 slices) / test 1 cubes (4 slices)" in \
        capsys.readouterr().out


def _odd_cubes(root, rng):
    """Slice folders of odd sizes (nested, mixed extensions), labels as class indices, 16-bit maps, grey codes."""
    cubes = {}
    for c, (shape, ext, kind) in enumerate([((40, 24), ".png", "index"), ((36, 30), ".bmp", "grey"),
                                            ((40, 24), ".tif", "index16"), ((33, 20), ".png", "index"),
                                            ((40, 24), ".png", "grey"), ((38, 24), ".bmp", "index"),
                                            ((40, 24), ".png", "index"), ((40, 24), ".png", "grey")]):
        cube = f"site{c % 2}/P{c:03d}_OD"
        images = rng.integers(0, 255, (5,) + shape, dtype=np.uint8)
        labels = np.zeros((5,) + shape, np.uint8)
        labels[:, 10:20, 5:15] = 1 + c % 3
        labels[1:3, 2:6, 2:8] = 3
        for k in range(5):
            write_image(root / "images" / cube / f"{k + 1}{ext}", images[k])
            if kind == "index":
                write_image(root / "masks" / cube / f"{k + 1}.png", labels[k])
            elif kind == "index16":
                (root / "masks" / cube).mkdir(parents=True, exist_ok=True)
                Image.fromarray(labels[k].astype(np.uint16)).save(root / "masks" / cube / f"{k + 1}_mask.tif")
            else:
                write_image(root / "masks" / cube / f"{k + 1}.bmp", GREY[labels[k]])
        cubes[cube] = (images, labels)
    return cubes


def test_own_data_gen_image_train_eval_test_predict(tmp_path, capsys):
    cubes = _odd_cubes(tmp_path / "own", np.random.default_rng(0))
    work = tmp_path / "work"
    paths = ["-d", str(work), "-l", str(work / "lists")]
    summary = gen_image.main(["--images", str(tmp_path / "own" / "images"), "--masks", str(tmp_path / "own" / "masks"),
                              "--val-fraction", "0.25", "--test-fraction", "0.25"] + paths + ["--quiet"])
    assert summary["size"] == [48, 32]  # the largest cube (40 x 30) padded to multiples of 16
    split = json.loads((work / "lists" / "split.json").read_text())
    assert split["counts"] == {"train": 4, "val": 2, "test": 2}
    for cube, (images, labels) in cubes.items():
        folder = cube.replace("/", "_")
        set_name = next(gen_image.SETS[p] for p in ("train", "val", "test") if cube in split[p])
        stacked = np.stack([read_image(work / set_name / gen_image.STACKED / folder / f"{k:03d}.png", "rgb")
                            for k in range(5)])
        padded = np.zeros((5, 48, 32), np.uint8)
        padded[:, :images.shape[1], :images.shape[2]] = images
        np.testing.assert_array_equal(stacked[..., 1], padded)  # G = the slice, R the next, B the previous
        np.testing.assert_array_equal(stacked[1:, :, :, 2], padded[:-1])
        truth = np.zeros((5, 48, 32), np.uint8)
        truth[:, :labels.shape[1], :labels.shape[2]] = labels
        got = np.stack([read_image(work / set_name / "label_images" / f"{folder}_labelMark" / f"{k + 1}.bmp", "gray")
                        for k in range(5)])
        np.testing.assert_array_equal(got, GREY[truth])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "REPO_ROOT", tmp_path / "repo")
        run = train.main(paths + ["--name", "unet", "--epochs", "1", "--batch-size", "4", "--verbose", "0"])
    row = evaluate.main(paths + ["--checkpoints", str(run / "best.keras"), "--out-dir", str(tmp_path / "ev"),
                                 "--quiet"])
    assert 0 <= row["Dice"] <= 1
    test.main(paths + ["--checkpoints", str(run / "best.keras"), "--out-dir", str(tmp_path / "sub"), "--quiet"])
    assert list((tmp_path / "sub").rglob("*.npy"))
    # predict.py on a new cube in the challenge's slice layout, at its own (odd) size
    images = cubes[split["test"][0]][0]
    for k, image in enumerate(images):
        write_image(tmp_path / "new" / "eye.img" / f"{k + 1}.bmp", image)
    predict.main([str(tmp_path / "new"), "--run-dir", str(run), "--out-dir", str(tmp_path / "pred")])
    out = sorted((tmp_path / "pred").rglob("eye_labelMark/*.bmp"))
    assert len(out) == 5 and read_image(out[0], "gray").shape == images.shape[1:]


def test_nnunet_volumes_and_flat_slices(tmp_path, capsys):
    from common.data.nnunet import write_nnunet_dataset

    rng = np.random.default_rng(5)
    labels_json = {0: "background", 1: "REA", 2: "SRF", 3: "PED"}
    volumes = []
    for c in range(4):
        image = rng.integers(0, 255, SHAPE + (3,), dtype=np.uint8)  # (rows, cols, slices)
        label = rng.integers(0, 4, SHAPE + (3,)).astype(np.uint8)
        volumes.append((f"cube{c}", image[..., None], label))
    write_nnunet_dataset(tmp_path / "Dataset510_OCT", train_cases=volumes, labels=labels_json,
                         channel_names=["OCT"], file_ending=".nii.gz", verbose=False)
    work = tmp_path / "vol"
    gen_image.main(["--nnunet-dataset", str(tmp_path / "Dataset510_OCT"), "-d", str(work), "-l",
                    str(work / "lists"), "--val-fraction", "0.25", "--test-fraction", "0.25", "--quiet"])
    split = json.loads((work / "lists" / "split.json").read_text())
    assert split["source"] == "nnunet" and sum(split["counts"].values()) == 4
    for name, image, label in volumes:
        set_name = next(gen_image.SETS[p] for p in ("train", "val", "test") if name in split[p])
        for k in range(3):  # slice k = volume[..., k]
            png = read_image(work / set_name / gen_image.STACKED / name / f"{k:03d}.png", "rgb")
            np.testing.assert_array_equal(png[..., 1], image[..., k, 0])
            bmp = read_image(work / set_name / "label_images" / f"{name}_labelMark" / f"{k + 1}.bmp", "gray")
            np.testing.assert_array_equal(bmp, GREY[label[..., k]])
    # 2-D cases named <cube>_<slice>: grouped into cubes, ordered by the slice number
    flat = [(f"eye{c}_{k}", rng.integers(0, 255, SHAPE + (1,), dtype=np.uint8),
             rng.integers(0, 4, SHAPE).astype(np.uint8)) for c in range(3) for k in (2, 10, 1)]
    write_nnunet_dataset(tmp_path / "Dataset511_OCT2D", train_cases=flat, labels=labels_json,
                         channel_names=["OCT"], verbose=False)
    work = tmp_path / "flat"
    gen_image.main(["--nnunet-dataset", str(tmp_path / "Dataset511_OCT2D"), "-d", str(work), "-l",
                    str(work / "lists"), "--val-fraction", "0.34", "--test-fraction", "0", "--quiet"])
    split = json.loads((work / "lists" / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == ["eye0", "eye1", "eye2"] and split["test"] == []
    cube = split["train"][0]
    ordered = sorted((c for c in flat if c[0].startswith(cube + "_")), key=lambda c: int(c[0].split("_")[1]))
    for k, (_, image, _) in enumerate(ordered):
        png = read_image(work / "Edema_trainingset" / gen_image.STACKED / cube / f"{k:03d}.png", "rgb")
        np.testing.assert_array_equal(png[..., 1], image[..., 0])


def _nothing_written(work):
    return not list(work.rglob("*.png")) and not list(work.rglob("*.txt")) and not list(work.rglob("*.json"))


def test_bad_own_data_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    from common.data.nnunet import write_nnunet_dataset

    own = tmp_path / "own"
    _odd_cubes(own, np.random.default_rng(1))
    work = tmp_path / "work"
    args = ["--images", str(own / "images"), "--masks", str(own / "masks"), "-d", str(work), "-l",
            str(work / "lists"), "--quiet"]
    bad = own / "masks" / "site1" / "P005_OD" / "3.png"  # class-index cube: a value 7
    label = np.array(read_image(bad, "gray"))
    label[0, 0] = 7
    write_image(bad, label)
    line = _error(gen_image.main, args)
    assert line.startswith(f"error: {bad}: label values [0, 3, 7] are neither class indices 0..3")
    assert _nothing_written(work)
    label[0, 0] = 0
    write_image(bad, label)
    # a --data-dir that holds the challenge's data is never written into
    write_retinal_edema_dataset(tmp_path / "challenge", n_train=1, n_val=0, n_test=0, n_slices=2, shape=SHAPE)
    line = _error(gen_image.main, args[:4] + ["-d", str(tmp_path / "challenge"), "-l", str(work / "lists")])
    assert "holds the challenge's data (original_images/)" in line
    # nnU-Net: a label that is not an edema class; two channels per B-scan
    cases = [(f"c{k}_1", np.zeros(SHAPE + (1,), np.uint8), np.zeros(SHAPE, np.uint8)) for k in range(4)]
    write_nnunet_dataset(tmp_path / "n1", train_cases=cases, labels={0: "background", 1: "fluid"},
                         channel_names=["OCT"], verbose=False)
    line = _error(gen_image.main, ["--nnunet-dataset", str(tmp_path / "n1"), "-d", str(work), "-l",
                                   str(work / "lists")])
    assert line == ("error: label 1 'fluid' (dataset.json / --label-colours): not an edema class; name the labels "
                    "background, REA, SRF, PED")
    two = [(f"c{k}_1", np.zeros(SHAPE + (2,), np.uint8), np.zeros(SHAPE, np.uint8)) for k in range(4)]
    write_nnunet_dataset(tmp_path / "n2", train_cases=two, labels={0: "background", 1: "REA"},
                         channel_names=["a", "b"], verbose=False)
    line = _error(gen_image.main, ["--nnunet-dataset", str(tmp_path / "n2"), "-d", str(work), "-l",
                                   str(work / "lists"), "--val-fraction", "0.25", "--test-fraction", "0.25"])
    assert line.endswith("2 channels; the B-scans are one grey channel")
    assert _nothing_written(work)
    # an existing run is kept without --overwrite
    gen_image.main(args)
    before = sorted(p for p in work.rglob("*"))
    assert "already exists" in _error(gen_image.main, args)
    assert sorted(p for p in work.rglob("*")) == before
