"""Kaggle ultrasound nerve segmentation: raw TIFF folders -> uint8 .npy arrays (the tutorial's data.py).

Layout read (``--raw-dir``)::

    train/<subject>_<n>.tif        420x580 8-bit grey ultrasound frame
    train/<subject>_<n>_mask.tif   its mask, 0/255 (empty masks included)
    test/<id>.tif                  id = 1..5508, no masks

Written (``--work-dir``): ``imgs_train.npy`` (N,420,580) uint8, ``imgs_mask_train.npy`` (N,420,580) uint8,
``imgs_test.npy`` (M,420,580) uint8, ``imgs_id_test.npy`` (M,) int32 — the original's names and dtypes.
Images are streamed into memory-mapped temporary files (bounded memory); the four are renamed into place
together only once every training AND test frame was read, so a corrupt frame anywhere leaves nothing
behind. Arrays already in ``--work-dir`` are never replaced without ``--overwrite``.

16-bit frames are scaled to 8 bits as OpenCV's 8-bit reader would (``common.data.io.read_image``: the high
byte, ``v >> 8``); every frame must be 420x580. Frames are read as stored, without applying an orientation tag,
as the tutorial's ``skimage.io.imread`` (its TIFF reader, tifffile) did; a training frame or mask that carries
a non-identity tag is named in one warning.

Examples::

    python ultrasound_nerve/data.py --raw-dir ~/kaggle/ultrasound-nerve-segmentation
    python ultrasound_nerve/data.py --order listdir --work-dir work/nerve_listdir   # the original's order
"""

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, open_npy_writer, read_image, warn_orientation
from common.errors import UserError

IMAGE_ROWS, IMAGE_COLS = 420, 580
OUTPUTS = ("imgs_train.npy", "imgs_mask_train.npy", "imgs_test.npy", "imgs_id_test.npy")
DEFAULT_RAW = cli.repo_path("data", "ultrasound_nerve", "raw")
DEFAULT_WORK = cli.repo_path("work", "ultrasound_nerve")
_TRAIN_NAME = re.compile(r"^(\d+)_(\d+)$")


