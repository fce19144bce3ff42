"""The robotic_scene task (specs/tdsnet.md): colour labels, prepare, scores, staged training, test, end to end.

The TDSNet network and its losses are tested in test_tdsnet.py.
"""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from common import cli
from common.cli import REPO_ROOT
from common.data.io import DataLayoutError, write_image
from common.data.synthetic import write_robotic_scene_dataset
from common.metrics import multiclass_image_scores
from robotic_scene import predict, prepare, test as rtest, train
from _cli import error_line as _error

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


def test_prepare_applies_orientation_tags_as_cv2_imread_and_warns(tmp_path):
    """The original reads frames and labels with cv2.imread (IMREAD_COLOR), which turns an image as its EXIF
    orientation tag says (PNG: OpenCV 4.5.2+); prepare.py does the same and names the tagged files once."""
    import cv2

    _raw(tmp_path, shape=(32, 64))
    frame = tmp_path / "raw" / "seq_6" / "left_frames" / "frame001.png"
    label = tmp_path / "raw" / "seq_6" / "labels" / "frame001.png"
    raw_image, raw_label = np.asarray(Image.open(frame)), np.asarray(Image.open(label))
    exif = Image.Exif()
    exif[0x0112] = 3  # "rotate 180 degrees to display"
    for path, array in ((frame, raw_image), (label, raw_label)):
        Image.fromarray(array).save(path, exif=exif)
    work = tmp_path / "work"
    with pytest.warns(UserWarning, match=r"2 of the training files carry an EXIF orientation tag: .*frame001\.png "
                                         r"\(tag 3\).*rotated/mirrored as the tag says.*cv2\.imread"):
        prepare.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--height", "32", "--width",
                      "64", "--quiet"])
    out = work / "cropted_train" / "seq_6"
    image = np.asarray(Image.open(out / "images" / "frame001.png"))
    np.testing.assert_array_equal(image, raw_image[::-1, ::-1])
    np.testing.assert_array_equal(image, cv2.imread(str(frame), cv2.IMREAD_COLOR)[..., ::-1])
    np.testing.assert_array_equal(np.asarray(Image.open(out / "instruments_masks" / "frame001.png")),
                                  prepare.colour_to_index(raw_label[::-1, ::-1]))


def test_prepare_bad_inputs_name_the_file(tmp_path):
    _raw(tmp_path)
    raw, work = tmp_path / "raw", tmp_path / "work"
    label = raw / "seq_3" / "labels" / "frame001.png"
    bad = np.asarray(Image.open(label)).copy()
    bad[0, 0] = (1, 2, 3)
    write_image(label, bad)
    with pytest.raises(prepare.UnknownColourError, match=r"1 label file holds 1 colour not in the ROBOT18 table: RGB "
                                                         r"\(1, 2, 3\) \(1 px in 1 file, first seq_3[/\\]labels"):
        prepare.main(["--raw-dir", str(raw), "--work-dir", str(work), "--height", "32", "--width", "64", "--quiet"])
    label.unlink()
    with pytest.raises(DataLayoutError, match=r"frame001\.png: frame without its label"):
        prepare.main(["--raw-dir", str(raw), "--work-dir", str(work), "--height", "32", "--width", "64", "--quiet"])
    write_image(label, prepare.index_to_colour(np.zeros(SHAPE, np.uint8)))
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
    # --data-workers: the shuffled, flipped batches of an epoch do not depend on the number of map calls
    frames = train.sequence_frames(data_dir, [3, 5, 6])

    def epoch(calls):  # two epochs (their flips are keyed by seed, epoch and position)
        ds = train.make_dataset(frames, SHAPE, batch_size=2, augment=True, shuffle=True, seed=4,
                                num_parallel_calls=calls)
        return [(x.numpy(), y["seg"].numpy(), y["scene"].numpy()) for _ in range(2) for x, y in ds]

    serial, parallel = epoch(1), epoch(3)
    assert len(serial) == len(parallel) == 6
    for a, b in zip(serial, parallel):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_decode_cache_gives_the_same_batches_once_normalised_on_the_device(tmp_path):
    """--decode-cache: frames gathered from the decoded uint8 arrays, normalised by the training step's
    transform, equal the frames decoded from the PNGs (two shuffled, flipped epochs; both normalisations)."""
    _raw(tmp_path, frames=2)
    work = tmp_path / "work"
    prepare.main(["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--height", "32", "--width", "64",
                  "--quiet"])
    frames = train.sequence_frames(work / "cropted_train", [3, 5, 6])
    cache = train.decoded_frames(frames, tmp_path / "cache", verbose=False)
    assert cache[0].shape == (len(frames), *SHAPE, 3) and cache[1].shape == (len(frames), *SHAPE, 1)
    for mode in ("torch", "caffe"):
        def epochs(**kw):
            ds = train.make_dataset(frames, SHAPE, batch_size=2, augment=True, shuffle=True, seed=4,
                                    normalise=mode, **kw)
            return [(x.numpy(), y["seg"].numpy(), y["scene"].numpy()) for _ in range(2) for x, y in ds]

        files, cached = epochs(), epochs(cache=cache, num_parallel_calls=2)
        assert len(files) == len(cached) == 6
        for (x, seg, scene), (xc, segc, scenec) in zip(files, cached):
            assert xc.dtype == np.uint8
            np.testing.assert_array_equal(np.asarray(train.normalise_images(xc, mode)), x)
            np.testing.assert_array_equal(segc, seg)
            np.testing.assert_array_equal(scenec, scene)


