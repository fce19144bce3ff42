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

Your own data (``--images DIR --masks DIR [--fov DIR]`` or ``--nnunet-dataset DIR``, paired and read by
``common.data.pairs``): the same six HDF5 files plus ``split.json`` beside them, so save_patch.py,
train_retina.py and evaluate.py run unchanged. The FOV masks under ``--fov`` are paired with the images by the
same rule as the masks (``find_pairs``: the FOV of ``21.tif`` is ``21.<ext>`` or ``21_mask.<ext>``, ...); without
``--fov`` the whole image is the FOV. DRIVE's own names do not pair (``21_training.tif`` / ``21_manual1.gif``):
name them e.g. ``images/21.tif``, ``masks/21_manual1.gif``, ``fov/21_mask.gif``. Images are read as RGB, masks
and FOV masks by common.data.pairs' table (0/255, 0/1, palette, ...; a FOV mask must be binary) and stored
0/255 as DRIVE's. Split: seeded (``--seed``) by ``--test-fraction`` (0.5) and ``--val-fraction`` (0.1), DRIVE's
proportions (20 test of 40; the original validates on the last 4 of its 20 training images); the train HDF5
files hold the train cases, then the val cases, and train_retina.py validates on the patches of the last
``counts.val`` images of ``split.json``. ``--keep-labels``: the masks are label maps 0..K-1 (0 = background,
K - 1 <= 63) kept as they are: when they hold a label above 1, the groundTruth files store the labels (not 0/255)
and ``split.json`` records ``num_classes`` K, for a K-class run (train_retina.py's K-channel softmax head,
evaluate.py's per-class scores). All images are stacked at one size: their own when they all agree,
else the most frequent one (a note says so); an image of another size is resized bicubic (Pillow) and its
masks nearest (DRIVE itself is not resized). ``--n-train``/``--n-test``/``--height``/``--width`` apply to the
DRIVE layout only. nnU-Net ``imagesTs`` (no masks) is not used: segment it with predict.py.

Examples::

    python retina_vessel/prepare_datasets_DRIVE.py --drive-dir ~/DRIVE
    python retina_vessel/prepare_datasets_DRIVE.py --images my/fundus --masks my/vessels --fov my/fov \
        --work-dir work/retina_own
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
from common.data.label_maps import add_keep_labels_argument, check_keep_labels, kept_labels, num_classes_of_labels
from retina_vessel.task import OWN_DATA

DEFAULT_DRIVE = cli.repo_path("data", "DRIVE")
DEFAULT_WORK = cli.repo_path("work", "retina_vessel")
HDF5_DIR = "DRIVE_datasets_training_testing"
HEIGHT, WIDTH, N_IMAGES = 584, 565, 20
SPLITS = {"train": "training", "test": "test"}  # HDF5 suffix -> DRIVE folder
KINDS = ("imgs", "groundTruth", "borderMasks")
SPLIT_FILE = "split.json"  # own data only: beside the HDF5 files


def hdf5_path(work_dir, kind, split):
    """``<work-dir>/DRIVE_datasets_training_testing/DRIVE_dataset_<kind>_<split>.hdf5``."""
    return Path(work_dir) / HDF5_DIR / f"DRIVE_dataset_{kind}_{split}.hdf5"


def write_hdf5(path, array):
    """The original's ``write_hdf5``: one dataset named ``image``; written atomically."""
    with atomic_path(path) as tmp:
        _write_hdf5_file(tmp, array)


def _write_hdf5_file(path, array):
    import h5py

    with h5py.File(path, "w") as f:
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


def split_path(work_dir):
    """``<work-dir>/DRIVE_datasets_training_testing/split.json`` (own data only)."""
    return Path(work_dir) / HDF5_DIR / SPLIT_FILE


def read_own_split(work_dir):
    """``split.json`` of an own-data ``--work-dir`` with integer ``counts``, or None (the benchmark layout)."""
    import json

    from common.errors import UserError

    path = split_path(work_dir)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        record["counts"] = {k: int(record["counts"][k]) for k in ("train", "val", "test")}
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a split file of prepare_datasets_DRIVE.py ({exc.__class__.__name__}); run "
                        f"it again with --overwrite") from None
    return record


