"""DICOM CT series -> a volume in Hounsfield units with its geometry, and masks back as DICOM Segmentations.

* :func:`read_dicom_series` reads the folder of ONE series (one file per slice, pydicom): the slices sorted by
  their ImagePositionPatient projected on the slice normal (ImageOrientationPatient's row x column
  directions), HU = stored value x RescaleSlope + RescaleIntercept (the modality LUT), as a float32 array
  ``(slices, rows, columns)``, and a :class:`Series` with the affine in nibabel's convention (RAS+ mm of the
  array index ``(slice, row, column)``: the NIfTI written with it lies where the series lies), the voxel
  spacing (``(between slice positions, between rows, between columns)`` mm, for surface distances) and the
  slice thickness of the headers.
* :func:`segmentation` builds a DICOM Segmentation object (highdicom) of a mask of that volume, referencing
  the series, for viewers such as 3D Slicer or OHIF.

Whatever cannot be read as one regular volume is refused with a ``UserError`` naming the folder or the file:
a file that is not DICOM, a DICOM object that is not a CT image (no pixels, another modality, a multi-frame
object), several series in the folder, slices of different sizes, orientations or pixel spacings, two slices
at one position, missing slices (a gap in the positions), unevenly spaced or tilted slices, and pixel data
compressed in a format none of the installed decoders reads. Hidden files (``.name``) are ignored.

Only NumPy is imported at module level; pydicom, highdicom and nibabel when a function needs them.
"""

import dataclasses
from pathlib import Path

import numpy as np

from common.errors import UserError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MISSING_GAP = 1.5  # a gap of more than 1.5 slice spacings between two positions: slices are missing
SPACING_TOLERANCE = 0.1  # other gaps may differ from the spacing by 10 % (rounded positions), no more
DECODER_HINT = "install a decoder (pip install python-gdcm, or pylibjpeg with its plugins) or decompress " \
               "the series first (gdcmconv --raw, dcmdjpeg)"


@dataclasses.dataclass(frozen=True)
class Series:
    """One DICOM series read by :func:`read_dicom_series`; every sequence is in the volume's slice order.

    Attributes:
        folder: the series folder.
        uid: SeriesInstanceUID.
        files: the slice files, sorted along the slice normal (the volume's axis 0).
        headers: their datasets without pixel data (pydicom), same order.
        affine: 4x4, RAS+ mm of the array index ``(slice, row, column)`` (nibabel's convention).
        spacing: ``(slice, row, column)`` spacing in mm: the distance between consecutive slice positions
            (for a single slice: ``SliceThickness``, else ``SpacingBetweenSlices``, else 1), then
            PixelSpacing (between rows, between columns).
        slice_thickness: SliceThickness of the headers in mm (None when absent); may differ from the spacing
            between positions (overlapping or gapped reconstructions): distances use ``spacing``.
    """

    folder: Path
    uid: str
    files: tuple
    headers: tuple
    affine: np.ndarray
    spacing: tuple
    slice_thickness: float | None

    @property
    def shape(self):
        return (len(self.files), int(self.headers[0].Rows), int(self.headers[0].Columns))


def is_dicom_file(path):
    """True when ``path`` is a file with the DICOM preamble (``DICM`` at byte 128) or a ``.dcm`` name."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def series_files(folder):
    """The files of a series folder (not recursive), sorted by name; hidden files are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (a DICOM series is read from the folder of its files)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UserError(f"{folder}: no files in this folder (expected the DICOM files of one CT series)")
    return files


def _header(path):
    """The dataset of ``path`` without pixel data; ``UserError`` for anything that is not a CT image file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise UserError(f"{path}: not a DICOM file; a series folder must hold only the files of one CT "
                        "series") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: cannot read the DICOM file ({exc.__class__.__name__}: "
                        f"{' '.join(str(exc).split())[:200]})") from None
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if "Rows" not in ds or "Columns" not in ds:
        kind = getattr(pydicom.uid.UID(sop_class), "name", sop_class) if sop_class else "object"
        raise UserError(f"{path}: a DICOM {kind} without an image, not a CT slice; move it out of the series "
                        "folder")
    modality = str(ds.get("Modality", "") or "none")
    if modality != "CT":
        raise UserError(f"{path}: modality {modality}, not CT; the series must be a CT in Hounsfield units")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    enhanced = sop_class.startswith(CT_IMAGE_STORAGE + ".")  # Enhanced / Legacy Converted Enhanced CT
    if frames > 1 or enhanced:
        raise UserError(f"{path}: a multi-frame (enhanced) CT object of {frames} frames; only series of one "
                        "file per slice are read (convert it, e.g. with dcm2niix, and give the NIfTI file)")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise UserError(f"{path}: {ds.SamplesPerPixel} samples per pixel (colour), not a grey-level CT slice")
    for keyword, size in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2)):
        value = ds.get(keyword)
        if value is None or len(value) != size:
            raise UserError(f"{path}: no valid {keyword}; the slice cannot be placed in the volume")
    return ds


def _one_series(folder, paths, headers):
    """The headers of the single series in ``folder``; ``UserError`` naming the series when there are more."""
    uids = {}
    for path, ds in zip(paths, headers):
        uids.setdefault(str(ds.get("SeriesInstanceUID", "") or "(no SeriesInstanceUID)"), []).append(path)
    if len(uids) > 1:
        listed = ", ".join(f"{uid} ({len(files)} files, e.g. {files[0].name})"
                           for uid, files in sorted(uids.items(), key=lambda kv: -len(kv[1])))
        raise UserError(f"{folder}: holds {len(uids)} series: {listed}; put each series in its own folder "
                        "and give the folder of one")
    return next(iter(uids))


def _check_same(folder, paths, headers, describe, what):
    """``UserError`` naming the first file whose ``describe(ds)`` differs from the first file's."""
    first = describe(headers[0])
    for path, ds in zip(paths[1:], headers[1:]):
        value = describe(ds)
        if not np.allclose(value, first, rtol=0, atol=1e-4):
            raise UserError(f"{path}: {what} {_fmt(value)} differs from the series' {_fmt(first)} "
                            f"({paths[0].name}); a series folder must hold slices of one volume")