# --------------------------------------------------------------------------------------- staged schedule


def test_stage_table_and_overrides_follow_train_sh():
    assert [s[1:] for s in train.STAGES] == [(0, 0, 0, 1e-4, 10), (0.2, 0, 0, 1e-4, 30), (0.2, 0.6, 0, 5e-5, 50),
                                             (0.2, 0.6, 0.2, 5e-5, 70)]
    stages = train.parse_stages([1, 2, 3, 4], [1e-3] * 4, last=3)
    assert [s[5] for s in stages] == [1, 2, 3] and all(s[4] == 1e-3 for s in stages)
    assert train.SCENES[3] == 1 and train.SCENES[6] == 2 and 8 not in train.SCENES and len(train.SCENES) == 15


def _epoch_totals(cumulative):
    """Every total number of epochs the original's chaining can run (spec 2.1), by brute force: stage k runs
    epochs start+1 .. N_k, its best checkpoint can be any of them, and stage k+1 starts at that epoch."""
    states = {(0, 0)}  # (start epoch, epochs run so far)
    for n in cumulative:
        states = {(best, run + n - start) for start, run in states for best in range(start + 1, n + 1)} | \
                 {(start, run) for start, run in states if start >= n}
    return {run for _, run in states}


def test_training_budget_min_and_max_follow_the_stage_table():
    """70 epochs when every stage's best epoch is its last, 154 when it is its first (10 + 29 + 48 + 67); the
    README and bench/gpu.py's projection say so."""
    totals = _epoch_totals([10, 30, 50, 70])  # train.sh's cumulative --n-epochs (spec 2.1)
    assert (min(totals), max(totals)) == (70, 154)
    assert _epoch_totals([s[5] for s in train.STAGES]) == totals
    from bench.gpu import TRAINING

    assert TRAINING["tdsnet"][:2] == ((70, 154), 1639)  # fold 0: 11 sequences x 149 frames
    text = " ".join((REPO_ROOT / "robotic_scene" / "README.md").read_text().split())
    for claim in ("10 + 29 + 48 + 67 = 154", f"{70 * 1639:,} to {154 * 1639:,} steps", "70 to 154 epochs"):
        assert claim in text, claim
    assert "at most 70 epochs" not in text and "70 epochs in all," not in text


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


def test_decode_cache_trains_stage_one_as_the_files_do(trained, tmp_path):
    """train.py --decode-cache DIR: the frames decoded once, normalised in the training and validation steps:
    stage 1 trains as the fixture's stage 1 from the files (same seed and batches)."""
    from common.report import read_history

    run = tmp_path / "cached"
    train.main(["--work-dir", str(trained["work"]), "--run-dir", str(run), "--last-stage", "1",
                "--decode-cache", str(tmp_path / "cache")] + TRAIN_ARGS)
    assert len(list((tmp_path / "cache").glob("*/part0.npy"))) == 2  # training and validation frames
    cached = read_history(run / "stage1_segmentation" / "history.csv")
    files = read_history(trained["run"] / "stage1_segmentation" / "history.csv")
    for key in ("loss", "val_loss", "val_iou"):
        np.testing.assert_allclose(cached[key], files[key], rtol=1e-5, atol=1e-6)


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
    assert {"HD95 px", "ASSD px", "frames in one mask only"} <= set(result["per_class"][0])
    assert json.loads((out / "run.json").read_text())["weights"][0]["sha256"]


# ------------------------------------------------------------------------------ trust: errors, runs, defaults


