"""Kaggle "Finding and Measuring Lungs in CT Data" volumes -> the original's train/test arrays (Prepare_data.py).

Reads ``<data-dir>/3d_images/IMG_<id>.nii.gz`` with ``MASK_<id>.nii.gz`` (the 2d_images folder is not used),
volumes in sorted id order, axis 0 as the slice axis, slices of ``--slice-size`` (512, the model input). Per
volume, as the original's ``Reza_functions.return_axials``:

* image = HU clipped to [-512, 512], min-max scaled over the whole volume to [0, 255];
* lung  = 255 where the mask is 255, else 0 (the ground truth);
* body  = (image > 0), each slice eroded with a 15x15 all-ones structuring element (border counts as 0);
* FOV   = each slice of (body OR lung) with its holes filled (structure 5x5 ones);
* target ("around lung", what the network learns) = FOV AND NOT lung.

Only slices whose mask has a nonzero pixel are kept; all kept slices (volume order, then slice order) are
split by position: the first floor(0.7 n) train, the rest test. Volumes are streamed one at a time into
memory-mapped outputs (bounded memory), written to ``--work-dir`` under the original's names:

    data_train.npy / data_test.npy     (n, S, S) float32, 0..255    the scaled CT slices
    mask_train.npy / mask_test.npy     (n, S, S) uint8 0/255        lung ground truth
    Train_maska.npy / Test_maska.npy   (n, S, S) uint8 0/1          around-lung training target
    FOV_tr.npy / FOV_te.npy            (n, S, S) uint8 0/1          FOV (built with the ground truth)
    split.json                         volume ids, voxel spacing, <id>:<slice> of every kept slice per part,
                                       settings

All or nothing: every volume and mask is checked first (a volume without its mask or a mask without its
volume, shapes, unreadable or truncated files, NaN/inf voxels: one line ``error: <file>: <what>``, exit 2),
the arrays are written under temporary names renamed at the end, and a ``--work-dir`` that already holds a
prepared dataset is refused without ``--overwrite``.

Examples::

    python lung/prepare_data.py                                  # data/lung/3d_images -> work/lung/
    python lung/prepare_data.py --data-dir ~/kaggle/finding-lungs-in-ct-data --work-dir /scratch/lung
"""

import argparse
import contextlib
import json
import math
import sys
import zlib
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import cv2
import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, ImageReadError, atomic_path, open_npy_writer
from common.errors import UserError
from lung.task import INFERENCE, INPUT

SLICE_SIZE = INPUT["size"]  # task.py
HU_RANGE = INPUT["hu_range"]  # task.py
EROSION_SIZE, FILL_SIZE = INFERENCE["erosion_size"], INFERENCE["fill_size"]  # task.py
TRAIN_FRACTION = 0.7
LUNG_VALUE = INFERENCE["mask_value"]  # task.py
DEFAULT_DATA = cli.repo_path("data", "lung")
DEFAULT_WORK = cli.repo_path("work", "lung")
# output name -> (part, dtype); part 0 = train, 1 = test
OUTPUTS = {"image": ("data_train", "data_test", np.float32), "lung": ("mask_train", "mask_test", np.uint8),
           "target": ("Train_maska", "Test_maska", np.uint8), "fov": ("FOV_tr", "FOV_te", np.uint8)}


def hu_to_grayscale(volume, slices=None, hu_range=HU_RANGE):
    """HU clipped to ``hu_range``, min-max scaled over the WHOLE volume to [0, 255] (float64), as the original.

    ``slices`` (indices along axis 0) returns only those slices, scaled with the whole volume's range, so a
    large volume is never held in float64 at once.
    """
    volume = np.asarray(volume)
    low, high = np.clip([volume.min(), volume.max()], *hu_range).astype(np.float64)
    part = volume if slices is None else volume[slices]
    return (np.clip(part.astype(np.float64), *hu_range) - low) / max(high - low, 1e-3) * 255.0


