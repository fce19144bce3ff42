"""Segment the lungs in your own CT volumes: NIfTI volumes (or DICOM CT series) in HU -> NIfTI lung masks.

For each input volume (``.nii`` or ``.nii.gz``; axis 0 is the slice axis as in the Kaggle dataset, other
layouts with ``--slice-axis``; or a folder holding ONE DICOM CT series, see below) the steps are exactly
evaluate_performance.py's (``lung/segment.py``, one implementation), with the leak-free FOV, since a new
volume has no ground truth:

1. HU clipped to [-512, 512], min-max scaled over the whole volume to 0..255 (prepare_data.py);
2. the network's around-lung probabilities ``p`` of every slice (input ``/ 255``; ``--tta flip`` averages
   over the slice's flips);
3. the body FOV from the image alone: ``image > 0`` eroded 15x15, holes filled (5x5 structure);
4. lung = FOV AND NOT (p > 0.5), the original's estimate;
5. optional post-processing of the 3-D mask: ``--min-size`` (drop connected regions of fewer voxels) and
   ``--keep-largest K`` (keep the K largest, e.g. 2 for two lungs); both off by default.

Outputs in ``--out-dir`` (required, as nnU-Net's ``-o``), named as
the dataset names masks: ``IMG_<id>.nii.gz`` -> ``MASK_<id>.nii.gz`` (any other ``<name>.nii[.gz]`` ->
``MASK_<name>.nii.gz``), uint8, lung = ``--mask-value`` (255, as the dataset's masks) else 0, with the input's
shape, affine and header (data type set to uint8, no scaling). ``--save-probabilities`` adds
``PROB_<id>.nii.gz`` (float32 lung score ``FOV * (1 - p)``; >= 0.5 is the mask before post-processing),
``--overlay`` ``MASK_<id>_overlay.png`` (five slices: CT | CT with the mask in red), and ``run.json`` records
the git commit, the weights file and its SHA-256, the options and the inputs. Existing outputs are refused
without ``--overwrite``; a bad input stops with one line naming it and writes nothing for it (``--skip-bad``:
the bad inputs are listed at the end, the others written, exit status 1). A folder input contributes its
``*.nii`` / ``*.nii.gz`` files except ``MASK_*`` and ``PROB_*`` (the dataset's masks, this script's outputs).

A K-class run (``train_lung.py --num-classes K``, K > 2, trained on label-map targets): step 2 gives the K-channel
softmax of every slice and the mask is its argmax, a LABEL MAP 0..K-1 (``MASK_<id>.nii.gz``, uint8, the labels
as they are; steps 3-5 and ``--mask-value``, ``--min-size``, ``--keep-largest``, ``--dicom-seg`` belong to the
binary lung mask and are refused); ``--save-probabilities`` writes the softmax as a 4-D ``PROB_<id>.nii.gz``
(the volume's three axes, then K; float32) and ``--overlay`` paints the labels in their palette colours.

DICOM: a folder without NIfTI volumes that holds DICOM files is one CT series (``common.data.dicom``): its
slices sorted along the slice normal by ImagePositionPatient, HU = stored value x RescaleSlope +
RescaleIntercept, then the same steps as a NIfTI volume (slices = the DICOM rows x columns). Its mask is
``MASK_<folder name>.nii.gz`` in the layout (slices, rows, columns) with the series' geometry (the affine maps
the voxels where the series lies, the zooms are the spacing between slice positions and the pixel spacing);
``--dicom-seg`` also writes ``SEG_<folder name>.dcm``, a DICOM Segmentation object referencing the series (for
3D Slicer, OHIF, ...). A folder with several series, slices of different sizes, missing slices, compressed
pixel data that no installed decoder reads, or files that are not CT slices stops with one line naming the
series or the file.

Examples::

    python lung/predict.py ~/ct/IMG_0005.nii.gz --out-dir ~/ct_masks   # weights/lung/bcdu_net_d3/best.keras
    python lung/predict.py ~/ct/ --out-dir ~/ct_masks --keep-largest 2 --overlay
    python lung/predict.py "scans/*.nii.gz" --out-dir masks --model my_run/best.keras --tta flip --skip-bad
    python lung/predict.py scan.nii.gz --out-dir masks --slice-axis 2 --init-weights ~/Downloads/weight_lung
    python lung/predict.py ~/dicom/CT_series_3/ --out-dir masks --dicom-seg   # one DICOM series per folder
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data import dicom
from common.data.io import ImageReadError
from common.legacy_weights import add_init_weights_argument
from common.postprocess import add_postprocess_arguments
from common.predict import add_predict_arguments, collect_inputs, overlay_image, run_inputs
from lung.prepare_data import EROSION_SIZE, FILL_SIZE, LUNG_VALUE, _load
from lung.task import DEFAULT_MODEL, INFERENCE, MODELS

BATCH_SIZE = INFERENCE["batch_size"]

EXTENSIONS = (".nii.gz", ".nii")
SKIPPED_PREFIXES = ("MASK_", "PROB_")  # ground truth and outputs beside the volumes in a folder


def is_dicom_series(path):
    """True for a folder that holds DICOM files and no NIfTI volume: one input, a DICOM series."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = [p for p in path.iterdir() if p.is_file()]
    if any(p.name.lower().endswith(EXTENSIONS) and not p.name.startswith(SKIPPED_PREFIXES) for p in files):
        return False
    return any(dicom.is_dicom_file(p) for p in files)