def _prepare_args(tmp_path, *extra):
    return ["--raw-dir", str(tmp_path / "raw"), "--work-dir", str(tmp_path / "work"), "--height", str(SHAPE[0]),
            "--width", str(SHAPE[1]), "--quiet", *extra]


def test_prepare_reports_every_unknown_colour_at_once_and_writes_nothing(tmp_path, capsys):
    _raw(tmp_path, frames=3)
    for seq, frame, colour, n in ((3, 1, (128, 155, 25), 3), (6, 2, (128, 155, 25), 2), (6, 0, (9, 9, 9), 1)):
        path = tmp_path / "raw" / f"seq_{seq}" / "labels" / f"frame00{frame}.png"
        label = np.asarray(Image.open(path)).copy()
        label[0, :n] = colour
        write_image(path, label)
    line = _error(prepare.main, _prepare_args(tmp_path))
    first = tmp_path / "raw" / "seq_3" / "labels" / "frame001.png"
    assert line == (f"error: {tmp_path / 'raw'}: 3 label files hold 2 colours not in the ROBOT18 table: RGB "
                    f"(128, 155, 25) (5 px in 2 files, first {first.relative_to(tmp_path / 'raw')}, "
                    f"{Path('seq_6/labels/frame002.png')}); RGB (9, 9, 9) (1 px in 1 file, first "
                    f"{Path('seq_6/labels/frame000.png')}); fix the labels, or pass --unknown-colours background "
                    f"to map them to background (the original)")
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())  # nothing half-written
    with pytest.warns(UserWarning, match=r"3 label files hold 2 colours .*mapped to background"):
        summary = prepare.main(_prepare_args(tmp_path, "--unknown-colours", "background"))
    assert summary["frames"] == 12 and summary["unknown_colour_pixels"] == 6
    mask = np.asarray(Image.open(tmp_path / "work" / "cropted_train" / "seq_3" / "instruments_masks" / "frame001.png"))
    assert (mask[0, :3] == 0).all()


def test_prepare_orphans_all_or_nothing_and_overwrite(tmp_path, capsys):
    _raw(tmp_path)
    raw, out = tmp_path / "raw", tmp_path / "work" / "cropted_train"
    extra = raw / "seq_5" / "labels" / "frame009.png"  # a label without its frame
    write_image(extra, prepare.index_to_colour(np.zeros(SHAPE, np.uint8)))
    assert _error(prepare.main, _prepare_args(tmp_path)) == (
        f"error: {extra}: label without its frame {raw / 'seq_5' / 'left_frames' / 'frame009.png'}; every "
        f"seq_<N>/left_frames/<name>.png needs seq_<N>/labels/<name>.png and the reverse")
    extra.unlink()
    (raw / "seq_6" / "left_frames" / "frame001.png").write_bytes(b"\x89PNG broken")  # the LAST frame is corrupt
    line = _error(prepare.main, _prepare_args(tmp_path))
    assert line.startswith(f"error: {raw / 'seq_6' / 'left_frames' / 'frame001.png'}: ")
    assert not out.exists() and not [p for p in (tmp_path / "work").iterdir()]  # no earlier frame was left
    write_image(raw / "seq_6" / "left_frames" / "frame001.png", np.zeros((*SHAPE, 3), np.uint8))
    prepare.main(_prepare_args(tmp_path))
    before = (out / "prepare.json").stat().st_mtime_ns
    assert _error(prepare.main, _prepare_args(tmp_path)) == (
        f"error: {out}: already exists (a previous prepare.py run); pass --overwrite to replace it, or another "
        f"--work-dir")
    assert (out / "prepare.json").stat().st_mtime_ns == before
    prepare.main(_prepare_args(tmp_path, "--overwrite"))
    assert (out / "prepare.json").stat().st_mtime_ns != before
    assert _error(prepare.main, _prepare_args(tmp_path, "--height", "0")) == \
        "error: --height/--width: must be positive, got 0x64"