def _fmt(value):
    return "x".join(f"{v:g}" for v in np.ravel(value))


def _geometry(folder, paths, headers):
    """``(order, affine, spacing)``: the slices' order along the normal, the RAS affine of (slice, row,
    column) and the (slice, row, column) spacing; refuses duplicate, missing, uneven or tilted slices."""
    orientation = np.asarray(headers[0].ImageOrientationPatient, np.float64)
    along_row, along_col = orientation[:3], orientation[3:]  # directions of increasing column / row index
    normal = np.cross(along_row, along_col)
    if abs(np.linalg.norm(normal) - 1) > 1e-3 or abs(along_row @ along_col) > 1e-3:
        raise UserError(f"{paths[0]}: ImageOrientationPatient {_fmt(orientation)} is not two orthogonal unit "
                        "vectors")
    row_spacing, col_spacing = (float(v) for v in headers[0].PixelSpacing)
    positions = np.array([np.asarray(ds.ImagePositionPatient, np.float64) for ds in headers])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    names = [paths[i].name for i in order]
    if len(order) > 1:
        gaps = np.diff(along)
        same = np.flatnonzero(gaps < 1e-3)
        if len(same):
            i = same[0]
            raise UserError(f"{folder}: {names[i]} and {names[i + 1]} lie at the same position "
                            f"({along[i]:g} mm along the slice normal); the folder holds two acquisitions or "
                            "a duplicate: keep one")
        spacing = float(np.median(gaps))
        if gaps.max() > MISSING_GAP * spacing:
            i = int(np.argmax(gaps))
            missing = int(round(gaps[i] / spacing)) - 1
            raise UserError(f"{folder}: missing slices: a gap of {gaps[i]:g} mm between {names[i]} and "
                            f"{names[i + 1]} where the slices are {spacing:g} mm apart (about {missing} "
                            f"slice{'s' if missing != 1 else ''} missing); copy the whole series")
        uneven = np.flatnonzero(np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing)
        if len(uneven):
            i = uneven[0]
            raise UserError(f"{folder}: uneven slice spacing: {gaps[i]:g} mm between {names[i]} and "
                            f"{names[i + 1]}, {spacing:g} mm elsewhere; resample the series to even spacing")
        step = (positions[-1] - positions[0]) / (len(positions) - 1)
        drift = positions - positions[0] - np.outer(np.arange(len(positions)), step)
        tilt = np.linalg.norm(step - (step @ normal) * normal)
        if tilt > 0.01 * (step @ normal) or np.abs(drift).max() > 0.5 * min(row_spacing, col_spacing):
            raise UserError(f"{folder}: the slices are not stacked along their normal (gantry tilt or sheared "
                            "positions); convert the series with dcm2niix (tilt correction) and give the NIfTI "
                            "file")
        slice_step, slice_spacing = step, float(step @ normal)
    else:
        ds = headers[0]
        slice_spacing = float(ds.get("SliceThickness") or ds.get("SpacingBetweenSlices") or 1.0)
        slice_step = slice_spacing * normal
    lps = np.eye(4)
    lps[:3, 0] = slice_step
    lps[:3, 1] = along_col * row_spacing
    lps[:3, 2] = along_row * col_spacing
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM's LPS -> nibabel's RAS
    return order, affine, (slice_spacing, row_spacing, col_spacing)


