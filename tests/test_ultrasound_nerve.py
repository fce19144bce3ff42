import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from common.cli import REPO_ROOT
from common.data.io import DataLayoutError, ImageReadError
from common.data.synthetic import write_nerve_dataset
from common.models import build_model
from common.rle import rle_decode, rle_encode
from ultrasound_nerve import data, submission, train


def test_unet_matches_the_original():
    model = build_model("nerve_unet", (96, 96, 1))
    assert model.count_params() == 7_759_521
    assert len(model.layers) == 32
    counts = Counter(type(layer).__name__ for layer in model.layers)
    assert counts == {"Conv2D": 19, "Conv2DTranspose": 4, "MaxPooling2D": 4, "Concatenate": 4, "InputLayer": 1}
    assert model.get_layer("bottleneck_conv2").count_params() == 2_359_808
    assert model.get_layer("head_conv").count_params() == 33


def test_preprocess_truncates_like_the_original():
    img = np.tile(np.linspace(0, 255, 580, dtype=np.float32), (420, 1)).astype(np.uint8)[None]
    out = train.preprocess(img, 96)
    assert out.shape == (1, 96, 96, 1) and out.dtype == np.uint8
    import cv2
    ref = cv2.resize(img[0].astype(np.float32), (96, 96), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out[0, :, :, 0], np.floor(ref).astype(np.uint8))


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
    for i, image_id in enumerate(ids):
        expected = submission.prep(pred[i, :, :, 0], 0.3)
        np.testing.assert_array_equal(rle_decode(rles[int(image_id)], (420, 580)), expected)


def test_missing_mask_names_the_file(tmp_path):
    raw = _make_raw(tmp_path)
    (raw / "train" / "2_3_mask.tif").unlink()
    with pytest.raises(DataLayoutError, match=r"2_3\.tif: mask 2_3_mask\.tif is missing"):
        data.main(["--raw-dir", str(raw), "--work-dir", str(tmp_path / "work"), "--quiet"])
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())


def test_corrupt_tiff_names_the_file_and_leaves_no_output(tmp_path):
    raw = _make_raw(tmp_path)
    path = raw / "train" / "1_2.tif"
    path.write_bytes(path.read_bytes()[:1000])
    work = tmp_path / "work"
    with pytest.raises(ImageReadError, match=r"1_2\.tif: cannot decode"):
        data.main(["--raw-dir", str(raw), "--work-dir", str(work), "--quiet"])
    assert not list(work.glob("*.npy")) and not list(work.glob(".*"))


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


@pytest.mark.parametrize("script", ["data.py", "train.py", "submission.py", "demo.py"])
def test_help_works_from_any_directory(tmp_path, script):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "ultrasound_nerve" / script), "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "usage:" in result.stdout