def test_normalisation_follows_the_loaded_weights_for_every_spelling(tmp_path, monkeypatch, capsys):
    from common.layers import VGG16_NOTOP_FILE

    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    (home / "models" / VGG16_NOTOP_FILE).write_bytes(b"stand-in")
    monkeypatch.setenv("KERAS_HOME", str(home))
    # the only VGG16 files are Keras's ImageNet weights converted from Caffe: BGR 0..255 minus the means
    assert train.resolve_normalise("auto", "imagenet") == "caffe"
    assert train.resolve_normalise("auto", str(home / "models" / VGG16_NOTOP_FILE)) == "caffe"  # the README's way
    assert train.resolve_normalise("auto", home / "models" / VGG16_NOTOP_FILE) == "caffe"
    assert train.resolve_normalise("auto", "none") == "torch" and train.resolve_normalise("auto", None) == "torch"
    assert train.resolve_normalise("torch", "imagenet") == "torch"  # an explicit choice wins
    with pytest.raises(cli.UserError, match=r"--encoder-weights .*missing\.h5: VGG16 notop weights file not found"):
        train.resolve_normalise("auto", str(tmp_path / "missing.h5"))


def test_default_run_names_change_with_every_recipe_option():
    base = train.run_name()
    assert base == "tdsnet_fold0" and train.DEFAULT_RUN.name == base
    variants = [dict(val_seqs=[1, 3, 6]), dict(epochs=[8, 9, 10, 11]), dict(lrs=[1e-4, 1e-4, 1e-4, 1e-4]),
                dict(batch_size=2), dict(encoder_weights="none"), dict(encoder_weights="/x/my_vgg.h5"),
                dict(normalise="caffe"), dict(init="he"), dict(seed=1)]
    names = [train.run_name(**v) for v in variants]
    assert len(set(names + [base])) == len(names) + 1, names
    assert train.run_name(epochs=[10, 30, 50, 70], lrs=[1e-4, 1e-4, 5e-5, 5e-5]) == base


def test_script_defaults_are_the_originals():
    """Argparse defaults against the original's values (spec sections 2-4), written here, not read from the code."""
    args = train.build_parser().parse_args([])
    stages = train.parse_stages(args.epochs, args.lrs, args.last_stage)
    # train.sh: (alpha, beta, gamma, Adam lr, cumulative epochs) of the four runs
    assert [s[1:] for s in stages] == [(0.0, 0.0, 0.0, 1e-4, 10), (0.2, 0.0, 0.0, 1e-4, 30),
                                       (0.2, 0.6, 0.0, 5e-5, 50), (0.2, 0.6, 0.2, 5e-5, 70)]
    assert (args.batch_size, args.val_seqs, args.encoder_weights, args.normalise, args.init) == \
        (1, None, "imagenet", "auto", "torch")
    assert train.VAL_SEQS == (1, 2, 3, 4)  # --val-seqs None: fold 0 (or an own-data split.json's validation)
    assert (args.resume, args.overwrite, args.mixed_precision, args.jit_compile) == (False, False, "off", False)
    trainer = train.build_trainer((32, 64, 3))
    opt = trainer.optimizer
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.9, 0.999, 1e-8) and opt.weight_decay is None
    assert trainer.jaccard_weight == 0.5
    assert train.TORCH_MEAN == (0.485, 0.456, 0.406) and train.TORCH_STD == (0.229, 0.224, 0.225)
    args = prepare.build_parser().parse_args([])
    assert (args.height, args.width, args.unknown_colours) == (None, None, "error")
    assert (prepare.HEIGHT, prepare.WIDTH) == (1024, 1280)  # --height/--width None: these for ROBOT18
    args = rtest.build_parser().parse_args([])
    assert (args.seqs, args.tta_sizes, args.tta, args.min_size) == (None, [], "none", 0)
    args = predict.build_parser().parse_args(["x", "--out-dir", "o"])
    assert (args.tta, args.min_size, args.weights) == ("none", 0, "best")


