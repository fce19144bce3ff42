"""The ultrasound nerve task (specs/ultrasound_nerve.md): data, preprocessing, training, submission, predict."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.cli import REPO_ROOT
from common.data.io import DataLayoutError, ImageReadError, write_image
from common.errors import UserError
from common.data.synthetic import write_nerve_dataset
from common.models import build_model
from common.rle import rle_decode, rle_encode
from ultrasound_nerve import data, predict, submission, train
from _cli import error_line as _error_line


def test_unet_matches_the_original():
    model = build_model("nerve_unet", (96, 96, 1))
    assert model.count_params() == 7_759_521
    assert len(model.layers) == 32
    counts = Counter(type(layer).__name__ for layer in model.layers)
    assert counts == {"Conv2D": 19, "Conv2DTranspose": 4, "MaxPooling2D": 4, "Concatenate": 4, "InputLayer": 1}
    assert model.get_layer("bottleneck_conv2").count_params() == 2_359_808
    assert model.get_layer("head_conv").count_params() == 33


def _original_preprocess(imgs, size):
    """The original's preprocess, with scikit-image itself: ``resize(img, (size, size), preserve_range=True)``
    with the 2017 defaults (order 1, mode 'constant', no anti-aliasing: skimage 0.13 had none), stored into a
    uint8 array (truncation)."""
    transform = pytest.importorskip("skimage.transform")
    out = np.ndarray((len(imgs), size, size), dtype=np.uint8)
    for i in range(len(imgs)):
        out[i] = transform.resize(imgs[i], (size, size), order=1, mode="constant", cval=0, clip=True,
                                  preserve_range=True, anti_aliasing=False)
    return out[..., np.newaxis]


def test_preprocess_equals_the_originals_scikit_image_resize():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 420, 580)).astype(np.uint8)  # noise: every truncation is exercised
    ramp = np.tile(np.linspace(0, 255, 580, dtype=np.float32), (420, 1)).astype(np.uint8)
    blob = np.zeros((420, 580), np.uint8)
    blob[100:251, 203:399] = 255  # a mask: fractional values appear only on its edges
    frames = np.concatenate([frames, ramp[None], blob[None]])
    for size in (96, 64, 32):
        out = train.preprocess(frames, size)
        assert out.shape == (len(frames), size, size, 1) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, _original_preprocess(frames, size))
    odd = rng.integers(0, 256, (1, 333, 517)).astype(np.uint8)  # predict.py takes frames of any size
    np.testing.assert_array_equal(train.preprocess(odd, 96), _original_preprocess(odd, 96))


def test_submission_resize_differs_from_scikit_image_only_at_the_border():
    """README deviation 5: the upscale to 420x580 (OpenCV, edge pixels replicated) and scikit-image's
    (mode 'constant', blended with 0 at the border) give the same binary mask away from the image border."""
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(1)
    prob = rng.random((96, 96)).astype(np.float32)
    ours = submission.prep(prob)
    ref = transform.resize((prob > 0.5).astype(np.float64), (420, 580), order=1, mode="constant", cval=0,
                           preserve_range=True, anti_aliasing=False) > 0.5
    differ = ours.astype(bool) != ref
    assert differ[4:-4, 4:-4].sum() == 0 and differ.sum() > 0  # only in the outer 4 rows / columns


def test_submission_fixes_and_legacy_reproduces_the_bugs():
    pred = np.zeros((96, 96, 1), np.float32)
    pred[30:60, 40:70] = 0.9  # a blob away from row 0
    mask = submission.prep(pred[:, :, 0])
    assert mask.shape == (420, 580)
    rows, cols = np.nonzero(mask)
    assert 130 <= rows.min() and rows.max() <= 265 and 240 <= cols.min() and cols.max() <= 425
    assert submission.encode_predictions(pred[None], verbose=False)[0] == rle_encode(mask)
    # the original read masks[i, 0] (the first row) of channels-last predictions: the blob vanishes
    assert submission.encode_predictions(pred[None], legacy=True, verbose=False) == [""]


def _make_raw(tmp_path, **kw):
    kw = {"n_subjects": 2, "images_per_subject": 3, "n_test": 3, "seed": 0, **kw}
    write_nerve_dataset(tmp_path / "raw", **kw)
    return tmp_path / "raw"


def test_end_to_end_data_train_submission(tmp_path):
    raw = _make_raw(tmp_path)
    work = tmp_path / "work"
    data.main(["--raw-dir", str(raw), "--work-dir", str(work), "--quiet"])
    imgs, masks = data.load_train_data(work)
    assert imgs.shape == masks.shape == (6, 420, 580) and imgs.dtype == masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 255}
    test_imgs, ids = data.load_test_data(work)
    assert test_imgs.shape == (3, 420, 580) and ids.dtype == np.int32 and list(ids) == [1, 2, 3]

    train.main(["--work-dir", str(work), "--run-dir", str(tmp_path / "run"), "--epochs", "1",
                "--batch-size", "2", "--img-size", "32", "--seed", "0", "--verbose", "0"])
    assert (tmp_path / "run" / "best.keras").is_file() and (tmp_path / "run" / "history.csv").is_file()
    pred = np.load(work / "imgs_mask_test.npy")
    assert pred.shape == (3, 32, 32, 1) and pred.dtype == np.float32
    assert len(list((work / "preds").glob("*_pred.png"))) == 3

    # low threshold so the untrained network's masks are not empty, rule off: pure encoding check
    out = submission.main(["--work-dir", str(work), "--threshold", "0.3", "--min-pixels", "0", "--quiet"])
    lines = out.read_text().splitlines()
    assert lines[0] == "img,pixels" and [int(line.split(",")[0]) for line in lines[1:]] == [1, 2, 3]
    rles = submission.read_submission(out)
    transform = pytest.importorskip("skimage.transform")
    for i, image_id in enumerate(ids):  # reference: the original's scikit-image resize of the binary mask
        expected = transform.resize((pred[i, :, :, 0] > 0.3).astype(np.float64), (420, 580), order=1,
                                    mode="constant", preserve_range=True, anti_aliasing=False) > 0.5
        decoded = rle_decode(rles[int(image_id)], (420, 580))
        assert decoded.shape == (420, 580) and set(np.unique(decoded)) <= {0, 1}
        np.testing.assert_array_equal(decoded[4:-4, 4:-4], expected[4:-4, 4:-4])  # deviation 5: the border
    stats = json.loads((tmp_path / "run" / "norm_stats.json").read_text())
    x = train.preprocess(imgs, 32).astype(np.float32)
    assert stats == {"mean": pytest.approx(float(x.mean())), "std": pytest.approx(float(x.std())), "img_size": 32}

    # predict.py on the raw test frames gives the masks the submission encodes (same path, same threshold)
    masks_dir = tmp_path / "masks"
    assert predict.main([str(raw / "test"), "--run-dir", str(tmp_path / "run"), "--out-dir", str(masks_dir),
                         "--threshold", "0.3", "--min-pixels", "0", "--quiet"]) == 0
    for image_id in ids:
        mask = Image.open(masks_dir / f"{image_id}_mask.tif")
        assert mask.format == "TIFF" and mask.mode == "L" and mask.size == (580, 420)
        decided = np.abs(pred[list(ids).index(image_id), :, :, 0] - 0.3).min() > 1e-4  # no pixel at the threshold
        if decided:
            np.testing.assert_array_equal(np.asarray(mask) > 0, rle_decode(rles[int(image_id)], (420, 580)) > 0)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}

    # nothing is replaced without --overwrite: the arrays, the run, the test predictions, the CSV
    before = {p: p.stat().st_mtime_ns for p in list(work.iterdir()) + list((tmp_path / "run").iterdir())}
    assert "prepared arrays are already there; pass --overwrite" in _error_line(data.main, [
        "--raw-dir", str(raw), "--work-dir", str(work), "--quiet"])
    assert "holds a run of 1 epochs (best val_loss" in _error_line(train.main, [
        "--work-dir", str(work), "--run-dir", str(tmp_path / "run")])
    assert "test predictions of an earlier run are there; pass --overwrite" in _error_line(train.main, [
        "--work-dir", str(work), "--run-dir", str(tmp_path / "run2")])
    assert _error_line(submission.main, ["--work-dir", str(work)]) == (
        f"error: {out}: already exists; pass --overwrite to replace it, or another --output")
    after = {p: p.stat().st_mtime_ns for p in list(work.iterdir()) + list((tmp_path / "run").iterdir())}
    assert after == before and not (tmp_path / "run2").exists()


def test_missing_mask_names_the_file(tmp_path):
    raw = _make_raw(tmp_path)
    (raw / "train" / "2_3_mask.tif").unlink()
    with pytest.raises(DataLayoutError, match=r"2_3\.tif: mask 2_3_mask\.tif is missing"):
        data.main(["--raw-dir", str(raw), "--work-dir", str(tmp_path / "work"), "--quiet"])
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())


@pytest.mark.parametrize("bad", ["train/1_2.tif", "test/3.tif"])
def test_corrupt_tiff_names_the_file_and_leaves_no_output(tmp_path, bad):
    raw = _make_raw(tmp_path)
    path = raw / bad
    path.write_bytes(path.read_bytes()[:1000])
    work = tmp_path / "work"
    with pytest.raises(ImageReadError, match=rf"{Path(bad).name}: cannot decode"):
        data.main(["--raw-dir", str(raw), "--work-dir", str(work), "--quiet"])
    # a corrupt TEST frame (read last) leaves no training arrays behind either: all or nothing
    assert not work.exists() or not list(work.iterdir())


def test_sixteen_bit_frames_are_scaled_like_opencvs_reader(tmp_path):
    import cv2

    raw = _make_raw(tmp_path)
    rng = np.random.default_rng(5)
    frame16 = rng.integers(0, 65536, (420, 580)).astype(np.uint16)
    frame16[0, :4] = [0, 127, 128, 65535]  # rounding edges of v / 256
    path = raw / "train" / "1_1.tif"
    Image.fromarray(frame16).save(path)  # a real 16-bit greyscale TIFF (mode I;16)
    assert Image.open(path).mode.startswith("I;16")
    work = tmp_path / "work"
    data.main(["--raw-dir", str(raw), "--work-dir", str(work), "--quiet"])
    imgs, _ = data.load_train_data(work)
    reference = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # an independent reader, as an OpenCV pipeline sees it
    assert reference.dtype == np.uint8 and reference.shape == (420, 580)
    np.testing.assert_array_equal(imgs[0], reference)
    assert 100 < imgs[0].mean() < 155  # not clipped to a white frame


def test_wrong_size_names_the_file(tmp_path):
    raw = _make_raw(tmp_path)
    from common.data.io import write_image
    write_image(raw / "test" / "2.tif", np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageReadError, match=r"2\.tif: expected 420x580"):
        data.create_test_data(raw, tmp_path / "work", verbose=False)


def test_script_reports_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "ultrasound_nerve" / "data.py"),
                             "--raw-dir", str(tmp_path / "nothing"), "--work-dir", str(tmp_path / "w")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nothing' / 'train'}: folder not found"


@pytest.mark.parametrize("script", ["data.py", "train.py", "submission.py", "predict.py", "demo.py", "evaluate.py"])
def test_help_works_from_any_directory(tmp_path, script):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "ultrasound_nerve" / script), "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "usage:" in result.stdout


def test_each_script_reports_bad_options_and_bad_files_in_one_line(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    # data.py: a missing folder (option), a corrupt frame (file; tested above), existing arrays
    assert _error_line(data.main, ["--raw-dir", str(tmp_path / "no"), "--work-dir", str(work)]) == (
        f"error: {tmp_path / 'no' / 'train'}: folder not found")
    # train.py: bad options, then mismatched arrays
    assert _error_line(train.main, ["--img-size", "50"]) == (
        "error: --img-size: must be a positive multiple of 16 (four 2x2 poolings), got 50")
    assert _error_line(train.main, ["--val-split", "1.5"]) == (
        "error: --val-split: must be between 0 and 1 (exclusive), got 1.5")
    np.save(work / "imgs_train.npy", np.zeros((4, 420, 580), np.uint8))
    np.save(work / "imgs_mask_train.npy", np.zeros((3, 420, 580), np.uint8))
    assert _error_line(train.main, ["--work-dir", str(work), "--run-dir", str(tmp_path / "run"), "--no-predict"]) == (
        f"error: {work}: imgs_train.npy (4, 420, 580) and imgs_mask_train.npy (3, 420, 580) do not match; "
        f"run ultrasound_nerve/data.py --overwrite again")
    # submission.py: a bad option, then a prediction file of the wrong shape
    assert _error_line(submission.main, ["--threshold", "1.5"]) == "error: --threshold: must be in [0, 1), got 1.5"
    np.save(work / "imgs_id_test.npy", np.arange(1, 4, dtype=np.int32))
    np.save(work / "imgs_mask_test.npy", np.zeros((3, 96, 96), np.float32))
    assert _error_line(submission.main, ["--work-dir", str(work)]) == (
        f"error: {work / 'imgs_mask_test.npy'}: expected predictions of shape (M, h, w, 1) for the 3 ids of "
        f"imgs_id_test.npy, got (3, 96, 96); run train.py again")
    np.save(work / "imgs_mask_test.npy", np.zeros((2, 96, 96, 1), np.float32))  # mismatched with the ids
    assert "got (2, 96, 96, 1)" in _error_line(submission.main, ["--work-dir", str(work)])
    not_csv = tmp_path / "s.csv"
    not_csv.write_text("id,rle\n")
    with pytest.raises(UserError, match="not a submission file"):
        submission.read_submission(not_csv)
    # predict.py: a bad option, a model without its normalisation, a corrupt frame
    model_dir = _saved_run(tmp_path / "run_ok")
    frames = tmp_path / "frames"
    write_image(frames / "1.tif", np.full((420, 580), 80, np.uint8))
    assert _error_line(predict.main, [str(frames), "--out-dir", str(tmp_path / "o"), "--min-pixels", "-1"]) == (
        "error: --min-pixels: must be 0 or more, got -1")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.keras").write_bytes((model_dir / "best.keras").read_bytes())
    assert _error_line(predict.main, [str(frames), "--model", str(bare / "model.keras"), "--out-dir",
                                      str(tmp_path / "o")]).startswith(f"error: {bare / 'norm_stats.json'}: not found")
    (frames / "2.tif").write_bytes(b"II*\x00 truncated")
    line = _error_line(predict.main, [str(frames), "--run-dir", str(model_dir), "--out-dir", str(tmp_path / "o"),
                                      "--quiet"])
    assert line.startswith(f"error: {frames / '2.tif'}: cannot decode image")
    assert not (tmp_path / "o" / "2_mask.tif").exists()


# The original's settings, written from specs/ultrasound_nerve.md (sections 2 and 3), NOT read from the code.
ORIGINAL_TRAIN = {"epochs": 20, "batch_size": 32, "lr": 1e-5, "val_split": 0.2, "img_size": 96, "seed": None,
                  "resume": False, "overwrite": False, "mixed_precision": "off", "jit_compile": False,
                  "no_predict": False, "no_png": False, "strategy": "default", "run_dir": None}
ORIGINAL_SUBMISSION = {"threshold": 0.5, "min_pixels": 10, "legacy": False, "min_size": 0, "keep_largest": 0,
                       "overwrite": False}
ORIGINAL_DATA = {"order": "sorted", "overwrite": False}  # "sorted" instead of os.listdir: README deviation 4


def test_script_defaults_are_the_originals():
    def defaults(parser, argv=()):
        return vars(parser.parse_args(list(argv)))

    got = defaults(train.build_parser())
    assert {k: got[k] for k in ORIGINAL_TRAIN} == ORIGINAL_TRAIN
    got = defaults(submission.build_parser())
    assert {k: got[k] for k in ORIGINAL_SUBMISSION} == ORIGINAL_SUBMISSION
    got = defaults(data.build_parser())
    assert {k: got[k] for k in ORIGINAL_DATA} == ORIGINAL_DATA
    got = defaults(predict.build_parser(), ["x.tif", "--out-dir", "o"])
    assert {k: got[k] for k in ("threshold", "min_pixels", "min_size", "keep_largest", "tta", "weights")} == {
        "threshold": 0.5, "min_pixels": 10, "min_size": 0, "keep_largest": 0, "tta": "none", "weights": "best"}
    assert (data.IMAGE_ROWS, data.IMAGE_COLS) == (420, 580)
    # Adam(lr 1e-5) with Keras 2.0's beta 0.9 / 0.999 and epsilon 1e-8; loss -dice_coef
    model = train.compile_model(build_model("nerve_unet", (16, 16, 1)), got_lr := 1e-5)
    opt = model.optimizer
    assert type(opt).__name__ == "Adam" and float(opt.learning_rate) == pytest.approx(got_lr)
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.9, 0.999, 1e-8)
    y = np.zeros((2, 4, 4, 1), np.float32)
    y[0, :2] = 1
    p = np.full((2, 4, 4, 1), 0.25, np.float32)
    dice = (2 * (y * p).sum() + 1) / (y.sum() + p.sum() + 1)  # the spec's batch-level formula, smooth 1
    assert float(model.loss(y, p)) == pytest.approx(-dice, rel=1e-6)


def test_default_run_folders_keep_every_variant_apart(tmp_path, monkeypatch):
    from common import cli

    names = [train.run_name(), train.run_name(lr=1e-4), train.run_name(batch_size=16), train.run_name(val_split=0.1),
             train.run_name(img_size=64), train.run_name(mixed_precision="float16")]
    assert names[0] == "nerve_unet" and len(set(names)) == len(names)
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    raw = _make_raw(tmp_path)
    work = tmp_path / "work"
    data.main(["--raw-dir", str(raw), "--work-dir", str(work), "--quiet"])
    options = ["--work-dir", str(work), "--epochs", "1", "--batch-size", "2", "--img-size", "16", "--seed", "0",
               "--verbose", "0", "--no-predict"]
    train.main(options)
    train.main(options + ["--lr", "1e-4"])
    for name, lr in (("nerve_unet_batch2_size16", 1e-5), ("nerve_unet_lr0.0001_batch2_size16", 1e-4)):
        run = tmp_path / "weights" / "ultrasound_nerve" / name
        assert json.loads((run / "state.json").read_text())["settings"]["lr"] == lr
        assert (run / "best.keras").is_file() and (run / "norm_stats.json").is_file()


def _saved_run(run_dir, size=16, seed=2):
    """A run folder with an untrained nerve_unet (best.keras) and its norm_stats.json."""
    import keras

    keras.utils.set_random_seed(seed)
    run_dir.mkdir(parents=True)
    build_model("nerve_unet", (size, size, 1)).save(run_dir / "best.keras")
    (run_dir / "norm_stats.json").write_text(json.dumps({"mean": 100.0, "std": 40.0, "img_size": size}))
    return run_dir


def test_predict_writes_kaggle_masks_at_each_frames_size(tmp_path):
    import cv2
    import keras

    run = _saved_run(tmp_path / "run")
    model = keras.models.load_model(run / "best.keras", compile=False)
    rng = np.random.default_rng(0)
    frames = tmp_path / "frames"
    sizes = {"1.tif": (420, 580), "7_3.tif": (420, 580), "small.png": (50, 70)}
    for name, shape in sizes.items():
        write_image(frames / name, rng.integers(0, 256, shape).astype(np.uint8))
    out = tmp_path / "masks"
    assert predict.main([str(frames), "--run-dir", str(run), "--out-dir", str(out), "--overlay",
                         "--save-probabilities", "--min-pixels", "0", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{Path(n).stem}_{k}" for n in sizes for k in ("mask.tif", "prob.png", "overlay.png")] + ["run.json"])
    for name, (h, w) in sizes.items():
        stem = Path(name).stem
        mask = Image.open(out / f"{stem}_mask.tif")
        assert mask.format == "TIFF" and mask.mode == "L" and mask.size == (w, h)
        frame = np.asarray(Image.open(frames / name))
        # reference: scikit-image's resize (the original), the training normalisation, the network, threshold,
        # bilinear back to the frame's size and >= 0.5 again (the fixed submission's prep)
        x = (_original_preprocess(frame[None], 16).astype(np.float32) - 100.0) / 40.0
        prob = np.asarray(model(x))[0, :, :, 0]
        ref = cv2.resize((prob > 0.5).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
        if np.abs(prob - 0.5).min() > 1e-4:
            np.testing.assert_array_equal(np.asarray(mask) > 0, ref)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert np.asarray(Image.open(out / f"{stem}_prob.png")).shape == (16, 16)
        assert np.asarray(Image.open(out / f"{stem}_overlay.png")).shape == (h, 2 * w, 3)
    record = json.loads((out / "run.json").read_text())
    assert record["norm_stats"] == {"mean": 100.0, "std": 40.0, "img_size": 16} and len(record["inputs"]) == 3


class _FixedModel:
    """A stand-in network whose prediction is a given probability map (to test the post-processing)."""

    def __init__(self, prob):
        self.prob = prob

    def predict(self, x, batch_size=32, verbose=0):
        return np.repeat(self.prob[None, :, :, None], len(x), axis=0)

    __call__ = predict


def _segment(network, frame, stats, **options):
    """``(mask, prob)`` of predict.py's path (``ultrasound_nerve.task.segment``)."""
    from ultrasound_nerve.task import segment

    result = segment(frame, network, **stats, **options)
    return result["mask"], result["prob"]


