"""The robotic_scene task (specs/tdsnet.md): colour labels, prepare, scores, staged training, test, end to end.

The TDSNet network and its losses are tested in test_tdsnet.py.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from common.cli import REPO_ROOT
from common.data.io import DataLayoutError, write_image
from common.data.synthetic import write_robotic_scene_dataset
from common.metrics import multiclass_image_scores
from robotic_scene import prepare, test as rtest, train

SHAPE = (32, 64)  # tiny frames, multiples of 32
SEQS = {1: 0, 3: 1, 5: 0, 6: 2}  # seq_1 validates; scenes as the original's table


# ------------------------------------------------------------------------------------------- colour labels


def test_colour_table_round_trips_and_matches_the_spec():
    assert prepare.NUM_CLASSES == 12 and len(np.unique(prepare._codes(prepare.CLASS_COLOURS))) == 12
    assert tuple(prepare.CLASS_COLOURS[6]) == (187, 155, 25)  # thread as TDSNet's config, not 128
    assert tuple(prepare.CLASS_COLOURS[10]) == (124, 155, 5) and prepare.CLASS_NAMES[10] == "intestine"
    index = np.arange(12, dtype=np.uint8).reshape(3, 4).repeat(2, axis=0)
    colour = prepare.index_to_colour(index)
    assert colour.shape == (6, 4, 3) and colour.dtype == np.uint8
    np.testing.assert_array_equal(colour[0, 1], (0, 255, 0))
    np.testing.assert_array_equal(prepare.colour_to_index(colour), index)
    with pytest.raises(ValueError, match="out of range"):
        prepare.index_to_colour(np.array([[12]]))


def test_unknown_colours_are_reported_never_silently_background():
    label = prepare.index_to_colour(np.zeros((4, 5), np.uint8))
    label[2, 3] = (128, 155, 25)  # thread in some third-party label tables
    label[3, 0] = (128, 155, 25)
    with pytest.raises(prepare.UnknownColourError,
                       match=r"seq_9/labels/frame000\.png: 2 pixels .* RGB \(128, 155, 25\) at row 2, col 3"):
        prepare.colour_to_index(label, "seq_9/labels/frame000.png")
    with pytest.warns(UserWarning, match=r"frame000\.png: 2 pixels .*mapped to background"):
        index = prepare.colour_to_index(label, "frame000.png", unknown="background")
    assert not index.any()


# ------------------------------------------------------------------------------------------------- prepare


def _raw(tmp_path, frames=2, shape=SHAPE, seqs=SEQS, seed=0):
    return write_robotic_scene_dataset(tmp_path / "raw", prepare.CLASS_COLOURS, seqs, frames, shape, seed)


def test_synthetic_dataset_has_the_real_layout(tmp_path):
    written = _raw(tmp_path, frames=3)
    assert written["frames"] == 12 and set(written["class_pixels"]) <= {0, 1, 2, 4, 5, 10}
    for seq in SEQS:
        names = sorted(p.name for p in (tmp_path / "raw" / f"seq_{seq}" / "left_frames").iterdir())
        assert names == ["frame000.png", "frame001.png", "frame002.png"]
        assert sorted(p.name for p in (tmp_path / "raw" / f"seq_{seq}" / "labels").iterdir()) == names


def test_prepare_crops_and_converts_labels(tmp_path):
    _raw(tmp_path, shape=(40, 70))
    work = tmp_path / "work"
    summary = prepare.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--height", "32",
                            "--width", "64", "--quiet"])
    assert summary["frames"] == 8 and summary["sequences"] == {"seq_1": 2, "seq_3": 2, "seq_5": 2, "seq_6": 2}
    out = work / "cropted_train" / "seq_6"
    image = np.asarray(Image.open(out / "images" / "frame001.png"))
    mask = np.asarray(Image.open(out / "instruments_masks" / "frame001.png"))
    raw_image = np.asarray(Image.open(tmp_path / "raw" / "seq_6" / "left_frames" / "frame001.png"))
    raw_label = np.asarray(Image.open(tmp_path / "raw" / "seq_6" / "labels" / "frame001.png"))
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8 and mask.shape == (32, 64) and mask.dtype == np.uint8
    np.testing.assert_array_equal(image, raw_image[:32, :64])  # top-left crop
    np.testing.assert_array_equal(mask, prepare.colour_to_index(raw_label[:32, :64]))
    assert set(np.unique(mask)) <= {0, 1, 2, 10} and 10 in mask  # scene 2 -> intestine
    table = json.loads((work / "cropted_train" / "class_pixels.json").read_text())
    assert sum(r["pixels"] for r in table) == 8 * 32 * 64
    assert (work / "cropted_train" / "class_pixels.png").is_file()


def test_prepare_bad_inputs_name_the_file(tmp_path):
    _raw(tmp_path)
    raw, work = tmp_path / "raw", tmp_path / "work"
    label = raw / "seq_3" / "labels" / "frame001.png"
    bad = np.asarray(Image.open(label)).copy()
    bad[0, 0] = (1, 2, 3)
    write_image(label, bad)
    with pytest.raises(prepare.UnknownColourError, match=r"seq_3[/\\]labels[/\\]frame001\.png: 1 pixels .*\(1, 2, 3\)"):
        prepare.main(["--raw-dir", str(raw), "--work-dir", str(work), "--height", "32", "--width", "64", "--quiet"])
    label.unlink()
    with pytest.raises(DataLayoutError, match=r"frame001\.png: label not found"):
        prepare.main(["--raw-dir", str(raw), "--work-dir", str(work), "--height", "32", "--width", "64", "--quiet"])
    with pytest.raises(Exception, match="smaller than the crop"):
        prepare.main(["--raw-dir", str(raw), "--work-dir", str(work), "--quiet"])  # 32x64 < 1024x1280
    result = subprocess.run([sys.executable, str(REPO_ROOT / "robotic_scene" / "prepare.py"), "--raw-dir",
                             str(tmp_path / "nothing"), "--work-dir", str(work)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nothing'}: folder not found"


# -------------------------------------------------------------------------------------------------- scores


def _reference_scores(truth, pred, n):
    """Loop version of util/validation.py's per-image, per-class IoU and Dice."""
    iou, dice = np.zeros(n), np.zeros(n)
    for c in range(n):
        g, p = truth == c, pred == c
        if g.sum() == 0:
            iou[c] = dice[c] = float(p.sum() == 0)
        else:
            inter = np.logical_and(g, p).sum()
            iou[c] = (inter + 1e-15) / (np.logical_or(g, p).sum() + 1e-15)
            dice[c] = (2 * inter + 1e-15) / (g.sum() + p.sum() + 1e-15)
    return iou, dice


