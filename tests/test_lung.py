"""The lung task (specs/bcdu_net.md §3.3, §5): prepare, targets, leak-free evaluation, scripts end to end.

The BCDU-Net layers and all parameter counts are tested in test_bcdu_net.py; here only the Lung folder's
variants as train_lung.py builds them.
"""

import gzip
import json
import subprocess
import sys
from collections import Counter

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import binary_erosion, binary_fill_holes
from sklearn.metrics import f1_score, roc_auc_score

from common.cli import REPO_ROOT
from common.data.io import DataLayoutError, ImageReadError
from common.errors import UserError
from common.data.synthetic import write_lung_dataset
from common.metrics import segmentation_scores
from lung import evaluate_performance, prepare_data, train_lung

SIZE = 32  # tiny slices; the real ones are 512x512


def _raw(tmp_path, n_volumes=3, n_slices=10, **kw):
    return write_lung_dataset(tmp_path / "raw", n_volumes, n_slices, SIZE, n_empty=2, seed=0, **kw)


def _read(path):
    return np.asanyarray(nib.load(path).dataobj)


def _original_targets(vol_ims, seg, erosion, fill):
    """Reza_functions.return_axials with scipy, slice by slice as the original (reference)."""
    lung = np.where(seg == 255, 255, 0).astype(np.float32)
    body = np.stack([binary_erosion(np.where(s > 0, 1, 0), structure=np.ones((erosion, erosion))) for s in vol_ims])
    fov = np.where((body + lung) > 0, 1, 0)
    fov = np.stack([binary_fill_holes(f, structure=np.ones((fill, fill))) for f in fov]).astype(int)
    return lung, fov, np.where((fov - lung) > 0, 1, 0)


def test_prepare_writes_the_original_arrays_as_uint8(tmp_path):
    written = _raw(tmp_path)
    work = tmp_path / "work"
    s = prepare_data.main(["--data-dir", str(tmp_path / "raw"), "--work-dir", str(work), "--slice-size", str(SIZE),
                           "--erosion-size", "3", "--quiet"])
    n = sum(len(v) for v in written["lung_slices"].values())
    assert n == 3 * 6 and (s["n_train"], s["n_test"]) == (12, 6)  # floor(0.7 * 18) = 12
    expected_names = [f"{i}:{z}" for i in written["ids"] for z in written["lung_slices"][i]]
    assert s["train"] + s["test"] == expected_names
    assert json.loads((work / "split.json").read_text())["test"] == s["test"]
    shapes = {"data": np.float32, "mask": np.uint8, "maska": np.uint8, "FOV": np.uint8}
    for train_name, test_name, kind in (("data_train", "data_test", "data"), ("mask_train", "mask_test", "mask"),
                                        ("Train_maska", "Test_maska", "maska"), ("FOV_tr", "FOV_te", "FOV")):
        for name, count in ((train_name, 12), (test_name, 6)):
            array = np.load(work / f"{name}.npy")
            assert array.shape == (count, SIZE, SIZE) and array.dtype == shapes[kind], name
    # the values equal the original's, computed volume by volume with scipy
    refs = {"data": [], "mask": [], "maska": [], "FOV": []}
    for vol_id in written["ids"]:
        vol = _read(tmp_path / "raw" / "3d_images" / f"IMG_{vol_id}.nii.gz")
        seg = _read(tmp_path / "raw" / "3d_images" / f"MASK_{vol_id}.nii.gz").astype(np.int32)
        vol_ims = prepare_data.hu_to_grayscale(vol)
        lung, fov, around = _original_targets(vol_ims, seg, 3, 5)
        keep = [z for z in range(len(seg)) if seg[z].sum() != 0]
        for key, array in (("data", vol_ims), ("mask", lung), ("maska", around), ("FOV", fov)):
            refs[key].append(array[keep])
    for key, (train_name, test_name) in {"data": ("data_train", "data_test"), "mask": ("mask_train", "mask_test"),
                                         "maska": ("Train_maska", "Test_maska"), "FOV": ("FOV_tr", "FOV_te")}.items():
        ours = np.concatenate([np.load(work / f"{train_name}.npy"), np.load(work / f"{test_name}.npy")])
        ref = np.concatenate(refs[key])
        if key == "data":
            np.testing.assert_allclose(ours, ref, rtol=1e-6)  # float64 stored as float32
        else:
            np.testing.assert_array_equal(ours, ref)
    assert np.load(work / "Train_maska.npy").any() and np.load(work / "mask_test.npy").max() == 255