def inputs_of(specs):
    """The volumes named by files, folders and glob patterns (``common.predict.collect_inputs``); from a
    folder, ``MASK_*`` and ``PROB_*`` files (the dataset's masks, this script's outputs) are left out. A
    folder of DICOM files (:func:`is_dicom_series`) is one input."""
    files, seen = [], set()
    for spec in specs:
        if is_dicom_series(spec):
            found = [Path(spec)]
        elif dicom.is_dicom_file(spec):
            raise ImageReadError(f"{spec}: a DICOM file; give the folder that holds its whole series")
        else:
            found = collect_inputs([spec], EXTENSIONS)
        if Path(spec).is_dir():
            found = [p for p in found if not p.name.startswith(SKIPPED_PREFIXES)]
            if not found:
                raise ImageReadError(f"{spec}: no NIfTI volumes or DICOM files in this folder (only "
                                     f"{'/'.join(p + '*' for p in SKIPPED_PREFIXES)} files)")
        for path in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append(path)
    return files


def volume_id(path):
    """``IMG_0001.nii.gz`` -> ``0001``; ``scan.nii`` -> ``scan``."""
    name = path.name
    for ext in EXTENSIONS:
        if name.lower().endswith(ext):
            name = name[:-len(ext)]
            break
    return name[len("IMG_"):] if name.startswith("IMG_") else name


def output_names(path, overlay=False, probabilities=False, dicom_seg=False):
    """The files written for the input ``path`` (inside ``--out-dir``): the mask first, the overlay last
    (``SEG_<id>.dcm`` with ``dicom_seg`` for a DICOM series folder)."""
    vol_id = volume_id(path)
    names = [f"MASK_{vol_id}.nii.gz"]
    if probabilities:
        names.append(f"PROB_{vol_id}.nii.gz")
    if dicom_seg and Path(path).is_dir():
        names.append(f"SEG_{vol_id}.dcm")
    if overlay:
        names.append(f"MASK_{vol_id}_overlay.png")
    return names