def _tif_names(folder):
    """.tif file names of ``folder`` in file-system (os.listdir) order, as the original lists them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: folder not found")
    names = [n for n in os.listdir(folder) if n.lower().endswith(".tif")]
    if not names:
        raise DataLayoutError(f"{folder}: no .tif files")
    return names


def train_pairs(train_dir, order="sorted"):
    """(image, mask) paths of ``train/``; ``sorted`` = by (subject, n), ``listdir`` = file-system order."""
    train_dir = Path(train_dir)
    names = _tif_names(train_dir)
    images = [n for n in names if "mask" not in n]
    keys = {}
    for n in images:
        match = _TRAIN_NAME.match(Path(n).stem)
        if match is None:
            raise DataLayoutError(f"{train_dir / n}: expected <subject>_<n>.tif")
        keys[n] = (int(match[1]), int(match[2]))
    if order == "sorted":
        images.sort(key=keys.__getitem__)
    present = set(names)
    pairs = []
    for n in images:
        mask = f"{Path(n).stem}_mask.tif"
        if mask not in present:
            raise DataLayoutError(f"{train_dir / n}: mask {mask} is missing")
        pairs.append((train_dir / n, train_dir / mask))
    images_set = {f"{Path(n).stem}_mask.tif" for n in images}
    orphans = sorted(n for n in names if "mask" in n and n not in images_set)
    if orphans:
        raise DataLayoutError(f"{train_dir / orphans[0]}: mask without image"
                              + (f" (+{len(orphans) - 1} more)" if len(orphans) > 1 else ""))
    return pairs


def test_files(test_dir, order="sorted"):
    """(id, path) of ``test/<id>.tif``; ``sorted`` = by numeric id."""
    test_dir = Path(test_dir)
    names = _tif_names(test_dir)
    items = []
    for n in names:
        if not Path(n).stem.isdigit():
            raise DataLayoutError(f"{test_dir / n}: expected <id>.tif with an integer id")
        items.append((int(Path(n).stem), test_dir / n))
    return sorted(items) if order == "sorted" else items


def check_outputs(work_dir, names=OUTPUTS, overwrite=False):
    """``UserError`` when ``work_dir`` already holds one of the prepared arrays and ``overwrite`` is not given."""
    existing = [Path(work_dir) / n for n in names if (Path(work_dir) / n).exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: prepared arrays are already there; pass --overwrite to replace them, "
                        f"or another --work-dir")


def _fill_train(pairs, imgs, masks, verbose):
    warn_orientation([p for pair in pairs for p in pair], applied=False, reader="skimage.io.imread (tifffile)")
    for i, (img, mask) in enumerate(tqdm(pairs, desc="train images", disable=not verbose)):
        imgs[i] = read_image(img, "gray", size=(IMAGE_ROWS, IMAGE_COLS), exif=False)
        masks[i] = read_image(mask, "gray", size=(IMAGE_ROWS, IMAGE_COLS), exif=False)


def _fill_test(items, imgs, ids, verbose):
    for i, (image_id, path) in enumerate(tqdm(items, desc="test images", disable=not verbose)):
        imgs[i] = read_image(path, "gray", size=(IMAGE_ROWS, IMAGE_COLS), exif=False)
        ids[i] = image_id


def create_data(raw_dir, work_dir, order="sorted", verbose=True, overwrite=False):
    """Both parts (the original's ``create_train_data`` and ``create_test_data``), all or nothing.

    The layout of ``train/`` and ``test/`` is checked first, then every frame is read into temporary arrays;
    the four files appear together at the end, or none does. Returns ``(n_train, n_test)``.
    """
    work_dir = Path(work_dir)
    check_outputs(work_dir, OUTPUTS, overwrite)
    pairs = train_pairs(Path(raw_dir) / "train", order)
    items = test_files(Path(raw_dir) / "test", order)
    shape, test_shape = (len(pairs), IMAGE_ROWS, IMAGE_COLS), (len(items), IMAGE_ROWS, IMAGE_COLS)
    with contextlib.ExitStack() as stack:  # on any error every temporary file is removed, none is renamed
        imgs = stack.enter_context(open_npy_writer(work_dir / "imgs_train.npy", shape, np.uint8))
        masks = stack.enter_context(open_npy_writer(work_dir / "imgs_mask_train.npy", shape, np.uint8))
        test_imgs = stack.enter_context(open_npy_writer(work_dir / "imgs_test.npy", test_shape, np.uint8))
        ids = stack.enter_context(open_npy_writer(work_dir / "imgs_id_test.npy", (len(items),), np.int32))
        _fill_train(pairs, imgs, masks, verbose)
        _fill_test(items, test_imgs, ids, verbose)
    return len(pairs), len(items)


def create_train_data(raw_dir, work_dir, order="sorted", verbose=True, overwrite=False):
    """The training part alone (``imgs_train.npy``, ``imgs_mask_train.npy``), all or nothing."""
    check_outputs(work_dir, OUTPUTS[:2], overwrite)
    pairs = train_pairs(Path(raw_dir) / "train", order)
    shape = (len(pairs), IMAGE_ROWS, IMAGE_COLS)
    work_dir = Path(work_dir)
    with open_npy_writer(work_dir / "imgs_train.npy", shape, np.uint8) as imgs, \
            open_npy_writer(work_dir / "imgs_mask_train.npy", shape, np.uint8) as masks:
        _fill_train(pairs, imgs, masks, verbose)
    return len(pairs)


def create_test_data(raw_dir, work_dir, order="sorted", verbose=True, overwrite=False):
    """The test part alone (``imgs_test.npy``, ``imgs_id_test.npy``), all or nothing."""
    check_outputs(work_dir, OUTPUTS[2:], overwrite)
    items = test_files(Path(raw_dir) / "test", order)
    work_dir = Path(work_dir)
    with open_npy_writer(work_dir / "imgs_test.npy", (len(items), IMAGE_ROWS, IMAGE_COLS), np.uint8) as imgs, \
            open_npy_writer(work_dir / "imgs_id_test.npy", (len(items),), np.int32) as ids:
        _fill_test(items, imgs, ids, verbose)
    return len(items)


def _load(path):
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not found; run ultrasound_nerve/data.py first")
    return np.load(path)


def _check_pair(work_dir, names, a, b, same_frames=True):
    if len(a) != len(b) or (same_frames and a.shape != b.shape) or a.ndim != 3:
        raise DataLayoutError(f"{work_dir}: {names[0]} {a.shape} and {names[1]} {b.shape} do not match; "
                              f"run ultrasound_nerve/data.py --overwrite again")
    return a, b


def load_train_data(work_dir=DEFAULT_WORK):
    work_dir = Path(work_dir)
    arrays = _load(work_dir / OUTPUTS[0]), _load(work_dir / OUTPUTS[1])
    return _check_pair(work_dir, OUTPUTS[:2], *arrays)


def load_test_data(work_dir=DEFAULT_WORK):
    work_dir = Path(work_dir)
    arrays = _load(work_dir / OUTPUTS[2]), _load(work_dir / OUTPUTS[3])
    return _check_pair(work_dir, OUTPUTS[2:], *arrays, same_frames=False)


def build_parser():
    """The command line (defaults: the original's image size and names; pinned by the tests)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW, help="folder with train/ and test/ "
                        "(default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="output folder (default: %(default)s)")
    parser.add_argument("--order", choices=("sorted", "listdir"), default="sorted",
                        help="image order: sorted by (subject, n) / id, or the original's file-system order")
    parser.add_argument("--overwrite", action="store_true", help="replace arrays already in --work-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    n_train, n_test = create_data(args.raw_dir, args.work_dir, args.order, not args.quiet, args.overwrite)
    print(f"Saved {n_train} training and {n_test} test images to {args.work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
