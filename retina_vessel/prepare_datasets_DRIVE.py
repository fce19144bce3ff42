"""DRIVE images, manual annotations and FOV masks -> the original's six HDF5 files.

Reads the official DRIVE layout under ``--drive-dir`` (the original's ``./DRIVE``)::

    training/images/<id>_training.tif      RGB, 565 x 584 (W x H), ids 21..40
    training/1st_manual/<id>_manual1.gif   vessel annotation, values exactly {0, 255}
    training/mask/<id>_training_mask.gif   field-of-view (FOV) mask, values exactly {0, 255}
    test/images/<id>_test.tif              ids 01..20
    test/1st_manual/<id>_manual1.gif
    test/mask/<id>_test_mask.gif

(``<id>`` = the first two characters of the image file name; GIFs are read with Pillow.) Writes, like the
original, into ``<work-dir>/DRIVE_datasets_training_testing/``::

    DRIVE_dataset_imgs_{train,test}.hdf5          (N, 3, H, W) float64, 0..255
    DRIVE_dataset_groundTruth_{train,test}.hdf5   (N, 1, H, W) float64, 0/255
    DRIVE_dataset_borderMasks_{train,test}.hdf5   (N, 1, H, W) float64, 0/255

each with one dataset named ``image`` (channels first, as the original). Images are taken in sorted name order
(the original used the unsorted ``os.walk`` order). Exactly ``--n-train`` / ``--n-test`` (20 / 20) images of
``--height`` x ``--width`` (584 x 565) per split are required; anything else is a one-line error naming the file.
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, ImageReadError, atomic_path, list_images, read_image, warn_orientation

DEFAULT_DRIVE = cli.repo_path("data", "DRIVE")
DEFAULT_WORK = cli.repo_path("work", "retina_vessel")
HDF5_DIR = "DRIVE_datasets_training_testing"
HEIGHT, WIDTH, N_IMAGES = 584, 565, 20
SPLITS = {"train": "training", "test": "test"}  # HDF5 suffix -> DRIVE folder
KINDS = ("imgs", "groundTruth", "borderMasks")


def hdf5_path(work_dir, kind, split):
    """``<work-dir>/DRIVE_datasets_training_testing/DRIVE_dataset_<kind>_<split>.hdf5``."""
    return Path(work_dir) / HDF5_DIR / f"DRIVE_dataset_{kind}_{split}.hdf5"


def write_hdf5(path, array):
    """The original's ``write_hdf5``: one dataset named ``image``; written atomically."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("image", data=array)


def load_hdf5(path):
    """The original's ``load_hdf5``: the ``image`` dataset as a NumPy array (clear error if missing)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run retina_vessel/prepare_datasets_DRIVE.py first")
    try:
        with h5py.File(path, "r") as f:
            return f["image"][()]
    except (OSError, KeyError) as exc:
        raise DataLayoutError(f"{path}: not a DRIVE HDF5 file with an 'image' dataset ({exc})") from None


def load_split(work_dir, split):
    """``(imgs, groundTruth, borderMasks)`` of a split as channels-last arrays: (N, H, W, 3) float64 0..255,
    (N, H, W, 1) and (N, H, W, 1) float64 0/255."""
    return tuple(load_hdf5(hdf5_path(work_dir, kind, split)).transpose(0, 2, 3, 1) for kind in KINDS)


def _binary(path, size):
    array = read_image(path, "gray", size=size, exif=False)
    values = np.unique(array)
    if not np.isin(values, (0, 255)).all():
        raise ImageReadError(f"{path}: expected only the values 0 and 255, found {values[:6].tolist()}")
    return array


def read_split(drive_dir, split, n_images=N_IMAGES, height=HEIGHT, width=WIDTH, verbose=True):
    """One DRIVE split -> ``(imgs (N,3,H,W), groundTruth (N,1,H,W), borderMasks (N,1,H,W))`` float64,
    channels first, images in sorted name order (the original's ``get_datasets``)."""
    folder = Path(drive_dir) / SPLITS[split]
    images = list_images(folder / "images", (".tif", ".tiff"))
    if n_images is not None and len(images) != n_images:
        raise DataLayoutError(f"{folder / 'images'}: expected {n_images} images, found {len(images)}")
    for sub in ("1st_manual", "mask"):
        if not (folder / sub).is_dir():
            hint = " (recent DRIVE downloads have no test/1st_manual; the test set needs it)" \
                if sub == "1st_manual" and split == "test" else ""
            raise DataLayoutError(f"{folder / sub}: folder not found{hint}")
    imgs = np.empty((len(images), 3, height, width), np.float64)
    truth = np.empty((len(images), 1, height, width), np.float64)
    border = np.empty((len(images), 1, height, width), np.float64)
    warn_orientation(images, applied=False, reader="PIL.Image.open", what=f"DRIVE {SPLITS[split]} images")
    for i, path in enumerate(tqdm(images, desc=f"DRIVE {SPLITS[split]}", disable=not verbose)):
        key = path.name[:2]
        imgs[i] = read_image(path, "rgb", size=(height, width), exif=False).transpose(2, 0, 1)
        truth[i, 0] = _binary(folder / "1st_manual" / f"{key}_manual1.gif", (height, width))
        border[i, 0] = _binary(folder / "mask" / f"{key}_{SPLITS[split]}_mask.gif", (height, width))
    return imgs, truth, border


def prepare(drive_dir, work_dir, n_train=N_IMAGES, n_test=N_IMAGES, height=HEIGHT, width=WIDTH, verbose=True,
            overwrite=False):
    """Read both splits, then write the six HDF5 files (nothing is written if any file is bad); returns
    ``{path: shape}``. Existing HDF5 files are refused (before reading anything) unless ``overwrite``."""
    from common.errors import UserError

    existing = [hdf5_path(work_dir, kind, split) for split in SPLITS for kind in KINDS]
    existing = [p for p in existing if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: a prepared DRIVE dataset is already there ({len(existing)} of the HDF5 "
                        f"files); pass --overwrite to replace it, or another --work-dir")
    data = {split: read_split(drive_dir, split, n, height, width, verbose)
            for split, n in (("train", n_train), ("test", n_test))}
    written = {}
    for split, arrays in data.items():
        for kind, array in zip(KINDS, arrays):
            path = hdf5_path(work_dir, kind, split)
            write_hdf5(path, array)
            written[str(path)] = array.shape
    return written


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drive-dir", type=Path, default=DEFAULT_DRIVE,
                        help="DRIVE folder with training/ and test/ (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help=f"output root; the HDF5 files go to <work-dir>/{HDF5_DIR} (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=N_IMAGES,
                        help="training images required (default: %(default)s, DRIVE's)")
    parser.add_argument("--n-test", type=int, default=N_IMAGES, help="test images required (default: %(default)s)")
    parser.add_argument("--height", type=int, default=HEIGHT, help="image rows (default: %(default)s)")
    parser.add_argument("--width", type=int, default=WIDTH, help="image columns (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace HDF5 files already in --work-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for option, value in (("--n-train", args.n_train), ("--n-test", args.n_test), ("--height", args.height),
                          ("--width", args.width)):
        if value < 1:
            raise cli.option_error(option, f"{value} must be at least 1")
    written = prepare(args.drive_dir, args.work_dir, args.n_train, args.n_test, args.height, args.width, not args.quiet,
                      overwrite=args.overwrite)
    for path, shape in written.items():
        print(f"{path}: {shape} float64")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
