"""The lung scripts' command lines: defaults pinned to the original's values, one-line errors, bad inputs.

The table of the original's values is written here from ../shared/specs/bcdu_net.md (§3.3 Lung, §5.1 Lung
column and "Common", §5.2 Lung specifics) and the original's evaluate_performance.py as quoted there
(``model.predict(te_data2, batch_size=2)``, ``predictions > 0.5``), never read from the code under test.
"""

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from common.data.io import DataLayoutError, ImageReadError
from common.data.synthetic import write_lung_dataset
from common.errors import UserError
from lung import evaluate_performance, predict, prepare_data, segment, train_lung
from _cli import error_line as _error_line

SIZE = 32

# The original (spec §3.3, §5.1, §5.2)
ORIGINAL_PREPARE = {"slice_size": 512, "erosion_size": 15, "fill_size": 5, "train_fraction": 0.7}
ORIGINAL_HU_RANGE, ORIGINAL_LUNG_VALUE = (-512, 512), 255
ORIGINAL_TRAIN = {"model": "bcdu_net_d3", "bidirectional": False, "epochs": 50, "batch_size": 2, "lr": 1e-4,
                  "val_split": 0.2, "seed": None, "init_weights": None, "mixed_precision": "off",
                  "jit_compile": False, "strategy": "default", "resume": False, "overwrite": False}
ORIGINAL_ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}  # Keras 2 Adam defaults, epsilon K.epsilon()
ORIGINAL_REDUCE_LR = {"factor": 0.1, "patience": 7, "min_delta": 1e-4, "cooldown": 0, "min_lr": 0.0}
ORIGINAL_EVALUATE = {"model": "bcdu_net_d3", "weights": "best", "batch_size": 2, "tta": "none",
                     "mixed_precision": "off", "init_weights": None}
ORIGINAL_THRESHOLD = 0.5  # around-lung predictions > 0.5


def test_prepare_defaults_are_the_originals():
    args = vars(prepare_data.build_parser().parse_args([]))
    assert {k: args[k] for k in ORIGINAL_PREPARE} == ORIGINAL_PREPARE
    assert tuple(prepare_data.HU_RANGE) == ORIGINAL_HU_RANGE and prepare_data.LUNG_VALUE == ORIGINAL_LUNG_VALUE
    assert args["overwrite"] is False


def test_train_defaults_are_the_originals():
    args = vars(train_lung.build_parser().parse_args([]))
    assert {k: args[k] for k in ORIGINAL_TRAIN} == ORIGINAL_TRAIN
    assert args["run_dir"] is None and train_lung.default_run_dir("bcdu_net_d3").name == "bcdu_net_d3"
    assert {k: train_lung.REDUCE_LR[k] for k in ORIGINAL_REDUCE_LR} == ORIGINAL_REDUCE_LR
    model = train_lung.compile_model(train_lung.build("bcdu_net_d1", SIZE))
    opt = model.optimizer
    assert float(opt.learning_rate) == pytest.approx(ORIGINAL_TRAIN["lr"])
    assert {k: getattr(opt, k) for k in ORIGINAL_ADAM} == ORIGINAL_ADAM
    assert model.loss == "binary_crossentropy"


def test_evaluate_defaults_are_the_originals_and_include_its_protocol():
    args = vars(evaluate_performance.build_parser().parse_args([]))
    assert {k: args[k] for k in ORIGINAL_EVALUATE} == ORIGINAL_EVALUATE
    assert args["fov"] == "both" and evaluate_performance.FOVS[0] == "lung-gt"  # the original's row first
    assert segment.THRESHOLD == ORIGINAL_THRESHOLD


def test_predict_defaults_follow_evaluate():
    args = vars(predict.build_parser().parse_args(["x.nii.gz", "--out-dir", "o"]))
    assert (args["batch_size"], args["tta"], args["weights"]) == (2, "none", "best")
    assert (args["erosion_size"], args["fill_size"]) == (ORIGINAL_PREPARE["erosion_size"],
                                                         ORIGINAL_PREPARE["fill_size"])
    assert (args["min_size"], args["keep_largest"], args["mask_value"]) == (0, 0, ORIGINAL_LUNG_VALUE)


