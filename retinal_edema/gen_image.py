"""Data pre-process of the retinal-edema solution: 3-channel slice stacking, label checks, lists and stats.

The original's ``data/utils/gen_image.py`` + ``gen_txt.py`` + ``compute_mean_std.py`` in one script.
Reads the AI Challenger 2018 layout under ``--data-dir`` (the three zips unzipped)::

    Edema_trainingset/original_images/<cube>.img/1.bmp .. 128.bmp         8-bit grey B-scans (H 1024 x W 512)
    Edema_trainingset/label_images/<cube>_labelMark/1.bmp .. 128.bmp      0 bg, 255 REA, 191 SRF, 128 PED
    Edema_validationset/  (same two folders)      Edema_testset/original_images/  (images only)

and writes, for every cube, ``<set>/trans3channel_images/<cube>.img/000.png .. 127.png``: slice i (0-based,
numeric order) as an RGB PNG whose channels are **R = slice i+1, G = slice i, B = slice i-1**, edges
replicated (slice 0 uses [1, 0, 0], the last slice [n-1, n-1, n-2] in R, G, B). This is exactly the file the
original writes with OpenCV (BGR = [i-1, i, i+1]) and then reads with PIL. Stacked ``k.png`` pairs with the
label ``(k+1).bmp``. Every label is checked (pairing, size, grey codes) with a one-line error naming the file.

Lists (relative to ``--data-dir``) go to ``--list-dir``: ``train_images.txt``/``train_labels.txt`` (one slice
per line), ``val_images.txt``/``val_labels.txt`` and ``test_images.txt`` (one cube folder per line; also
``test_labels.txt`` when the test set has labels, e.g. synthetic data), plus ``info.json`` (per-channel
mean/std of pixels/255 over up to 2,000 random training slices, as ``compute_mean_std.py``) and
``info_test.json`` (the same on test slices, used by test.py). ``--original-stats`` writes the original's
shipped values instead.

All or nothing: the stacked slices go to temporary folders renamed into place, and the lists are written, only
once every cube of every set has been read and checked, so a bad file anywhere leaves no output behind.
Existing stacked folders or lists are replaced only with ``--overwrite``.
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
from common.data.io import DataLayoutError, atomic_dir, atomic_path, read_image, write_image
from retinal_edema.dataset import (ORIGINAL_STATS, ORIGINAL_TEST_STATS, add_path_arguments, read_label,
                                   sorted_slices)
from retinal_edema.task import stack_slices  # noqa: F401  (one place: task.py)

SETS = {"train": "Edema_trainingset", "val": "Edema_validationset", "test": "Edema_testset"}
STACKED = "trans3channel_images"
STATS_IMAGES = 2000


def label_folder(cube):
    """``<cube>.img`` -> ``<cube>_labelMark`` (the challenge's label folder name)."""
    return (cube[:-4] if cube.endswith(".img") else cube) + "_labelMark"


def _cube_folders(folder):
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: folder not found")
    cubes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not cubes:
        raise DataLayoutError(f"{folder}: no cube folders")
    return cubes


def check_pairs(set_dir):
    """Cube names of a set folder and whether it has labels; unpaired cube or label folders raise."""
    set_dir = Path(set_dir)
    cubes = _cube_folders(set_dir / "original_images")
    if not (set_dir / "label_images").is_dir():
        return cubes, False
    label_dirs = set(_cube_folders(set_dir / "label_images"))
    wanted = {label_folder(c) for c in cubes}
    if wanted - label_dirs:
        first = sorted(wanted - label_dirs)[0]
        raise DataLayoutError(f"{set_dir / 'label_images' / first}: label folder not found "
                              f"(+{len(wanted - label_dirs) - 1} more)" if len(wanted - label_dirs) > 1 else
                              f"{set_dir / 'label_images' / first}: label folder not found")
    if label_dirs - wanted:
        first = sorted(label_dirs - wanted)[0]
        raise DataLayoutError(f"{set_dir / 'label_images' / first}: no cube folder in original_images for it")
    return cubes, True


def gen_cube(set_dir, cube, with_labels, stacked_dir=None):
    """Stack one cube (writes ``<stacked_dir>/<cube>/%03d.png``) and check its labels.

    ``stacked_dir`` defaults to ``<set_dir>/trans3channel_images``; :func:`gen_image` passes a temporary
    folder that is renamed into place only when every cube of every set has been checked and written.
    Returns ``(stacked image paths, label paths or None)`` relative to the set folder's parent.
    """
    set_dir = Path(set_dir)
    stacked_dir = Path(stacked_dir) if stacked_dir is not None else set_dir / STACKED
    files = sorted_slices(set_dir / "original_images" / cube, (".bmp",), 1)
    # BMP slices carry no orientation tag: the stored grid, as the original's cv2.imread (and PIL for labels)
    first = read_image(files[0], "gray", exif=False)
    slices = np.stack([first] + [read_image(p, "gray", first.shape, exif=False) for p in files[1:]])
    label_paths = None
    if with_labels:
        label_dir = set_dir / "label_images" / label_folder(cube)
        label_files = sorted_slices(label_dir, (".bmp",), 1)
        if len(label_files) != len(files):
            raise DataLayoutError(f"{label_dir}: {len(label_files)} label slices but the cube has {len(files)}")
        for path in label_files:
            read_label(path, first.shape)  # size and grey codes
        label_paths = [f"{set_dir.name}/label_images/{label_folder(cube)}/{k + 1}.bmp" for k in range(len(files))]
    stacked = stack_slices(slices)
    image_paths = []
    for k, rgb in enumerate(stacked):
        write_image(stacked_dir / cube / f"{k:03d}.png", rgb)
        image_paths.append(f"{set_dir.name}/{STACKED}/{cube}/{k:03d}.png")
    return image_paths, label_paths


def channel_stats(data_dir, image_paths, n_max=STATS_IMAGES, seed=0, locate=None):
    """Per-channel mean and std of pixels/255 over up to ``n_max`` random stacked slices.

    ``locate(rel)`` maps a list path to the file to read (default ``data_dir / rel``)."""
    locate = locate or (lambda rel: Path(data_dir) / rel)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(image_paths), min(n_max, len(image_paths)), replace=False)
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for i in tqdm(chosen, desc="mean/std", leave=False, disable=len(chosen) < 200):
        x = read_image(locate(image_paths[i]), "rgb").reshape(-1, 3) / 255.0
        total += x.sum(axis=0)
        total_sq += (x ** 2).sum(axis=0)
        count += len(x)
    mean = total / count
    return {"mean": mean.round(6).tolist(), "std": np.sqrt(total_sq / count - mean ** 2).round(6).tolist()}


