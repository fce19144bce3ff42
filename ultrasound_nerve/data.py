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

Your own data (``--images DIR --masks DIR`` or ``--nnunet-dataset DIR``, read by ``common.data.pairs``):
frames of any size and name are split by subject (``--group-by``, default the number before the underscore,
``^(\d+)_``; a name it does not match is its own group) into train / val / test with ``--seed``, and written
under the same names: ``imgs_train.npy`` / ``imgs_mask_train.npy`` hold the train frames, then the val frames
(train.py takes the last ``counts.val`` frames of ``split.json`` as its validation), ``imgs_test.npy`` the
test frames, ``imgs_id_test.npy`` their index 0..M-1 in ``split.json``'s ``test`` list, and
``imgs_mask_test_true.npy`` their masks (0/255, for ``evaluate.py``; not written when the test part has no
masks, e.g. nnU-Net ``imagesTs``). Frames are read as 8-bit grey; masks by ``common.data.pairs`` (0/255,
0/1, JPEG at 128, ...) and stored 0/255 like the Kaggle masks. All frames are stacked at one size: the
frames' own size when they all agree, else the most frequent one (``--frame-size ROWSxCOLS`` sets it);
a frame of another size is resized with train.py's resize (``task.resize_frame``: bilinear in float64,
truncated to uint8) and its mask with nearest neighbour (``cv2.INTER_NEAREST_EXACT``, the pixel-centre rule of
Pillow's NEAREST; it stays 0/255).

Examples::

    python ultrasound_nerve/data.py --raw-dir ~/kaggle/ultrasound-nerve-segmentation
    python ultrasound_nerve/data.py --order listdir --work-dir work/nerve_listdir   # the original's order
    python ultrasound_nerve/data.py --images my/frames --masks my/masks --work-dir work/nerve_own
    python ultrasound_nerve/data.py --nnunet-dataset nnUNet_raw/Dataset042_Nerve --work-dir work/nerve_nn
"""

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import cv2
import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, atomic_path, open_npy_writer, read_image, warn_orientation
from common.errors import UserError
from ultrasound_nerve.task import OWN_DATA, resize_frame  # own-data defaults and the resize: one place, task.py

IMAGE_ROWS, IMAGE_COLS = 420, 580
OUTPUTS = ("imgs_train.npy", "imgs_mask_train.npy", "imgs_test.npy", "imgs_id_test.npy")
DEFAULT_RAW = cli.repo_path("data", "ultrasound_nerve", "raw")
DEFAULT_WORK = cli.repo_path("work", "ultrasound_nerve")
_TRAIN_NAME = re.compile(r"^(\d+)_(\d+)$")
TRUE_MASKS = "imgs_mask_test_true.npy"  # the held-out part's masks (imgs_mask_test.npy is train.py's output)
SPLIT_FILE = "split.json"
OWN_OUTPUTS = OUTPUTS + (TRUE_MASKS, SPLIT_FILE)


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


# ----------------------------------------------------------------------------------------------- own data

def _frame_shape(pair):
    """(rows, cols) of a pair's frame from its file header (the stored grid, as ``read_image`` reads it)."""
    from PIL import Image

    if pair.volume:
        raise UserError(f"{pair.image[0]}: a NIfTI volume; the nerve network takes 2-D frames: export the "
                        f"slices as image files")
    if len(pair.image) != 1:
        raise UserError(f"{pair.image[1]}: case {pair.name} has {len(pair.image)} channel files; the nerve "
                        f"network takes one grey channel")
    try:
        with Image.open(pair.image[0]) as img:
            cols, rows = img.size
    except OSError as exc:
        raise UserError(f"{pair.image[0]}: cannot read the image ({exc})") from None
    return rows, cols


def frame_size(pairs, size=None, verbose=True):
    """The (rows, cols) every frame is stacked at: ``size`` if given, else the frames' own size when they
    all agree, else the most frequent size (ties: the first in name order), with a note."""
    shapes = [_frame_shape(p) for p in pairs]
    if size is not None:
        return tuple(size)
    counts = {}
    for shape in shapes:
        counts[shape] = counts.get(shape, 0) + 1
    common_shape = max(counts, key=counts.get)  # max keeps the first of equal counts (dicts keep order)
    if len(counts) > 1 and verbose:
        found = ", ".join(f"{r}x{c} ({n})" for (r, c), n in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
        print(f"note: frames of {len(counts)} sizes ({found}); all are resized to the most frequent, "
              f"{common_shape[0]}x{common_shape[1]} (rows x cols; --frame-size ROWSxCOLS sets it)", file=sys.stderr)
    return common_shape


def _stack_pair(pair, rows, cols, foreground=None, label_colours=None):
    """One own-data pair -> (frame uint8 (rows, cols), mask uint8 0/255 (rows, cols) or None)."""
    from common.data.pairs import read_pair

    image, mask = read_pair(pair, mode=OWN_DATA["mode"], binary=True, foreground=foreground,
                            label_colours=label_colours)
    if image.shape != (rows, cols):
        image = resize_frame(image, rows, cols)
    if mask is not None:
        mask = np.where(mask, 255, 0).astype(np.uint8)
        if mask.shape != (rows, cols):
            mask = cv2.resize(mask, (cols, rows), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, mask


def create_own_data(dataset, split, work_dir, *, size=None, seed=None, group_by=None, fractions=(None, None),
                    foreground=None, verbose=True, overwrite=False):
    """Write an own dataset (``common.data.pairs.OwnDataset``) split by ``split`` under the benchmark's
    names, plus ``imgs_mask_test_true.npy`` and ``split.json``; all or nothing. Returns the split's counts."""
    work_dir = Path(work_dir)
    check_outputs(work_dir, OWN_OUTPUTS, overwrite)
    by_name = {p.name: p for p in (*dataset.pairs, *dataset.test)}
    train = [by_name[n] for n in split["train"] + split["val"]]
    test = [by_name[n] for n in split["test"]]
    rows, cols = frame_size(train + test, size, verbose)
    warn_orientation([f for p in train + test for f in (*p.image, *([p.mask] if p.mask else []))], applied=False,
                     reader="skimage.io.imread (tifffile)", what="frames and masks")
    test_masks = bool(test) and all(p.mask is not None for p in test)
    colours = getattr(dataset, "label_colours", None)
    with contextlib.ExitStack() as stack:  # on any error every temporary file is removed, none is renamed
        imgs = stack.enter_context(open_npy_writer(work_dir / OUTPUTS[0], (len(train), rows, cols), np.uint8))
        masks = stack.enter_context(open_npy_writer(work_dir / OUTPUTS[1], (len(train), rows, cols), np.uint8))
        test_imgs = stack.enter_context(open_npy_writer(work_dir / OUTPUTS[2], (len(test), rows, cols), np.uint8))
        ids = stack.enter_context(open_npy_writer(work_dir / OUTPUTS[3], (len(test),), np.int32))
        true = (stack.enter_context(open_npy_writer(work_dir / TRUE_MASKS, (len(test), rows, cols), np.uint8))
                if test_masks else None)
        split_tmp = stack.enter_context(atomic_path(work_dir / SPLIT_FILE))
        for i, pair in enumerate(tqdm(train, desc="train+val frames", disable=not verbose)):
            imgs[i], masks[i] = _stack_pair(pair, rows, cols, foreground, colours)
        for i, pair in enumerate(tqdm(test, desc="test frames", disable=not verbose)):
            test_imgs[i], mask = _stack_pair(pair, rows, cols, foreground, colours)
            ids[i] = i
            if true is not None:
                true[i] = mask
        from common.data.pairs import write_split

        record = write_split(split_tmp, split, source=dataset.source, seed=seed, group_by=group_by,
                             fractions=fractions, verbose=False)
    if verbose:
        print(f"{SPLIT_FILE}: " + " / ".join(f"{k} {v}" for k, v in record["counts"].items())
              + f" (frames stacked at {rows}x{cols})")
    if not test_masks and (work_dir / TRUE_MASKS).exists():
        (work_dir / TRUE_MASKS).unlink()  # an earlier run's masks would not belong to these test frames
    return record["counts"]


def read_split(work_dir):
    """``split.json`` of an own-data ``--work-dir`` (None for the benchmark layout, which has none)."""
    import json

    path = Path(work_dir) / SPLIT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        counts = {k: int(record["counts"][k]) for k in ("train", "val", "test")}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a split file of data.py ({exc}); run data.py --overwrite again") from None
    return {**record, "counts": counts}


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
    from common.data.pairs import add_own_data_arguments

    group = add_own_data_arguments(parser, val_fraction=OWN_DATA["val_fraction"],
                                   test_fraction=OWN_DATA["test_fraction"], group_by=OWN_DATA["group_by"])
    group.add_argument("--seed", type=int, default=OWN_DATA["seed"], help="seed of the split (default: %(default)s)")
    group.add_argument("--frame-size", type=_parse_size, metavar="ROWSxCOLS", default=None,
                       help="stack every frame at this size (default: the frames' own size when they all "
                            "agree, else the most frequent one)")
    return parser


def _parse_size(text):
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if match is None or not int(match[1]) or not int(match[2]):
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS with two positive integers, e.g. 420x580, got {text!r}")
    return int(match[1]), int(match[2])


def main_own(args, dataset):
    """``--images/--masks`` or ``--nnunet-dataset``: split, then ``create_own_data``."""
    from common.data.pairs import split_own_data

    if args.val_fraction <= 0:
        raise cli.option_error("--val-fraction", f"must be above 0: train.py validates on the val part and keeps "
                                                 f"its best checkpoint by it (got {args.val_fraction})")
    check_outputs(args.work_dir, OWN_OUTPUTS, args.overwrite)  # before any frame is read
    split = split_own_data(dataset, args)  # nnU-Net imagesTs, when present, is the test part
    counts = create_own_data(dataset, split, args.work_dir, size=args.frame_size, seed=args.seed,
                             group_by=args.group_by,
                             fractions=(args.val_fraction, 0.0 if dataset.test else args.test_fraction),
                             foreground=args.foreground, verbose=not args.quiet, overwrite=args.overwrite)
    print(f"Saved {counts['train']} training + {counts['val']} validation and {counts['test']} test frames "
          f"to {args.work_dir}")
    return 0


def main(argv=None):
    from common.data.pairs import load_own_data

    args = build_parser().parse_args(argv)
    dataset = load_own_data(args)
    if dataset is not None:
        return main_own(args, dataset)
    n_train, n_test = create_data(args.raw_dir, args.work_dir, args.order, not args.quiet, args.overwrite)
    print(f"Saved {n_train} training and {n_test} test images to {args.work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