def body_mask(images, erosion_size=EROSION_SIZE):
    """(S, H, W) bool: ``images > 0`` eroded slice by slice with a ``k x k`` all-ones element.

    Pixels outside the slice count as background (``scipy.ndimage.binary_erosion``'s default border 0),
    so the body also shrinks away from the slice border.
    """
    images = np.asarray(images)
    kernel = np.ones((erosion_size, erosion_size), np.uint8)
    out = np.empty(images.shape, bool)
    for i, image in enumerate(images):
        out[i] = cv2.erode((image > 0).astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return out


def fill_fov(mask, fill_size=FILL_SIZE):
    """(S, H, W) bool: every slice with its holes filled, the background connected through ``k x k`` steps.

    ``scipy.ndimage.binary_fill_holes(slice, structure=np.ones((k, k)))`` of each slice, computed for the
    whole stack at once (a (1, k, k) structure never connects two slices).
    """
    from scipy.ndimage import binary_fill_holes

    structure = np.ones((1, fill_size, fill_size), bool)
    return binary_fill_holes(np.asarray(mask) != 0, structure=structure)


def lung_targets(images, lung, erosion_size=EROSION_SIZE, fill_size=FILL_SIZE):
    """The original's masks from scaled slices (S, H, W) and the 0/255 lung ground truth.

    Returns ``(fov, around_lung)`` as bool arrays: ``fov`` = holes of (body OR lung) filled,
    ``around_lung`` = fov AND NOT lung (the training target).
    """
    lung = np.asarray(lung) != 0
    fov = fill_fov(body_mask(images, erosion_size) | lung, fill_size)
    return fov, fov & ~lung


def _volume_id(path, prefix):
    """``IMG_0001.nii.gz`` -> ``0001`` (the name after the prefix, without its extensions)."""
    return path.name[len(prefix):].split(".")[0]


def volume_pairs(data_dir):
    """Sorted ``[(id, image path, mask path)]`` of ``<data_dir>/3d_images``.

    A volume without its mask or a mask without its volume (an orphan on either side) raises
    ``DataLayoutError`` naming the first orphan and how many there are.
    """
    folder = Path(data_dir) / "3d_images"
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: folder not found (expected <data-dir>/3d_images/IMG_<id>.nii.gz "
                              "with MASK_<id>.nii.gz)")
    images = sorted(p for p in folder.glob("IMG_*.gz") if p.is_file())
    masks = sorted(p for p in folder.glob("MASK_*.gz") if p.is_file())
    if not images:
        extra = f" (but {len(masks)} MASK_<id> files: are the volumes elsewhere?)" if masks else ""
        raise DataLayoutError(f"{folder}: no IMG_<id>.nii.gz volumes{extra}")
    pairs = []
    no_mask = []
    for image in images:
        mask = image.with_name("MASK_" + image.name[len("IMG_"):])
        if mask.is_file():
            pairs.append((_volume_id(image, "IMG_"), image, mask))
        else:
            no_mask.append(image)
    paired = {mask for _, _, mask in pairs}
    no_image = [mask for mask in masks if mask not in paired]
    if no_mask:
        more = f" ({len(no_mask) - 1} more volumes without a mask)" if len(no_mask) > 1 else ""
        raise DataLayoutError(f"{no_mask[0]}: mask {'MASK_' + no_mask[0].name[len('IMG_'):]} not found{more}; "
                              "add it or move the volume out of 3d_images")
    if no_image:
        more = f" ({len(no_image) - 1} more masks without a volume)" if len(no_image) > 1 else ""
        raise DataLayoutError(f"{no_image[0]}: volume {'IMG_' + no_image[0].name[len('MASK_'):]} not found"
                              f"{more}; add it or move the mask out of 3d_images")
    return pairs


def _load(path, data=True):
    """A NIfTI file's proxy (``data=False``: header only) or its voxels; unreadable files raise ImageReadError.

    Voxels that are NaN or infinite (possible in float volumes or through a NaN scale factor) are refused:
    the HU clipping and min-max scaling would turn them into NaN slices.
    """
    import nibabel as nib

    try:
        img = nib.load(path)
        if not data:
            return img
        voxels = np.asanyarray(img.dataobj)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read NIfTI volume ({exc.__class__.__name__}: {exc})") from None
    check_finite(voxels, path)
    return voxels


def check_finite(voxels, path):
    """Raise ``ImageReadError`` naming ``path`` when ``voxels`` hold NaN or infinite values."""
    if np.issubdtype(voxels.dtype, np.floating) or np.issubdtype(voxels.dtype, np.complexfloating):
        bad = voxels.size - np.count_nonzero(np.isfinite(voxels))
        if bad:
            raise ImageReadError(f"{path}: {bad} voxels are NaN or infinite; replace them (e.g. by the "
                                 "air value -1024 HU) before using the volume")


def voxel_spacing(path):
    """The NIfTI voxel size per array axis (``header.get_zooms()``, mm), as a list of 3 floats."""
    return [float(z) for z in _load(path, data=False).header.get_zooms()[:3]]


def check_shapes(image_path, mask_path, slice_size=SLICE_SIZE):
    """Header check: 3-D, slices (axis 1, 2) ``slice_size`` square, mask of the image's shape. Returns the shape."""
    shape = tuple(_load(image_path, data=False).shape)
    if len(shape) != 3:
        raise ImageReadError(f"{image_path}: expected a 3-D volume (slices, rows, cols), got shape {shape}")
    if shape[1:] != (slice_size, slice_size):
        raise ImageReadError(f"{image_path}: slices are {shape[1]}x{shape[2]} (axis 0 is the slice axis), "
                             f"expected {slice_size}x{slice_size}")
    mask_shape = tuple(_load(mask_path, data=False).shape)
    if mask_shape != shape:
        raise ImageReadError(f"{mask_path}: shape {mask_shape} differs from its volume's {shape}")
    return shape


def lung_slices(mask):
    """Indices of the slices whose mask has a nonzero pixel (the original keeps only those)."""
    return np.flatnonzero(np.asarray(mask).reshape(len(mask), -1).any(axis=1))


def prepared_files(work_dir):
    """The files of a prepared dataset in ``work_dir`` that exist (the arrays and ``split.json``)."""
    names = [name for train, test, _ in OUTPUTS.values() for name in (train, test)]
    return [p for p in [Path(work_dir) / f"{name}.npy" for name in names] + [Path(work_dir) / "split.json"]
            if p.exists()]


def prepare(data_dir, work_dir, slice_size=SLICE_SIZE, erosion_size=EROSION_SIZE, fill_size=FILL_SIZE,
            train_fraction=TRAIN_FRACTION, verbose=True, overwrite=False):
    """Read, convert, split and save every volume; returns the summary written to ``split.json``.

    All or nothing: every volume and mask is read and checked (layout, orphans, shapes, readability, NaN)
    before any output is opened, the outputs are written under temporary names and renamed together at the
    end, and a ``work_dir`` that already holds a prepared dataset is refused unless ``overwrite``.
    """
    existing = prepared_files(work_dir)
    if existing and not overwrite:
        raise UserError(f"{work_dir}: already holds a prepared dataset ({existing[0].name}); pass --overwrite "
                        "to replace it, or another --work-dir")
    pairs = volume_pairs(data_dir)
    kept, spacing = {}, {}
    for vol_id, image_path, mask_path in tqdm(pairs, desc="checking volumes", disable=not verbose):
        check_shapes(image_path, mask_path, slice_size)
        mask = _load(mask_path)
        _load(image_path)  # readable to the end, finite
        other = np.count_nonzero((mask != 0) & (mask != LUNG_VALUE))
        if other:
            print(f"warning: {mask_path}: {other} nonzero voxels are not {LUNG_VALUE}; as in the original they "
                  "select slices but are not lung", file=sys.stderr)
        kept[vol_id] = lung_slices(mask)
        spacing[vol_id] = voxel_spacing(image_path)
        del mask
    n = sum(len(k) for k in kept.values())
    n_train = int(math.floor(n * train_fraction))
    if not 0 < n_train < n:
        raise DataLayoutError(f"{Path(data_dir) / '3d_images'}: {n} slices with lung cannot be split "
                              f"{train_fraction:g}/{1 - train_fraction:g} into two non-empty parts")
    names = [f"{vol_id}:{z}" for vol_id, zs in kept.items() for z in zs]
    summary = {"volumes": list(kept), "slice_size": slice_size, "erosion_size": erosion_size,
               "fill_size": fill_size, "train_fraction": train_fraction, "hu_range": list(HU_RANGE),
               "n_train": n_train, "n_test": n - n_train, "spacing": spacing, "train": names[:n_train],
               "test": names[n_train:]}
    work_dir = Path(work_dir)
    with contextlib.ExitStack() as stack:  # every file keeps a temporary name until all are complete
        out = {key: [stack.enter_context(open_npy_writer(work_dir / f"{name}.npy", (size,) + (slice_size,) * 2,
                                                         dtype))
                     for name, size in ((train, n_train), (test, n - n_train))]
               for key, (train, test, dtype) in OUTPUTS.items()}
        position = 0
        for vol_id, image_path, mask_path in tqdm(pairs, desc="volumes", disable=not verbose):
            zs = kept[vol_id]
            if not len(zs):
                continue
            images = hu_to_grayscale(_load(image_path), zs)
            lung = _load(mask_path)[zs] == LUNG_VALUE
            fov, target = lung_targets(images, lung, erosion_size, fill_size)
            arrays = {"image": images, "lung": lung * np.uint8(255), "target": target, "fov": fov}
            rows = position + np.arange(len(zs))
            for part, (lo, hi) in enumerate(((0, n_train), (n_train, n))):
                sel = (rows >= lo) & (rows < hi)
                for key, array in arrays.items():
                    out[key][part][rows[sel] - lo] = array[sel]
            position += len(zs)
            del images, lung, fov, target, arrays
        tmp = stack.enter_context(atomic_path(work_dir / "split.json"))
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


def read_summary(work_dir=DEFAULT_WORK):
    """The ``split.json`` of a prepared folder (settings and slice names)."""
    path = Path(work_dir) / "split.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run lung/prepare_data.py first")
    return json.loads(path.read_text())


