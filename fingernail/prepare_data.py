"""Fingernail photos -> resized uint8 arrays with the original's seeded train/test split (its data loaders).

Layouts read under ``--raw-dir`` (the original's ``data/raw``)::

    dataset1/image/<name>.png   RGB photo (Golbstein "Fingernails-Segmentation", blue background)
    dataset1/mask/<name>.png    same name: the photo with the background black and the nails pure white
    dataset2/image/<name>.jpg   RGB photo (varied poses and backgrounds)
    dataset2/mask/<name>.jpg    same name: white nails on black

dataset1 (``load_image_data_1``): the mask is resized bicubic (PIL's default) to 192x160, averaged over RGB
and binarised (>= 250 -> 1); a pair whose mask has no foreground is dropped; images without a mask form the
unlabeled set; a mask without an image is skipped with a warning (the original skips it silently).
dataset2 (``load_image_data_2``): the mask is converted to 1 bit (PIL mode '1', Floyd-Steinberg dither), a
portrait image (width < height) and its mask are rotated by +90 degrees, then the image is resized bicubic and
the mask nearest. Every dataset is split on its own (sorted names, ``test_size=--test-ratio``, rounded up by
scikit-learn, ``random_state=--seed``); with several datasets the parts are concatenated in the given order.

Written to ``<work-dir>/<study>/`` (``study`` = the datasets joined by ``+``, e.g. ``dataset1``):
``x_train.npy``/``x_test.npy`` (N,160,192,3) uint8 (the original divides by 255 at load time; train.py
does), ``y_train.npy``/``y_test.npy`` (N,160,192,1) uint8 0/1, ``x_unlabeled.npy`` (M,160,192,3) uint8 and
``split.json`` (file names of each part, dropped pairs, skipped masks, settings). All or nothing: every
input is read and checked first, the arrays are written into a temporary folder renamed into place at the
end, and a folder that already holds a prepared study is replaced only with ``--overwrite``.

Examples::

    python fingernail/prepare_data.py                                     # dataset1 (the paper's first study)
    python fingernail/prepare_data.py --datasets dataset1 dataset2        # the "dataset 1 + 2" study
    python fingernail/prepare_data.py --raw-dir /data/nails --rows 320 --cols 384
"""

import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from PIL import Image
from tqdm import tqdm

from common import cli
from common.data.io import (DataLayoutError, atomic_dir, list_images, pair_files, read_image, save_npy,
                            warn_orientation, write_json)
from fingernail.task import INPUT, RECIPE

ROWS, COLS = INPUT["rows"], INPUT["cols"]  # task.py
TEST_RATIO = 0.1
SEED = RECIPE["seed"]  # task.py
DATASETS = ("dataset1", "dataset2")
DEFAULT_RAW = cli.repo_path("data", "fingernail")
DEFAULT_WORK = cli.repo_path("work", "fingernail")
MASK_WHITE = 250  # dataset1: a resized mask pixel whose RGB mean is >= 250 is nail

EXTENSIONS = {"dataset1": (".png",), "dataset2": (".jpg", ".jpeg")}


def study_name(datasets):
    """Folder / run-id name of a combination of datasets: ``dataset1``, ``dataset1+dataset2``."""
    return "+".join(datasets)


def _resize(array, rows, cols, resample=Image.BICUBIC):
    """PIL resize of a uint8 array to (rows, cols); BICUBIC is PIL's default for RGB and L images."""
    return np.asarray(Image.fromarray(array).resize((cols, rows), resample))


def network_input(image, rows=ROWS, cols=COLS, rotate_portrait=True):
    """A photo (H, W, 3) uint8 -> the network's uint8 input (rows, cols, 3), as the loaders prepare images:
    a portrait photo (width < height) is rotated by +90 degrees (counter-clockwise, dataset2's loader; no
    dataset1 photo is portrait), then resized bicubic. Returns ``(input, rotated)``."""
    pil = Image.fromarray(np.asarray(image))
    rotated = rotate_portrait and pil.size[0] < pil.size[1]
    if rotated:
        pil = pil.rotate(90, expand=True)
    return np.asarray(pil.resize((cols, rows), Image.BICUBIC)), rotated


