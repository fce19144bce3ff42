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
    split.json                         volume ids, <id>:<slice> of every kept slice per part, settings
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

SLICE_SIZE = 512
HU_RANGE = (-512, 512)
EROSION_SIZE, FILL_SIZE = 15, 5
TRAIN_FRACTION = 0.7
LUNG_VALUE = 255
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


def volume_pairs(data_dir):
    """Sorted ``[(id, image path, mask path)]`` of ``<data_dir>/3d_images``; a missing mask raises."""
    folder = Path(data_dir) / "3d_images"
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: folder not found (expected <data-dir>/3d_images/IMG_<id>.nii.gz "
                              "with MASK_<id>.nii.gz)")
    images = sorted(p for p in folder.glob("IMG_*.gz") if p.is_file())
    if not images:
        raise DataLayoutError(f"{folder}: no IMG_<id>.nii.gz volumes")
    pairs = []
    for image in images:
        mask = image.with_name("MASK_" + image.name[len("IMG_"):])
        if not mask.is_file():
            raise DataLayoutError(f"{image}: mask {mask.name} not found")
        pairs.append((image.name[len("IMG_"):].split(".")[0], image, mask))
    return pairs


def _load(path, data=True):
    """A NIfTI file's proxy (``data=False``: header only) or its voxels; unreadable files raise ImageReadError."""
    import nibabel as nib

    try:
        img = nib.load(path)
        return np.asanyarray(img.dataobj) if data else img
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read NIfTI volume ({exc.__class__.__name__}: {exc})") from None


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


def prepare(data_dir, work_dir, slice_size=SLICE_SIZE, erosion_size=EROSION_SIZE, fill_size=FILL_SIZE,
            train_fraction=TRAIN_FRACTION, verbose=True):
    """Read, convert, split and save every volume; returns the summary written to ``split.json``."""
    pairs = volume_pairs(data_dir)
    kept = {}
    for vol_id, image_path, mask_path in tqdm(pairs, desc="checking masks", disable=not verbose):
        check_shapes(image_path, mask_path, slice_size)
        mask = _load(mask_path)
        other = np.count_nonzero((mask != 0) & (mask != LUNG_VALUE))
        if other:
            print(f"warning: {mask_path}: {other} nonzero voxels are not {LUNG_VALUE}; as in the original they "
                  "select slices but are not lung", file=sys.stderr)
        kept[vol_id] = lung_slices(mask)
    n = sum(len(k) for k in kept.values())
    n_train = int(math.floor(n * train_fraction))
    if not 0 < n_train < n:
        raise DataLayoutError(f"{Path(data_dir) / '3d_images'}: {n} slices with lung cannot be split "
                              f"{train_fraction:g}/{1 - train_fraction:g} into two non-empty parts")
    names = [f"{vol_id}:{z}" for vol_id, zs in kept.items() for z in zs]
    work_dir = Path(work_dir)
    with contextlib.ExitStack() as stack:
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
    summary = {"volumes": list(kept), "slice_size": slice_size, "erosion_size": erosion_size,
               "fill_size": fill_size, "train_fraction": train_fraction, "hu_range": list(HU_RANGE),
               "n_train": n_train, "n_test": n - n_train, "train": names[:n_train], "test": names[n_train:]}
    with atomic_path(work_dir / "split.json") as tmp:
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
        arrays[key] = np.load(path, mmap_mode="r")
    return arrays


def main(argv=None):
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
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.slice_size % 8:
        parser.error("--slice-size must be divisible by 8 (three 2x2 poolings in BCDU-Net)")
    if args.erosion_size < 1 or args.fill_size < 1:
        parser.error("--erosion-size and --fill-size must be positive")
    s = prepare(args.data_dir, args.work_dir, args.slice_size, args.erosion_size, args.fill_size,
                args.train_fraction, not args.quiet)
    print(f"Saved {s['n_train']} train / {s['n_test']} test slices of {len(s['volumes'])} volumes to "
          f"{args.work_dir}")
    return s


if __name__ == "__main__":
    cli.run(main)