def num_classes_of(work_dir):
    """K of a prepared dataset: split.json's ``num_classes`` (an own dataset prepared with ``--keep-labels`` whose
    masks hold K > 2 labels), else 2 (binary: DRIVE and every other own dataset)."""
    own = read_own_split(work_dir)
    return int((own or {}).get("num_classes") or 2)


def truth_labels(truth, num_classes=2):
    """A groundTruth array of :func:`load_split` (float64) -> uint8 labels: ``truth / 255`` (0/1) for a binary
    dataset (the original's), the stored labels 0..K-1 as they are for a K-class one (``num_classes`` > 2)."""
    truth = np.asarray(truth)
    return truth.astype(np.uint8) if num_classes > 2 else (truth / 255.0).astype(np.uint8)


def _refuse_existing(work_dir, overwrite):
    from common.errors import UserError

    existing = [hdf5_path(work_dir, kind, split) for split in SPLITS for kind in KINDS] + [split_path(work_dir)]
    existing = [p for p in existing if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: a prepared DRIVE dataset is already there ({len(existing)} of its "
                        f"files); pass --overwrite to replace it, or another --work-dir")


def _own_case(pair, fov, foreground=None, label_colours=None, keep_labels=False):
    """One own-data case -> ``(image (H, W, 3) uint8, vessels (H, W) bool, FOV (H, W) bool)``; ``keep_labels``:
    the mask's integer labels (H, W) uint8 instead of the vessels (``UserError`` for labels above 63)."""
    from common.data.pairs import Pair, read_pair
    from common.errors import UserError

    if pair.volume:
        raise UserError(f"{pair.image[0]}: a NIfTI volume; BCDU-Net takes 2-D fundus images")
    image, truth = read_pair(pair, mode=OWN_DATA["mode"], binary=not keep_labels, foreground=foreground,
                             label_colours=label_colours)
    if keep_labels:
        truth = kept_labels(truth, pair.mask)
    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"{pair.image[0]}: case {pair.name} has {image.shape[2]} channels; the recipe reads RGB "
                        f"fundus images (one RGB file, or three channel files)")
    if fov is None:
        border = np.ones(image.shape[:2], bool)
    else:  # the same reader, with the image's size check
        border = read_pair(Pair(name=pair.name, image=pair.image, mask=fov), mode=OWN_DATA["mode"], binary=True)[1]
    return image, truth, border


def _resized(case, size):
    """A case at ``size`` (rows, cols): the image bicubic, the masks nearest (Pillow)."""
    from PIL import Image

    if case[0].shape[:2] == tuple(size):
        return case
    rows, cols = size
    image = np.asarray(Image.fromarray(case[0]).resize((cols, rows), Image.BICUBIC))
    masks = [np.asarray(Image.fromarray(m.astype(np.uint8)).resize((cols, rows), Image.NEAREST)).astype(m.dtype)
             for m in case[1:]]  # bool masks stay bool, label maps keep their labels
    return (image, *masks)