def test_a_staged_run_is_never_replaced_without_overwrite(trained, capsys):
    run = trained["run"]
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    line = _error(train.main, ["--work-dir", str(trained["work"]), "--run-dir", str(run)] + TRAIN_ARGS)
    assert line.startswith(f"error: {run}: holds a staged TDSNet run (stage1_segmentation 1 epochs (best val_iou ")
    assert line.endswith("); pass --resume to continue it, --overwrite to replace it, or another --run-dir")
    assert _error(train.main, ["--work-dir", str(trained["work"]), "--run-dir", str(run), "--resume",
                                       "--overwrite"]).startswith("error: --resume/--overwrite: choose one")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_train_test_predict_report_bad_options_and_files_in_one_line(trained, tmp_path, capsys):
    work = ["--work-dir", str(trained["work"])]
    assert _error(train.main, work + ["--epochs", "3", "2", "4", "5", "--run-dir", str(tmp_path / "r")]) == \
        "error: --epochs: cumulative epochs must not decrease from stage to stage, got [3, 2, 4, 5]"
    assert _error(train.main, work + ["--batch-size", "0"]) == "error: --batch-size: must be positive, got 0"
    line = _error(train.main, work + ["--encoder-weights", str(tmp_path / "no.h5"), "--run-dir",
                                              str(tmp_path / "r")])
    assert line.startswith(f"error: --encoder-weights {tmp_path / 'no.h5'}: ")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    line = _error(train.main, work + TRAIN_ARGS[:-4] + ["--encoder-weights", str(tmp_path / "junk.h5"),
                                                                "--run-dir", str(tmp_path / "r"), "--verbose", "0"])
    assert line.startswith(f"error: --encoder-weights {tmp_path / 'junk.h5'}: not a VGG16 notop weights file")
    assert not (tmp_path / "r").exists()
    assert _error(rtest.main, work + ["--min-size", "-1"]) == "error: --min-size: must be >= 0, got -1"
    assert _error(rtest.main, work + ["--checkpoint", str(tmp_path / "none.keras"), "--normalise",
                                              "torch"]) == (
        f"error: {tmp_path / 'none.keras'}: checkpoint not found; run robotic_scene/train.py first")
    (tmp_path / "empty").mkdir()
    assert _error(predict.main, [str(tmp_path / "empty"), "--run-dir", str(trained["run"]), "--out-dir",
                                         str(tmp_path / "p")]).startswith(f"error: {tmp_path / 'empty'}: no input files")
    assert _error(predict.main, [str(tmp_path / "empty"), "--out-dir", str(tmp_path / "p"),
                                         "--min-size", "-2"]) == "error: --min-size: must be >= 0, got -2"


def test_predict_writes_palette_labels_at_the_frame_size(trained, tmp_path, capsys):
    run, raw = trained["run"], trained["tmp"] / "raw"
    frames = raw / "seq_1" / "left_frames"
    out = tmp_path / "pred"
    assert predict.main([str(frames), "--run-dir", str(run), "--out-dir", str(out), "--overlay",
                         "--save-probabilities", "--quiet"]) == 0
    network = train.load_trainer(json.loads((run / "stages.json").read_text())["final_checkpoint"]).network
    palette = {(0, 0, 0), (0, 255, 0), (0, 255, 255), (125, 255, 12), (255, 55, 0), (24, 55, 125), (187, 155, 25),
               (0, 255, 125), (255, 255, 125), (123, 15, 175), (124, 155, 5), (12, 255, 141)}  # spec 3.1
    for frame in sorted(frames.iterdir()):
        with Image.open(out / frame.name) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == SHAPE[::-1]
            got = np.asarray(img)
        assert {tuple(c) for c in got.reshape(-1, 3)} <= palette
        image = np.asarray(Image.open(frame).convert("RGB"), np.float32)
        x = (image / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]  # the run trained with torch's
        pred = np.asarray(network(x[None].astype(np.float32), training=False)[0])[0].argmax(-1)
        np.testing.assert_array_equal(prepare.colour_to_index(got), pred)
        assert np.asarray(Image.open(out / f"{frame.stem}_overlay.png")).shape == (SHAPE[0], 2 * SHAPE[1], 3)
        prob = np.load(out / f"{frame.stem}_prob.npy")
        assert prob.shape == (*SHAPE, 12) and np.allclose(prob.astype(np.float32).sum(-1), 1, atol=1e-2)
    record = json.loads((out / "run.json").read_text())
    assert record["model"] == "tdsnet" and record["normalise"] == "torch" and len(record["inputs"]) == 2

    # another size (40x70: padded to 64x96 and cropped back), a corrupt frame, --skip-bad
    odd = tmp_path / "odd"
    write_image(odd / "a.png", np.random.default_rng(0).integers(0, 255, (40, 70, 3)).astype(np.uint8))
    (odd / "b.png").write_bytes(b"\x89PNG truncated")
    line = _error(predict.main, [str(odd), "--run-dir", str(run), "--out-dir", str(tmp_path / "p2"),
                                         "--quiet"])
    assert line.startswith(f"error: {odd / 'b.png'}: ") and not (tmp_path / "p2" / "b.png").exists()
    assert predict.main([str(odd), "--run-dir", str(run), "--out-dir", str(tmp_path / "p3"), "--skip-bad",
                         "--quiet"]) == 1
    assert np.asarray(Image.open(tmp_path / "p3" / "a.png")).shape == (40, 70, 3)
    assert not (tmp_path / "p3" / "b.png").exists()


