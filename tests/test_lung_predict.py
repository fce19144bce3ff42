"""lung/predict.py on synthetic NIfTI volumes: names, shapes, affine/header kept, mask values, bad inputs.

The reference for the masks is computed here with NumPy and scipy from the network's raw predictions (the
original's recipe: HU clip, min-max over the volume, / 255, around-lung p > 0.5, FOV = holes of the eroded
body filled, lung = FOV and not p > 0.5), not with the code under test.
"""

import gzip
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import binary_erosion, binary_fill_holes, label

from common.data.io import ImageReadError
from common.data.synthetic import write_lung_dataset
from common.errors import UserError
from lung import predict, train_lung

SIZE = 32


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """An untrained (seeded) bcdu_net_d1 for 32x32 slices saved as .keras: predict needs any lung network."""
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("lung_net") / "net.keras"
    train_lung.build("bcdu_net_d1", SIZE).save(path)
    return path


@pytest.fixture
def volumes(tmp_path):
    """Two synthetic volumes with a non-trivial affine and header (spacing, slope/intercept, description)."""
    write_lung_dataset(tmp_path / "raw", 2, 8, SIZE, n_empty=1, seed=3)
    folder = tmp_path / "raw" / "3d_images"
    for path in sorted(folder.glob("IMG_*.nii.gz")):
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        affine = np.array([[0, 0, -0.7, 100], [0, -0.7, 0, 90], [2.5, 0, 0, -40], [0, 0, 0, 1]])
        out = nib.Nifti1Image(data.astype(np.int16), affine)
        out.header["descrip"] = b"synthetic CT"
        out.header.set_zooms((2.5, 0.7, 0.7))
        path.write_bytes(gzip.compress(out.to_bytes()))
    return folder


def _reference(model_path, volume, erosion=15, fill=5):
    import keras

    import common.layers  # noqa: F401

    model = keras.models.load_model(model_path, compile=False)
    v = volume.astype(np.float64)
    low, high = np.clip([v.min(), v.max()], -512, 512)
    images = (np.clip(v, -512, 512) - low) / (high - low) * 255.0
    prob = model.predict(images[..., None].astype(np.float32) / 255.0, verbose=0)[..., 0]
    body = np.stack([binary_erosion(s > 0, structure=np.ones((erosion, erosion))) for s in images])
    fov = np.stack([binary_fill_holes(b, structure=np.ones((fill, fill))) for b in body])
    return fov & ~(prob > 0.5), fov * (1 - prob)


