"""retina_vessel on the 20 real DRIVE training images of ../shared/data/drive (skipped without them).

The images are laid out (as links) as a DRIVE folder whose training/ and test/ both hold the 20 training
images, so prepare_datasets_DRIVE.py runs with its defaults (20 + 20 images of 584x565). References are
independent of the code under test: Pillow's own decoding of the files, the original's my_PreProc steps
re-stated as loops (spec bcdu_net.md §3.2), a brute-force search for every random patch in the image.
"""

import numpy as np
import pytest
from PIL import Image

from retina_vessel import prepare_datasets_DRIVE as prep, save_patch

H, W, N = 584, 565, 20


@pytest.fixture(scope="module")
def prepared(drive_training, tmp_path_factory):
    """prepare_datasets_DRIVE.py's main with its defaults on the real images; returns (work dir, image paths)."""
    root = tmp_path_factory.mktemp("drive_real")
    images = sorted((drive_training / "images").glob("*_training.tif"))
    assert len(images) == N
    for split in ("training", "test"):
        for sub in ("images", "1st_manual", "mask"):
            (root / "DRIVE" / split / sub).mkdir(parents=True)
        for path in images:
            key = path.name[:2]
            (root / "DRIVE" / split / "images" / path.name).symlink_to(path)
            (root / "DRIVE" / split / "1st_manual" / f"{key}_manual1.gif").symlink_to(
                drive_training / "1st_manual" / f"{key}_manual1.gif")
            (root / "DRIVE" / split / "mask" / f"{key}_{split}_mask.gif").symlink_to(
                drive_training / "mask" / f"{key}_training_mask.gif")
    assert prep.main(["--drive-dir", str(root / "DRIVE"), "--work-dir", str(root / "work"), "--quiet"]) == 0
    return root / "work", images


def _pil(path, mode):
    return np.asarray(Image.open(path).convert(mode), np.float64)


def _load(work, kind, split="train"):
    import h5py

    with h5py.File(work / "DRIVE_datasets_training_testing" / f"DRIVE_dataset_{kind}_{split}.hdf5", "r") as f:
        assert list(f.keys()) == ["image"]
        return f["image"][()]


def test_real_drive_gives_the_original_hdf5_files(prepared, drive_training):
    work, images = prepared
    folder = work / "DRIVE_datasets_training_testing"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"DRIVE_dataset_{k}_{s}.hdf5" for k in ("imgs", "groundTruth", "borderMasks") for s in ("train", "test"))
    for split in ("train", "test"):
        imgs, truth, fov = (_load(work, kind, split) for kind in ("imgs", "groundTruth", "borderMasks"))
        assert imgs.shape == (N, 3, H, W) and truth.shape == fov.shape == (N, 1, H, W)
        assert imgs.dtype == truth.dtype == fov.dtype == np.float64
        for i in (0, 7, N - 1):  # channels first, sorted name order, Pillow's decoding of the real files
            key = images[i].name[:2]
            np.testing.assert_array_equal(imgs[i], _pil(images[i], "RGB").transpose(2, 0, 1))
            np.testing.assert_array_equal(truth[i, 0], _pil(drive_training / "1st_manual" / f"{key}_manual1.gif", "L"))
            np.testing.assert_array_equal(fov[i, 0], _pil(drive_training / "mask" / f"{key}_training_mask.gif", "L"))
        assert 0 <= imgs.min() and imgs.max() <= 255 and imgs.max() > 200
        for masks, share in ((truth, (0.08, 0.16)), (fov, (0.6, 0.75))):
            assert set(np.unique(masks)) == {0.0, 255.0}  # exactly {0, 255}, both present
            assert share[0] < (masks > 0).mean() < share[1]  # DRIVE: ~12 % vessels, ~68 % FOV