def _folders(folder, dataset):
    folder = Path(folder)
    image_dir, mask_dir = folder / "image", folder / "mask"
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise DataLayoutError(f"{d}: folder not found (expected {dataset}/image and {dataset}/mask)")
    return list_images(image_dir, EXTENSIONS[dataset]), list_images(mask_dir, EXTENSIONS[dataset])


def _check_same_size(image, mask, mask_path):
    if image.shape[:2] != mask.shape[:2]:
        raise DataLayoutError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
                              f"{image.shape[1]}x{image.shape[0]}")


def binarise_mask_1(mask_rgb, rows=ROWS, cols=COLS):
    """dataset1 mask (H, W, 3) uint8 -> (rows, cols) uint8 0/1: bicubic resize, RGB mean >= 250 is nail."""
    resized = _resize(mask_rgb, rows, cols).astype(np.float64)
    return (resized.mean(axis=2) >= MASK_WHITE).astype(np.uint8)


def load_dataset1(folder, rows=ROWS, cols=COLS, verbose=True):
    """The original's ``load_image_data_1`` without its split, on sorted file names.

    Returns a dict: ``x`` (N, rows, cols, 3) uint8, ``y`` (N, rows, cols, 1) uint8 0/1, ``names``,
    ``x_unlabeled`` (M, rows, cols, 3) uint8 and ``unlabeled`` (images without a mask), ``dropped`` (pairs
    whose mask has no foreground) and ``orphan_masks`` (masks without an image, skipped).
    """
    images, masks = _folders(folder, "dataset1")
    pairs, lonely_images, lonely_masks = pair_files(images, masks, lambda p: p.name, lambda p: p.name,
                                                    strict=False)
    if not pairs:
        raise DataLayoutError(f"{Path(folder) / 'mask'}: no mask has an image of the same name")
    if lonely_masks:
        print(f"warning: {lonely_masks[0]}: mask without image, skipped"
              + (f" (+{len(lonely_masks) - 1} more)" if len(lonely_masks) > 1 else ""), file=sys.stderr)
    x, y, names, dropped = [], [], [], []
    warn_orientation([p for pair in pairs for p in pair], applied=False, reader="PIL.Image.open")
    for image_path, mask_path in tqdm(pairs, desc="dataset1 pairs", disable=not verbose):
        image, mask = read_image(image_path, "rgb", exif=False), read_image(mask_path, "rgb", exif=False)
        _check_same_size(image, mask, mask_path)
        label = binarise_mask_1(mask, rows, cols)
        if not label.any():
            dropped.append(image_path.name)
            continue
        x.append(_resize(image, rows, cols))
        y.append(label[..., None])
        names.append(image_path.name)
    if not x:
        raise DataLayoutError(f"{Path(folder) / 'mask'}: no mask has a foreground pixel (near-white, mean >= 250)")
    unlabeled = [_resize(read_image(p, "rgb", exif=False), rows, cols)
                 for p in tqdm(lonely_images, desc="dataset1 unlabeled", disable=not verbose)]
    return {"x": np.stack(x), "y": np.stack(y), "names": names,
            "x_unlabeled": np.stack(unlabeled) if unlabeled else np.zeros((0, rows, cols, 3), np.uint8),
            "unlabeled": [p.name for p in lonely_images], "dropped": dropped,
            "orphan_masks": [p.name for p in lonely_masks]}


