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

Examples::

    python skin_lesion/prepare_isic2018.py --data-dir ~/isic2018
    python skin_lesion/prepare_isic2018.py --size 128 --work-dir work/skin_lesion_128
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from PIL import Image
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, atomic_path, list_images, pair_files, read_image, warn_orientation
from common.data.synthetic import ISIC_IMAGE_DIR, ISIC_MASK_DIR
from skin_lesion.task import INPUT

SIZE = INPUT["size"]  # the network side (task.py)
SPLITS = (("train", 1815), ("val", 259), ("test", 520))
MASK_SUFFIX = "_segmentation"
DEFAULT_DATA = cli.repo_path("data", "isic2018")
DEFAULT_WORK = cli.repo_path("work", "skin_lesion")


def resize(array, size=SIZE):
    """Pillow bilinear resize of a uint8 (H, W) or (H, W, 3) array to (size, size) uint8 (antialiased when
    shrinking, like scipy.misc.imresize)."""
    return np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR))


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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.size <= 0 or args.size % 8:
        raise cli.option_error("--size", f"must be a positive multiple of 8 (the networks pool three times), "
                                         f"got {args.size}")
    splits = tuple((name, getattr(args, f"n_{name}")) for name, _ in SPLITS)
    summary = prepare(args.data_dir, args.work_dir, args.size, splits, not args.quiet, overwrite=args.overwrite)
    counts = ", ".join(f"{len(ids)} {name}" for name, ids in summary["splits"].items())
    print(f"Saved {counts} images ({args.size}x{args.size}, uint8) to {args.work_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
