"""robotic_scene on your own data (issue 22 items 3, 5, 6): --images/--masks folders and nnU-Net datasets ->
prepare -> train -> test / predict, the same prepared files as the ROBOT18 layout, one-line errors."""

import json
import shutil

import numpy as np
from PIL import Image

from common.data.io import read_image, write_image
from common.data.synthetic import write_robotic_scene_dataset
from robotic_scene import predict, prepare, test as rtest, train
from _cli import error_line as _error

SHAPE = (32, 64)
SEQS = {1: 0, 3: 1, 5: 0, 6: 2}


def _files(folder):
    """{relative path: bytes} of the prepared frames and masks (not the reports)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))
            if p.parts[-3].startswith("seq_")}


def _own_from_raw(raw, own, mask_suffix="_mask"):
    """The ROBOT18 files renamed into an own-data layout: images/seq_N/x.png, masks/seq_N/x<suffix>.png."""
    for frame in sorted(raw.glob("seq_*/left_frames/*.png")):
        seq = frame.parts[-3]
        (own / "images" / seq).mkdir(parents=True, exist_ok=True)
        (own / "masks" / seq).mkdir(parents=True, exist_ok=True)
        shutil.copy(frame, own / "images" / seq / frame.name)
        shutil.copy(raw / seq / "labels" / frame.name, own / "masks" / seq / (frame.stem + mask_suffix + ".png"))


def test_own_folders_give_the_benchmark_files_byte_for_byte(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_robotic_scene_dataset(raw, prepare.CLASS_COLOURS, SEQS, 2, SHAPE, seed=3)
    prepare.main(["--raw-dir", str(raw), "--work-dir", str(tmp_path / "bench"), "--height", "32", "--width", "64",
                  "--quiet"])
    _own_from_raw(raw, tmp_path / "own")
    summary = prepare.main(["--images", str(tmp_path / "own" / "images"), "--masks", str(tmp_path / "own" / "masks"),
                            "--work-dir", str(tmp_path / "mine"), "--quiet"])
    assert (summary["height"], summary["width"]) == SHAPE  # default crop: smallest frame, multiples of 32
    bench, mine = _files(tmp_path / "bench" / "cropted_train"), _files(tmp_path / "mine" / "cropted_train")
    assert len(bench) == 16 and bench == mine  # seq_<N> folders keep their numbers, same names, same bytes
    split = json.loads((tmp_path / "mine" / "cropted_train" / "split.json").read_text())
    # fractions of the 4 sequences: val 0.27 -> 1 sequence (middle 0.5 < 1.08), no test split
    assert len(split["val_seqs"]) == 1 and split["test_seqs"] == [] and split["scenes"] is None
    assert sorted(split["train_seqs"] + split["val_seqs"]) == [1, 3, 5, 6]
    assert split["counts"] == {"train": 6, "val": 2, "test": 0}
    val = f"seq_{split['val_seqs'][0]}"
    assert split["val"] == [f"{val}/frame000", f"{val}/frame001"]  # a sequence's frames stay on one side
    assert "split.json: train 3 sequences (6 frames) / val 1 sequences (2 frames)" in capsys.readouterr().out


def _odd_layout(root, rng):
    """Sequences as top folders (one nested deeper), odd sizes, mixed extensions and mask kinds (colour, palette,
    grey); returns {prepared frame name: (sequence, image, label)}."""
    images, masks = root / "images", root / "masks"
    frames = {}
    for group, (scene, shape) in {"caseA": (0, (40, 70)), "caseB": (1, (45, 99)), "caseC": (2, (37, 66))}.items():
        for k in range(2):
            image = rng.integers(0, 255, shape + (3,), dtype=np.uint8)
            label = np.zeros(shape, np.uint8)
            label[5:20, 10:40] = (1, 4, 10)[scene]
            label[25:, :8] = 2
            name = f"frame{k:02d}"
            sub = group if group != "caseC" else "caseC/deeper"
            write_image(images / sub / (name + (".jpg" if group == "caseB" and k else ".png")), image)
            if group == "caseA":  # RGB in the ROBOT18 colours
                write_image(masks / sub / f"{name}_label.png", prepare.CLASS_COLOURS[label])
            elif group == "caseB":  # palette PNG: the index is the class
                pal = Image.fromarray(label, mode="P")
                pal.putpalette(list(np.random.default_rng(0).integers(0, 255, 768)))
                (masks / sub).mkdir(parents=True, exist_ok=True)
                pal.save(masks / sub / f"{name}.png")
            else:  # 8-bit grey label map
                write_image(masks / sub / f"{name}_gt.png", label)
            frames[(group, name if group != "caseC" else f"deeper_{name}")] = (group, image, label)
    return frames


def test_own_data_prepare_train_test_predict_end_to_end(tmp_path, capsys):
    frames = _odd_layout(tmp_path / "own", np.random.default_rng(1))
    (tmp_path / "scenes.json").write_text(json.dumps({"caseA": "preparing", "caseB": 1, "caseC": "incising"}))
    work = tmp_path / "work"
    summary = prepare.main(["--images", str(tmp_path / "own" / "images"), "--masks", str(tmp_path / "own" / "masks"),
                            "--work-dir", str(work), "--scenes", str(tmp_path / "scenes.json"), "--val-fraction",
                            "0.34", "--quiet"])
    # crop: the smallest frame (37 x 66) rounded down to multiples of 32 -> 32 x 64, top left
    assert (summary["height"], summary["width"]) == (32, 64)
    prepared = work / "cropted_train"
    split = json.loads((prepared / "split.json").read_text())
    assert split["sequences"] == {"seq_1": "caseA", "seq_2": "caseB", "seq_3": "caseC"}  # natural order
    assert split["scenes"] == {"1": 0, "2": 1, "3": 2}
    for (group, name), (_, image, label) in frames.items():
        seq = {"caseA": 1, "caseB": 2, "caseC": 3}[group]
        mask = read_image(prepared / f"seq_{seq}" / "instruments_masks" / f"{name}.png", "gray")
        np.testing.assert_array_equal(mask, label[:32, :64])
        got = read_image(prepared / f"seq_{seq}" / "images" / f"{name}.png", "rgb")
        if not (group == "caseB" and name.endswith("01")):  # the JPEG is lossy (grey-equal channels aside)
            np.testing.assert_array_equal(got, image[:32, :64])
    # train (1 tiny epoch per stage, all four: the scenes are given) -> test -> predict
    run = tmp_path / "run"
    records = train.main(["--work-dir", str(work), "--run-dir", str(run), "--epochs", "1", "1", "1", "1",
                          "--encoder-weights", "none", "--batch-size", "2", "--verbose", "0"])
    assert [r["name"] for r in records] == ["segmentation", "class", "sync", "scene"]
    settings = json.loads((run / "stage1_segmentation" / "state.json").read_text()).get("settings") or {}
    if settings:
        assert settings["val_seqs"] == split["val_seqs"]
    result = rtest.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(tmp_path / "eval"),
                         "--no-surface-distances", "--quiet"])
    assert result["frames"] == 2 * len(split["val_seqs"])  # no test split: the validation sequences
    predict.main([str(prepared / "seq_1" / "images"), "--run-dir", str(run), "--out-dir", str(tmp_path / "pred")])
    assert len(list((tmp_path / "pred").glob("*.png"))) >= 2


def test_without_scenes_the_scene_stage_is_refused_and_stage_3_runs(tmp_path, capsys):
    _odd_layout(tmp_path / "own", np.random.default_rng(2))
    work = tmp_path / "work"
    prepare.main(["--images", str(tmp_path / "own" / "images"), "--masks", str(tmp_path / "own" / "masks"),
                  "--work-dir", str(work), "--val-fraction", "0.34", "--quiet"])
    assert "train with --last-stage 3" in capsys.readouterr().err
    line = _error(train.main, ["--work-dir", str(work), "--run-dir", str(tmp_path / "run"), "--encoder-weights",
                               "none", "--epochs", "1", "1", "1", "1"])
    assert line.startswith("error: --last-stage: ") and "prepared without --scenes" in line
    assert not (tmp_path / "run").exists()


def test_nnunet_dataset_input(tmp_path, capsys):
    from common.data.nnunet import write_nnunet_dataset

    rng = np.random.default_rng(4)
    cases = []
    for seq in ("s1", "s2", "s3", "s4"):
        for k in range(2):
            label = rng.integers(0, 12, SHAPE).astype(np.uint8)
            cases.append((f"{seq}_{k:03d}", rng.integers(0, 255, SHAPE + (3,), dtype=np.uint8), label))
    labels = dict(enumerate(prepare.CLASS_NAMES))
    write_nnunet_dataset(tmp_path / "Dataset503_Robot", train_cases=cases, labels=labels,
                         channel_names=["R", "G", "B"], verbose=False)
    work = tmp_path / "work"
    prepare.main(["--nnunet-dataset", str(tmp_path / "Dataset503_Robot"), "--work-dir", str(work), "--quiet"])
    split = json.loads((work / "cropted_train" / "split.json").read_text())
    # flat names: the sequence is the --group-by regex's group 1 (s1_000 -> s1), numbered 1.. in natural order
    assert split["sequences"] == {"seq_1": "s1", "seq_2": "s2", "seq_3": "s3", "seq_4": "s4"}
    assert split["source"] == "nnunet"
    for name, image, label in cases:
        seq = int(name[1])
        np.testing.assert_array_equal(
            read_image(work / "cropted_train" / f"seq_{seq}" / "instruments_masks" / f"{name}.png", "gray"), label)
        np.testing.assert_array_equal(
            read_image(work / "cropted_train" / f"seq_{seq}" / "images" / f"{name}.png", "rgb"), image)
    # and back out: python -m common.data.to_nnunet --task robotic_scene gives the prepared frames and masks
    from common.data import to_nnunet
    from common.data.nnunet import read_nnunet_case, read_nnunet_dataset

    to_nnunet.main([str(work), "--task", "robotic_scene", "--out", str(tmp_path / "back"), "--quiet"])
    back = read_nnunet_dataset(tmp_path / "back", verbose=False)
    assert back.labels == {**labels, 0: "background"}  # nnU-Net names label 0 "background"
    assert len(back.pairs) == 8 and not back.test  # no test split: all in imagesTr
    for pair in back.pairs:
        seq, name = pair.name.split("__")
        image, label = read_nnunet_case(pair)
        np.testing.assert_array_equal(label, read_image(work / "cropted_train" / seq / "instruments_masks" /
                                                        f"{name}.png", "gray"))
        np.testing.assert_array_equal(image, read_image(work / "cropted_train" / seq / "images" / f"{name}.png",
                                                        "rgb"))


def test_bad_own_data_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    from common.data.nnunet import write_nnunet_dataset

    raw = tmp_path / "raw"
    write_robotic_scene_dataset(raw, prepare.CLASS_COLOURS, {1: 0, 2: 0}, 2, SHAPE, seed=0)
    own = tmp_path / "own"
    _own_from_raw(raw, own)
    out = tmp_path / "work"
    args = ["--images", str(own / "images"), "--masks", str(own / "masks"), "--work-dir", str(out), "--quiet"]
    # a colour not in the ROBOT18 table
    bad = own / "masks" / "seq_2" / "frame001_mask.png"
    label = np.array(read_image(bad, "rgb"))
    label[0, 0] = (1, 2, 3)
    write_image(bad, label)
    line = _error(prepare.main, args)
    assert line.startswith("error: ") and "frame001_mask.png" in line and "[1, 2, 3]" in line.replace("(", "[")\
        .replace(")", "]")
    assert not (out / "cropted_train").exists()
    shutil.copy(raw / "seq_2" / "labels" / "frame001.png", bad)
    # a scene file that misses a sequence, and a scene that is not one of the three
    (tmp_path / "s.json").write_text(json.dumps({"seq_1": 0}))
    assert _error(prepare.main, args + ["--scenes", str(tmp_path / "s.json")]) == (
        f"error: --scenes {tmp_path / 's.json'}: no scene for 1 sequence(s): seq_2; every sequence needs one")
    (tmp_path / "s.json").write_text(json.dumps({"seq_1": 0, "seq_2": "cutting"}))
    assert "scene of 'seq_2' is 'cutting'" in _error(prepare.main, args + ["--scenes", str(tmp_path / "s.json")])
    assert not (out / "cropted_train").exists()
    # --scenes with the ROBOT18 layout
    assert _error(prepare.main, ["--raw-dir", str(raw), "--scenes", str(tmp_path / "s.json"), "--work-dir",
                                 str(out)]).startswith("error: --scenes: is for your own data")
    # nnU-Net: a label beyond TDSNet's 12 classes in dataset.json; two channels instead of RGB
    grey = [(f"s{k}_000", np.zeros(SHAPE + (1,), np.uint8), np.zeros(SHAPE, np.uint8)) for k in range(3)]
    write_nnunet_dataset(tmp_path / "n13", train_cases=grey, labels={k: f"c{k}" for k in range(13)},
                         channel_names=["g"], verbose=False)
    line = _error(prepare.main, ["--nnunet-dataset", str(tmp_path / "n13"), "--work-dir", str(out)])
    assert line.startswith(f"error: {tmp_path / 'n13'}: labels [12] are outside TDSNet's 12 classes")
    two = [(f"s{k}_000", np.zeros(SHAPE + (2,), np.uint8), np.zeros(SHAPE, np.uint8)) for k in range(3)]
    write_nnunet_dataset(tmp_path / "n2", train_cases=two, labels={0: "bg", 1: "x"}, channel_names=["a", "b"],
                         verbose=False)
    line = _error(prepare.main, ["--nnunet-dataset", str(tmp_path / "n2"), "--work-dir", str(out)])
    assert line.endswith("2 channel(s); TDSNet takes RGB frames (3 channels, nnU-Net channels 0, 1, 2)")
    assert not (out / "cropted_train").exists()
