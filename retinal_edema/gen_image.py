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

Your own data (``--images DIR --masks DIR`` or ``--nnunet-dataset DIR``, read by ``common.data.pairs``) is
written in this layout under ``--data-dir`` (split into the three sets by cube, ``split.json`` in
``--list-dir``), so train.py / eval.py / test.py run unchanged with the same ``-d`` and ``-l``; see
:func:`gen_own` and the README section "Train on your own data".
"""

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, atomic_dir, atomic_path, read_image, write_image
from retinal_edema.dataset import (CLASS_NAMES, GREY_CODES, ORIGINAL_STATS, ORIGINAL_TEST_STATS, add_path_arguments,
                                   grey_to_class, read_label, sorted_slices)
from retinal_edema.task import OWN_DATA, stack_slices  # noqa: F401  (one place: task.py)

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


# ------------------------------------------------------------------------------------------------ own data

SPLIT = "split.json"


def _natural_key(text):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def cube_slices(pairs, pattern=OWN_DATA["slice_pattern"]):
    """``{cube name: [pair, ...]}`` with each cube's slices in order.

    A volume (NIfTI) is a cube by itself (its name); a slice ``a/b/7`` belongs to cube ``a/b`` (its folder),
    slices in natural order of their names; a flat slice name ``<cube>_<n>`` (nnU-Net 2-D cases) to cube
    ``<cube>``, ordered by ``n`` (``pattern``: group 1 the cube, group 2 the slice number).
    """
    regex = re.compile(pattern)
    cubes = {}
    for pair in pairs:
        if pair.volume:
            cube, key = pair.name, 0
        elif "/" in pair.name:
            cube, rest = pair.name.rsplit("/", 1)
            key = _natural_key(rest)
        else:
            match = regex.match(pair.name)
            if match is None:
                raise DataLayoutError(f"{pair.image[0]}: cannot tell its cube; put the slices of a cube in one folder "
                                      "(<cube>/<n>.png) or name them <cube>_<n>")
            cube, key = match.group(1), [int(match.group(2))]
        if cube in cubes and (pair.volume or cubes[cube][0][0] is None):
            raise DataLayoutError(f"{pair.image[0]}: cube {cube!r} is given both as a volume and as slices")
        cubes.setdefault(cube, []).append((key if not pair.volume else None, pair))
    return {cube: [p for _, p in sorted(items, key=lambda kv: kv[0] or [])] for cube, items in cubes.items()}


def _class_table(dataset):
    """``{label value: class 0..3}`` from the dataset's label names (nnU-Net dataset.json, --label-colours
    names), or None to read values as class indices / grey codes. nnU-Net names must be the edema classes."""
    names = dataset.labels or {}
    wanted = {name.lower(): cls for cls, name in enumerate(("background",) + CLASS_NAMES)}
    matched = {value: wanted[str(name).lower()] for value, name in names.items() if str(name).lower() in wanted}
    if dataset.source != "nnunet" and not (set(matched) - {0}):
        return None  # unnamed (or colour-named) labels: values are class indices or grey codes
    unknown = {value: name for value, name in names.items() if value not in matched and value != 0}
    if unknown:
        value, name = next(iter(sorted(unknown.items())))
        raise DataLayoutError(f"label {value} {name!r} (dataset.json / --label-colours): not an edema class; name "
                              f"the labels background, {', '.join(CLASS_NAMES)}")
    matched.setdefault(0, 0)
    return matched


def own_classes(labels, path, table=None):
    """(…) label values -> classes 0..3 (uint8): through ``table`` (by label name), else values that are all
    class indices 0..3 as they are, or all the challenge's grey codes (0, 255 REA, 191 SRF, 128 PED) through
    them; anything else raises ``DataLayoutError`` naming ``path`` and the values."""
    labels = np.asarray(labels)
    values = set(np.unique(labels).tolist())
    if table is not None:
        bad = sorted(values - set(table))
        if bad:
            raise DataLayoutError(f"{path}: labels {bad[:5]} are not in the dataset's labels {sorted(table)}")
        lut = np.zeros(max(values) + 1, np.uint8)
        for value, cls in table.items():
            if value <= max(values):
                lut[value] = cls
        return lut[labels.astype(np.int64)]
    if values <= {0, 1, 2, 3}:
        return labels.astype(np.uint8)
    if values <= {0, *GREY_CODES}:
        return grey_to_class(labels.astype(np.uint8), path)
    raise DataLayoutError(f"{path}: label values {sorted(values)[:6]} are neither class indices 0..3 (0 background, "
                          f"1 REA, 2 SRF, 3 PED) nor the challenge's grey codes (0, 255 REA, 191 SRF, 128 PED)")


def _eight_bit(array, path):
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.size and (not np.all(np.mod(array, 1) == 0) or array.min() < 0 or array.max() > 255):
        raise DataLayoutError(f"{path}: intensities {float(array.min()):g}..{float(array.max()):g} ({array.dtype}); "
                              "the B-scans must be 8-bit grey (integers 0..255): scale them first")
    return array.astype(np.uint8)


def read_own_cube(pairs, label_colours=None, table=None):
    """One cube's (n, H, W) uint8 B-scans and (n, H, W) classes 0..3 (None without labels)."""
    from common.data.pairs import read_pair

    images, labels = [], []
    for pair in pairs:
        image, label = read_pair(pair, mode="gray", binary=False, label_colours=label_colours)
        if pair.volume:  # (X, Y, Z) as stored: slice k = [..., k], rows x cols = X x Y
            if image.ndim != 3:
                raise DataLayoutError(f"{pair.image[0]}: a {image.ndim}-D volume; an OCT cube is 3-D (rows, cols, "
                                      "slices), one grey channel")
            image = np.moveaxis(image, -1, 0)
            label = None if label is None else np.moveaxis(label, -1, 0)
        elif image.ndim != 2:
            raise DataLayoutError(f"{pair.image[0]}: {image.shape[-1]} channels; the B-scans are one grey channel")
        images.append(_eight_bit(image, pair.image[0]).reshape((-1,) + image.shape[-2:]))
        if label is not None:
            labels.append(own_classes(label, pair.mask, table).reshape((-1,) + image.shape[-2:]))
    shapes = {im.shape[1:] for im in images}
    if len(shapes) > 1:
        raise DataLayoutError(f"{pairs[-1].image[0]}: the slices of a cube must share one size, found "
                              f"{sorted(shapes)} (rows, cols)")
    return np.concatenate(images), (np.concatenate(labels) if len(labels) == len(images) else None)