def _check_decoder(path, ds):
    """``UserError`` when the pixel data's transfer syntax has no installed decoder."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UserError(f"{path}: pixel data in transfer syntax {syntax} ({syntax.name}), which pydicom cannot "
                        f"decode; {DECODER_HINT}") from None
    if not decoder.is_available:
        raise UserError(f"{path}: pixel data compressed as {syntax.name}, which the installed decoders cannot "
                        f"read; {DECODER_HINT}")


def _hounsfield(path):
    """The slice's HU (float32): stored values through the modality LUT (RescaleSlope / RescaleIntercept)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # read once already (header), so the file changed or its pixel data is broken
        raise UserError(f"{path}: cannot read the DICOM file ({exc.__class__.__name__}: "
                        f"{' '.join(str(exc).split())[:200]})") from None
    if "PixelData" not in ds:
        raise UserError(f"{path}: no pixel data (FloatPixelData and others are not CT slices)")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom's decoders raise many kinds (ValueError, RuntimeError, ...)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        what = f" ({syntax.name})" if syntax is not None else ""
        raise UserError(f"{path}: cannot decode the pixel data{what}: {exc.__class__.__name__}: "
                        f"{' '.join(str(exc).split())[:200]}") from None
    return np.asarray(apply_modality_lut(stored, ds), np.float32)


def read_dicom_series(folder):
    """``(hu, series)``: the CT series in ``folder`` as float32 HU ``(slices, rows, columns)`` and its
    :class:`Series` (files, headers, affine, spacing). Raises ``UserError`` naming the folder or the file for
    anything that is not one regular CT series (see the module docstring)."""
    folder = Path(folder)
    paths = series_files(folder)
    headers = [_header(path) for path in paths]
    uid = _one_series(folder, paths, headers)
    _check_same(folder, paths, headers, lambda ds: (int(ds.Rows), int(ds.Columns)), "slice size")
    _check_same(folder, paths, headers, lambda ds: np.asarray(ds.ImageOrientationPatient, np.float64),
                "ImageOrientationPatient")
    _check_same(folder, paths, headers, lambda ds: np.asarray(ds.PixelSpacing, np.float64), "PixelSpacing")
    order, affine, spacing = _geometry(folder, paths, headers)
    paths, headers = [paths[i] for i in order], [headers[i] for i in order]
    for path, ds in zip(paths, headers):
        _check_decoder(path, ds)
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    hu = np.empty((len(paths), rows, cols), np.float32)
    for i, path in enumerate(paths):
        hu[i] = _hounsfield(path).reshape(rows, cols)
    thickness = headers[0].get("SliceThickness")
    series = Series(folder=folder, uid=uid, files=tuple(paths), headers=tuple(headers), affine=affine,
                    spacing=spacing, slice_thickness=float(thickness) if thickness not in (None, "") else None)
    return hu, series


def nifti_like(series):
    """A nibabel image of the series' shape and geometry without voxels (a template for masks written with
    its affine and header): sform and qform code 1 (scanner), units mm."""
    import nibabel as nib

    img = nib.Nifti1Image(np.broadcast_to(np.int16(0), series.shape), series.affine)
    img.header.set_qform(series.affine, code=1)
    img.header.set_sform(series.affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def segmentation(mask, series, *, label, category, property_type, algorithm_name, algorithm_version,
                 software_version="", manufacturer="", series_description="Segmentation"):
    """A binary DICOM Segmentation (highdicom) of ``mask`` ``(slices, rows, columns)`` over ``series``.

    One segment (``label``, coded ``category`` / ``property_type``, e.g. ``codes.SCT.AnatomicalStructure`` /
    ``codes.SCT.Lung``), made by an automatic algorithm named ``algorithm_name`` / ``algorithm_version``; one
    frame per source slice (empty frames kept), new series and instance UIDs, saved with ``.save_as(path)``.
    ``UserError`` naming the series when highdicom refuses the source headers.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mask = np.asarray(mask) != 0
    if mask.shape != series.shape:
        raise ValueError(f"mask of shape {mask.shape} for a series of shape {series.shape}")
    algorithm = hd.AlgorithmIdentificationSequence(name=algorithm_name[:64], version=algorithm_version[:64],
                                                   family=codes.cid7162.ArtificialIntelligence)
    description = hd.seg.SegmentDescription(segment_number=1, segment_label=label,
                                            segmented_property_category=category,
                                            segmented_property_type=property_type,
                                            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                            algorithm_identification=algorithm)
    try:
        seg = hd.seg.Segmentation(
            source_images=list(series.headers), pixel_array=mask.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[description],
            series_instance_uid=hd.UID(), series_number=int(series.headers[0].get("SeriesNumber") or 0) + 1000,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=manufacturer or "unknown",
            manufacturer_model_name=algorithm_name[:64], software_versions=software_version or algorithm_version,
            device_serial_number="none", omit_empty_frames=False, series_description=series_description)
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        raise UserError(f"{series.folder}: cannot build a DICOM Segmentation of this series "
                        f"({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]})") from None
    return seg