def test_predict_keep_largest_and_min_pixels():
    prob = np.zeros((16, 16), np.float32)
    prob[2:8, 2:8] = 0.9  # the large blob: 36 pixels at 16x16
    prob[11:13, 11:13] = 0.9  # a small one: 4 pixels
    frame = np.zeros((160, 160), np.uint8)
    stats = {"mean": 0.0, "std": 1.0, "img_size": 16}
    both, _ = _segment(_FixedModel(prob), frame, stats)
    largest, _ = _segment(_FixedModel(prob), frame, stats, keep_largest=1)
    rows, cols = np.nonzero(largest)
    assert both[115:125, 115:125].all() and not largest[100:, 100:].any()  # the small blob is gone ...
    np.testing.assert_array_equal(largest[:100, :100], both[:100, :100])  # ... the large one is untouched
    assert 15 <= rows.min() and rows.max() < 85 and 15 <= cols.min() and cols.max() < 85
    tiny = np.zeros((16, 16), np.float32)
    tiny[5, 5] = 0.9  # about 100 pixels at 160x160: kept with --min-pixels 10, emptied with 1000
    assert _segment(_FixedModel(tiny), frame, stats)[0].any()
    assert not _segment(_FixedModel(tiny), frame, stats, min_pixels=1000)[0].any()


