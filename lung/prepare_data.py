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
    split.json                         volume ids, voxel spacing, <id>:<slice> of every kept slice per part,
                                       settings

All or nothing: every volume and mask is checked first (a volume without its mask or a mask without its
volume, shapes, unreadable or truncated files, NaN/inf voxels: one line ``error: <file>: <what>``, exit 2),
the arrays are written under temporary names renamed at the end, and a ``--work-dir`` that already holds a
prepared dataset is refused without ``--overwrite``.

Your own data (``--images DIR --masks DIR`` or ``--nnunet-dataset DIR`` instead of ``--data-dir``), paired and
read by ``common/data/pairs.py`` (its table says how masks are read; lung = the mask's foreground, a mask
with more than two values needs ``--foreground``). Either

* NIfTI volumes in HU and their masks: sliced along ``--slice-axis`` (default 0, the Kaggle volumes' axis; 2
  for the usual (x, y, z) axial layout of scanners and nnU-Net datasets), then exactly the steps above: the
  HU window and min-max scaling over the whole volume, only slices with lung, the same body, FOV and target;
* or 2-D slices (PNG, TIFF, JPEG, BMP; read as 8-bit grey by ``common.data.io.read_image``, 16-bit as its
  high byte): taken as ALREADY WINDOWED grey values, used as the scaled image 0..255 as they are (no HU
  window: convert slices in HU to a NIfTI volume first). Grey 0 must be the window's low end (air: the body
  is ``image > 0``, eroded); then the same FOV and target, and only slices with lung are kept.

