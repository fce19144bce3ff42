"""Segment the lungs in your own CT volumes: NIfTI volumes in HU -> NIfTI lung masks (the dataset's format).

For each input volume (``.nii`` or ``.nii.gz``; axis 0 is the slice axis as in the Kaggle dataset, other
layouts with ``--slice-axis``) the steps are exactly evaluate_performance.py's (``lung/segment.py``, one
implementation), with the leak-free FOV, since a new volume has no ground truth:

1. HU clipped to [-512, 512], min-max scaled over the whole volume to 0..255 (prepare_data.py);
2. the network's around-lung probabilities ``p`` of every slice (input ``/ 255``; ``--tta flip`` averages
   over the slice's flips);
3. the body FOV from the image alone: ``image > 0`` eroded 15x15, holes filled (5x5 structure);
4. lung = FOV AND NOT (p > 0.5), the original's estimate;
5. optional post-processing of the 3-D mask: ``--min-size`` (drop connected regions of fewer voxels) and
   ``--keep-largest K`` (keep the K largest, e.g. 2 for two lungs); both off by default.

Outputs in ``--out-dir`` (default ``work/lung/predictions/<run folder name or model file stem>``), named as
the dataset names masks: ``IMG_<id>.nii.gz`` -> ``MASK_<id>.nii.gz`` (any other ``<name>.nii[.gz]`` ->
``MASK_<name>.nii.gz``), uint8, lung = ``--mask-value`` (255, as the dataset's masks) else 0, with the input's
shape, affine and header (data type set to uint8, no scaling). ``--save-probabilities`` adds
``PROB_<id>.nii.gz`` (float32 lung score ``FOV * (1 - p)``; >= 0.5 is the mask before post-processing),
``--overlay`` ``MASK_<id>_overlay.png`` (five slices, the mask in red over the CT). Existing outputs are
refused without ``--overwrite``; a bad input stops with one line naming it and writes nothing for it
(``--skip-bad``: the bad inputs are listed at the end, the others written, exit status 1).

Examples::

    python lung/predict.py ~/ct/IMG_0005.nii.gz                       # weights/lung/bcdu_net_d3/best.keras
    python lung/predict.py ~/ct/ --out-dir ~/ct_masks --keep-largest 2 --overlay
    python lung/predict.py "scans/*.nii.gz" --model my_run/best.keras --tta flip --skip-bad
    python lung/predict.py scan.nii.gz --slice-axis 2 --init-weights ~/Downloads/weight_lung
"""

import argparse
import glob
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import ImageReadError, atomic_path
from common.devices import add_precision_arguments
from common.errors import UserError
from common.inference import add_tta_argument
from common.postprocess import add_postprocess_arguments, postprocess_mask
from lung.prepare_data import EROSION_SIZE, FILL_SIZE, LUNG_VALUE, _load, hu_to_grayscale
from lung.segment import (body_fov, estimated_lung, lung_score, load_network, network_for, network_side,
                          predict_around_lung)
from lung.train_lung import BATCH_SIZE, MODELS, default_run_dir

EXTENSIONS = (".nii.gz", ".nii")
SKIPPED_PREFIXES = ("MASK_", "PROB_")  # outputs and ground truth beside the volumes in a folder
DEFAULT_OUT = cli.repo_path("work", "lung", "predictions")


def is_nifti(path):
    return path.name.lower().endswith(EXTENSIONS)