def _fake_prepared(work, n_train=1, n_test=2):
    """A prepared folder with tiny zero arrays (enough for the scripts to get past loading)."""
    work.mkdir(parents=True, exist_ok=True)
    for key, (train, test, dtype) in prepare_data.OUTPUTS.items():
        np.save(work / f"{train}.npy", np.zeros((n_train, SIZE, SIZE), dtype))
        np.save(work / f"{test}.npy", np.zeros((n_test, SIZE, SIZE), dtype))
    (work / "split.json").write_text(json.dumps({"erosion_size": 3, "fill_size": 5, "slice_size": SIZE}))


def test_prepare_errors_are_one_line(tmp_path, capsys):
    line = _error_line(prepare_data.main, ["--slice-size", "30", "--data-dir", str(tmp_path)])
    assert line.startswith("error: --slice-size: 30 is not a positive multiple of 8")
    line = _error_line(prepare_data.main, ["--train-fraction", "1", "--data-dir", str(tmp_path)])
    assert line.startswith("error: --train-fraction: 1.0 must lie strictly between 0 and 1")
    write_lung_dataset(tmp_path / "raw", 2, 6, SIZE, n_empty=1, seed=0)
    folder = tmp_path / "raw" / "3d_images"
    (folder / "MASK_0001.nii.gz").rename(folder / "MASK_0009.nii.gz")  # IMG_0001 and MASK_0009 orphans
    argv = ["--data-dir", str(tmp_path / "raw"), "--work-dir", str(tmp_path / "w"), "--slice-size", str(SIZE),
            "--quiet"]
    line = _error_line(prepare_data.main, argv)
    assert line == (f"error: {folder / 'IMG_0001.nii.gz'}: mask MASK_0001.nii.gz not found; add it or move the "
                    "volume out of 3d_images")
    assert not (tmp_path / "w").exists()


def test_orphans_on_either_side_are_reported(tmp_path):
    write_lung_dataset(tmp_path / "raw", 3, 6, SIZE, n_empty=1, seed=0)
    folder = tmp_path / "raw" / "3d_images"
    (folder / "IMG_0002.nii.gz").unlink()  # a mask without its volume (was silently skipped)
    with pytest.raises(DataLayoutError, match=r"MASK_0002\.nii\.gz: volume IMG_0002\.nii\.gz not found; add it"):
        prepare_data.volume_pairs(tmp_path / "raw")
    (folder / "IMG_0003.nii.gz").unlink()
    with pytest.raises(DataLayoutError, match=r"MASK_0002\.nii\.gz: .* \(1 more masks without a volume\)"):
        prepare_data.volume_pairs(tmp_path / "raw")
    for vol_id in ("0002", "0003"):
        (folder / f"MASK_{vol_id}.nii.gz").unlink()
    (folder / "MASK_0001.nii.gz").rename(tmp_path / "MASK_0001.nii.gz")
    with pytest.raises(DataLayoutError, match=r"IMG_0001\.nii\.gz: mask MASK_0001\.nii\.gz not found"):
        prepare_data.volume_pairs(tmp_path / "raw")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused_with_the_file_named(tmp_path, bad):
    write_lung_dataset(tmp_path / "raw", 2, 6, SIZE, n_empty=1, seed=0)
    path = tmp_path / "raw" / "3d_images" / "IMG_0002.nii.gz"
    img = nib.load(path)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    data[3, 4, 5] = bad
    path.write_bytes(gzip.compress(nib.Nifti1Image(data, img.affine).to_bytes()))
    work = tmp_path / "work"
    with pytest.raises(ImageReadError, match=r"IMG_0002\.nii\.gz: 1 voxels are NaN or infinite"):
        prepare_data.prepare(tmp_path / "raw", work, SIZE, erosion_size=3, verbose=False)
    assert not work.exists() or not list(work.iterdir())  # validated before any output