def test_scores_follow_the_original_on_a_hand_example():
    truth = np.array([[[0, 0, 1, 1], [0, 2, 2, 1]], [[3, 3, 3, 3], [3, 3, 0, 0]]])
    pred = np.array([[[0, 1, 1, 1], [0, 2, 0, 4]], [[3, 3, 3, 3], [3, 3, 0, 0]]])
    s = multiclass_image_scores(truth, pred, 5)
    # image 0: class 0 2/4, class 1 2/4 (IoU) 4/6 (Dice), class 2 1/2, class 3 absent from both = 1, class 4 only
    # predicted = 0
    np.testing.assert_allclose(s["iou"][0], [0.5, 0.5, 0.5, 1.0, 0.0])
    np.testing.assert_allclose(s["dice"][0], [4 / 6, 4 / 6, 2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(s["iou"][1], [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(s["present"][0], [True, True, True, False, True])
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 6, (3, 7, 9)), rng.integers(0, 6, (3, 7, 9))
    t[0][t[0] == 5] = 0  # an absent class
    s = multiclass_image_scores(t, p, 6)
    for i in range(3):
        iou, dice = _reference_scores(t[i], p[i], 6)
        np.testing.assert_allclose(s["iou"][i], iou, rtol=1e-12)
        np.testing.assert_allclose(s["dice"][i], dice, rtol=1e-12)
    # present-class mean: image 0 of the hand example averages classes 0, 1, 2, 4
    assert rtest.present_mean(s["iou"][:1], s["present"][:1])[0] == pytest.approx(s["iou"][0][s["present"][0]].mean())


def test_keras_validation_score_equals_numpy():
    _, score_cls = train._keras_classes()
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, (3, 8, 10))
    truth[1][truth[1] == 3] = 0
    logits = rng.normal(size=(3, 8, 10, 12)).astype("float32")
    logits[..., 4:] -= 5  # mostly classes 0..3, a few false positives of absent classes
    pred = logits.argmax(-1)
    for kind in ("iou", "dice"):
        metric = score_cls(kind)
        metric.update_state(truth[:2], logits[:2])
        metric.update_state(truth[2:], logits[2:])
        expected = multiclass_image_scores(truth, pred, 12)[kind].mean()
        assert float(metric.result()) == pytest.approx(expected, rel=1e-5)


def test_video_means_and_trivial_rows():
    per_image = np.array([1.0, 0.0, 0.5, 0.5, 0.5])
    overall, per_video = rtest.video_means(per_image, np.array([1, 1, 2, 2, 2]))
    assert overall == pytest.approx(0.5) and per_video[1] == pytest.approx(0.5)
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[:, :2] = 4
    rows, _ = rtest.score_rows(truth, np.zeros_like(truth), np.array([1, 2]), "trivial")
    # classes 0 (IoU 0.5) and 4 (0) present, 10 absent classes score 1: (0.5 + 10) / 12
    assert rows[-1]["mean IoU"] == pytest.approx(10.5 / 12) and rows[-1]["IoU (present classes)"] == pytest.approx(0.25)


def test_small_region_removal_and_sizes():
    pred = np.zeros((8, 8), np.uint8)
    pred[0:3, 0:3] = 1  # 9 px, kept
    pred[6, 6] = 1  # 1 px, removed
    pred[5:7, 0:2] = 2  # 4 px, removed at 5
    out = rtest.remove_small_regions(pred, 5)
    assert out[0:3, 0:3].min() == 1 and out[6, 6] == 0 and not (out == 2).any()
    assert rtest.parse_size("768x960") == (768, 960)
    with pytest.raises(Exception, match="multiples of 32"):
        rtest.parse_size("100x96")


def test_training_data_are_read_normalised_and_flipped_together(tmp_path):
    _raw(tmp_path, frames=2)
    work = tmp_path / "work"
    prepare.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--height", "32", "--width", "64",
                  "--quiet"])
    data_dir = work / "cropted_train"
    assert train.split_sequences(data_dir, [1]) == ([3, 5, 6], [1])
    with pytest.raises(DataLayoutError, match="no validation sequence"):
        train.split_sequences(data_dir, [2])
    frames = train.sequence_frames(data_dir, [3, 6])
    assert train.frame_size(frames) == SHAPE and [f[2] for f in frames] == [3, 3, 6, 6]
    x, y = next(iter(train.make_dataset(frames, SHAPE, batch_size=4)))
    assert x.shape == (4, *SHAPE, 3) and x.dtype.name == "float32" and y["seg"].dtype.name == "uint8"
    assert list(y["scene"].numpy()) == [1, 1, 2, 2]
    image = np.asarray(Image.open(frames[0][0]), np.float32)
    np.testing.assert_allclose(x[0], (image / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], atol=1e-5)
    np.testing.assert_array_equal(y["seg"][0], np.asarray(Image.open(frames[0][1])))
    caffe = train.normalise_images(image[None], "caffe")[0]
    np.testing.assert_allclose(caffe[..., 0], image[..., 2] - 103.939, atol=1e-4)  # BGR minus Caffe means
    seen = set()
    mask = np.asarray(Image.open(frames[0][1]))
    # the flips move image and mask together, vertically and horizontally independently, element by element
    for xa, ya in train.make_dataset(frames[:1] * 16, SHAPE, batch_size=1, augment=True):
        for name, op in (("none", lambda a: a), ("ud", np.flipud), ("lr", np.fliplr),
                         ("both", lambda a: np.flipud(np.fliplr(a)))):
            if np.array_equal(ya["seg"][0], op(mask)) and np.allclose(xa[0], op(x[0].numpy()), atol=1e-5):
                seen.add(name)
    assert len(seen) >= 2