def read_volume(path, slice_axis=0):
    """``(nibabel image, voxels)`` with the slice axis first ``(S, H, W)``; refuses what cannot be segmented
    (unreadable or truncated files, NaN/inf voxels, not 3-D) with an ``ImageReadError`` naming the file."""
    img = _load(path, data=False)
    shape = tuple(img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or min(shape) < 1:
        raise ImageReadError(f"{path}: expected a 3-D CT volume, got shape {tuple(img.shape)}")
    voxels = _load(path).reshape(shape)  # readable to the end, finite
    return img, np.moveaxis(voxels, slice_axis, 0)


def read_dicom_volume(folder):
    """``(template image, HU (S, rows, cols), series)`` of the DICOM CT series in ``folder``
    (``common.data.dicom.read_dicom_series``); the template is a NIfTI image of the series' shape and geometry
    for :func:`nifti_writer` (slice axis 0)."""
    hu, series = dicom.read_dicom_series(folder)
    return dicom.nifti_like(series), hu, series


def dicom_seg_writer(lung, series, network_name, weights):
    """A ``write(tmp_path)`` of the DICOM Segmentation (one "Lung" segment) of the mask ``lung`` over
    ``series``; built here, so a series highdicom refuses fails before anything is written."""
    from pydicom.sr.codedict import codes

    from common.provenance import sha256_file

    version = sha256_file(weights)[:16] if Path(weights).is_file() else Path(weights).name
    seg = dicom.segmentation(lung, series, label="Lung", category=codes.SCT.AnatomicalStructure,
                             property_type=codes.SCT.Lung, algorithm_name=f"BCDU-Net lung {network_name}",
                             algorithm_version=version, manufacturer="BCDU-Net Keras 3 reproduction",
                             series_description="Lung (BCDU-Net)")
    return lambda tmp: seg.save_as(tmp, enforce_file_format=True)


def segment_volume(segmenter, voxels, **options):
    """The lung mask of one volume ``(S, H, W)`` in HU, as evaluate_performance.py estimates it (leak-free FOV):
    ``segmenter.predict`` (``lung.task.segment``). Returns ``{"images": scaled slices float32, "prob":
    around-lung probabilities, "fov": body FOV, "score": lung score FOV*(1-p) float32, "lung": bool mask after
    the optional post-processing}``."""
    result = segmenter.predict(voxels, **options)
    return {"images": result["images"], "prob": result["around_lung"], "fov": result["fov"], "score": result["prob"],
            "lung": result["mask"]}


def nifti_writer(array, like, dtype, slice_axis=0):
    """A ``write(tmp_path)`` for ``common.predict.run_inputs``: ``array`` (slice axis first) as NIfTI with
    ``like``'s affine and header, in ``like``'s layout, data type ``dtype`` without scaling. An array with a
    trailing class axis (S, H, W, K) becomes a 4-D volume (``like``'s three axes, then K)."""
    import nibabel as nib

    array = np.asarray(array).astype(dtype)
    if array.ndim == 4:  # K-class probabilities: the class axis last
        array = np.moveaxis(array, 0, slice_axis).reshape(tuple(like.shape[:3]) + array.shape[3:])
    else:
        array = np.moveaxis(array, 0, slice_axis).reshape(like.shape)
    out = nib.Nifti1Image(array, like.affine, header=like.header)
    out.set_data_dtype(dtype)
    out.header.set_slope_inter(1, 0)
    return lambda tmp: nib.save(out, tmp)


def overlay_panel(images, lung, n=5, num_classes=2):
    """Up to five slices spread over those with lung (or the whole volume), each ``CT | CT + mask in red``,
    stacked vertically (uint8 RGB). ``num_classes`` > 2: ``lung`` is a label map, painted in its palette colours."""
    from common.predict import label_colours

    with_lung = np.flatnonzero(lung.reshape(len(lung), -1).any(axis=1))
    pool = with_lung if len(with_lung) else np.arange(len(lung))
    picks = sorted(set(pool[np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)].tolist()))
    ct = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    paint = (lambda z: label_colours(lung[z], num_classes)) if num_classes > 2 else (lambda z: lung[z])
    return np.concatenate([overlay_image(ct[z], paint(z)) for z in picks], axis=0)