Slices of another size than ``--slice-size`` are resized to it (``resize_slices``: the grey image bilinear,
the lung mask nearest-neighbour) before the body, FOV and target are built, so those keep the recipe's
15x15 / 5x5 pixel sizes; ``spacing`` in split.json is scaled to match (2-D slices: 1 = one pixel of the file).
The split is by case (a volume, or a 2-D slice), seeded (``--seed``), from ``--val-fraction`` /
``--test-fraction`` (defaults 0.14 and 0.3: the original's 70 % train / 30 % test slices, of which the last
20 % validate); slices of one volume always stay on one side, and 2-D slices are grouped into volumes by
their folder and their name without its trailing number (``vol1/012.png``, ``case3_slice012.png`` ->
``vol1/``, ``case3_slice``; ``--group-by REGEX`` instead groups by the regex's group 1 in the file name).
The arrays are the same as above: the train arrays hold the train cases' slices then the validation cases'
(``n_val`` in split.json; train_lung.py validates on those instead of its last ``--val-split``), the test
arrays the test cases'. split.json has ``common.data.pairs.write_split``'s case lists (``train``, ``val``,
``test``) and the slices of each part (``train_slices``, ``test_slices``, ``<case>:<index>`` for a volume's
slice, ``<case>`` for a 2-D slice). An nnU-Net dataset's ``imagesTs`` (no masks) is not prepared: run
predict.py on it.

``--keep-labels`` (own data only, not with ``--foreground``; ``common.data.label_maps``): the masks are label
maps 0..K-1 (0 = background, K - 1 <= 63, e.g. left lung 1, right lung 2, a lesion 3). When they hold a label
above 1, the targets are the label maps themselves: the slices with a nonzero label are kept, the images are
prepared as above, the label maps resized nearest-neighbour (labels kept) and stored as ``Train_maska.npy`` /
``Test_maska.npy`` (uint8 0..K-1); no lung mask (``mask_*``) or FOV (``FOV_*``) is written (they belong to the
binary around-lung recipe; ``--overwrite`` of a binary folder removes its old ones), and split.json has
``num_classes`` K and ``target`` ``"labels"`` (else 2 and ``"around-lung"``). train_lung.py then trains a
K-channel softmax head (K from split.json), evaluate_performance.py scores it per class, predict.py writes label
maps. Masks with the labels 0/1 only are the binary recipe, as without the option (a note says so).

Examples::

    python lung/prepare_data.py                                  # data/lung/3d_images -> work/lung/
    python lung/prepare_data.py --data-dir ~/kaggle/finding-lungs-in-ct-data --work-dir /scratch/lung
    python lung/prepare_data.py --images ~/ct/volumes --masks ~/ct/masks --slice-axis 2 --work-dir work/my_lung
    python lung/prepare_data.py --images ~/ct/png_slices --masks ~/ct/png_masks --work-dir work/my_lung_2d
    python lung/prepare_data.py --nnunet-dataset ~/nnUNet_raw/Dataset510_Lung --slice-axis 2 --work-dir work/l510
    python lung/prepare_data.py --images ~/ct/volumes --masks ~/ct/lobes --slice-axis 2 --keep-labels \
        --work-dir work/my_lobes                                 # label maps 0..K-1 as the targets
"""

import argparse
import contextlib
import json
import math
import re
import sys
import zlib
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import DataLayoutError, ImageReadError, atomic_path, open_npy_writer
from common.data.label_maps import add_keep_labels_argument, check_keep_labels, kept_labels, num_classes_of_labels
from common.data.pairs import add_own_data_arguments, load_own_data, read_pair, split_pairs, write_split
from common.errors import UserError
from lung.task import INFERENCE, INPUT, OWN_DATA, body_mask, fill_fov, hu_to_grayscale  # noqa: F401  (task.py)

SLICE_SIZE = INPUT["size"]  # task.py
HU_RANGE = INPUT["hu_range"]  # task.py
EROSION_SIZE, FILL_SIZE = INFERENCE["erosion_size"], INFERENCE["fill_size"]  # task.py
TRAIN_FRACTION = 0.7
LUNG_VALUE = INFERENCE["mask_value"]  # task.py
DEFAULT_DATA = cli.repo_path("data", "lung")
DEFAULT_WORK = cli.repo_path("work", "lung")
# own data (task.py OWN_DATA): 2-D slices are grouped by the relative path without the trailing slice number
SLICE_GROUP = OWN_DATA["slice_group"]
# output name -> (part, dtype); part 0 = train, 1 = test
OUTPUTS = {"image": ("data_train", "data_test", np.float32), "lung": ("mask_train", "mask_test", np.uint8),
           "target": ("Train_maska", "Test_maska", np.uint8), "fov": ("FOV_tr", "FOV_te", np.uint8)}
#: the arrays of label-map targets (own data with --keep-labels, K > 2): the slices and the label maps only
LABEL_OUTPUTS = {key: OUTPUTS[key] for key in ("image", "target")}


def lung_targets(images, lung, erosion_size=EROSION_SIZE, fill_size=FILL_SIZE):
    """The original's masks from scaled slices (S, H, W) and the 0/255 lung ground truth.

    Returns ``(fov, around_lung)`` as bool arrays: ``fov`` = holes of (body OR lung) filled,
    ``around_lung`` = fov AND NOT lung (the training target).
    """
    lung = np.asarray(lung) != 0
    fov = fill_fov(body_mask(images, erosion_size) | lung, fill_size)
    return fov, fov & ~lung


def _volume_id(path, prefix):
    """``IMG_0001.nii.gz`` -> ``0001`` (the name after the prefix, without its extensions)."""
    return path.name[len(prefix):].split(".")[0]


def volume_pairs(data_dir):
    """Sorted ``[(id, image path, mask path)]`` of ``<data_dir>/3d_images``.

    A volume without its mask or a mask without its volume (an orphan on either side) raises
    ``DataLayoutError`` naming the first orphan and how many there are.
    """
    folder = Path(data_dir) / "3d_images"
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: folder not found (expected <data-dir>/3d_images/IMG_<id>.nii.gz "
                              "with MASK_<id>.nii.gz)")
    images = sorted(p for p in folder.glob("IMG_*.gz") if p.is_file())
    masks = sorted(p for p in folder.glob("MASK_*.gz") if p.is_file())
    if not images:
        extra = f" (but {len(masks)} MASK_<id> files: are the volumes elsewhere?)" if masks else ""
        raise DataLayoutError(f"{folder}: no IMG_<id>.nii.gz volumes{extra}")
    pairs = []
    no_mask = []
    for image in images:
        mask = image.with_name("MASK_" + image.name[len("IMG_"):])
        if mask.is_file():
            pairs.append((_volume_id(image, "IMG_"), image, mask))
        else:
            no_mask.append(image)
    paired = {mask for _, _, mask in pairs}
    no_image = [mask for mask in masks if mask not in paired]
    if no_mask:
        more = f" ({len(no_mask) - 1} more volumes without a mask)" if len(no_mask) > 1 else ""
        raise DataLayoutError(f"{no_mask[0]}: mask {'MASK_' + no_mask[0].name[len('IMG_'):]} not found{more}; "
                              "add it or move the volume out of 3d_images")
    if no_image:
        more = f" ({len(no_image) - 1} more masks without a volume)" if len(no_image) > 1 else ""
        raise DataLayoutError(f"{no_image[0]}: volume {'IMG_' + no_image[0].name[len('MASK_'):]} not found"
                              f"{more}; add it or move the mask out of 3d_images")
    return pairs


def _load(path, data=True):
    """A NIfTI file's proxy (``data=False``: header only) or its voxels; unreadable files raise ImageReadError.

    Voxels that are NaN or infinite (possible in float volumes or through a NaN scale factor) are refused:
    the HU clipping and min-max scaling would turn them into NaN slices.
    """
    import nibabel as nib

    try:
        img = nib.load(path)
        if not data:
            return img
        voxels = np.asanyarray(img.dataobj)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read NIfTI volume ({exc.__class__.__name__}: {exc})") from None
    check_finite(voxels, path)
    return voxels


def check_finite(voxels, path):
    """Raise ``ImageReadError`` naming ``path`` when ``voxels`` hold NaN or infinite values."""
    if np.issubdtype(voxels.dtype, np.floating) or np.issubdtype(voxels.dtype, np.complexfloating):
        bad = voxels.size - np.count_nonzero(np.isfinite(voxels))
        if bad:
            raise ImageReadError(f"{path}: {bad} voxels are NaN or infinite; replace them (e.g. by the "
                                 "air value -1024 HU) before using the volume")


def voxel_spacing(path):
    """The NIfTI voxel size per array axis (``header.get_zooms()``, mm), as a list of 3 floats."""
    return [float(z) for z in _load(path, data=False).header.get_zooms()[:3]]


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


def prepared_files(work_dir):
    """The files of a prepared dataset in ``work_dir`` that exist (the arrays and ``split.json``)."""
    names = [name for train, test, _ in OUTPUTS.values() for name in (train, test)]
    return [p for p in [Path(work_dir) / f"{name}.npy" for name in names] + [Path(work_dir) / "split.json"]
            if p.exists()]


def refuse_existing(work_dir, overwrite=False):
    """``UserError`` when ``work_dir`` already holds a prepared dataset and ``overwrite`` is not given."""
    existing = prepared_files(work_dir)
    if existing and not overwrite:
        raise UserError(f"{work_dir}: already holds a prepared dataset ({existing[0].name}); pass --overwrite "
                        "to replace it, or another --work-dir")


def _open_outputs(stack, work_dir, *, n_train, n, slice_size, keys=OUTPUTS):
    """The prepared arrays (``keys``: ``OUTPUTS``, or ``LABEL_OUTPUTS`` for label-map targets) as ``{key: (train
    writer, test writer)}`` (``open_npy_writer``, entered on ``stack``: each file keeps a temporary name until the
    stack closes without an error)."""
    return {key: [stack.enter_context(open_npy_writer(Path(work_dir) / f"{name}.npy", (size,) + (slice_size,) * 2,
                                                      dtype))
                  for name, size in ((train, n_train), (test, n - n_train))]
            for key, (train, test, dtype) in keys.items()}


def _store_slices(out, position, images, lung, *, n_train, erosion_size, fill_size):
    """Write one volume's slices (k, S, S) and lung masks, with the FOV and target built from them
    (:func:`lung_targets`), at rows ``position ..`` of the prepared arrays ``out[key] = (train, test)``: rows below
    ``n_train`` go to the train arrays, the others to the test arrays. Returns the next row."""
    fov, target = lung_targets(images, lung, erosion_size, fill_size)
    return _store_rows(out, position, {"image": images, "lung": lung * np.uint8(255), "target": target,
                                       "fov": fov}, n_train=n_train)


def _store_rows(out, position, arrays, *, n_train):
    """Write ``arrays`` ``{key: (k, S, S)}`` at rows ``position ..`` of ``out[key] = (train, test)``: rows below
    ``n_train`` go to the train arrays, the others to the test arrays. Returns the next row."""
    rows = position + np.arange(len(next(iter(arrays.values()))))
    for part, lo in enumerate((0, n_train)):
        sel = rows >= n_train if part else rows < n_train
        for key, array in arrays.items():
            out[key][part][rows[sel] - lo] = array[sel]
    return position + len(rows)


def prepare(data_dir, work_dir, slice_size=SLICE_SIZE, erosion_size=EROSION_SIZE, fill_size=FILL_SIZE,
            train_fraction=TRAIN_FRACTION, verbose=True, overwrite=False):
    """Read, convert, split and save every volume; returns the summary written to ``split.json``.

    All or nothing: every volume and mask is read and checked (layout, orphans, shapes, readability, NaN)
    before any output is opened, the outputs are written under temporary names and renamed together at the
    end, and a ``work_dir`` that already holds a prepared dataset is refused unless ``overwrite``.
    """
    refuse_existing(work_dir, overwrite)
    pairs = volume_pairs(data_dir)
    kept, spacing = {}, {}
    for vol_id, image_path, mask_path in tqdm(pairs, desc="checking volumes", disable=not verbose):
        check_shapes(image_path, mask_path, slice_size)
        mask = _load(mask_path)
        _load(image_path)  # readable to the end, finite
        other = np.count_nonzero((mask != 0) & (mask != LUNG_VALUE))
        if other:
            print(f"warning: {mask_path}: {other} nonzero voxels are not {LUNG_VALUE}; as in the original they "
                  "select slices but are not lung", file=sys.stderr)
        kept[vol_id] = lung_slices(mask)
        spacing[vol_id] = voxel_spacing(image_path)
        del mask
    n = sum(len(k) for k in kept.values())
    n_train = int(math.floor(n * train_fraction))
    if not 0 < n_train < n:
        raise DataLayoutError(f"{Path(data_dir) / '3d_images'}: {n} slices with lung cannot be split "
                              f"{train_fraction:g}/{1 - train_fraction:g} into two non-empty parts")
    names = [f"{vol_id}:{z}" for vol_id, zs in kept.items() for z in zs]
    summary = {"volumes": list(kept), "slice_size": slice_size, "erosion_size": erosion_size,
               "fill_size": fill_size, "train_fraction": train_fraction, "hu_range": list(HU_RANGE),
               "n_train": n_train, "n_test": n - n_train, "spacing": spacing, "train": names[:n_train],
               "test": names[n_train:]}
    work_dir = Path(work_dir)
    with contextlib.ExitStack() as stack:  # every file keeps a temporary name until all are complete
        out = _open_outputs(stack, work_dir, n_train=n_train, n=n, slice_size=slice_size)
        position = 0
        for vol_id, image_path, mask_path in tqdm(pairs, desc="volumes", disable=not verbose):
            zs = kept[vol_id]
            if not len(zs):
                continue
            images = hu_to_grayscale(_load(image_path), zs)
            lung = _load(mask_path)[zs] == LUNG_VALUE
            position = _store_slices(out, position, images, lung, n_train=n_train, erosion_size=erosion_size,
                                     fill_size=fill_size)
            del images, lung
        tmp = stack.enter_context(atomic_path(work_dir / "split.json"))
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


def resize_slices(images, lung, size):
    """Slices (k, H, W) and their lung masks -> (k, size, size): the grey image bilinear (``cv2.INTER_LINEAR``;
    ``cv2.INTER_AREA``, the mean over each output pixel's area, when shrinking) as float64, the lung mask
    nearest-neighbour (a bool mask stays bool, label maps (uint8, ``--keep-labels``) keep their labels).
    Unchanged when the slices are already ``size`` square."""
    import cv2

    images, lung = np.asarray(images), np.asarray(lung)
    if images.shape[1:] == (size, size):
        return images, lung
    h, w = images.shape[1:]
    interpolation = cv2.INTER_AREA if size < h and size < w else cv2.INTER_LINEAR
    labels = lung.dtype != bool
    grey = np.empty((len(images), size, size), np.float64)
    out = np.empty((len(lung), size, size), np.uint8 if labels else bool)
    for i, (image, mask) in enumerate(zip(images, lung)):
        grey[i] = cv2.resize(image.astype(np.float64), (size, size), interpolation=interpolation)
        resized = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        out[i] = resized if labels else resized > 0
    return grey, out


def _own_case(pair, *, slice_axis, foreground, label_colours, keep_labels=False):
    """``(image, lung, spacing)`` of one own case, slice axis first: a volume's voxels as stored (S, H, W) or a
    2-D slice's grey values (1, H, W) uint8; lung (S, H, W) bool (``keep_labels``: the mask's label map 0..63,
    uint8); ``spacing`` (slice, rows, cols) in mm (2-D: ones). Raises ``UserError`` naming the file for what the
    recipe cannot take."""
    where = pair.image[0]
    if len(pair.image) > 1:
        raise DataLayoutError(f"{where}: the case has {len(pair.image)} channel files; lung takes one CT channel")
    if pair.volume:
        shape = tuple(_load(where, data=False).shape)
        if len(shape) != 3:
            raise ImageReadError(f"{where}: expected a 3-D volume (slices, rows, cols in some order), got shape "
                                 f"{shape}")
    image, lung = read_pair(pair, mode="gray", binary=not keep_labels, foreground=foreground,
                            label_colours=label_colours)
    if keep_labels:
        lung = kept_labels(lung, pair.mask)
    if pair.volume:
        check_finite(image, where)
        zooms = voxel_spacing(where)
        spacing = [zooms[slice_axis]] + [z for axis, z in enumerate(zooms) if axis != slice_axis]
        return np.moveaxis(image, slice_axis, 0), np.moveaxis(lung, slice_axis, 0), spacing
    if image.ndim != 2:
        raise ImageReadError(f"{where}: a slice of shape {image.shape}; lung takes one grey channel")
    return image[None], lung[None], [1.0, 1.0, 1.0]


def split_cases(names, *, slices, val_fraction, test_fraction, seed, group_by=None):
    """``split_pairs`` of the case names. Without ``group_by``, volumes are each their own group and 2-D slices
    are grouped by ``SLICE_GROUP`` searched in their relative path (folder and name without the trailing
    number); returns ``(split, group_by as recorded)``."""
    pattern = re.compile(SLICE_GROUP)
    if group_by or not slices or not any(pattern.search(n.replace("/", "|")) for n in names):
        return split_pairs(names, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           group_by=group_by), group_by
    pseudo = {n.replace("/", "|"): n for n in names}  # split_pairs searches the basename: make it the path
    split = split_pairs(list(pseudo), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                        group_by=SLICE_GROUP)
    return {part: sorted(pseudo[n] for n in values) for part, values in split.items()}, SLICE_GROUP


def prepare_own(dataset, work_dir=DEFAULT_WORK, slice_size=SLICE_SIZE, erosion_size=EROSION_SIZE,
                fill_size=FILL_SIZE, *, slice_axis=0, val_fraction=OWN_DATA["val_fraction"],
                test_fraction=OWN_DATA["test_fraction"], seed=0, group_by=OWN_DATA["group_by"], foreground=None,
                verbose=True, overwrite=False, keep_labels=False):
    """Your own volumes or 2-D slices (``common.data.pairs.OwnDataset``) -> the arrays of :func:`prepare` and
    ``split.json`` (see the module docstring). Returns the ``split.json`` record.

    ``keep_labels`` (``--keep-labels``): the masks are label maps 0..K-1; when they hold a label above 1, the
    targets ``Train_maska`` / ``Test_maska`` are the label maps themselves (uint8, of the slices with a nonzero
    label), no lung mask or FOV is written, and ``num_classes`` K is in split.json (a K-class run); labels 0/1
    only: the binary recipe (lung = label 1, the around-lung target), as without the option."""
    refuse_existing(work_dir, overwrite)
    for option, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not value > 0:
            raise cli.option_error(option, f"{value}: lung needs a validation and a test part (the recipe keeps "
                                           "the best val_loss checkpoint; evaluation scores the test part)")
    kinds = {pair.volume for pair in dataset.pairs}
    if len(kinds) > 1:
        volume = next(p for p in dataset.pairs if p.volume)
        flat = next(p for p in dataset.pairs if not p.volume)
        raise DataLayoutError(f"{volume.image[0]}: a NIfTI volume among 2-D slices (e.g. {flat.image[0]}); give "
                              "volumes and slices as two datasets")
    slices = not kinds.pop()
    if dataset.test:
        print(f"note: the {len(dataset.test)} imagesTs case(s) have no masks and are not prepared; run "
              f"lung/predict.py on them", file=sys.stderr)
    split, group_by = split_cases([p.name for p in dataset.pairs], slices=slices, val_fraction=val_fraction,
                                  test_fraction=test_fraction, seed=seed, group_by=group_by)
    by_name = {p.name: p for p in dataset.pairs}
    read = dict(slice_axis=slice_axis, foreground=foreground, label_colours=dataset.label_colours,
                keep_labels=keep_labels)
    kept, spacing, top = {}, {}, 0
    for name in tqdm(sorted(by_name), desc="checking cases", disable=not verbose):
        image, lung, spacing[name] = _own_case(by_name[name], **read)
        kept[name] = lung_slices(lung)
        top = max(top, int(lung.max(initial=0)))
        h, w = lung.shape[1:]
        spacing[name][1:] = [spacing[name][1] * h / slice_size, spacing[name][2] * w / slice_size]
        del image, lung
    parts = {part: [f"{name}:{z}" if not slices else name for name in split[part] for z in kept[name]]
             for part in ("train", "val", "test")}
    num_classes = num_classes_of_labels(top) if keep_labels else 2
    labelled = "with lung" if num_classes == 2 else "with a nonzero label"
    for part, option in (("val", "--val-fraction"), ("test", "--test-fraction"), ("train", "--val-fraction")):
        if not parts[part]:
            raise DataLayoutError(f"{part} split: its {len(split[part])} case(s) hold no slice {labelled}; only "
                                  f"slices {labelled} are kept; change {option} or --seed, or check the masks")
    dropped = sum(1 for name in by_name if not len(kept[name]))
    if dropped:
        print(f"note: {dropped} case(s) hold no slice {labelled} and add nothing (only slices {labelled} are "
              f"kept)", file=sys.stderr)
    if keep_labels and num_classes == 2:
        print("note: --keep-labels: the masks hold the labels 0/1 only: prepared as the binary recipe (lung = label "
              "1, the around-lung target), as without --keep-labels", file=sys.stderr)
    cases = split["train"] + split["val"] + split["test"]
    n_train, n_val = len(parts["train"]) + len(parts["val"]), len(parts["val"])
    n = n_train + len(parts["test"])
    work_dir = Path(work_dir)
    multiclass = num_classes > 2
    with contextlib.ExitStack() as stack:  # every file keeps a temporary name until all are complete
        out = _open_outputs(stack, work_dir, n_train=n_train, n=n, slice_size=slice_size,
                            keys=LABEL_OUTPUTS if multiclass else OUTPUTS)
        position = 0
        for name in tqdm(cases, desc="cases", disable=not verbose):
            zs = kept[name]
            if not len(zs):
                continue
            image, lung, _ = _own_case(by_name[name], **read)
            images = hu_to_grayscale(image, zs) if not slices else image.astype(np.float64)
            lung = lung[zs] if multiclass else lung[zs] != 0  # --keep-labels with labels 0/1: label 1 is the lung
            images, lung = resize_slices(images, lung, slice_size)
            if multiclass:
                position = _store_rows(out, position, {"image": images, "target": lung}, n_train=n_train)
            else:
                position = _store_slices(out, position, images, lung, n_train=n_train, erosion_size=erosion_size,
                                         fill_size=fill_size)
            del image, images, lung
        tmp = stack.enter_context(atomic_path(work_dir / "split.json"))
        record = write_split(tmp, split, source=dataset.source, seed=seed, group_by=group_by,
                             fractions=(val_fraction, test_fraction), verbose=False)
        record.update({"input": "slices" if slices else "volumes", "slice_axis": None if slices else slice_axis,
                       "volumes": sorted(by_name), "slice_size": slice_size, "erosion_size": erosion_size,
                       "fill_size": fill_size, "hu_range": None if slices else list(HU_RANGE), "n_train": n_train,
                       "n_val": n_val, "n_test": n - n_train, "spacing": spacing,
                       "train_slices": parts["train"] + parts["val"], "test_slices": parts["test"],
                       "num_classes": num_classes, "target": "labels" if multiclass else "around-lung"})
        tmp.write_text(json.dumps(record, indent=1))
    if multiclass:  # --overwrite of a binary folder: its lung masks and FOVs do not belong to these label maps
        for key in set(OUTPUTS) - set(LABEL_OUTPUTS):
            for name in OUTPUTS[key][:2]:
                (work_dir / f"{name}.npy").unlink(missing_ok=True)
    print("split.json: cases " + " / ".join(f"{part} {len(split[part])}" for part in ("train", "val", "test"))
          + "; slices " + " / ".join(f"{part} {len(parts[part])}" for part in ("train", "val", "test"))
          + (f"; {num_classes} classes (label-map targets)" if multiclass else ""))
    return record


def read_summary(work_dir=DEFAULT_WORK):
    """The ``split.json`` of a prepared folder (settings and slice names)."""
    path = Path(work_dir) / "split.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run lung/prepare_data.py first")
    return json.loads(path.read_text())


def split_num_classes(work_dir):
    """``num_classes`` K of split.json when K > 2 (own label maps prepared with ``--keep-labels``), else None
    (binary data, or no split.json: train_lung.py reads K from the targets)."""
    path = Path(work_dir) / "split.json"
    if not path.is_file():
        return None
    try:
        k = int(read_summary(work_dir).get("num_classes") or 0)
    except (ValueError, TypeError, AttributeError):
        raise DataLayoutError(f"{path}: not a split.json of lung/prepare_data.py; run it again with --overwrite") \
            from None
    return k if k > 2 else None


def load_arrays(work_dir, part, keys=("image", "lung", "target", "fov")):
    """Memory-mapped arrays of ``part`` ("train" or "test") by key (see ``OUTPUTS``), each (n, S, S)."""
    index = {"train": 0, "test": 1}[part]
    arrays = {}
    for key in keys:
        path = Path(work_dir) / f"{OUTPUTS[key][index]}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run lung/prepare_data.py first")
        try:
            arrays[key] = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as exc:
            raise DataLayoutError(f"{path}: cannot read the prepared array ({exc.__class__.__name__}: {exc}); "
                                  "run lung/prepare_data.py --overwrite again") from None
    sizes = {key: array.shape[0] for key, array in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise DataLayoutError(f"{Path(work_dir)}: the {part} arrays hold different numbers of slices {sizes}; "
                              "run lung/prepare_data.py --overwrite again")
    return arrays


def build_parser():
    """The command line (defaults = the original's settings; pinned by tests/test_lung.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                        help="the extracted Kaggle dataset, holding 3d_images/ (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="where the arrays and split.json go (default: %(default)s)")
    parser.add_argument("--slice-size", type=int, default=SLICE_SIZE,
                        help="expected slice size in pixels; other volumes are an error (default: %(default)s, "
                             "the real data; smaller only for synthetic volumes); own data: slices of another "
                             "size are resized to it")
    parser.add_argument("--erosion-size", type=int, default=EROSION_SIZE,
                        help="side of the square element eroding the body (default: %(default)s, the original's)")
    parser.add_argument("--fill-size", type=int, default=FILL_SIZE,
                        help="side of the square structure of the hole filling (default: %(default)s, the "
                             "original's)")
    parser.add_argument("--train-fraction", type=float, default=TRAIN_FRACTION,
                        help="first fraction of the kept slices used for training (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a prepared dataset already in --work-dir (default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--slice-axis", type=int, choices=(0, 1, 2), default=OWN_DATA["slice_axis"],
                        help="own NIfTI volumes: the array axis of the slices as nibabel reads the file (default: "
                             "%(default)s, as the Kaggle volumes; 2 for (x, y, z) axial volumes)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the own-data split (--images/--nnunet-dataset; default: %(default)s)")
    group = add_own_data_arguments(parser, val_fraction=OWN_DATA["val_fraction"],
                                   test_fraction=OWN_DATA["test_fraction"], group_by=OWN_DATA["group_by"])
    add_keep_labels_argument(group, binary_default="the lung as one foreground and the around-lung target",
                             head="the label maps are the targets; train_lung.py trains a K-channel softmax head")
    parser._option_string_actions["--group-by"].help = (
        "cases whose file name gives the same regex group 1 stay on one side of the split (default: each volume "
        "its own group; 2-D slices grouped by their folder and name without the trailing number, so vol1/012.png "
        "and case3_slice012.png belong to vol1/ and case3_slice)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.slice_size < 8 or args.slice_size % 8:
        raise cli.option_error("--slice-size", f"{args.slice_size} is not a positive multiple of 8 (three 2x2 "
                                               "poolings in BCDU-Net); the real slices are 512")
    for option, value in (("--erosion-size", args.erosion_size), ("--fill-size", args.fill_size)):
        if value < 1:
            raise cli.option_error(option, f"{value} must be a positive number of pixels")
    if not 0 < args.train_fraction < 1:
        raise cli.option_error("--train-fraction", f"{args.train_fraction} must lie strictly between 0 and 1")
    own = any(getattr(args, k) is not None for k in ("images", "masks", "nnunet_dataset"))
    check_keep_labels(args, own_data=own, benchmark="the Kaggle masks are binary lung masks")
    if own:
        refuse_existing(args.work_dir, args.overwrite)  # before any file is read
    dataset = load_own_data(args)
    if dataset is None and args.slice_axis != 0:
        raise cli.option_error("--slice-axis", "is for your own volumes (--images/--masks, --nnunet-dataset); "
                                               "the Kaggle volumes are sliced along axis 0")
    if dataset is not None:
        for option, value, default in (("--data-dir", args.data_dir, DEFAULT_DATA),
                                       ("--train-fraction", args.train_fraction, TRAIN_FRACTION)):
            if value != default:
                raise cli.option_error(option, "is for the Kaggle layout; with your own data use --val-fraction "
                                               "/ --test-fraction" if option != "--data-dir" else
                                       "give either --data-dir (the Kaggle layout) or --images/--masks or "
                                       "--nnunet-dataset, not both")
        s = prepare_own(dataset, args.work_dir, args.slice_size, args.erosion_size, args.fill_size,
                        slice_axis=args.slice_axis, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                        seed=args.seed, group_by=args.group_by, foreground=args.foreground,
                        verbose=not args.quiet, overwrite=args.overwrite, keep_labels=args.keep_labels)
        print(f"Saved {s['n_train']} train (of them {s['n_val']} validation) / {s['n_test']} test slices of "
              f"{len(s['volumes'])} cases to {args.work_dir}")
        return s
    s = prepare(args.data_dir, args.work_dir, args.slice_size, args.erosion_size, args.fill_size,
                args.train_fraction, not args.quiet, overwrite=args.overwrite)
    print(f"Saved {s['n_train']} train / {s['n_test']} test slices of {len(s['volumes'])} volumes to "
          f"{args.work_dir}")
    return s


if __name__ == "__main__":
    cli.run(main)