def test_hu_to_grayscale_clips_and_scales_over_the_whole_volume():
    vol = np.array([[[-1000, -512, 0]], [[256, 512, 3000]]], np.int16)
    np.testing.assert_allclose(prepare_data.hu_to_grayscale(vol), [[[0, 0, 127.5]], [[191.25, 255, 255]]])
    # one slice alone is scaled with the whole volume's range
    np.testing.assert_allclose(prepare_data.hu_to_grayscale(vol, [1]), [[[191.25, 255, 255]]])
    np.testing.assert_array_equal(prepare_data.hu_to_grayscale(np.full((1, 2, 2), 7)), 0)  # flat: no division by 0


def _hand_slices():
    """Two 64x64 slices: a 60x60 body (rows/cols 2..61) with an 8x8 dark lung, in the middle / at the edge."""
    images = np.zeros((2, 64, 64), np.float64)
    images[:, 2:62, 2:62] = 128.0
    lung = np.zeros((2, 64, 64), np.uint8)
    lung[0, 28:36, 28:36] = 255  # enclosed: the eroded body is a closed ring around it
    lung[1, 28:36, 4:12] = 255  # 2 px from the body's edge: the 15x15 erosion opens the ring
    images[lung == 255] = 0.0
    return images, lung


def test_target_masks_on_a_hand_example():
    images, lung = _hand_slices()
    fov, around = prepare_data.lung_targets(images, lung)  # the original's 15x15 erosion, 5x5 fill
    # slice 0: eroded body = [9, 54]^2 minus the lung grown by 7 px; holes filled -> the whole square
    square = np.zeros((64, 64), bool)
    square[9:55, 9:55] = True
    np.testing.assert_array_equal(fov[0], square)
    np.testing.assert_array_equal(around[0], square & (lung[0] == 0))
    # slice 1: the ring is open to the left, nothing is filled; FOV = eroded body OR lung
    eroded = square.copy()
    eroded[21:43, :19] = False  # centres within 7 px of the lung (rows 28..35, cols 4..11)
    np.testing.assert_array_equal(prepare_data.body_mask(images)[1], eroded)
    np.testing.assert_array_equal(fov[1], eroded | (lung[1] == 255))
    np.testing.assert_array_equal(around[1], eroded)
    _, ref_fov, ref_around = _original_targets(images, lung.astype(np.int32), 15, 5)
    np.testing.assert_array_equal(fov, ref_fov)
    np.testing.assert_array_equal(around, ref_around)


def test_leak_free_fov_differs_from_the_original_only_where_the_truth_leaks():
    images, lung = _hand_slices()
    fov_gt, around = prepare_data.lung_targets(images, lung)
    fov_body = evaluate_performance.body_fov(images, 15, 5)
    prob = around.astype(np.float32)  # a perfect around-lung prediction
    ours, _ = evaluate_performance.score_lung(lung[:1], prob[:1], fov_body[:1])
    original, _ = evaluate_performance.score_lung(lung[:1], prob[:1], fov_gt[:1])
    assert ours["f1"] == original["f1"] == 1.0  # enclosed lung: same FOV, same result
    np.testing.assert_array_equal(fov_body[0], fov_gt[0])
    leak_free, _ = evaluate_performance.score_lung(lung[1:], prob[1:], fov_body[1:])
    leaky, _ = evaluate_performance.score_lung(lung[1:], prob[1:], fov_gt[1:])
    assert leaky["f1"] == 1.0 and leaky["sensitivity"] == 1.0  # the GT-built FOV hands over the lung
    assert leak_free["sensitivity"] == 0.0  # from the image alone the open lung is outside the FOV
    assert not (fov_body[1] & (lung[1] == 255)).any()