def stack_size(shapes, size=None, verbose=True):
    """The (rows, cols) all own images are stacked at: ``size`` when given, else their own when they all agree,
    else the most frequent (ties: the first in name order), with a note."""
    if size is not None:
        return tuple(size)
    counts = {}
    for shape in shapes:
        counts[shape] = counts.get(shape, 0) + 1
    common_shape = max(counts, key=counts.get)
    if len(counts) > 1 and verbose:
        found = ", ".join(f"{r}x{c} ({n})" for (r, c), n in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
        print(f"note: images of {len(counts)} sizes ({found}); all are resized to the most frequent, "
              f"{common_shape[0]}x{common_shape[1]} (rows x cols)", file=sys.stderr)
    return common_shape


def prepare_own(dataset, work_dir, *, fov_pairs=None, size=None, val_fraction=OWN_DATA["val_fraction"],
                test_fraction=OWN_DATA["test_fraction"], seed=OWN_DATA["seed"], group_by=None, foreground=None,
                verbose=True, overwrite=False, keep_labels=False):
    """An own dataset (``common.data.pairs.OwnDataset``) -> the six HDF5 files (train = train then val cases)
    and ``split.json`` (``write_split``'s record plus ``height``, ``width``, ``fov`` and ``num_classes``); all or
    nothing.

    ``fov_pairs``: ``{case name: FOV mask path}`` (``--fov``), or None for the whole image. ``keep_labels``
    (``--keep-labels``): masks are label maps; when they hold a label above 1 the ground truth HDF5 files store
    the labels 0..K-1 as they are (``num_classes`` K in split.json), else 0/255 as DRIVE. Returns the record.
    """
    import contextlib

    from common.data.pairs import split_pairs, write_split

    _refuse_existing(work_dir, overwrite)
    if dataset.test:
        print(f"note: the nnU-Net imagesTs cases ({len(dataset.test)}) have no masks and are not used; segment "
              f"them with retina_vessel/predict.py", file=sys.stderr)
    cases = {p.name: _own_case(p, None if fov_pairs is None else fov_pairs[p.name], foreground,
                               dataset.label_colours, keep_labels)
             for p in tqdm(dataset.pairs, desc="images", disable=not verbose)}
    top = max((int(np.max(c[1])) for c in cases.values()), default=0)
    num_classes = num_classes_of_labels(top) if keep_labels else 2  # labels 0/1 only: binary, as DRIVE
    scale = 1.0 if num_classes > 2 else 255.0
    height, width = stack_size([c[0].shape[:2] for c in cases.values()], size, verbose)
    split = split_pairs(list(cases), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                        group_by=group_by)
    parts = {"train": split["train"] + split["val"], "test": split["test"]}
    _refuse_existing(work_dir, overwrite)  # again: another process may have written meanwhile
    with contextlib.ExitStack() as stack:  # on any error no file is renamed into place
        import h5py

        for part, names in parts.items():  # image by image: float64 copies of one image at a time
            files = [h5py.File(stack.enter_context(atomic_path(hdf5_path(work_dir, kind, part))), "w")
                     for kind in KINDS]
            for f in files:
                stack.callback(f.close)  # closed before the renames (callbacks run in reverse order)
            datasets = [f.create_dataset("image", shape=(len(names), c, height, width), dtype=np.float64)
                        for f, c in zip(files, (3, 1, 1))]
            for i, name in enumerate(names):
                image, truth, border = _resized(cases[name], (height, width))
                datasets[0][i] = image.transpose(2, 0, 1)
                datasets[1][i, 0] = truth * scale  # 0/255 as DRIVE, or the labels 0..K-1 (--keep-labels)
                datasets[2][i, 0] = border * 255.0
        tmp = stack.enter_context(atomic_path(split_path(work_dir)))
        record = write_split(tmp, split, source=dataset.source, seed=seed, group_by=group_by,
                             fractions=(val_fraction, test_fraction), verbose=False,
                             extra={"height": height, "width": width, "fov": fov_pairs is not None,
                                    "num_classes": num_classes})
    if verbose:
        print(f"{SPLIT_FILE}: " + " / ".join(f"{k} {v}" for k, v in record["counts"].items())
              + f" (images stacked at {height}x{width}" + (f", {num_classes} classes" if num_classes > 2 else "")
              + ")")
    return record


def prepare(drive_dir, work_dir, n_train=N_IMAGES, n_test=N_IMAGES, height=HEIGHT, width=WIDTH, verbose=True,
            overwrite=False):
    """Read both splits, then write the six HDF5 files (nothing is written if any file is bad); returns
    ``{path: shape}``. Existing HDF5 files are refused (before reading anything) unless ``overwrite``."""
    _refuse_existing(work_dir, overwrite)
    data = {split: read_split(drive_dir, split, n, height, width, verbose)
            for split, n in (("train", n_train), ("test", n_test))}
    if split_path(work_dir).exists():  # an own-data split.json would make train_retina.py misread these files
        split_path(work_dir).unlink()
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
    from common.data.pairs import add_own_data_arguments

    group = add_own_data_arguments(parser, val_fraction=OWN_DATA["val_fraction"],
                                   test_fraction=OWN_DATA["test_fraction"], group_by=OWN_DATA["group_by"])
    group.add_argument("--fov", type=Path, metavar="DIR",
                       help="folder of field-of-view masks, paired with --images like the masks (default: the "
                            "whole image is the FOV)")
    group.add_argument("--seed", type=int, default=OWN_DATA["seed"], help="seed of the split (default: %(default)s)")
    add_keep_labels_argument(group, binary_default="binary vessels as DRIVE",
                             head="train_retina.py trains a K-channel softmax head")
    return parser


def main_own(args, dataset):
    """``--images/--masks [--fov]`` or ``--nnunet-dataset``: ``prepare_own`` with the options."""
    from common.data.pairs import find_pairs

    if args.val_fraction <= 0:
        raise cli.option_error("--val-fraction", f"must be above 0: train_retina.py validates on the val part "
                                                 f"(got {args.val_fraction})")
    fov_pairs = None
    if args.fov is not None:
        if args.images is None:
            raise cli.option_error("--fov", "goes with --images/--masks (an nnU-Net dataset has no FOV masks)")
        try:
            fovs = find_pairs(args.images, args.fov, skip_unpaired=args.skip_unpaired)
        except DataLayoutError as exc:
            raise DataLayoutError(f"--fov: FOV masks are paired with the images like the masks: {exc}") from None
        fov_pairs = {p.name: p.mask for p in fovs}
        missing = [p.name for p in dataset.pairs if p.name not in fov_pairs]
        if missing:  # only with --skip-unpaired: those images are skipped, as images without a vessel mask
            print(f"warning: skipping {len(missing)} image(s) without a FOV mask", file=sys.stderr)
            from dataclasses import replace

            dataset = replace(dataset, pairs=tuple(p for p in dataset.pairs if p.name in fov_pairs))
            if not dataset.pairs:
                raise cli.option_error("--fov", "no image has both a mask and a FOV mask")
    record = prepare_own(dataset, args.work_dir, fov_pairs=fov_pairs, val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, seed=args.seed, group_by=args.group_by,
                         foreground=args.foreground, verbose=not args.quiet, overwrite=args.overwrite,
                         keep_labels=args.keep_labels)
    counts = record["counts"]
    print(f"Saved {counts['train']} train + {counts['val']} val / {counts['test']} test images to "
          f"{Path(args.work_dir) / HDF5_DIR}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for option, value in (("--n-train", args.n_train), ("--n-test", args.n_test), ("--height", args.height),
                          ("--width", args.width)):
        if value < 1:
            raise cli.option_error(option, f"{value} must be at least 1")
    from common.data.pairs import load_own_data

    own = any(getattr(args, k) is not None for k in ("images", "masks", "nnunet_dataset"))
    check_keep_labels(args, own_data=own, benchmark="DRIVE's vessel masks are binary")
    if own:
        _refuse_existing(args.work_dir, args.overwrite)  # before any file is read
    elif args.fov is not None:
        raise cli.option_error("--fov", "goes with --images/--masks (the DRIVE layout has its mask/ folders)")
    dataset = load_own_data(args)
    if dataset is not None:
        return main_own(args, dataset)
    written = prepare(args.drive_dir, args.work_dir, args.n_train, args.n_test, args.height, args.width, not args.quiet,
                      overwrite=args.overwrite)
    for path, shape in written.items():
        print(f"{path}: {shape} float64")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