def test_prepare_never_replaces_a_prepared_dataset_without_overwrite(tmp_path):
    write_lung_dataset(tmp_path / "raw", 2, 6, SIZE, n_empty=1, seed=0)
    argv = ["--data-dir", str(tmp_path / "raw"), "--work-dir", str(tmp_path / "w"), "--slice-size", str(SIZE),
            "--erosion-size", "3", "--quiet"]
    first = prepare_data.main(argv)
    split = (tmp_path / "w" / "split.json").read_bytes()
    write_lung_dataset(tmp_path / "raw", 3, 6, SIZE, n_empty=1, seed=1)  # the data changed
    with pytest.raises(UserError, match=r"w: already holds a prepared dataset .*; pass --overwrite"):
        prepare_data.main(argv)
    assert (tmp_path / "w" / "split.json").read_bytes() == split
    second = prepare_data.main(argv + ["--overwrite"])
    assert len(second["volumes"]) == 3 != len(first["volumes"])
    assert second["spacing"]["0001"] == [1.0, 1.0, 1.0]  # the voxel size is recorded per volume


def test_train_errors_are_one_line(tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    line = _error_line(train_lung.main, ["--epochs", "0", "--work-dir", str(work)])
    assert line == "error: --epochs: 0 must be at least 1"
    line = _error_line(train_lung.main, ["--val-split", "1.5", "--work-dir", str(work)])
    assert line == "error: --val-split: 1.5 must lie strictly between 0 and 1"
    line = _error_line(train_lung.main, ["--work-dir", str(work), "--run-dir", str(tmp_path / "r")])
    assert line == f"error: {work / 'data_train.npy'}: not found; run lung/prepare_data.py first"
    monkeypatch.delenv("TF_CONFIG", raising=False)
    line = _error_line(train_lung.main, ["--work-dir", str(work), "--run-dir", str(tmp_path / "r"), "--strategy",
                                         "multi_worker"])
    assert line.startswith("error: --strategy multi_worker: needs the TF_CONFIG environment variable")
    _fake_prepared(work, n_train=1)
    (work / "Train_maska.npy").write_bytes(b"\x93NUMPY garbage")
    line = _error_line(train_lung.main, ["--work-dir", str(work), "--run-dir", str(tmp_path / "r")])
    assert line.startswith(f"error: {work / 'Train_maska.npy'}: cannot read the prepared array")
    _fake_prepared(work, n_train=1)
    line = _error_line(train_lung.main, ["--work-dir", str(work), "--run-dir", str(tmp_path / "r")])
    assert line.startswith("error: validation split: 0.2 of 1 samples leaves an empty training or validation part")
    assert not (tmp_path / "r").exists()


def test_evaluate_errors_are_one_line(tmp_path, capsys):
    work = tmp_path / "work"
    _fake_prepared(work)
    line = _error_line(evaluate_performance.main, ["--batch-size", "0", "--work-dir", str(work)])
    assert line == "error: --batch-size: 0 must be at least 1"
    line = _error_line(evaluate_performance.main, ["--work-dir", str(work), "--run-dir", str(tmp_path / "r"),
                                                   "--init-weights", str(tmp_path / "w")])
    assert line.startswith("error: --init-weights/--run-dir: choose one")
    run = tmp_path / "run"
    line = _error_line(evaluate_performance.main, ["--work-dir", str(work), "--run-dir", str(run)])
    assert line.startswith(f"error: {run / 'best.keras'}: not found; train a network")
    run.mkdir()
    (run / "best.keras").write_bytes(b"not a keras file")
    out = tmp_path / "out"
    line = _error_line(evaluate_performance.main, ["--work-dir", str(work), "--run-dir", str(run), "--out-dir",
                                                   str(out), "--quiet"])
    assert line.startswith(f"error: {run / 'best.keras'}: cannot load the network")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_predict_errors_are_one_line(tmp_path, capsys):
    line = _error_line(predict.main, [str(tmp_path), "--out-dir", "o", "--keep-largest", "-1"])
    assert line == "error: --keep-largest: -1 must be 0 (off) or positive"
    line = _error_line(predict.main, [str(tmp_path / "nope.nii.gz"), "--out-dir", "o"])
    assert line == f"error: {tmp_path / 'nope.nii.gz'}: no such file or folder"
    (tmp_path / "scan.nii.gz").write_bytes(b"garbage")
    model = tmp_path / "net.keras"
    train_lung.build("bcdu_net_d1", SIZE).save(model)
    line = _error_line(predict.main, [str(tmp_path / "scan.nii.gz"), "--model", str(model), "--out-dir",
                                      str(tmp_path / "o"), "--quiet"])
    assert line.startswith(f"error: {tmp_path / 'scan.nii.gz'}: cannot read NIfTI volume")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