def load_pair_2(image_path, mask_path, rows=ROWS, cols=COLS):
    """One dataset2 pair as the original: mask to mode '1', portrait -> rotate +90, resize (bicubic / nearest)."""
    image = Image.fromarray(read_image(image_path, "rgb", exif=False))  # the stored grid, as PIL.Image.open
    mask = Image.fromarray(read_image(mask_path, "rgb", exif=False))
    if image.size != mask.size:
        raise DataLayoutError(f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]} (WxH) but its image is "
                              f"{image.size[0]}x{image.size[1]}")
    mask = mask.convert("1")  # grey, then Floyd-Steinberg dithering to 1 bit
    if image.size[0] < image.size[1]:  # portrait: rotate counter-clockwise, as the original
        image, mask = image.rotate(90, expand=True), mask.rotate(90, expand=True)
    x = np.asarray(image.resize((cols, rows), Image.BICUBIC))
    y = np.asarray(mask.resize((cols, rows), Image.NEAREST)).astype(np.uint8)  # PIL forces NEAREST for '1'
    return x, y[..., None]


def load_dataset2(folder, rows=ROWS, cols=COLS, verbose=True):
    """The original's ``load_image_data_2`` without its split: ``x``, ``y``, ``names`` (every image needs a mask)."""
    images, masks = _folders(folder, "dataset2")
    pairs = pair_files(images, masks, lambda p: p.name, lambda p: p.name)  # unmatched names raise
    warn_orientation([p for pair in pairs for p in pair], applied=False, reader="PIL.Image.open")
    x, y = zip(*(load_pair_2(i, m, rows, cols) for i, m in tqdm(pairs, desc="dataset2 pairs",
                                                                 disable=not verbose)))
    return {"x": np.stack(x), "y": np.stack(y), "names": [i.name for i, _ in pairs]}


def split_indices(n, test_ratio=TEST_RATIO, seed=SEED):
    """(train, test) index arrays of scikit-learn's ``train_test_split`` (test count rounded up)."""
    from sklearn.model_selection import train_test_split

    if not 0 < math.ceil(test_ratio * n) < n:
        raise DataLayoutError(f"--test-ratio: {test_ratio} of {n} labelled images leaves an empty train or test "
                              f"part; choose another ratio or add images")
    return train_test_split(np.arange(n), test_size=test_ratio, random_state=seed)


def _check_free(out, overwrite):
    """Refuse, before any file is read, to replace a prepared study without ``overwrite``."""
    if out.exists() and not overwrite:
        raise DataLayoutError(f"{out}: holds a prepared study; pass --overwrite to replace it, or another "
                              f"--work-dir")


def prepare(raw_dir, work_dir, datasets=("dataset1",), rows=ROWS, cols=COLS, test_ratio=TEST_RATIO, seed=SEED,
            verbose=True, overwrite=False):
    """Load, split and save the datasets; returns the summary written to ``split.json``.

    All or nothing: every file is read and checked before anything is written, and the arrays are written
    into a temporary folder that replaces ``<work_dir>/<study>`` at the end. A folder that already holds a
    prepared study is replaced only with ``overwrite=True``.
    """
    if rows % 16 or cols % 16:
        raise ValueError(f"rows and cols must be divisible by 16, got {rows}x{cols}")
    out = Path(work_dir) / study_name(datasets)
    _check_free(out, overwrite)
    parts = {"x_train": [], "y_train": [], "x_test": [], "y_test": [], "x_unlabeled": []}
    summary = {"datasets": list(datasets), "rows": rows, "cols": cols, "test_ratio": test_ratio, "seed": seed,
               "train": [], "test": [], "unlabeled": [], "dropped": [], "orphan_masks": []}
    for name in datasets:
        loader = {"dataset1": load_dataset1, "dataset2": load_dataset2}[name]
        data = loader(Path(raw_dir) / name, rows, cols, verbose)
        train, test = split_indices(len(data["x"]), test_ratio, seed)
        for part, idx in (("train", train), ("test", test)):
            parts[f"x_{part}"].append(data["x"][idx])
            parts[f"y_{part}"].append(data["y"][idx])
            summary[part] += [f"{name}/{data['names'][i]}" for i in idx]
        if "x_unlabeled" in data:
            parts["x_unlabeled"].append(data["x_unlabeled"])
            for key in ("unlabeled", "dropped", "orphan_masks"):
                summary[key] += [f"{name}/{n}" for n in data[key]]

    _check_free(out, overwrite)  # again: another process may have written it meanwhile
    with atomic_dir(out, overwrite=overwrite) as folder:  # all files appear at once, or none
        for key, arrays in parts.items():
            empty = np.zeros((0, rows, cols, 3), np.uint8)
            save_npy(folder / f"{key}.npy", np.concatenate(arrays) if arrays else empty)
        write_json(folder / "split.json", summary)
    return summary