def _original_my_preproc(imgs):
    """The original's my_PreProc on channels-first (N, 3, H, W) float64, step by step as its loops."""
    import cv2

    gray = imgs[:, 0:1] * 0.299 + imgs[:, 1:2] * 0.587 + imgs[:, 2:3] * 0.114
    normalized = (gray - np.mean(gray)) / np.std(gray)
    for i in range(len(normalized)):
        normalized[i] = (normalized[i] - normalized[i].min()) / (normalized[i].max() - normalized[i].min()) * 255
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    equalized = np.empty_like(normalized)
    for i in range(len(normalized)):
        equalized[i, 0] = clahe.apply(np.array(normalized[i, 0], dtype=np.uint8))
    table = np.array([((i / 255.0) ** (1.0 / 1.2)) * 255 for i in np.arange(0, 256)]).astype("uint8")
    out = np.empty_like(equalized)
    for i in range(len(equalized)):
        out[i, 0] = cv2.LUT(np.array(equalized[i, 0], dtype=np.uint8), table)
    return out / 255.0


def test_my_preproc_on_the_real_images_matches_the_original_steps(prepared):
    from common.data.preprocess import my_preproc

    work, _ = prepared
    imgs = _load(work, "imgs")
    fov = _load(work, "borderMasks")[:, 0] > 0
    ours = my_preproc(imgs.transpose(0, 2, 3, 1))[..., 0]
    original = _original_my_preproc(imgs)[:, 0]
    # equal up to float rounding: common's dataset_normalized skips the z-score (it cancels), which moves 16 of
    # the 6.6 M values across an integer before the uint8 cast (1 level); CLAHE spreads that to ~0.02 % of the
    # pixels, at most 3 levels
    differ = np.abs(ours - original) > 1e-6
    assert differ.mean() < 1e-3 and np.abs(ours - original).max() <= 4 / 255 + 1e-6
    # what the original's output looks like: uint8 levels / 255 in [0, 1], every image stretched to 1.0,
    # the fundus inside the FOV much brighter than the black surround
    np.testing.assert_allclose(ours * 255, np.round(ours * 255), atol=1e-3)
    assert ours.min() >= 0 and ours.max() <= 1
    assert np.all(ours.reshape(N, -1).max(axis=1) == 1.0)
    inside = np.array([ours[i][fov[i]].mean() for i in range(N)])
    outside = np.array([ours[i][~fov[i]].mean() for i in range(N)])
    assert np.all((0.4 < inside) & (inside < 0.8)) and np.all(outside < 0.2)