def test_lung_scores_equal_the_original_arithmetic():
    rng = np.random.default_rng(0)
    prob = rng.random((3, 16, 16)).astype(np.float32)
    prob[0, 0, :4] = 0.5  # exactly at the threshold: not around-lung (p > 0.5 is strict), so lung
    fov = rng.random((3, 16, 16)) < 0.8
    truth = np.where(rng.random((3, 16, 16)) < 0.3, 255, 0)
    scores, score = evaluate_performance.score_lung(truth, prob, fov)
    estimated = np.where((fov.astype(int) - np.where(prob > 0.5, 1, 0)) > 0.5, 1, 0).ravel()  # the original
    y_true = np.where(truth.ravel() > 0.5, 1, 0)
    np.testing.assert_array_equal(score.ravel() >= 0.5, estimated == 1)
    assert scores["f1"] == pytest.approx(f1_score(y_true, estimated))
    assert scores["auc_legacy"] == pytest.approx(roc_auc_score(y_true, estimated))
    assert scores["auc_legacy"] == pytest.approx((scores["sensitivity"] + scores["specificity"]) / 2)
    assert scores["js_legacy"] == scores["accuracy"] == pytest.approx(np.mean(y_true == estimated))
    assert scores["auc"] == pytest.approx(roc_auc_score(y_true, score.ravel()))