def load_split(work_dir=DEFAULT_WORK, study="dataset1"):
    """The arrays of ``prepare``: ``(x_train, y_train), (x_test, y_test)`` uint8 (``UserError`` for a missing
    or unreadable file)."""
    folder = Path(work_dir) / study
    arrays = []
    for key in ("x_train", "y_train", "x_test", "y_test"):
        path = folder / f"{key}.npy"
        if not path.is_file():
            raise DataLayoutError(f"{path}: not found; run fingernail/prepare_data.py first")
        try:
            arrays.append(np.load(path))
        except (OSError, ValueError, EOFError) as exc:
            raise DataLayoutError(f"{path}: not a readable .npy array ({exc.__class__.__name__}); run "
                                  f"fingernail/prepare_data.py --overwrite again") from None
    return tuple(arrays[:2]), tuple(arrays[2:])


def prepared_size(work_dir=DEFAULT_WORK, study="dataset1"):
    """(rows, cols) of a prepared study, read from its ``split.json``."""
    path = Path(work_dir) / study / "split.json"
    if not path.is_file():
        raise DataLayoutError(f"{path}: not found; run fingernail/prepare_data.py first")
    try:
        summary = json.loads(path.read_text())
        return int(summary["rows"]), int(summary["cols"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataLayoutError(f"{path}: not prepare_data.py's split.json ({exc.__class__.__name__}); run "
                              f"fingernail/prepare_data.py --overwrite again") from None


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW,
                        help="folder holding dataset1/ and/or dataset2/ (default: %(default)s)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=["dataset1"],
                        help="datasets to load, concatenated in this order (default: dataset1; the paper's "
                             "second study is 'dataset1 dataset2')")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="output root; arrays go to <work-dir>/<study> (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=ROWS, help="resized height (default: %(default)s)")
    parser.add_argument("--cols", type=int, default=COLS, help="resized width (default: %(default)s)")
    parser.add_argument("--test-ratio", type=float, default=TEST_RATIO,
                        help="test fraction of each dataset, rounded up (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED,
                        help="random_state of the split (default: %(default)s, the original's seed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a study already prepared in <work-dir>/<study>")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.rows < 16 or args.cols < 16 or args.rows % 16 or args.cols % 16:
        raise cli.option_error("--rows/--cols", f"must be positive multiples of 16 (four 2x2 poolings), got "
                                                f"{args.rows}x{args.cols}")
    if len(set(args.datasets)) != len(args.datasets):
        raise cli.option_error("--datasets", f"a dataset is listed twice ({' '.join(args.datasets)})")
    if not 0 < args.test_ratio < 1:
        raise cli.option_error("--test-ratio", f"must lie strictly between 0 and 1, got {args.test_ratio}")
    s = prepare(args.raw_dir, args.work_dir, args.datasets, args.rows, args.cols, args.test_ratio, args.seed,
                not args.quiet, overwrite=args.overwrite)
    print(f"Saved {len(s['train'])} train / {len(s['test'])} test / {len(s['unlabeled'])} unlabeled images to "
          f"{args.work_dir / study_name(args.datasets)} ({len(s['dropped'])} pairs without foreground dropped, "
          f"{len(s['orphan_masks'])} masks without image skipped)")
    return s


if __name__ == "__main__":
    cli.run(main)