def test_submission_keep_largest_keeps_one_region():
    pred = np.zeros((1, 96, 96, 1), np.float32)
    pred[0, 10:40, 10:40] = 0.9
    pred[0, 70:80, 70:80] = 0.9
    full, largest = (submission.encode_predictions(pred, verbose=False, keep_largest=k)[0] for k in (0, 1))
    decoded_full, decoded = rle_decode(full, (420, 580)), rle_decode(largest, (420, 580))
    assert decoded[300:, 400:].sum() == 0 < decoded_full[300:, 400:].sum()
    np.testing.assert_array_equal(decoded[:250, :300], decoded_full[:250, :300])


def test_predict_refuses_an_empty_folder(tmp_path):
    run = _saved_run(tmp_path / "run")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _error_line(predict.main, [str(empty), "--run-dir", str(run), "--out-dir", str(tmp_path / "o")]) == (
        f"error: {empty}: no input files (.tif, .tiff, .png, .jpg, .jpeg, .bmp) in this folder")


def test_tutorials_keras2_weights_in_predict(tmp_path):
    """--init-weights weights.h5 (the tutorial's Keras-2 checkpoint) with --norm-from data.py's arrays: the
    source network's masks, normalised with the mean/std of the training array as the tutorial computed it."""
    import cv2
    import keras
    from test_legacy_weights import write_keras2_file

    keras.utils.set_random_seed(4)
    source = build_model("nerve_unet", (16, 16, 1))
    legacy = tmp_path / "weights.h5"
    write_keras2_file(legacy, source, full_model=True)
    raw = _make_raw(tmp_path)
    work = tmp_path / "work"
    data.main(["--raw-dir", str(raw), "--work-dir", str(work), "--quiet"])
    out = tmp_path / "masks"
    assert predict.main([str(raw / "test"), "--init-weights", str(legacy), "--norm-from", str(work), "--img-size",
                         "16", "--out-dir", str(out), "--min-pixels", "0", "--quiet"]) == 0
    imgs = np.load(work / "imgs_train.npy")
    x_train = _original_preprocess(imgs, 16).astype(np.float32)
    mean, std = x_train.mean(), x_train.std()
    record = json.loads((out / "run.json").read_text())
    assert record["norm_stats"]["mean"] == pytest.approx(mean, rel=1e-5)
    for path in sorted((raw / "test").glob("*.tif")):
        frame = np.asarray(Image.open(path))
        prob = np.asarray(source((_original_preprocess(frame[None], 16).astype(np.float32) - mean) / std))[0, :, :, 0]
        ref = cv2.resize((prob > 0.5).astype(np.float32), (580, 420), interpolation=cv2.INTER_LINEAR) > 0.5
        if np.abs(prob - 0.5).min() > 1e-4:
            np.testing.assert_array_equal(np.asarray(Image.open(out / f"{path.stem}_mask.tif")) > 0, ref)
    assert _error_line(predict.main, [str(raw / "test"), "--init-weights", str(legacy), "--out-dir",
                                      str(tmp_path / "o")]).startswith("error: --init-weights: needs --norm-from")
    assert _error_line(train.main, ["--init-weights", str(legacy), "--resume"]) == (
        "error: --init-weights: cannot be combined with --resume (the resumed run has its weights)")