def test_bad_volumes_name_the_file(tmp_path):
    with pytest.raises(DataLayoutError, match=r"3d_images: folder not found"):
        prepare_data.volume_pairs(tmp_path)
    (tmp_path / "3d_images").mkdir()
    with pytest.raises(DataLayoutError, match=r"3d_images: no IMG_<id>\.nii\.gz volumes"):
        prepare_data.volume_pairs(tmp_path)
    _raw(tmp_path, n_volumes=2, n_slices=6)
    folder = tmp_path / "raw" / "3d_images"
    with pytest.raises(ImageReadError, match=r"IMG_0001\.nii\.gz: slices are 32x32 \(axis 0 is the slice axis\), "
                                             r"expected 512x512"):
        prepare_data.prepare(tmp_path / "raw", tmp_path / "w", verbose=False)
    (folder / "MASK_0002.nii.gz").unlink()
    with pytest.raises(DataLayoutError, match=r"IMG_0002\.nii\.gz: mask MASK_0002\.nii\.gz not found"):
        prepare_data.prepare(tmp_path / "raw", tmp_path / "w", SIZE, verbose=False)
    mask = nib.Nifti1Image(np.zeros((6, SIZE, SIZE + 8), np.uint8), np.eye(4))
    (folder / "MASK_0002.nii.gz").write_bytes(gzip.compress(mask.to_bytes()))
    with pytest.raises(ImageReadError, match=r"MASK_0002\.nii\.gz: shape \(6, 32, 40\) differs from its volume's"):
        prepare_data.prepare(tmp_path / "raw", tmp_path / "w", SIZE, verbose=False)
    (folder / "MASK_0002.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(ImageReadError, match=r"MASK_0002\.nii\.gz: cannot read NIfTI volume"):
        prepare_data.prepare(tmp_path / "raw", tmp_path / "w", SIZE, verbose=False)


def test_a_volume_failing_midway_leaves_nothing_behind(tmp_path):
    _raw(tmp_path, n_volumes=2, n_slices=6)
    image = tmp_path / "raw" / "3d_images" / "IMG_0002.nii.gz"
    data = gzip.decompress(image.read_bytes())
    image.write_bytes(gzip.compress(data[: len(data) // 2]))  # valid header, truncated voxels
    work = tmp_path / "work"
    with pytest.raises(ImageReadError, match=r"IMG_0002\.nii\.gz: cannot read NIfTI volume"):
        prepare_data.prepare(tmp_path / "raw", work, SIZE, erosion_size=3, verbose=False)
    assert not work.exists() or not list(work.iterdir())


def test_script_reports_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "lung" / "prepare_data.py"), "--data-dir", str(tmp_path),
                             "--work-dir", str(tmp_path / "w")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / '3d_images'}: folder not found (expected <data-dir>/3d_images/IMG_<id>.nii.gz "
        "with MASK_<id>.nii.gz)")


def test_lung_models_as_the_original_builds_them():
    d3 = train_lung.build("bcdu_net_d3", 512)
    assert d3.count_params() == 20_659_717 and d3.input_shape == (None, 512, 512, 1)
    d1 = train_lung.build("bcdu_net_d1", 512)
    counts = Counter(type(layer).__name__ for layer in d1.layers)
    assert d1.count_params() == 8_861_189 and len(d1.layers) == 42 and counts["Dropout"] == 1  # Lung folder D1
    train_lung.compile_model(d1)
    opt = d1.optimizer
    assert float(opt.learning_rate) == pytest.approx(1e-4) and opt.epsilon == 1e-7
    assert (opt.beta_1, opt.beta_2) == (0.9, 0.999)
    assert train_lung.REDUCE_LR["factor"] == 0.1 and train_lung.REDUCE_LR["patience"] == 7


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Prepared synthetic arrays and a 2-epoch bcdu_net_d3 run, shared by the tests that need a network."""
    tmp = tmp_path_factory.mktemp("lung_run")
    written = _raw(tmp)
    work, run = tmp / "work", tmp / "run"
    prepare_data.main(["--data-dir", str(tmp / "raw"), "--work-dir", str(work), "--slice-size", str(SIZE),
                       "--erosion-size", "3", "--quiet"])
    train_lung.main(["--work-dir", str(work), "--run-dir", str(run), "--epochs", "2", "--lr", "1e-3",
                     "--seed", "0", "--verbose", "0"])
    return {"tmp": tmp, "raw": tmp / "raw", "work": work, "run": run, "written": written}


def test_end_to_end_prepare_train_evaluate(trained, tmp_path):
    work, run = trained["work"], trained["run"]
    for name in ("best.keras", "last.keras", "history.csv", "state.json", "training_curves.png"):
        assert (run / name).is_file()
    state = json.loads((run / "state.json").read_text())
    assert state["monitor"] == "val_loss" and state["mode"] == "min"
    settings = state["settings"]
    assert (settings["batch_size"], settings["train"], settings["validation"]) == (2, 9, 3)  # last 20 % of 12
    history = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    loss = [float(row[history[0].index("loss")]) for row in history[1:]]
    assert loss[1] < loss[0]

    out = tmp_path / "results"
    rows = evaluate_performance.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out),
                                      "--quiet"])  # default: both FOVs
    assert list(rows) == ["lung-gt", "body"]  # the original's protocol first
    for name in ("performances.md", "performances.json", "performances.txt", "performances_body.txt", "roc_pr.png",
                 "roc_pr_body.png", "sample_results.png", "pred_test.npy", "estimated_lung.npy",
                 "estimated_lung_body.npy"):
        assert (out / name).is_file(), name
    prob = np.load(out / "pred_test.npy")
    assert prob.shape == (6, SIZE, SIZE) and prob.dtype == np.float32
    table = json.loads((out / "performances.json").read_text())
    assert [r["method"] for r in table[:4]] == ["U-Net", "Residual U-Net", "R2U-Net", "BCDU-Net (paper)"]
    assert len(table) == 6 and [r["F1"] for r in table[4:]] == [rows["lung-gt"]["F1"], rows["body"]["F1"]]
    assert "GROUND TRUTH" in table[4]["FOV"] and "leak-free" in table[5]["FOV"]
    markdown = (out / "performances.md").read_text()
    assert markdown.index("| original: body OR ground-truth lung") < markdown.index("| leak-free: body only")
    test = prepare_data.load_arrays(work, "test")
    original = (test["fov"] == 1) & ~(prob > 0.5)  # the original's estimated lung with its FOV_te
    np.testing.assert_array_equal(np.load(out / "estimated_lung.npy"), original)
    assert rows["lung-gt"]["F1"] == pytest.approx(segmentation_scores(test["lung"], original)["f1"])
    body = evaluate_performance.body_fov(test["image"], 3, 5)
    leak_free = body & ~(prob > 0.5)
    np.testing.assert_array_equal(np.load(out / "estimated_lung_body.npy"), leak_free)
    assert rows["body"]["F1"] == pytest.approx(segmentation_scores(test["lung"], leak_free)["f1"])
    # HD95 / ASSD beside the original columns: brute-force surface distances per slice (spacing 1: identity
    # affines), mean over the slices where both masks are non-empty
    assert list(table[4])[:8] == ["method", "year", "F1", "SE", "SP", "ACC", "AUC", "JS"]
    hd95, assd = [], []
    for truth, pred in zip(test["lung"] != 0, leak_free):
        if truth.any() and pred.any():
            a = np.argwhere(truth & ~binary_erosion(truth))
            b = np.argwhere(pred & ~binary_erosion(pred))
            d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
            to_b, to_a = d.min(1), d.min(0)
            hd95.append(max(np.percentile(to_b, 95), np.percentile(to_a, 95)))
            assd.append(np.concatenate([to_b, to_a]).mean())
    if hd95:
        assert table[5]["HD95"] == pytest.approx(np.mean(hd95)) and table[5]["ASSD"] == pytest.approx(np.mean(assd))
    assert table[5]["surface_slices"]["scored"] == len(hd95)
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["model"] == "bcdu_net_d3" and run_json["weights"][0]["path"] == str((run / "best.keras").resolve())
    # the original's performances.txt numbers are those of the GT-built FOV
    text = (out / "performances.txt").read_text()
    assert f"F1 score (F-measure): {rows['lung-gt']['F1']}" in text

    # a second evaluation into the same folder is refused (nothing touched), --overwrite replaces it
    before = (out / "performances.json").read_bytes()
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        evaluate_performance.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out),
                                   "--quiet", "--fov", "body"])
    assert (out / "performances.json").read_bytes() == before
    rows = evaluate_performance.main(["--work-dir", str(work), "--run-dir", str(run), "--out-dir", str(out),
                                      "--quiet", "--fov", "body", "--overwrite", "--tta", "flip"])
    assert list(rows) == ["body"] and not (out / "performances.txt").exists()


def test_evaluate_tta_flip_is_the_mean_over_flips(trained, tmp_path):
    import keras

    from lung.segment import predict_around_lung

    model = keras.models.load_model(trained["run"] / "best.keras", compile=False)
    images = prepare_data.load_arrays(trained["work"], "test")["image"][:3]
    x = np.asarray(images, np.float32)[..., None] / 255.0
    plain = model.predict(x, verbose=0)[..., 0]
    hflip = np.flip(model.predict(np.flip(x, 2).copy(), verbose=0)[..., 0], 2)
    vflip = np.flip(model.predict(np.flip(x, 1).copy(), verbose=0)[..., 0], 1)
    np.testing.assert_allclose(predict_around_lung(model, images), plain, atol=1e-5)
    assert np.abs(hflip - plain).max() > 1e-3  # the network is not flip-invariant: the test can fail
    np.testing.assert_allclose(predict_around_lung(model, images, tta="flip"), (plain + hflip + vflip) / 3, atol=1e-5)


def test_train_refuses_a_folder_holding_a_run_before_reading_data(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    state = {"epoch": 3, "best": 0.25, "monitor": "val_loss", "mode": "min"}
    (run / "state.json").write_text(json.dumps(state))
    (run / "history.csv").write_text("epoch,loss\n0,1\n")
    with pytest.raises(UserError, match=r"holds a run of 3 epochs \(best val_loss 0.25\); pass --resume"):
        train_lung.main(["--work-dir", str(tmp_path / "no_such_work"), "--run-dir", str(run)])
    assert json.loads((run / "state.json").read_text()) == state  # untouched
    with pytest.raises(FileNotFoundError, match="data_train.npy"):  # --overwrite goes on to read the data
        train_lung.main(["--work-dir", str(tmp_path / "no_such_work"), "--run-dir", str(run), "--overwrite"])
    assert (run / "state.json").is_file()  # the old run is only removed once training starts


def test_run_names_hold_every_option_that_changes_the_run():
    assert train_lung.run_name("bcdu_net_d3") == "bcdu_net_d3"
    assert train_lung.run_name("bcdu_net_d3", True) == "bcdu_net_d3_bidirectional"
    names = {train_lung.run_name("bcdu_net_d3", **{key: value})
             for key, value in [("epochs", 4), ("batch_size", 4), ("lr", 1e-3), ("val_split", 0.1), ("seed", 1),
                                ("mixed_precision", "bfloat16"), ("init_weights", "/x/weight_lung")]}
    assert len(names) == 7 and "bcdu_net_d3" not in names
    assert train_lung.run_name("bcdu_net_d1", True, epochs=4, lr=1e-3) == "bcdu_net_d1_bidirectional_epochs4_lr0.001"
    # the original's values give the plain name
    assert train_lung.run_name("bcdu_net_d3", epochs=50, batch_size=2, lr=1e-4, val_split=0.2) == "bcdu_net_d3"


def test_two_variants_with_default_folders_stay_intact(trained, tmp_path, monkeypatch):
    import keras

    import common.cli

    def tiny(model_name, size, bidirectional=False):  # a one-layer stand-in: the folders are under test here
        inputs = keras.Input((size, size, 1))
        return keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs),
                           name=model_name)

    monkeypatch.setattr(train_lung, "build", tiny)
    monkeypatch.setattr(common.cli, "REPO_ROOT", tmp_path)  # default folders under a repo-like tmp root
    work = trained["work"]
    base = ["--work-dir", str(work), "--epochs", "1", "--verbose", "0"]
    runs = [train_lung.main(base), train_lung.main(base + ["--bidirectional"])]
    assert [r.relative_to(tmp_path).as_posix() for r in runs] == [
        "weights/lung/bcdu_net_d3_epochs1", "weights/lung/bcdu_net_d3_bidirectional_epochs1"]
    for run, bidirectional in zip(runs, (False, True)):
        assert json.loads((run / "state.json").read_text())["settings"]["bidirectional"] is bidirectional
    try:
        for run in runs:
            evaluate_performance.main(["--work-dir", str(work), "--run-dir", str(run), "--quiet", "--fov", "body"])
        stamps = [(work / "results" / run.name / "pred_test.npy").read_bytes() for run in runs]
        assert stamps[0] != stamps[1]  # two results, one per run, none replaced
        for run in runs:
            assert (run / "best.keras").is_file() and (run / "history.csv").is_file()
    finally:
        import shutil

        shutil.rmtree(work / "results", ignore_errors=True)  # the shared work folder stays as it was


@pytest.mark.parametrize("script", ["prepare_data.py", "train_lung.py", "evaluate_performance.py", "predict.py",
                                    "demo.py"])
def test_help_works_from_any_directory(tmp_path, script):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "lung" / script), "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "usage:" in result.stdout


def test_evaluate_the_authors_keras2_weights(trained, tmp_path):
    """--init-weights (the authors' weight_lung layout) evaluates exactly as the run it was written from."""
    import keras

    from test_legacy_weights import write_keras2_file

    model = keras.models.load_model(trained["run"] / "best.keras", compile=False)
    legacy = tmp_path / "weight_lung"
    write_keras2_file(legacy, model, full_model=True)
    common = ["--work-dir", str(trained["work"]), "--fov", "body", "--quiet"]
    ours = evaluate_performance.main(common + ["--run-dir", str(trained["run"]), "--out-dir", str(tmp_path / "a")])
    theirs = evaluate_performance.main(common + ["--init-weights", str(legacy), "--out-dir", str(tmp_path / "b")])
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "pred_test.npy"), np.load(tmp_path / "b" / "pred_test.npy"))
    assert theirs["body"]["F1"] == ours["body"]["F1"] and "init weights weight_lung" in theirs["body"]["method"]
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert record["weights"][0]["path"] == str(legacy.resolve())