def build_parser():
    """The command line (inference defaults = evaluate_performance.py's, i.e. the original's)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predict_arguments(parser, default_run_dir="weights/lung/<network>[_bidirectional]")
    add_init_weights_argument(parser)
    parser.add_argument("--network", choices=MODELS, default=DEFAULT_MODEL,
                        help="architecture for the default --run-dir and for --init-weights (default: %(default)s)")
    parser.add_argument("--bidirectional", action="store_true",
                        help="the network was trained with --bidirectional (default --run-dir, --init-weights)")
    parser.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=0,
                        help="array axis of the slices as nibabel reads the file (default: %(default)s, the "
                             "Kaggle dataset's layout; 2 for the usual (x, y, z) NIfTI; NIfTI inputs only: a "
                             "DICOM series is read as (slices, rows, columns))")
    parser.add_argument("--mask-value", type=int, choices=(1, 255), default=LUNG_VALUE,
                        help="value of lung voxels in the masks (default: %(default)s, as the dataset's masks)")
    parser.add_argument("--erosion-size", type=int, default=EROSION_SIZE,
                        help="body erosion of the FOV (default: %(default)s, the original's)")
    parser.add_argument("--fill-size", type=int, default=FILL_SIZE,
                        help="hole-filling structure of the FOV (default: %(default)s, the original's)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="slices per batch (default: %(default)s)")
    add_postprocess_arguments(parser, min_size=0, keep_largest=0)
    parser.add_argument("--dicom-seg", action="store_true",
                        help="for a DICOM series input, also write SEG_<folder>.dcm, a DICOM Segmentation object "
                             "(opens in 3D Slicer, OHIF, ...)")
    return parser


def check_options(args):
    for option, value in (("--batch-size", args.batch_size), ("--erosion-size", args.erosion_size),
                          ("--fill-size", args.fill_size)):
        if value < 1:
            raise cli.option_error(option, f"{value} must be at least 1")
    for option, value in (("--min-size", args.min_size), ("--keep-largest", args.keep_largest)):
        if value < 0:
            raise cli.option_error(option, f"{value} must be 0 (off) or positive")
    if args.init_weights is not None and (args.run_dir is not None or args.model is not None or args.onnx is not None):
        raise cli.option_error("--init-weights", "give it alone, without --run-dir, --model or --onnx")


def load_segmenter_of(args):
    """``(segmenter, weights files)`` of the options: ``--onnx``, ``--init-weights``, ``--model`` or ``--run-dir``."""
    from common.predict import segmenter_from_args

    model = checkpoint = default_run = None
    if args.init_weights is not None:
        from lung.segment import load_network

        model = load_network(init_weights=args.init_weights, model_name=args.network, bidirectional=args.bidirectional,
                             mixed_precision=args.mixed_precision)
        checkpoint = args.init_weights
    elif args.onnx is None and args.model is None and args.run_dir is None:
        from lung.train_lung import default_run_dir

        default_run = default_run_dir(args.network, args.bidirectional)
    return segmenter_from_args(args, "lung", default_run_dir=default_run, model=model, checkpoint=checkpoint,
                               erosion_size=args.erosion_size, fill_size=args.fill_size, batch_size=args.batch_size,
                               min_size=args.min_size, keep_largest=args.keep_largest)


def main(argv=None):
    """Returns the exit status: 0, or 1 when ``--skip-bad`` skipped an input."""
    args = build_parser().parse_args(argv)
    check_options(args)
    files = inputs_of(args.inputs)
    if args.dicom_seg and not any(p.is_dir() for p in files):
        raise cli.option_error("--dicom-seg", "needs a DICOM series folder among the inputs (it writes a DICOM "
                                              "Segmentation over the series)")
    segmenter, weights = load_segmenter_of(args)
    classes = segmenter.num_classes
    if classes > 2:  # a K-class run: label maps, none of the binary lung mask's steps
        for option, given in (("--min-size", args.min_size), ("--keep-largest", args.keep_largest),
                              ("--dicom-seg", args.dicom_seg), ("--mask-value", args.mask_value != LUNG_VALUE)):
            if given:
                raise cli.option_error(option, f"applies to the binary lung mask; {segmenter.name} has {classes} "
                                               f"classes and writes label maps 0..{classes - 1}")

    def process(path):
        series, axis = None, args.slice_axis
        if path.is_dir():  # a DICOM series: the same steps, a mask with the series' geometry
            img, voxels, series = read_dicom_volume(path)
            axis = 0
        else:
            img, voxels = read_volume(path, args.slice_axis)
        result = segment_volume(segmenter, voxels)
        names = output_names(path, args.overlay, args.save_probabilities)
        mask = result["lung"] if classes > 2 else result["lung"] * np.uint8(args.mask_value)  # K classes: labels
        outputs = {names[0]: nifti_writer(mask, img, np.uint8, axis)}
        if args.save_probabilities:
            outputs[names[1]] = nifti_writer(result["score"], img, np.float32, axis)
        if args.dicom_seg and series is not None:
            outputs[f"SEG_{volume_id(path)}.dcm"] = dicom_seg_writer(result["lung"], series, segmenter.name,
                                                                      weights[0])
        if args.overlay:
            outputs[names[-1]] = overlay_panel(result["images"], result["lung"], num_classes=classes)
        return outputs

    return run_inputs(files, process, args=args, model_name=segmenter.name, weights=weights,
                      outputs=lambda p: output_names(p, args.overlay, args.save_probabilities, args.dicom_seg),
                      extra={"fov": "body (leak-free)", "task": "lung"})


if __name__ == "__main__":
    sys.exit(cli.run(main))