def _pad(array, shape):
    """Bottom/right padding with 0 (black B-scan, background label) to ``shape`` (rows, cols)."""
    return np.pad(array, ((0, 0), (0, shape[0] - array.shape[1]), (0, shape[1] - array.shape[2])))


def gen_own(args, verbose=True):
    """Own cubes -> the challenge layout under ``--data-dir``, lists and stats in ``--list-dir``, ``split.json``.

    Cubes (:func:`cube_slices`) are split by ``split_pairs`` on the cube names (``--group-by`` on cube names;
    nnU-Net ``imagesTs`` is the test set, without labels); each cube's slices are stacked as the benchmark's
    (``stack_slices``), its labels read through ``common.data.pairs.read_pair`` (binary=False) and written as
    the challenge's grey-code BMPs. Slices are padded at the bottom/right with black (labels: background) to
    one size for the whole dataset, the largest cube's rows and cols rounded up to multiples of 16 (the
    networks' input rule, as predict.py pads). All or nothing, as :func:`gen_image`.
    """
    from common.data.pairs import load_own_data, split_pairs, write_split

    data_dir, list_dir = Path(args.data_dir), Path(args.list_dir)
    dataset = load_own_data(args, binary=False)
    table = _class_table(dataset)
    cubes = cube_slices(dataset.pairs)
    test_cubes = cube_slices(dataset.test) if dataset.test else {}
    clash = sorted(set(cubes) & set(test_cubes))
    if clash:
        raise DataLayoutError(f"{clash[0]}: a cube both in imagesTr and imagesTs")
    split = split_pairs(sorted(cubes), val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                        seed=args.seed, group_by=args.group_by, test_names=sorted(test_cubes))
    folders = {}
    for cube in list(cubes) + list(test_cubes):
        folder = cube.replace("/", "_")
        if folder in folders.values():
            raise DataLayoutError(f"{cube}: gives the same cube folder {folder!r} as another cube; rename one")
        folders[cube] = folder
    for phase, name in SETS.items():
        if (data_dir / name / "original_images").exists():
            raise DataLayoutError(f"{data_dir / name}: holds the challenge's data (original_images/); write your own "
                                  "data's prepared copy to another --data-dir")
    if not args.overwrite:
        existing = [data_dir / name / sub for name in SETS.values() for sub in (STACKED, "label_images")
                    if (data_dir / name / sub).exists()]
        existing += [list_dir / name for name in LIST_FILES + (SPLIT,) if (list_dir / name).exists()]
        if existing:
            raise DataLayoutError(f"{existing[0]}: already exists (a previous gen_image.py run); pass --overwrite "
                                  "to replace it, or another --data-dir/--list-dir")
    phases = {"train": split["train"], "val": split["val"], "test": split["test"]}
    source = {**cubes, **test_cubes}
    # pass 1: read and check every cube (sizes, labels) before anything is written
    size = [0, 0]
    for cube in tqdm(list(source), desc="check cubes", unit="cube", disable=not verbose, leave=False):
        images, _ = read_own_cube(source[cube], dataset.label_colours, table)
        size = [max(size[0], images.shape[1]), max(size[1], images.shape[2])]
    size = (-(-size[0] // 16) * 16, -(-size[1] // 16) * 16)
    lists, slices, summary = {}, {}, {}
    with contextlib.ExitStack() as stack:
        used = {phase: SETS[phase] for phase in phases if phases[phase]}
        stacked_tmp = {phase: stack.enter_context(atomic_dir(data_dir / name / STACKED, overwrite=True))
                       for phase, name in used.items()}
        label_tmp = {phase: stack.enter_context(atomic_dir(data_dir / name / "label_images", overwrite=True))
                     for phase, name in used.items() if any(c in cubes for c in phases[phase])}
        for phase, set_name in used.items():
            images_list, labels_list = [], []
            for cube in tqdm(phases[phase], desc=set_name, unit="cube", disable=not verbose):
                images, labels = read_own_cube(source[cube], dataset.label_colours, table)
                images = _pad(images, size)
                folder = folders[cube]
                paths = []
                for k, rgb in enumerate(stack_slices(images)):
                    write_image(stacked_tmp[phase] / folder / f"{k:03d}.png", rgb)
                    paths.append(f"{set_name}/{STACKED}/{folder}/{k:03d}.png")
                slices.setdefault(phase, []).extend(paths)
                label_paths = []
                if labels is not None:
                    grey = np.array((0,) + GREY_CODES, np.uint8)[_pad(labels, size)]
                    for k, label in enumerate(grey):
                        write_image(label_tmp[phase] / label_folder(folder) / f"{k + 1}.bmp", label)
                        label_paths.append(f"{set_name}/label_images/{label_folder(folder)}/{k + 1}.bmp")
                if phase == "train":
                    images_list += paths
                    labels_list += label_paths
                else:
                    images_list.append(f"{set_name}/{STACKED}/{folder}")
                    labels_list.append(f"{set_name}/label_images/{label_folder(folder)}" if labels is not None
                                       else None)
            lists[f"{phase}_images.txt"] = images_list
            if all(line is not None for line in labels_list):
                lists[f"{phase}_labels.txt"] = labels_list
            summary[phase] = {"cubes": len(phases[phase]), "slices": len(slices[phase]),
                              "labels": f"{phase}_labels.txt" in lists}

        def locate(rel):  # a stacked slice, still in its set's temporary folder
            set_name, _, rest = rel.split("/", 2)
            phase = next(p for p, name in SETS.items() if name == set_name)
            return stacked_tmp[phase] / rest

        stats = ORIGINAL_STATS if args.original_stats else channel_stats(data_dir, slices["train"], locate=locate)
        test_stats = ORIGINAL_TEST_STATS if args.original_stats else (
            channel_stats(data_dir, slices["test"], locate=locate) if "test" in slices else stats)
        for name, lines in lists.items():
            _write_lines(list_dir / name, lines)
        for name in set(LIST_FILES) - set(lists) - {"info.json", "info_test.json"}:
            (list_dir / name).unlink(missing_ok=True)  # --overwrite: a list of the previous run's sets
        for name, value in (("info.json", stats), ("info_test.json", test_stats)):
            with atomic_path(list_dir / name) as tmp:
                tmp.write_text(json.dumps(value, indent=1))
        record = write_split(list_dir / SPLIT, phases, source=dataset.source, seed=args.seed, group_by=args.group_by,
                             fractions=(args.val_fraction, args.test_fraction), verbose=False)
        record.update(split_unit="cube", folders=folders, size=list(size),
                      slices={part: len(slices.get(part, [])) for part in phases})
        from common.data.io import write_json

        write_json(list_dir / SPLIT, record)
    print(f"{SPLIT}: " + " / ".join(f"{part} {len(phases[part])} cubes ({len(slices.get(part, []))} slices)"
                                    for part in phases))
    summary["stats"], summary["test_stats"], summary["size"] = stats, test_stats, list(size)
    return summary


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:\n  python retinal_edema/gen_image.py\n"
                                            "  python retinal_edema/gen_image.py -d /data/edema -l work/edema_lists "
                                            "--overwrite\n"
                                            "  python retinal_edema/gen_image.py --images my/cubes --masks my/labels "
                                            "-d work/edema_own -l work/edema_own/lists\n"
                                            "  python retinal_edema/gen_image.py --nnunet-dataset nnUNet_raw/"
                                            "Dataset510_OCT -d work/oct -l work/oct/lists")
    add_path_arguments(parser, lists="where the lists and info.json go; the stacked PNGs go inside each set "
                                     "folder of --data-dir")
    parser.add_argument("--original-stats", action="store_true",
                        help="write the original's shipped mean/std instead of computing them")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the stacked slices (<set>/trans3channel_images) and lists of a previous run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    from common.data.pairs import add_own_data_arguments

    group = add_own_data_arguments(parser, val_fraction=OWN_DATA["val_fraction"],
                                   test_fraction=OWN_DATA["test_fraction"], group_by=OWN_DATA["group_by"],
                                   binary=False)
    helps = {"val_fraction": "fraction of the CUBES for validation (default: %(default)s, the challenge's 15 of 100)",
             "test_fraction": "fraction of the cubes for testing (default: %(default)s)",
             "group_by": "cubes whose name gives the same regex group 1 stay on one side (a cube's slices always "
                         "do), e.g. '^(P\\d+)_' for one patient's eyes (default: %(default)s)"}
    for action in group._group_actions:
        action.help = helps.get(action.dest, action.help)
    group.add_argument("--seed", type=int, default=OWN_DATA["seed"], help="seed of the split (default: %(default)s)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.images is not None or args.masks is not None or args.nnunet_dataset is not None:
        summary = gen_own(args, not args.quiet)
        parts = ", ".join(f"{phase} {s['cubes']} cubes / {s['slices']} slices" for phase, s in summary.items()
                          if phase in SETS)
        print(f"Stacked {parts} ({summary['size'][0]} x {summary['size'][1]}) into {args.data_dir}; lists, "
              f"info.json and split.json in {args.list_dir}")
        return summary
    summary = gen_image(args.data_dir, args.list_dir, args.original_stats, not args.quiet, args.overwrite)
    parts = ", ".join(f"{phase} {s['cubes']} cubes / {s['slices']} slices" for phase, s in summary.items()
                      if phase in SETS)
    print(f"Stacked {parts}; lists and info.json in {args.list_dir}")
    return summary


if __name__ == "__main__":
    cli.run(main)
