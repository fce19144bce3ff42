"""DICOM CT series: common.data.dicom's reader and lung/predict.py on a series folder.

The series are written here with pydicom from a known HU volume (files named in shuffled order, random
InstanceNumbers, RescaleSlope / RescaleIntercept other than 1 / 0 and varying per slice, an oblique
orientation). The references are independent of the code under test: the HU volume itself, the DICOM
geometry formula (position of pixel (r, c) of a slice = ImagePositionPatient + r * row spacing * column
direction + c * column spacing * row direction, LPS -> RAS by negating x and y) evaluated per file, and the
NIfTI path of lung/predict.py on the same volume written with nibabel.
"""

import gzip

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLosslessSV1, generate_uid

from _cli import RUN_SCRIPT_BLOCKED, error_line
from common.data.dicom import read_dicom_series
from common.data.synthetic import write_lung_dataset
from common.errors import UserError

ROWS, COLS, SPACING = 32, 28, (2.5, 0.7, 0.8)  # non-square slices: a rows/columns swap changes the shape
OBLIQUE = ((0.8, 0.6, 0.0), (0.0, 0.0, -1.0))  # row direction (along columns), column direction (along rows)
AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


def write_series(folder, hu, *, orientation=OBLIQUE, origin=(10.0, -20.0, 30.0), spacing=SPACING, step=1,
                 slopes=None, intercepts=None, seed=0, series_uid=None, modality="CT"):
    """Slice ``z`` of ``hu`` at ``origin + step * z * spacing[0] * normal``, one file per slice, file names and
    InstanceNumbers in a shuffled order; stored = (HU - intercept) / slope as int16. Returns the positions
    (LPS) of the slices by ``z``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    row_dir, col_dir = (np.asarray(v, np.float64) for v in orientation)
    normal = np.cross(row_dir, col_dir)
    n = len(hu)
    slopes = np.full(n, 0.5) if slopes is None else slopes
    intercepts = np.full(n, -1024.0) if intercepts is None else intercepts
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    positions = [np.asarray(origin) + step * z * spacing[0] * normal for z in range(n)]
    names, numbers = rng.permutation(n), rng.permutation(n) + 1
    for z in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.Modality = modality
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "synthetic", "Synthetic^CT", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.AccessionNumber = "1", 3, int(numbers[z]), ""
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.Manufacturer = "20260101", "120000", "", "test"
        ds.ImageOrientationPatient = [*row_dir, *col_dir]
        ds.ImagePositionPatient = [float(v) for v in positions[z]]
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[2]], spacing[0]
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = float(slopes[z]), float(intercepts[z]), "HU"
        ds.PixelData = np.round((hu[z] - intercepts[z]) / slopes[z]).astype("<i2").tobytes()
        ds.save_as(folder / f"slice{names[z]:03d}.dcm", enforce_file_format=True)
    return positions


def ras(lps):
    return np.asarray(lps) * np.array([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def hu(tmp_path_factory):
    """A synthetic chest (lung dataset generator), 8 slices of 32 x 28 in HU (int16 values)."""
    root = tmp_path_factory.mktemp("lung_raw")
    write_lung_dataset(root, 1, 8, ROWS, n_empty=1, seed=3)
    volume = np.asanyarray(nib.load(root / "3d_images" / "IMG_0001.nii.gz").dataobj)
    return volume[:, :, 2:2 + COLS].astype(np.float32)


@pytest.mark.parametrize("orientation, step", [(OBLIQUE, 1), (AXIAL, -1)])
def test_series_reads_back_the_hu_volume_along_the_normal_with_its_geometry(hu, tmp_path, orientation, step):
    n = len(hu)
    slopes = np.where(np.arange(n) % 2, 0.5, 1.0)  # per-slice rescale, never 1 / 0 throughout
    intercepts = np.where(np.arange(n) % 3, -1024.0, -1000.0)
    positions = write_series(tmp_path / "s", hu, orientation=orientation, step=step, slopes=slopes,
                             intercepts=intercepts)
    volume, series = read_dicom_series(tmp_path / "s")
    # ascending along the normal: slice z of the reference when step is +1, reversed when -1
    ref_order = np.arange(n) if step == 1 else np.arange(n)[::-1]
    assert volume.dtype == np.float32 and volume.shape == (n, ROWS, COLS)
    np.testing.assert_array_equal(volume, hu[ref_order])
    assert series.spacing == pytest.approx(SPACING) and series.slice_thickness == pytest.approx(SPACING[0])
    assert [pydicom.dcmread(f).ImagePositionPatient for f in series.files] == [
        pytest.approx(list(positions[z])) for z in ref_order]
    row_dir, col_dir = (np.asarray(v) for v in orientation)
    rng = np.random.default_rng(1)
    for s, r, c in [(0, 0, 0), (n - 1, ROWS - 1, COLS - 1)] + list(zip(rng.integers(0, n, 20),
                                                                        rng.integers(0, ROWS, 20),
                                                                        rng.integers(0, COLS, 20))):
        world = positions[ref_order[s]] + r * SPACING[1] * col_dir + c * SPACING[2] * row_dir
        np.testing.assert_allclose(series.affine @ [s, r, c, 1], [*ras(world), 1], atol=1e-9)
    if orientation == AXIAL:  # increasing slice = superior (+z), row = posterior (+y LPS), column = left
        assert nib.aff2axcodes(series.affine) == ("S", "P", "L")
    # nibabel's own DICOM geometry (nibabel.nicom: LPS of (row, column, 0) of each slice) agrees voxel by voxel
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom.dicomwrappers import wrapper_from_data
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    for s, path in enumerate(series.files):
        nibabel_affine = lps_to_ras @ wrapper_from_data(pydicom.dcmread(path)).affine
        for r, c in [(0, 0), (ROWS - 1, 0), (0, COLS - 1), (5, 7)]:
            np.testing.assert_allclose(series.affine @ [s, r, c, 1], nibabel_affine @ [r, c, 0, 1], atol=1e-9)


@pytest.mark.parametrize("kind", ["uneven", "tilted"])
def test_unevenly_spaced_or_tilted_slices_are_refused(hu, tmp_path, kind):
    """The affine of a NIfTI file cannot hold them: refused rather than written at the wrong place."""
    positions = write_series(tmp_path / "s", hu)
    normal = np.cross(*OBLIQUE)
    for f in (tmp_path / "s").iterdir():
        ds = pydicom.dcmread(f)
        z = int(np.argmin([np.abs(np.asarray(ds.ImagePositionPatient) - p).max() for p in positions]))
        if kind == "uneven" and z == 4:
            ds.ImagePositionPatient = list(positions[z] + 0.5 * normal)  # gaps 3, 2 mm where the rest are 2.5
        if kind == "tilted":
            ds.ImagePositionPatient = list(positions[z] + z * 0.4 * np.asarray(OBLIQUE[1]))  # sheared stack
        ds.save_as(f)
    with pytest.raises(UserError, match={"uneven": r"s: uneven slice spacing: 3 mm between",
                                         "tilted": r"s: the slices are not stacked along their normal"}[kind]):
        read_dicom_series(tmp_path / "s")


def _files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """A tiny lung network for 32x32 slices saved as .keras: around-lung p = sigmoid(40 (x - 0.3)) of the
    network input x (bright tissue), so the mask (dark pixels inside the body) is neither empty nor full and
    a flipped or transposed volume would give another one."""
    import keras

    inputs = keras.Input((32, 32, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs), name="threshold_net")
    model.set_weights([np.full((1, 1, 1, 1), 40.0, np.float32), np.array([-12.0], np.float32)])
    path = tmp_path_factory.mktemp("lung_net") / "net.keras"
    model.save(path)
    return path


def test_predict_on_a_series_equals_the_nifti_path_and_writes_a_seg(hu, network, tmp_path):
    from lung import predict

    positions = write_series(tmp_path / "series", hu)
    (tmp_path / "series" / ".DS_Store").write_bytes(b"\0" * 10)  # hidden files are not part of the series
    row_dir, col_dir = (np.asarray(v) for v in OBLIQUE)
    affine = np.eye(4)  # written from the geometry formula, not from the reader
    affine[:3, :] = np.column_stack([ras(positions[1] - positions[0]), ras(SPACING[1] * col_dir),
                                     ras(SPACING[2] * row_dir), ras(positions[0])])
    nifti = tmp_path / "nifti" / "IMG_ref.nii.gz"
    nifti.parent.mkdir()
    nifti.write_bytes(gzip.compress(nib.Nifti1Image(hu.astype(np.int16), affine).to_bytes()))
    out = tmp_path / "out"
    args = ["--model", str(network), "--out-dir", str(out), "--erosion-size", "3", "--save-probabilities",
            "--overlay", "--quiet"]
    assert predict.main([str(tmp_path / "series"), str(nifti), "--dicom-seg"] + args) == 0
    assert _files(out) == ["MASK_ref.nii.gz", "MASK_ref_overlay.png", "MASK_series.nii.gz",
                           "MASK_series_overlay.png", "PROB_ref.nii.gz", "PROB_series.nii.gz", "SEG_series.dcm",
                           "run.json"]
    # the same preprocessed slices and masks as the NIfTI path on the same volume
    _, hu_dicom, _ = predict.read_dicom_volume(tmp_path / "series")
    _, hu_nifti = predict.read_volume(nifti)
    from lung.prepare_data import hu_to_grayscale

    np.testing.assert_array_equal(hu_to_grayscale(hu_dicom), hu_to_grayscale(hu_nifti))
    ref, got = nib.load(out / "MASK_ref.nii.gz"), nib.load(out / "MASK_series.nii.gz")
    mask = np.asanyarray(got.dataobj)
    assert mask.shape == (len(hu), ROWS, COLS) and 0 < np.count_nonzero(mask) < mask.size
    assert not np.array_equal(mask, mask[:, ::-1]) and not np.array_equal(mask, mask[:, :, ::-1])  # not symmetric
    np.testing.assert_array_equal(mask, np.asanyarray(ref.dataobj))
    np.testing.assert_array_equal(np.asanyarray(nib.load(out / "PROB_series.nii.gz").dataobj),
                                  np.asanyarray(nib.load(out / "PROB_ref.nii.gz").dataobj))
    assert (out / "MASK_series_overlay.png").read_bytes() == (out / "MASK_ref_overlay.png").read_bytes()
    # the mask lies where the series lies: the affine of the geometry formula, zooms = spacing
    np.testing.assert_allclose(got.affine, affine, atol=1e-5)
    assert got.header.get_zooms() == pytest.approx(SPACING)
    assert got.header["sform_code"] == 1 and got.header["qform_code"] == 1
    # the DICOM Segmentation: one frame per slice, at the slice's position, the mask's pixels
    seg = pydicom.dcmread(out / "SEG_series.dcm")
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "BINARY" and seg.SegmentSequence[0].SegmentLabel == "Lung"
    assert int(seg.NumberOfFrames) == len(hu)
    sources = [pydicom.dcmread(p) for p in sorted((tmp_path / "series").glob("*.dcm"))]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    frames = seg.pixel_array.reshape(-1, ROWS, COLS)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, np.float64)
        z = int(np.argmin([np.abs(position - p).max() for p in positions]))
        np.testing.assert_allclose(position, positions[z], atol=1e-4)
        np.testing.assert_array_equal(frame != 0, mask[z] != 0)  # hu slice z is mask slice z (ascending)


def _bad_series(kind, hu, folder):
    """A series folder with one defect; returns the text the error line must hold."""
    if kind == "two series":
        write_series(folder, hu[:3], series_uid="1.2.3.4")
        write_series(folder / "b", hu[3:], series_uid="1.2.3.5", origin=(0, 0, 90), seed=1)
        for p in (folder / "b").iterdir():
            p.rename(folder / f"b_{p.name}")
        (folder / "b").rmdir()
        return f"{folder}: holds 2 series: 1.2.3.5 (5 files, e.g. b_slice000.dcm), 1.2.3.4 (3 files"
    positions = write_series(folder, hu)
    files = sorted(folder.iterdir())
    if kind == "mixed sizes":
        ds = pydicom.dcmread(files[2])
        ds.Rows, ds.PixelData = ROWS - 2, ds.PixelData[:(ROWS - 2) * COLS * 2]
        ds.save_as(files[2])
        return f"{files[2]}: slice size {ROWS - 2}x{COLS} differs from the series' {ROWS}x{COLS}"
    if kind == "missing slice":
        next(f for f in files if np.allclose(pydicom.dcmread(f).ImagePositionPatient, positions[3])).unlink()
        return f"{folder}: missing slices: a gap of 5 mm between"
    if kind == "duplicate position":
        ds = pydicom.dcmread(files[0])
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(folder / "copy.dcm")
        return "lie at the same position"
    if kind == "compressed":
        ds = pydicom.dcmread(files[4])
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(files[4], enforce_file_format=True)
        return f"{files[4]}: "  # no installed decoder, or (with one installed) cannot decode: either names it
    if kind == "MR slice":
        ds = pydicom.dcmread(files[1])
        ds.Modality = "MR"
        ds.save_as(files[1])
        return f"{files[1]}: modality MR, not CT"
    if kind == "text file":
        (folder / "notes.txt").write_text("scanned 2026")
        return f"{folder / 'notes.txt'}: not a DICOM file"
    if kind == "no image":
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        for keyword in ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient"):
            delattr(ds, keyword)
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(folder / "report.dcm")
        return f"{folder / 'report.dcm'}: a DICOM CT Image Storage without an image, not a CT slice"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["two series", "mixed sizes", "missing slice", "duplicate position",
                                  "compressed", "MR slice", "text file", "no image"])
def test_a_bad_series_is_one_line_exit_2_and_nothing_written(hu, network, tmp_path, kind):
    from lung import predict

    expected = _bad_series(kind, hu, tmp_path / "series")
    with pytest.raises(UserError) as raised:
        read_dicom_series(tmp_path / "series")
    assert expected in str(raised.value)
    out = tmp_path / "out"
    line = error_line(predict.main, [str(tmp_path / "series"), "--model", str(network), "--out-dir", str(out),
                                     "--dicom-seg", "--quiet"])
    assert line.startswith("error: ") and expected in line
    if kind == "compressed":
        assert "pixel data" in line
    assert not _files(out)


def test_a_single_dicom_file_and_dicom_seg_without_a_series_are_refused(hu, network, tmp_path):
    from lung import predict

    write_series(tmp_path / "series", hu[:2])
    one = sorted((tmp_path / "series").iterdir())[0]
    out = tmp_path / "out"
    line = error_line(predict.main, [str(one), "--model", str(network), "--out-dir", str(out)])
    assert line == f"error: {one}: a DICOM file; give the folder that holds its whole series"
    nifti = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(hu.astype(np.int16), np.eye(4)), nifti)
    line = error_line(predict.main, [str(nifti), "--model", str(network), "--out-dir", str(out), "--dicom-seg"])
    assert line.startswith("error: --dicom-seg: needs a DICOM series folder among the inputs")
    assert not _files(out)


def test_skip_bad_lists_a_bad_series_and_writes_the_good_one(hu, network, tmp_path):
    import json

    from lung import predict

    write_series(tmp_path / "good", hu)
    write_series(tmp_path / "bad", hu)
    (tmp_path / "bad" / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    assert predict.main([str(tmp_path / "good"), str(tmp_path / "bad"), "--model", str(network), "--out-dir",
                         str(out), "--dicom-seg", "--skip-bad", "--quiet"]) == 1
    assert _files(out) == ["MASK_good.nii.gz", "SEG_good.dcm", "run.json"]
    skipped = json.loads((out / "run.json").read_text())["skipped"]
    assert [s["input"] for s in skipped] == [str(tmp_path / "bad")]
    assert skipped[0]["error"].endswith("notes.txt: not a DICOM file; a series folder must hold only the files "
                                        "of one CT series")



def test_a_series_with_onnx_and_without_tensorflow_equals_the_keras_path(hu, network, tmp_path):
    """requirements-predict.txt's path: lung/predict.py --onnx on a DICOM series (pydicom; --dicom-seg:
    highdicom) in a process where TensorFlow and Keras cannot be imported writes the Keras path's files."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    pytest.importorskip("highdicom")
    from common import export
    from lung import predict

    root = Path(__file__).resolve().parents[1]
    write_series(tmp_path / "series", hu)
    assert export.main(["--model", str(network), str(tmp_path / "onnx"), "--format", "onnx", "--task", "lung"]) == 0
    args = [str(tmp_path / "series"), "--erosion-size", "3", "--save-probabilities", "--dicom-seg", "--quiet"]
    assert predict.main(args + ["--model", str(network), "--out-dir", str(tmp_path / "keras")]) == 0
    done = subprocess.run([sys.executable, "-c", RUN_SCRIPT_BLOCKED, "lung/predict.py", *args, "--onnx",
                           str(tmp_path / "onnx" / "model.onnx"), "--out-dir", str(tmp_path / "ox")], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _files(tmp_path / "ox") == _files(tmp_path / "keras") == ["MASK_series.nii.gz", "PROB_series.nii.gz",
                                                                     "SEG_series.dcm", "run.json"]
    ours, reference = (nib.load(tmp_path / d / "MASK_series.nii.gz") for d in ("ox", "keras"))
    mask = np.asanyarray(ours.dataobj)
    assert 0 < np.count_nonzero(mask) < mask.size
    np.testing.assert_array_equal(mask, np.asanyarray(reference.dataobj))
    np.testing.assert_allclose(ours.affine, reference.affine)
    np.testing.assert_allclose(np.asanyarray(nib.load(tmp_path / "ox" / "PROB_series.nii.gz").dataobj),
                               np.asanyarray(nib.load(tmp_path / "keras" / "PROB_series.nii.gz").dataobj), atol=1e-4)
    seg_ours, seg_keras = (pydicom.dcmread(tmp_path / d / "SEG_series.dcm") for d in ("ox", "keras"))
    np.testing.assert_array_equal(seg_ours.pixel_array, seg_keras.pixel_array)