def test_predict_turns_a_tagged_frame_as_prepare_and_cv2_imread_do(trained, tmp_path):
    """predict.py reads a frame as prepare.py (the original's cv2.imread): an EXIF orientation tag is applied,
    so the label PNG is in the orientation a viewer (and cv2.imread) shows, at that size."""
    import cv2

    frame = np.random.default_rng(2).integers(0, 255, (*SHAPE, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 64 rows x 32 columns
    (tmp_path / "in").mkdir()
    Image.fromarray(frame).save(tmp_path / "in" / "f.png", exif=exif)
    shown = cv2.imread(str(tmp_path / "in" / "f.png"), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(shown, np.rot90(frame, -1))
    out = tmp_path / "out"
    assert predict.main([str(tmp_path / "in"), "--run-dir", str(trained["run"]), "--out-dir", str(out),
                         "--quiet"]) == 0
    got = np.asarray(Image.open(out / "f.png"))
    assert got.shape == (SHAPE[1], SHAPE[0], 3)
    # the same labels as for the frame stored the way it is shown, without a tag
    (tmp_path / "plain").mkdir()
    Image.fromarray(np.ascontiguousarray(shown)).save(tmp_path / "plain" / "f.png")
    assert predict.main([str(tmp_path / "plain"), "--run-dir", str(trained["run"]), "--out-dir",
                         str(tmp_path / "out2"), "--quiet"]) == 0
    np.testing.assert_array_equal(got, np.asarray(Image.open(tmp_path / "out2" / "f.png")))


def test_flip_tta_bookkeeping_on_a_network_that_is_not_flip_invariant():
    import keras

    from common.predict import segmenter_from_model

    keras.utils.set_random_seed(3)
    network = train.build_trainer((*SHAPE, 3)).network
    image = np.random.default_rng(1).integers(0, 255, (*SHAPE, 3)).astype(np.uint8)
    x = np.asarray(train.normalise_images(image[None], "torch"), np.float32)

    def softmax(a):
        return np.exp(np.asarray(network(a, training=False)[0]))

    p0, p_lr, p_ud = softmax(x), softmax(x[:, :, ::-1].copy()), softmax(x[:, ::-1].copy())
    assert not np.allclose(p0, p_lr[:, :, ::-1], atol=1e-4)
    expected = ((p0 + p_lr[:, :, ::-1] + p_ud[:, ::-1]) / 3)[0]
    seg = segmenter_from_model(network, "robotic_scene", normalise_mode="torch", tta="flip")
    np.testing.assert_allclose(seg.probabilities(image), expected, atol=1e-5)
    np.testing.assert_allclose(rtest.Predictor(network, "torch", tta="flip")(image), expected, atol=1e-5)
    np.testing.assert_allclose(rtest.Predictor(network, "torch")(image), p0[0], atol=1e-5)


def test_surface_distance_columns_per_class():
    from scipy.ndimage import binary_erosion
    from scipy.spatial.distance import cdist

    truth = np.zeros((2, 10, 12), np.uint8)
    pred = np.zeros_like(truth)
    truth[0, 2:7, 3:9], pred[0, 3:8, 3:10] = 1, 1  # class 1 in both
    truth[0, 8:, :3] = 4  # class 4 only in the truth of frame 0
    truth[1, 1:5, 1:5], pred[1, 1:6, 2:5] = 2, 2
    hd95, assd = rtest.surface_table(truth, pred)

    def brute(t, p):
        st, sp = np.argwhere(t & ~binary_erosion(t)), np.argwhere(p & ~binary_erosion(p))
        d = cdist(sp, st)
        return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95)), np.concatenate([d.min(1), d.min(0)]).mean()

    assert (hd95[0, 1], assd[0, 1]) == pytest.approx(brute(truth[0] == 1, pred[0] == 1))
    assert (hd95[1, 2], assd[1, 2]) == pytest.approx(brute(truth[1] == 2, pred[1] == 2))
    assert np.isinf(hd95[0, 4]) and np.isnan(hd95[0, 3]) and np.isnan(hd95[1, 1])
    scores = multiclass_image_scores(truth, pred, 12)
    rows = rtest.per_class_rows(scores, np.array([1, 1]), (hd95, assd))
    assert rows[1]["HD95 px"] == pytest.approx(hd95[0, 1]) and rows[4]["frames in one mask only"] == 1
    assert np.isnan(rows[4]["HD95 px"]) and list(rows[1])[:7] == ["index", "class", "IoU", "Dice", "frames with class",
                                                                 "paper column", "paper IoU (on-site test)"]