# --------------------------------------------------------------------------------------- staged schedule


def test_stage_table_and_overrides_follow_train_sh():
    assert [s[1:] for s in train.STAGES] == [(0, 0, 0, 1e-4, 10), (0.2, 0, 0, 1e-4, 30), (0.2, 0.6, 0, 5e-5, 50),
                                             (0.2, 0.6, 0.2, 5e-5, 70)]
    stages = train.parse_stages([1, 2, 3, 4], [1e-3] * 4, last=3)
    assert [s[5] for s in stages] == [1, 2, 3] and all(s[4] == 1e-3 for s in stages)
    assert train.SCENES[3] == 1 and train.SCENES[6] == 2 and 8 not in train.SCENES and len(train.SCENES) == 15


def test_best_epoch_is_the_first_maximum(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_iou\n0,1,0.2\n1,1,0.5\n2,1,0.5\n3,1,0.1\n")
    assert train.best_epoch(tmp_path) == 1


TRAIN_ARGS = ["--epochs", "1", "2", "2", "3", "--lrs", "1e-3", "7e-4", "5e-4", "5e-4", "--val-seqs", "1",
              "--encoder-weights", "none", "--batch-size", "2", "--verbose", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """prepare -> stage 1 -> (best checkpoint swapped) resumed stages 2-4, on tiny synthetic sequences."""
    tmp = tmp_path_factory.mktemp("robotic")
    write_robotic_scene_dataset(tmp / "raw", prepare.CLASS_COLOURS, SEQS, 2, SHAPE, seed=0)
    work, run = tmp / "work", tmp / "run"
    prepare.main(["--raw-dir", str(tmp / "raw"), "--work-dir", str(work), "--height", str(SHAPE[0]),
                  "--width", str(SHAPE[1]), "--quiet"])
    first = train.main(["--work-dir", str(work), "--run-dir", str(run), "--last-stage", "1"] + TRAIN_ARGS)
    # make stage 1's best checkpoint distinguishable from the weights the process ended with
    stage1 = run / "stage1_segmentation"
    other = train.build_trainer((*SHAPE, 3))
    other.save(stage1 / "best.keras")
    seen = []
    original = train.start_stage

    def spy(trainer, checkpoint, alpha, beta, gamma, lr):
        original(trainer, checkpoint, alpha, beta, gamma, lr)
        seen.append({"checkpoint": checkpoint, "weights": trainer.network.get_weights(),
                     "optimizer": (int(trainer.optimizer.iterations), float(trainer.optimizer.learning_rate)),
                     "stage_weights": np.asarray(trainer.stage_weights)})

    train.start_stage = spy
    try:
        records = train.main(["--work-dir", str(work), "--run-dir", str(run), "--resume"] + TRAIN_ARGS)
    finally:
        train.start_stage = original
    return {"tmp": tmp, "work": work, "run": run, "first": first, "records": records, "seen": seen,
            "swapped": other.network.get_weights()}


def test_staged_training_chains_best_checkpoints(trained):
    run, records = trained["run"], trained["records"]
    assert [r["name"] for r in records] == ["segmentation", "class", "sync", "scene"]
    assert trained["first"][0]["epochs"] == 1 and trained["first"][0]["best_epoch"] == 1
    # stage lengths: cumulative epochs minus the best epoch so far (1 2 2 3: stage 3 has nothing to do)
    assert [(r["start_epoch"], r["epochs"], r["best_epoch"]) for r in records] == [(0, 1, 1), (1, 1, 2), (2, 0, 2),
                                                                                  (2, 1, 3)]
    for r in (records[1], records[3]):
        stage_dir = run / f"stage{r['stage']}_{r['name']}"
        assert len((stage_dir / "history.csv").read_text().strip().splitlines()) == 2  # header + 1 epoch
        state = json.loads((stage_dir / "state.json").read_text())
        assert state["monitor"] == "val_iou" and state["mode"] == "max"
        assert state["settings"]["alpha"] == r["alpha"] and state["settings"]["lr"] == r["lr"]
    assert not (run / "stage3_sync").exists()
    assert records[1]["start_checkpoint"] == str(run / "stage1_segmentation" / "best.keras")
    assert records[3]["start_checkpoint"] == str(run / "stage2_class" / "best.keras")
    stages = json.loads((run / "stages.json").read_text())
    assert stages["final_checkpoint"] == str(run / "stage4_scene" / "best.keras")
    assert stages["settings"]["train_seqs"] == [3, 5, 6] and stages["settings"]["normalise"] == "torch"
    trainer = train.load_trainer(run / "stage4_scene" / "best.keras")
    np.testing.assert_allclose(np.asarray(trainer.stage_weights), [0.2, 0.6, 0.2])
    assert trainer.network.count_params() == 22_122_331


def test_resume_skips_finished_stages_and_starts_from_the_best_checkpoint(trained):
    seen, run = trained["seen"], trained["run"]
    # stage 1 was finished: skipped, not retrained; stages 2 and 4 start from the previous best checkpoints
    assert [s["checkpoint"] for s in seen] == [run / "stage1_segmentation" / "best.keras",
                                               run / "stage2_class" / "best.keras"]
    for got, want in zip(seen[0]["weights"], trained["swapped"]):
        np.testing.assert_array_equal(got, want)
    assert seen[0]["optimizer"] == (0, pytest.approx(7e-4))  # a fresh Adam with the stage's rate
    assert seen[1]["optimizer"] == (0, pytest.approx(5e-4))
    np.testing.assert_allclose(seen[0]["stage_weights"], [0.2, 0, 0])
    np.testing.assert_allclose(seen[1]["stage_weights"], [0.2, 0.6, 0.2])


def test_test_script_scores_and_writes_figures(trained):
    tmp, work, run = trained["tmp"], trained["work"], trained["run"]
    out = tmp / "test_out"
    result = rtest.main(["--work-dir", str(work), "--run-dir", str(run), "--checkpoint",
                         str(run / "stage4_scene" / "best.keras"), "--seqs", "1", "--out-dir", str(out),
                         "--tta-sizes", "32x64", "64x96", "--min-region", "4", "--quiet"])
    assert result["frames"] == 2 and [r["video"] for r in result["model"]] == ["seq_1", "mean over videos",
                                                                             "mean over images"]
    for name in ("scores.md", "scores.json", "per_class.md", "per_class.png", "paper.md", "overlay.png"):
        assert (out / name).is_file(), name
    pred = np.asarray(Image.open(out / "predictions" / "seq_1" / "frame000.png"))
    assert pred.shape == (*SHAPE, 3) and prepare.colour_to_index(pred).shape == SHAPE  # label colours only
    truth = np.stack([np.asarray(Image.open(
        work / "cropted_train" / "seq_1" / "instruments_masks" / f"frame00{i}.png")) for i in range(2)])
    trivial = result["trivial"][-1]
    expected, _ = rtest.score_rows(truth, np.zeros_like(truth), np.array([1, 1]), "x")
    assert trivial["mean IoU"] == pytest.approx(expected[-1]["mean IoU"])
    assert len(result["per_class"]) == 12 and result["per_class"][4]["paper IoU (on-site test)"] == pytest.approx(0.871)