def collect_inputs(specs):
    """Sorted, de-duplicated volume paths from files, folders (their ``*.nii[.gz]`` except ``MASK_*`` and
    ``PROB_*``) and glob patterns. A missing file, a pattern matching nothing or an empty folder raises."""
    files = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p)
                           and not p.name.startswith(SKIPPED_PREFIXES))
            if not found:
                raise UserError(f"{path}: no NIfTI volumes ({', '.join('*' + e for e in EXTENSIONS)}, not "
                                f"{'/'.join(p + '*' for p in SKIPPED_PREFIXES)}) in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(str(spec)):
            found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not found:
                raise UserError(f"{spec}: the pattern matches no file")
            files += found
        else:
            raise FileNotFoundError(2, "not found (give NIfTI files, folders or glob patterns)", str(spec))
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique


def volume_id(path):
    """``IMG_0001.nii.gz`` -> ``0001``; ``scan.nii`` -> ``scan``."""
    name = path.name
    for ext in EXTENSIONS:
        if name.lower().endswith(ext):
            name = name[:-len(ext)]
            break
    return name[len("IMG_"):] if name.startswith("IMG_") else name


def output_paths(path, out_dir, overlay=False, probabilities=False):
    """The files predict writes for the input ``path``: ``mask``, optional ``probabilities`` and ``overlay``."""
    vol_id = volume_id(path)
    out = {"mask": Path(out_dir) / f"MASK_{vol_id}.nii.gz"}
    if probabilities:
        out["probabilities"] = Path(out_dir) / f"PROB_{vol_id}.nii.gz"
    if overlay:
        out["overlay"] = Path(out_dir) / f"MASK_{vol_id}_overlay.png"
    return out


def read_volume(path, slice_axis=0):
    """``(nibabel image, voxels)`` with the slice axis first ``(S, H, W)``; refuses what cannot be segmented
    (unreadable or truncated files, NaN/inf voxels, not 3-D) with an ``ImageReadError`` naming the file."""
    if not is_nifti(path):
        raise ImageReadError(f"{path}: not a NIfTI volume (.nii or .nii.gz)")
    img = _load(path, data=False)
    shape = tuple(img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ImageReadError(f"{path}: expected a 3-D CT volume, got shape {tuple(img.shape)}")
    voxels = _load(path).reshape(shape)  # readable, finite
    if min(shape) < 1:
        raise ImageReadError(f"{path}: empty volume of shape {shape}")
    return img, np.moveaxis(voxels, slice_axis, 0)


def segment_volume(model, voxels, *, erosion_size=EROSION_SIZE, fill_size=FILL_SIZE, batch_size=BATCH_SIZE,
                   tta="none", min_size=0, keep_largest=0, verbose=False):
    """The lung mask of one volume ``(S, H, W)`` in HU, as evaluate_performance.py estimates it (leak-free FOV).

    Returns ``{"images": scaled slices float32, "prob": around-lung probabilities, "fov": body FOV,
    "score": lung score FOV*(1-p) float32, "lung": bool mask after the optional post-processing}``.
    """
    images = np.empty(voxels.shape, np.float32)
    for i in range(0, len(voxels), 64):  # the whole volume's range, 64 slices at a time in float64
        images[i:i + 64] = hu_to_grayscale(voxels, np.arange(i, min(i + 64, len(voxels))))
    prob = predict_around_lung(model, images, batch_size, tta=tta, verbose=verbose)
    fov = body_fov(images, erosion_size, fill_size)
    lung = estimated_lung(prob, fov)
    if min_size > 1 or keep_largest > 0:
        lung = postprocess_mask(lung, min_size=min_size, keep_largest=keep_largest)
    return {"images": images, "prob": prob, "fov": fov, "score": lung_score(prob, fov).astype(np.float32),
            "lung": lung}


def write_nifti(path, array, like, dtype, slice_axis=0):
    """``array`` (slice axis first) as a NIfTI file with ``like``'s affine and header, in ``like``'s layout."""
    import gzip

    import nibabel as nib

    array = np.moveaxis(np.asarray(array).astype(dtype), 0, slice_axis).reshape(like.shape)
    out = nib.Nifti1Image(array, like.affine, header=like.header)
    out.set_data_dtype(dtype)
    out.header.set_slope_inter(1, 0)
    data = out.to_bytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


def overlay_png(path, images, lung, n=5):
    """Five slices spread over those with lung (or over the volume): the CT with the mask in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_lung = np.flatnonzero(lung.reshape(len(lung), -1).any(axis=1))
    pool = with_lung if len(with_lung) else np.arange(len(lung))
    picks = sorted(set(pool[np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)].tolist()))
    fig, axes = plt.subplots(1, len(picks), figsize=(3 * len(picks), 3.2), squeeze=False)
    for ax, z in zip(axes[0], picks):
        ax.imshow(images[z], cmap="gray", vmin=0, vmax=255)
        ax.imshow(np.ma.masked_where(~lung[z], lung[z]), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"slice {z}")
        ax.set_xticks([])
        ax.set_yticks([])
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)


def predict_file(path, networks, args, out_dir):
    """Read, segment and write one volume; returns the written paths. Nothing is written when it fails."""
    img, voxels = read_volume(path, args.slice_axis)
    side = network_side(*voxels.shape[1:])
    if side not in networks:
        networks[side] = network_for(networks["loaded"], side, args.mixed_precision)
    result = segment_volume(networks[side], voxels, erosion_size=args.erosion_size, fill_size=args.fill_size,
                            batch_size=args.batch_size, tta=args.tta, min_size=args.min_size,
                            keep_largest=args.keep_largest, verbose=not args.quiet)
    paths = output_paths(path, out_dir, args.overlay, args.save_probabilities)
    write_nifti(paths["mask"], result["lung"] * np.uint8(args.mask_value), img, np.uint8, args.slice_axis)
    if "probabilities" in paths:
        write_nifti(paths["probabilities"], result["score"], img, np.float32, args.slice_axis)
    if "overlay" in paths:
        overlay_png(paths["overlay"], result["images"], result["lung"])
    return paths


def build_parser():
    """The command line (inference defaults = evaluate_performance.py's, i.e. the original's)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="NIfTI CT volumes in HU: files, folders or glob patterns")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run-dir", type=Path, default=None,
                        help="training run folder (default: weights/lung/<network>[_bidirectional])")
    source.add_argument("--model", type=Path, default=None, metavar="FILE.keras",
                        help="a saved lung network instead of a run folder")
    source.add_argument("--init-weights", type=Path, default=None, metavar="FILE",
                        help="the authors' Keras-2 HDF5 checkpoint (weight_lung, any name) loaded into --network")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="checkpoint of --run-dir (default: %(default)s)")
    parser.add_argument("--network", choices=MODELS, default="bcdu_net_d3",
                        help="architecture for the default --run-dir and --init-weights (default: %(default)s)")
    parser.add_argument("--bidirectional", action="store_true",
                        help="the network was trained with --bidirectional (default --run-dir, --init-weights)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: work/lung/predictions/<run folder name or model stem>)")
    parser.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=0,
                        help="array axis of the slices as nibabel reads the file (default: %(default)s, the "
                             "Kaggle dataset's layout; 2 for the usual (x, y, z) NIfTI)")
    parser.add_argument("--mask-value", type=int, choices=(1, 255), default=LUNG_VALUE,
                        help="value of lung voxels in the masks (default: %(default)s, as the dataset's masks)")
    parser.add_argument("--erosion-size", type=int, default=EROSION_SIZE,
                        help="body erosion of the FOV (default: %(default)s, the original's)")
    parser.add_argument("--fill-size", type=int, default=FILL_SIZE,
                        help="hole-filling structure of the FOV (default: %(default)s, the original's)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="slices per batch (default: %(default)s)")
    add_tta_argument(parser)
    add_postprocess_arguments(parser, min_size=0, keep_largest=0)
    add_precision_arguments(parser, jit_compile=False)
    parser.add_argument("--overlay", action="store_true", help="also write MASK_<id>_overlay.png per volume")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write PROB_<id>.nii.gz, the float32 lung score FOV*(1-p)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable inputs, list them at the end and exit 1 (default: stop at the first)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def check_options(args):
    for option, value in (("--batch-size", args.batch_size), ("--erosion-size", args.erosion_size),
                          ("--fill-size", args.fill_size)):
        if value < 1:
            raise cli.option_error(option, f"{value} must be at least 1")
    for option, value in (("--min-size", args.min_size), ("--keep-largest", args.keep_largest)):
        if value < 0:
            raise cli.option_error(option, f"{value} must be 0 (off) or positive")


def main(argv=None):
    """Returns the exit status: 0, or 1 when ``--skip-bad`` skipped an input."""
    args = build_parser().parse_args(argv)
    check_options(args)
    files = collect_inputs(args.inputs)
    if args.model is not None:
        checkpoint, name = args.model, args.model.stem
    elif args.init_weights is not None:
        checkpoint, name = None, f"init-{args.init_weights.name}"
    else:
        run_dir = args.run_dir or default_run_dir(args.network, args.bidirectional)
        checkpoint = run_dir / f"{args.weights}.keras"
        name = run_dir.name + ("" if args.weights == "best" else f"_{args.weights}")
    out_dir = args.out_dir or DEFAULT_OUT / name
    planned = {path: output_paths(path, out_dir, args.overlay, args.save_probabilities) for path in files}
    if not args.overwrite:
        existing = [p for paths in planned.values() for p in paths.values() if p.exists()]
        if existing:
            raise UserError(f"{existing[0]}: already exists ({len(existing)} outputs in all); pass --overwrite "
                            "to replace them, or another --out-dir")
    names = [p["mask"] for p in planned.values()]
    if len(set(names)) != len(names):
        clash = next(p for p in names if names.count(p) > 1)
        raise UserError(f"{clash}: two inputs would write this mask (same volume id); predict them into "
                        "separate --out-dir folders")
    network = load_network(checkpoint=checkpoint, init_weights=args.init_weights, model_name=args.network,
                           bidirectional=args.bidirectional, mixed_precision=args.mixed_precision)
    networks = {"loaded": network, network.input_shape[1]: network}
    bad = []
    for path in tqdm(files, desc="volumes", disable=args.quiet or len(files) < 2):
        try:
            written = predict_file(path, networks, args, out_dir)
        except UserError as exc:
            if not args.skip_bad:
                raise
            bad.append(cli.error_line(exc))
            continue
        if not args.quiet:
            print(f"{path} -> {written['mask']}")
    print(f"{len(files) - len(bad)} of {len(files)} volumes segmented into {out_dir}")
    if bad:
        print(f"{len(bad)} inputs skipped:\n" + "\n".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