def _write_lines(path, lines):
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines))


LIST_FILES = ("train_images.txt", "train_labels.txt", "val_images.txt", "val_labels.txt", "test_images.txt",
              "test_labels.txt", "info.json", "info_test.json")


def gen_image(data_dir, list_dir, original_stats=False, verbose=True, overwrite=False):
    """Stack every cube of the sets present, write the lists and stats; returns a summary dict.

    All or nothing: every set's layout is checked first, the stacked slices of every set go to temporary
    folders beside their final ``<set>/trans3channel_images`` and the lists are written only when every cube
    of every set has been read and checked; then the folders are renamed into place. A bad file anywhere
    leaves no output behind (nor in ``--list-dir``). Existing stacked folders or lists are refused unless
    ``overwrite``.
    """
    data_dir, list_dir = Path(data_dir), Path(list_dir)
    present = {phase: data_dir / name for phase, name in SETS.items() if (data_dir / name).is_dir()}
    if "train" not in present:
        raise DataLayoutError(f"{data_dir / SETS['train']}: folder not found (unzip the challenge's training set "
                              f"into {data_dir})")
    layout = {}
    for phase, set_dir in present.items():  # every set's pairing before any slice is read
        cubes, with_labels = check_pairs(set_dir)
        if phase != "test" and not with_labels:
            raise DataLayoutError(f"{set_dir / 'label_images'}: folder not found")
        layout[phase] = (set_dir, cubes, with_labels)
    if not overwrite:
        existing = [set_dir / STACKED for set_dir, _, _ in layout.values() if (set_dir / STACKED).exists()]
        existing += [list_dir / name for name in LIST_FILES if (list_dir / name).exists()]
        if existing:
            raise DataLayoutError(f"{existing[0]}: already exists (a previous gen_image.py run); pass --overwrite "
                                  f"to replace the stacked slices and lists, or another --list-dir/--data-dir")
    summary, slices, lists = {}, {}, {}
    with contextlib.ExitStack() as stack:
        tmp_dirs = {phase: stack.enter_context(atomic_dir(set_dir / STACKED, overwrite=True))
                    for phase, (set_dir, _, _) in layout.items()}
        for phase, (set_dir, cubes, with_labels) in layout.items():
            images, labels = [], []
            for cube in tqdm(cubes, desc=f"{set_dir.name}", unit="cube", disable=not verbose):
                cube_images, cube_labels = gen_cube(set_dir, cube, with_labels, tmp_dirs[phase])
                slices.setdefault(phase, []).extend(cube_images)
                if phase == "train":
                    images += cube_images
                    labels += cube_labels
                else:
                    images.append(f"{set_dir.name}/{STACKED}/{cube}")
                    labels.append(f"{set_dir.name}/label_images/{label_folder(cube)}" if with_labels else None)
            lists[f"{phase}_images.txt"] = images
            if with_labels:
                lists[f"{phase}_labels.txt"] = labels
            summary[phase] = {"cubes": len(cubes), "slices": len(slices[phase]), "labels": with_labels}

        def locate(rel):  # a stacked slice, still in its set's temporary folder
            set_name, _, rest = rel.split("/", 2)
            phase = next(p for p, name in SETS.items() if name == set_name)
            return tmp_dirs[phase] / rest

        stats = ORIGINAL_STATS if original_stats else channel_stats(data_dir, slices["train"], locate=locate)
        test_stats = ORIGINAL_TEST_STATS if original_stats else (
            channel_stats(data_dir, slices["test"], locate=locate) if "test" in slices else stats)
        # the lists last, inside the block: a failure before this point leaves neither lists nor slices
        for name, lines in lists.items():
            _write_lines(list_dir / name, lines)
        for name, value in (("info.json", stats), ("info_test.json", test_stats)):
            with atomic_path(list_dir / name) as tmp:
                tmp.write_text(json.dumps(value, indent=1))
    summary["stats"], summary["test_stats"] = stats, test_stats
    return summary


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:\n  python retinal_edema/gen_image.py\n"
                                            "  python retinal_edema/gen_image.py -d /data/edema -l work/edema_lists "
                                            "--overwrite")
    add_path_arguments(parser, lists="where the lists and info.json go; the stacked PNGs go inside each set "
                                     "folder of --data-dir")
    parser.add_argument("--original-stats", action="store_true",
                        help="write the original's shipped mean/std instead of computing them")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the stacked slices (<set>/trans3channel_images) and lists of a previous run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    summary = gen_image(args.data_dir, args.list_dir, args.original_stats, not args.quiet, args.overwrite)
    parts = ", ".join(f"{phase} {s['cubes']} cubes / {s['slices']} slices" for phase, s in summary.items()
                      if phase in SETS)
    print(f"Stacked {parts}; lists and info.json in {args.list_dir}")
    return summary


if __name__ == "__main__":
    cli.run(main)