def test_predict_writes_dataset_masks_with_the_inputs_affine_and_header(network, volumes, tmp_path):
    out = tmp_path / "out"
    assert predict.main([str(volumes), "--model", str(network), "--out-dir", str(out), "--erosion-size", "3",
                         "--save-probabilities", "--overlay", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "MASK_0001.nii.gz", "MASK_0001_overlay.png", "MASK_0002.nii.gz", "MASK_0002_overlay.png",
        "PROB_0001.nii.gz", "PROB_0002.nii.gz", "run.json"]  # the MASK_ ground truth in the folder is no input
    run = json.loads((out / "run.json").read_text())
    assert run["weights"][0]["sha256"] == hashlib.sha256(network.read_bytes()).hexdigest()
    assert [Path(p).name for p in run["inputs"]] == ["IMG_0001.nii.gz", "IMG_0002.nii.gz"]
    for vol_id in ("0001", "0002"):
        src = nib.load(volumes / f"IMG_{vol_id}.nii.gz")
        mask = nib.load(out / f"MASK_{vol_id}.nii.gz")
        values = np.asanyarray(mask.dataobj)
        assert values.shape == src.shape and values.dtype == np.uint8
        assert set(np.unique(values)) <= {0, 255}
        np.testing.assert_array_equal(mask.affine, src.affine)
        assert mask.header.get_zooms() == src.header.get_zooms()
        assert mask.header["descrip"] == src.header["descrip"]
        lung, score = _reference(network, np.asanyarray(src.dataobj), erosion=3)
        np.testing.assert_array_equal(values == 255, lung)
        prob = np.asanyarray(nib.load(out / f"PROB_{vol_id}.nii.gz").dataobj)
        assert prob.dtype == np.float32
        np.testing.assert_allclose(prob, score, atol=1e-5)
    # existing outputs are refused, nothing rewritten; --overwrite replaces them
    stamp = (out / "MASK_0001.nii.gz").stat().st_mtime_ns
    with pytest.raises(UserError, match=r"MASK_0001\.nii\.gz: already exists \(and 6 more\); pass --overwrite"):
        predict.main([str(volumes), "--model", str(network), "--out-dir", str(out), "--erosion-size", "3",
                      "--save-probabilities", "--overlay", "--quiet"])
    assert (out / "MASK_0001.nii.gz").stat().st_mtime_ns == stamp
    assert predict.main([str(volumes / "IMG_0001.nii.gz"), "--model", str(network), "--out-dir", str(out),
                         "--mask-value", "1", "--overwrite", "--quiet"]) == 0
    assert set(np.unique(np.asanyarray(nib.load(out / "MASK_0001.nii.gz").dataobj))) <= {0, 1}


def test_predict_other_layouts_and_post_processing(network, volumes, tmp_path):
    src = nib.load(volumes / "IMG_0001.nii.gz")
    data = np.asanyarray(src.dataobj)
    # the usual (x, y, z) layout with --slice-axis 2, and slices of another size (rebuilt network)
    moved = np.ascontiguousarray(np.moveaxis(data, 0, 2))
    (tmp_path / "xyz").mkdir()
    nib.save(nib.Nifti1Image(moved, src.affine), tmp_path / "xyz" / "scan.nii")
    padded = np.pad(data, ((0, 0), (0, 8), (0, 3)), constant_values=-1000)  # 40x35 slices
    nib.save(nib.Nifti1Image(padded, src.affine), tmp_path / "xyz" / "wide.nii.gz")
    out = tmp_path / "out"
    assert predict.main([str(tmp_path / "xyz" / "scan.nii"), str(tmp_path / "xyz" / "wide.nii.gz"), "--model",
                         str(network), "--out-dir", str(out), "--slice-axis", "2", "--quiet"]) == 0
    mask = np.asanyarray(nib.load(out / "MASK_scan.nii.gz").dataobj)
    lung, _ = _reference(network, data)
    np.testing.assert_array_equal(np.moveaxis(mask, 2, 0) == 255, lung)
    assert np.asanyarray(nib.load(out / "MASK_wide.nii.gz").dataobj).shape == padded.shape
    # --keep-largest 1 on the 3-D mask = its largest 26-connected component (scipy reference)
    predict.main([str(volumes / "IMG_0001.nii.gz"), "--model", str(network), "--out-dir", str(tmp_path / "k"),
                  "--keep-largest", "1", "--quiet"])
    lung, _ = _reference(network, data)
    labels, n = label(lung, structure=np.ones((3, 3, 3)))
    if n:
        sizes = np.bincount(labels.ravel())[1:]
        lung = labels == 1 + int(np.argmax(sizes))
    got = np.asanyarray(nib.load(tmp_path / "k" / "MASK_0001.nii.gz").dataobj) == 255
    np.testing.assert_array_equal(got, lung)


def test_predict_refuses_an_empty_folder_and_a_corrupt_file(network, volumes, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: no input files \(\.nii\.gz, \.nii\) in this folder"):
        predict.main([str(tmp_path / "empty"), "--model", str(network), "--out-dir", str(tmp_path / "o")])
    bad = volumes / "IMG_0003.nii.gz"
    bad.write_bytes(gzip.compress(gzip.decompress((volumes / "IMG_0001.nii.gz").read_bytes())[:600]))  # truncated
    out = tmp_path / "out"
    with pytest.raises(ImageReadError, match=r"IMG_0003\.nii\.gz: cannot read NIfTI volume"):
        predict.main([str(bad), "--model", str(network), "--out-dir", str(out), "--quiet"])
    assert not out.exists() or not list(out.iterdir())
    # NaN voxels are refused with the file named
    src = nib.load(volumes / "IMG_0002.nii.gz")
    nan = np.asanyarray(src.dataobj).astype(np.float32)
    nan[2, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(nan, src.affine), tmp_path / "nan.nii.gz")
    with pytest.raises(ImageReadError, match=r"nan\.nii\.gz: 1 voxels are NaN or infinite"):
        predict.main([str(tmp_path / "nan.nii.gz"), "--model", str(network), "--out-dir", str(out), "--quiet"])
    # --skip-bad: the good volumes are written, the bad one listed, exit status 1
    assert predict.main([str(volumes), "--model", str(network), "--out-dir", str(out), "--skip-bad",
                         "--quiet"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["MASK_0001.nii.gz", "MASK_0002.nii.gz", "run.json"]
    skipped = json.loads((out / "run.json").read_text())["skipped"]
    assert [Path(s["input"]).name for s in skipped] == ["IMG_0003.nii.gz"]


def test_predict_with_the_authors_keras2_weights(network, volumes, tmp_path):
    """--init-weights: a Keras-2 HDF5 file (the authors' ``weight_lung`` layout, no extension) gives the same
    masks as the network it was written from."""
    import keras

    from test_legacy_weights import write_keras2_file

    import common.layers  # noqa: F401

    model = keras.models.load_model(network, compile=False)
    legacy = tmp_path / "weight_lung"
    write_keras2_file(legacy, model, full_model=True)
    args = [str(volumes / "IMG_0001.nii.gz"), "--erosion-size", "3", "--quiet"]
    assert predict.main(args + ["--model", str(network), "--out-dir", str(tmp_path / "a")]) == 0
    assert predict.main(args + ["--init-weights", str(legacy), "--network", "bcdu_net_d1", "--out-dir",
                                str(tmp_path / "b")]) == 0
    a, b = (np.asanyarray(nib.load(tmp_path / d / "MASK_0001.nii.gz").dataobj) for d in "ab")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(UserError, match=r"weight_lung: holds weights for \d+ layers but model 'bcdu_net_d3'"):
        predict.main(args + ["--init-weights", str(legacy), "--out-dir", str(tmp_path / "c")])  # wrong network


def test_mixed_precision_rebuilds_the_network_under_the_policy(network):
    import keras

    import common.layers  # noqa: F401
    from common.devices import set_precision
    from lung.segment import network_for

    model = keras.models.load_model(network, compile=False)
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 1)).astype(np.float32)
    try:
        mixed = network_for(model, SIZE, "bfloat16")
        assert mixed is not model and mixed.get_layer("head_conv").compute_dtype == "bfloat16"
        assert mixed.get_layer("head_conv").kernel.dtype == "float32"  # float32 weights
        for a, b in zip(mixed.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(np.asarray(mixed(x), np.float32), np.asarray(model(x)), atol=0.05)
        assert network_for(model, SIZE, "off") is model  # float32 and the right size: used as is
    finally:
        set_precision("off")
    compiled = train_lung.compile_model(train_lung.build("bcdu_net_d1", SIZE), jit_compile=True)
    assert compiled.jit_compile is True