def load_arrays(work_dir, part, keys=("image", "lung", "target", "fov")):
    """Memory-mapped arrays of ``part`` ("train" or "test") by key (see ``OUTPUTS``), each (n, S, S)."""
    index = {"train": 0, "test": 1}[part]
    arrays = {}
    for key in keys:
        path = Path(work_dir) / f"{OUTPUTS[key][index]}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run lung/prepare_data.py first")
        try:
            arrays[key] = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as exc:
            raise DataLayoutError(f"{path}: cannot read the prepared array ({exc.__class__.__name__}: {exc}); "
                                  "run lung/prepare_data.py --overwrite again") from None
    sizes = {key: array.shape[0] for key, array in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise DataLayoutError(f"{Path(work_dir)}: the {part} arrays hold different numbers of slices {sizes}; "
                              "run lung/prepare_data.py --overwrite again")
    return arrays


def build_parser():
    """The command line (defaults = the original's settings; pinned by tests/test_lung.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="the extracted Kaggle dataset, holding 3d_images/ (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="where the arrays and split.json go (default: %(default)s)")
    parser.add_argument("--slice-size", type=int, default=SLICE_SIZE,
                        help="expected slice size in pixels; other volumes are an error (default: %(default)s, "
                             "the real data; smaller only for synthetic volumes)")
    parser.add_argument("--erosion-size", type=int, default=EROSION_SIZE,
                        help="side of the square element eroding the body (default: %(default)s, the original's)")
    parser.add_argument("--fill-size", type=int, default=FILL_SIZE,
                        help="side of the square structure of the hole filling (default: %(default)s, the "
                             "original's)")
    parser.add_argument("--train-fraction", type=float, default=TRAIN_FRACTION,
                        help="first fraction of the kept slices used for training (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a prepared dataset already in --work-dir (default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.slice_size < 8 or args.slice_size % 8:
        raise cli.option_error("--slice-size", f"{args.slice_size} is not a positive multiple of 8 (three 2x2 "
                                               "poolings in BCDU-Net); the real slices are 512")
    for option, value in (("--erosion-size", args.erosion_size), ("--fill-size", args.fill_size)):
        if value < 1:
            raise cli.option_error(option, f"{value} must be a positive number of pixels")
    if not 0 < args.train_fraction < 1:
        raise cli.option_error("--train-fraction", f"{args.train_fraction} must lie strictly between 0 and 1")
    s = prepare(args.data_dir, args.work_dir, args.slice_size, args.erosion_size, args.fill_size,
                args.train_fraction, not args.quiet, overwrite=args.overwrite)
    print(f"Saved {s['n_train']} train / {s['n_test']} test slices of {len(s['volumes'])} volumes to "
          f"{args.work_dir}")
    return s


if __name__ == "__main__":
    cli.run(main)