def _find(image, patch):
    """Top-left corners (y, x) where ``patch`` occurs in ``image`` (2-D), by brute force."""
    ph, pw = patch.shape
    ys, xs = np.nonzero(image[:image.shape[0] - ph + 1, :image.shape[1] - pw + 1] == patch[0, 0])
    for dy, dx in ((ph - 1, pw - 1), (ph // 2, pw // 2), (0, pw - 1), (ph - 1, 0), (ph // 3, 2 * pw // 3)):
        keep = image[ys + dy, xs + dx] == patch[dy, dx]
        ys, xs = ys[keep], xs[keep]
    return [(y, x) for y, x in zip(ys, xs) if np.array_equal(image[y:y + ph, x:x + pw], patch)]


def test_random_patches_of_the_real_images_lie_inside_the_crop(prepared):
    from common.data.preprocess import my_preproc

    work, _ = prepared
    save_patch.main(["--work-dir", str(work), "--n-patches", "400", "--seed", "3", "--quiet"])
    x = np.load(work / save_patch.IMGS_FILE)[..., 0]
    y = np.load(work / save_patch.MASKS_FILE)[..., 0]
    assert x.shape == y.shape == (400, 64, 64) and x.dtype == np.float32 and y.dtype == np.uint8
    images = my_preproc(_load(work, "imgs").transpose(0, 2, 3, 1))[..., 0]
    truth = _load(work, "groundTruth")[:, 0] / 255
    tops = []
    for k in range(400):
        i = k // 20  # 20 patches per image, in image order
        # searched in the whole 584-row image: a patch must lie inside rows 9:574 (the training crop)
        hits = [(r, c) for r, c in _find(images[i], x[k]) if np.array_equal(truth[i, r:r + 64, c:c + 64], y[k])]
        assert hits, f"patch {k} not found in image {i}"
        inside = [(r, c) for r, c in hits if 9 <= r <= 574 - 64 and 0 <= c <= W - 64]
        assert inside, f"patch {k} of image {i} lies outside the 565x565 crop: {hits[:3]}"
        if len(hits) == 1:
            tops.append(inside[0])
    tops = np.array(tops)
    assert len(tops) > 300  # most patches are unique; their corners spread over the whole crop
    assert tops[:, 0].min() < 9 + 60 and tops[:, 0].max() > 574 - 64 - 60
    assert tops[:, 1].min() < 60 and tops[:, 1].max() > W - 64 - 60
    assert 0.05 < y.mean() < 0.2  # the vessel share of patches anywhere in the crop


def _network(kernel, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(8, kernel, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(1, kernel, padding="same", activation="sigmoid")(x))


def test_whole_image_and_overlap_inference_agree_on_a_real_image(prepared):
    from common.data.preprocess import my_preproc
    from common.inference import predict_sliding_window, predict_whole

    work, _ = prepared
    image = my_preproc(_load(work, "imgs", "test")[:1].transpose(0, 2, 3, 1))
    fov = _load(work, "borderMasks", "test")[0, 0] > 0
    for kernel in (1, 3):
        model = _network(kernel)
        full = predict_whole(model, image, multiple=8)  # 584x565 padded to 584x568, one pass
        overlap = predict_sliding_window(model, image, (64, 64), 5, batch_size=512)  # 10,710 windows
        assert full.shape == overlap.shape == (1, H, W, 1)
        full, overlap = full[0, ..., 0], overlap[0, ..., 0]
        if kernel == 1:  # no spatial context: every window sees each pixel alike, so the averages are exact
            np.testing.assert_allclose(overlap, full, atol=1e-6)
        else:  # 3x3: the same map except where a window's zero border enters a pixel's 5x5 receptive field
            assert np.abs(full - overlap)[fov].mean() < 0.01
            assert np.corrcoef(full[fov], overlap[fov])[0, 1] > 0.95


def _bench():
    import importlib.util

    from common.cli import REPO_ROOT

    spec = importlib.util.spec_from_file_location("drive_repro", REPO_ROOT / "bench" / "drive_repro.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_drive_repro_refuses_bad_options_and_never_replaces_a_result_silently(tmp_path, capsys):
    from common import cli

    bench = _bench()
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "results.md").write_text("an earlier result")
    for argv, pattern in (
            (["--paper", "--epochs", "3"], "error: --paper: sets --patches and --epochs itself.*"),
            (["--out-dir", str(previous)], rf"error: {previous}: holds a previous result; pass --overwrite .*"),
            (["--out-dir", str(previous), "--overwrite"], rf"error: {previous}: not a drive_repro.py folder.*"),
            (["--out-dir", str(tmp_path / "new"), "--patches", "100"],
             r"error: --patches: 100 is not a multiple of the 16 training images")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            cli.run(bench.main, argv)
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2 and __import__("re").fullmatch(pattern, line), line
    assert (previous / "results.md").read_text() == "an earlier result"


def test_drive_repro_lays_out_the_fixed_split_as_a_drive_folder(drive_training, tmp_path):
    bench = _bench()
    train, held_out = bench.link_split(drive_training.parent, tmp_path / "DRIVE", set(bench.HELD_OUT))
    assert held_out == ["37", "38", "39", "40"] and train == [str(k) for k in range(21, 37)]
    assert sorted(p.name for p in (tmp_path / "DRIVE" / "test" / "mask").iterdir()) == [
        f"{k}_test_mask.gif" for k in held_out]  # the names the prepare script reads for a test split
    assert (tmp_path / "DRIVE" / "test" / "mask" / "37_test_mask.gif").resolve() == \
        (drive_training / "mask" / "37_training_mask.gif").resolve()
    assert len(list((tmp_path / "DRIVE" / "training" / "images").iterdir())) == 16
