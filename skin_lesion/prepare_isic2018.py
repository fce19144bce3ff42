"""ISIC 2018 Task 1 training set -> six uint8 arrays split 1815/259/520 (the original's Prepare_ISIC2018.py).

Reads the official layout under ``--data-dir`` (the original's ``dataset_isic18/``)::

    ISIC2018_Task1-2_Training_Input/ISIC_<7 digits>.jpg                      2,594 RGB dermoscopy photos
    ISIC2018_Task1_Training_GroundTruth/ISIC_<7 digits>_segmentation.png    their 0/255 lesion masks

Every image and mask is resized to 256x256 with Pillow's bilinear filter on uint8 (what the original's
``scipy.misc.imresize(..., interp='bilinear')`` did); masks are NOT re-binarised, so their borders keep
intermediate values, as the original's. The pairs are taken in sorted id order (the original used the file
system's ``glob`` order) and split by position: the first 1815 train, the next 259 validation, the last 520
test. Written to ``--work-dir`` with the original's names, but as uint8 instead of float64 (same values):

    data_train.npy (1815, 256, 256, 3)   data_val.npy (259, ...)   data_test.npy (520, ...)
    mask_train.npy (1815, 256, 256)      mask_val.npy (259, ...)   mask_test.npy (520, ...)
    split.json                           the ids of each split and the settings

The arrays are streamed to disk image by image (peak memory stays far below 1 GB for the full set) and
renamed into place only when all six and ``split.json`` are complete, so a run that fails (an unreadable
file half-way) leaves nothing behind. Images without a mask, masks without an image, a mask whose size
differs from its image's and unreadable files stop the run with a one-line error naming them. A prepared
dataset already in ``--work-dir`` is never replaced without ``--overwrite``.

Your own data (``--images DIR --masks DIR`` or ``--nnunet-dataset DIR`` instead of ``--data-dir``): RGB photos
of any size and name and their masks, paired and read by ``common/data/pairs.py`` (its table says how masks
are read: 0/255 or 0/1, palette, 16-bit, colour-coded, JPEG; a mask with more than two values needs
``--foreground``). The same six arrays are written, each photo and its 0/255 mask resized to ``--size`` by
the same ``resize`` as the benchmark path (Pillow bilinear, mask borders not re-binarised). The split is
seeded (``--seed``), from ``--val-fraction`` / ``--test-fraction`` (defaults 0.0998 and 0.2005: the
original's 1815/259/520 proportions; ``--group-by REGEX`` keeps photos of one lesion or patient on one side);
each split is in sorted name order, and ``split.json`` lists its names (``common.data.pairs.write_split``).
An nnU-Net dataset's ``imagesTs`` has no masks, so it is not part of the arrays (run predict.py on it); the
test split is drawn from ``imagesTr`` by ``--test-fraction``. NIfTI volumes are refused (2-D photos only).

Examples::

    python skin_lesion/prepare_isic2018.py --data-dir ~/isic2018
    python skin_lesion/prepare_isic2018.py --size 128 --work-dir work/skin_lesion_128
    python skin_lesion/prepare_isic2018.py --images ~/derm/photos --masks ~/derm/masks --work-dir work/derm
    python skin_lesion/prepare_isic2018.py --nnunet-dataset ~/nnUNet_raw/Dataset501_Skin --work-dir work/derm501
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, atomic_path, list_images, pair_files, read_image, warn_orientation
from common.data.pairs import add_own_data_arguments, load_own_data, read_pair, split_pairs, write_split
from common.data.synthetic import ISIC_IMAGE_DIR, ISIC_MASK_DIR
from skin_lesion.task import INPUT, OWN_DATA, resize  # noqa: F401  (OWN_DATA: the own-data split defaults; task.py)

SIZE = INPUT["size"]  # the network side (task.py)
SPLITS = (("train", 1815), ("val", 259), ("test", 520))
MASK_SUFFIX = "_segmentation"
DEFAULT_DATA = cli.repo_path("data", "isic2018")
DEFAULT_WORK = cli.repo_path("work", "skin_lesion")


def find_pairs(data_dir):
    """Sorted (image, mask) paths of the official layout; unmatched files raise ``DataLayoutError`` by name."""
    data_dir = Path(data_dir)
    images = list_images(data_dir / ISIC_IMAGE_DIR, (".jpg",))  # the original globs *.jpg only
    masks = list_images(data_dir / ISIC_MASK_DIR, (".png",))

    def mask_key(path):
        if not path.stem.endswith(MASK_SUFFIX):
            raise DataLayoutError(f"{path}: mask name does not end in {MASK_SUFFIX}.png")
        return path.stem[: -len(MASK_SUFFIX)]

    return pair_files(images, masks, lambda p: p.stem, mask_key)


def split_sizes(n_pairs, sizes):
    """``[(name, start, stop)]`` of consecutive splits; their sizes must add up to ``n_pairs``."""
    total = sum(n for _, n in sizes)
    if total != n_pairs or any(n < 0 for _, n in sizes):
        wanted = " + ".join(f"{n} {name}" for name, n in sizes)
        raise DataLayoutError(f"found {n_pairs} image/mask pairs but the split asks for {wanted} = {total}; "
                              f"pass --n-train/--n-val/--n-test adding up to {n_pairs}")
    bounds, start = [], 0
    for name, n in sizes:
        bounds.append((name, start, start + n))
        start += n
    return bounds


class NpyStream:
    """Appends items to a ``.npy`` file of known shape, written sequentially (constant memory)."""

    def __init__(self, file, shape, dtype):
        self.file, self.shape, self.dtype, self.count = file, tuple(shape), np.dtype(dtype), 0
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(file, header)

    def append(self, item):
        item = np.ascontiguousarray(item, dtype=self.dtype)
        if item.shape != self.shape[1:] or self.count >= self.shape[0]:
            raise ValueError(f"{self.file.name}: item {self.count} of shape {item.shape} does not fit {self.shape}")
        self.file.write(item.tobytes())
        self.count += 1


@contextlib.contextmanager
def npy_streams(specs):
    """Open several ``NpyStream``s ``{path: (shape, dtype)}``; all are renamed into place only if the block
    succeeds and every array is complete, otherwise none is left behind."""
    with contextlib.ExitStack() as stack:
        streams = {}
        for path, (shape, dtype) in specs.items():
            tmp = stack.enter_context(atomic_path(path))
            streams[path] = NpyStream(stack.enter_context(open(tmp, "wb")), shape, dtype)
        yield streams
        for path, stream in streams.items():
            if stream.count != stream.shape[0]:
                raise ValueError(f"{path}: {stream.count} of {stream.shape[0]} items written")


def output_files(work_dir, splits=SPLITS):
    """The files :func:`prepare` writes into ``work_dir``."""
    names = [f"{kind}_{name}.npy" for name, _ in splits for kind in ("data", "mask")] + ["split.json"]
    return [Path(work_dir) / name for name in names]


def check_outputs(work_dir, splits=SPLITS, overwrite=False):
    """``UserError`` when ``work_dir`` already holds a prepared dataset and ``overwrite`` is not given."""
    from common.errors import UserError

    existing = [p for p in output_files(work_dir, splits) if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: a prepared dataset is already there; pass --overwrite to replace it, "
                        f"or another --work-dir")


def prepare(data_dir=DEFAULT_DATA, work_dir=DEFAULT_WORK, size=SIZE, splits=SPLITS, verbose=True, overwrite=False):
    """Resize, split and stream the pairs into ``work_dir``; returns the summary written to ``split.json``.

    Args:
        data_dir: folder holding the two official ISIC 2018 folders.
        work_dir: output folder for the six ``.npy`` files and ``split.json``.
        size: side of the square resized images (256 in the original).
        splits: ``((name, count), ...)`` consecutive parts in sorted id order; counts must add up to the
            number of pairs.
        verbose: show a progress bar.
        overwrite: replace a dataset already prepared in ``work_dir`` (else ``UserError`` before any reading).
    """
    check_outputs(work_dir, splits, overwrite)
    pairs = find_pairs(data_dir)
    bounds = split_sizes(len(pairs), splits)
    work_dir = Path(work_dir)
    specs = {}
    for name, start, stop in bounds:
        specs[work_dir / f"data_{name}.npy"] = ((stop - start, size, size, 3), np.uint8)
        specs[work_dir / f"mask_{name}.npy"] = ((stop - start, size, size), np.uint8)
    summary = {"size": size, "splits": {name: [p[0].stem for p in pairs[start:stop]] for name, start, stop in bounds}}
    warn_orientation([p for pair in pairs for p in pair], applied=False, reader="scipy.misc.imread (PIL)")
    with contextlib.ExitStack() as stack:  # split.json is renamed into place after the arrays, or not at all
        split_tmp = stack.enter_context(atomic_path(work_dir / "split.json"))
        streams = stack.enter_context(npy_streams(specs))
        progress = tqdm(total=len(pairs), desc="ISIC 2018 pairs", unit="img", disable=not verbose)
        for name, start, stop in bounds:
            images, masks = streams[work_dir / f"data_{name}.npy"], streams[work_dir / f"mask_{name}.npy"]
            for image_path, mask_path in pairs[start:stop]:
                image, mask = read_image(image_path, "rgb", exif=False), read_image(mask_path, "gray", exif=False)
                if mask.shape != image.shape[:2]:
                    raise DataLayoutError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its "
                                          f"image is {image.shape[1]}x{image.shape[0]}")
                images.append(resize(image, size))
                masks.append(resize(mask, size))
                progress.update()
        progress.close()
        split_tmp.write_text(json.dumps(summary, indent=1))
    return summary


def prepare_own(dataset, work_dir=DEFAULT_WORK, size=SIZE, *, val_fraction=OWN_DATA["val_fraction"],
                test_fraction=OWN_DATA["test_fraction"], seed=0, group_by=OWN_DATA["group_by"], foreground=None,
                verbose=True, overwrite=False):
    """Your own photos and masks (``common.data.pairs.OwnDataset``) -> the six arrays and ``split.json``.

    Each split holds its cases in sorted name order; photos are read as RGB and masks as binary labels
    (``read_pair``), the mask stored 0/255 as the benchmark's, both resized by :func:`resize`. Returns the
    ``split.json`` record.
    """
    check_outputs(work_dir, SPLITS, overwrite)
    volumes = [p for p in dataset.pairs if p.volume]
    if volumes:
        raise DataLayoutError(f"{volumes[0].image[0]}: a NIfTI volume; skin_lesion takes 2-D photos (PNG, JPEG, "
                              f"TIFF, BMP) with their masks")
    if dataset.test:
        print(f"note: the {len(dataset.test)} imagesTs case(s) have no masks and are not prepared; the test split "
              f"is drawn from imagesTr (--test-fraction); run skin_lesion/predict.py on imagesTs", file=sys.stderr)
    split = split_pairs([p.name for p in dataset.pairs], val_fraction=val_fraction, test_fraction=test_fraction,
                        seed=seed, group_by=group_by)
    warn_orientation([f for p in dataset.pairs for f in (*p.image, p.mask) if not p.volume], applied=False,
                     reader="scipy.misc.imread (PIL)")
    by_name = {p.name: p for p in dataset.pairs}
    work_dir = Path(work_dir)
    specs = {}
    for name, _ in SPLITS:
        specs[work_dir / f"data_{name}.npy"] = ((len(split[name]), size, size, 3), np.uint8)
        specs[work_dir / f"mask_{name}.npy"] = ((len(split[name]), size, size), np.uint8)
    with contextlib.ExitStack() as stack:  # split.json is renamed into place after the arrays, or not at all
        split_tmp = stack.enter_context(atomic_path(work_dir / "split.json"))
        streams = stack.enter_context(npy_streams(specs))
        progress = tqdm(total=len(dataset.pairs), desc="photos", unit="img", disable=not verbose)
        for name, _ in SPLITS:
            images, masks = streams[work_dir / f"data_{name}.npy"], streams[work_dir / f"mask_{name}.npy"]
            for case in split[name]:
                image, mask = read_pair(by_name[case], mode="rgb", binary=True, foreground=foreground,
                                        label_colours=dataset.label_colours)
                images.append(resize(image, size))
                masks.append(resize(mask.astype(np.uint8) * np.uint8(255), size))
                progress.update()
        progress.close()
        record = write_split(split_tmp, split, source=dataset.source, seed=seed, group_by=group_by,
                             fractions=(val_fraction, test_fraction), verbose=False)
    print("split.json: " + " / ".join(f"{part} {n}" for part, n in record["counts"].items()))
    return record


def load_split(work_dir, split, mmap=True):
    """``(images, masks)`` of one split: (N, S, S, 3) and (N, S, S) uint8, memory-mapped by default."""
    arrays = []
    for kind in ("data", "mask"):
        path = Path(work_dir) / f"{kind}_{split}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run skin_lesion/prepare_isic2018.py first")
        arrays.append(np.load(path, mmap_mode="r" if mmap else None))
    if len(arrays[0]) != len(arrays[1]) or arrays[0].shape[1:3] != arrays[1].shape[1:3]:
        raise DataLayoutError(f"{work_dir}: data_{split}.npy {arrays[0].shape} and mask_{split}.npy "
                              f"{arrays[1].shape} do not match")
    return tuple(arrays)


def build_parser():
    """The command line (its defaults are the original's settings; pinned by the tests)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help=f"folder holding {ISIC_IMAGE_DIR}/ and {ISIC_MASK_DIR}/ (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="output folder for the .npy files (default: %(default)s)")
    parser.add_argument("--size", type=int, default=SIZE,
                        help="side of the resized square images, a multiple of 8 (default: %(default)s)")
    for name, n in SPLITS:
        parser.add_argument(f"--n-{name}", type=int, default=n,
                            help=f"images in the {name} split, taken in sorted id order (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset already prepared in --work-dir (default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the own-data split (--images/--nnunet-dataset; default: %(default)s)")
    add_own_data_arguments(parser, val_fraction=OWN_DATA["val_fraction"], test_fraction=OWN_DATA["test_fraction"],
                           group_by=OWN_DATA["group_by"])
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.size <= 0 or args.size % 8:
        raise cli.option_error("--size", f"must be a positive multiple of 8 (the networks pool three times), "
                                         f"got {args.size}")
    splits = tuple((name, getattr(args, f"n_{name}")) for name, _ in SPLITS)
    check_outputs(args.work_dir, SPLITS, args.overwrite)  # before any file is read
    dataset = load_own_data(args)
    if dataset is not None:
        for (name, n), (_, given) in zip(SPLITS, splits):
            if given != n:
                raise cli.option_error(f"--n-{name}", "counts the benchmark layout's split; with your own data "
                                                      "use --val-fraction / --test-fraction")
        if args.data_dir != DEFAULT_DATA:
            raise cli.option_error("--data-dir", "give either --data-dir (the ISIC 2018 layout) or "
                                                 "--images/--masks or --nnunet-dataset, not both")
        record = prepare_own(dataset, args.work_dir, args.size, val_fraction=args.val_fraction,
                             test_fraction=args.test_fraction, seed=args.seed, group_by=args.group_by,
                             foreground=args.foreground, verbose=not args.quiet, overwrite=args.overwrite)
        counts = ", ".join(f"{n} {name}" for name, n in record["counts"].items())
        print(f"Saved {counts} images ({args.size}x{args.size}, uint8) to {args.work_dir}")
        return 0
    summary = prepare(args.data_dir, args.work_dir, args.size, splits, not args.quiet, overwrite=args.overwrite)
    counts = ", ".join(f"{len(ids)} {name}" for name, ids in summary["splits"].items())
    print(f"Saved {counts} images ({args.size}x{args.size}, uint8) to {args.work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
