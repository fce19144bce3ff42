"""Data of the retinal-edema task: slice lists, label codes, cube loading, normalisation, the training input.

The original's ``data/Seg_dataset.py`` (``SegList``) and ``data/seg_transforms.py`` (``Label_Transform``,
``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``), channels last. Paths in the list files are relative
to ``--data-dir`` as in the original:

* ``train_images.txt`` / ``train_labels.txt``: one slice per line,
  ``Edema_trainingset/trans3channel_images/<cube>.img/000.png`` <-> ``.../label_images/<cube>_labelMark/1.bmp``;
* ``val_images.txt`` / ``val_labels.txt`` (and ``test_images.txt``, ``test_labels.txt`` if the test set has
  labels): one cube folder per line; inside, ``k.png`` (0-based) pairs with ``(k+1).bmp``.

Images are read as RGB (PIL), so channel 0 is the NEXT slice, 1 the current one and 2 the previous one
(see gen_image.py). Labels are 8-bit grey BMPs: 0 background, 255 REA -> 1, 191 SRF -> 2, 128 PED -> 3.
"""

import json
from pathlib import Path

import numpy as np

from common import cli
from common.data.io import DataLayoutError, ImageReadError, list_images, read_image
from retinal_edema.task import CLASSES, GREY_CODES as _GREY, normalise  # noqa: F401  (one place: task.py)

DEFAULT_DATA = cli.repo_path("data", "retinal_edema")
DEFAULT_LISTS = cli.repo_path("work", "retinal_edema", "lists")
GREY_CODES = (_GREY[1], _GREY[2], _GREY[3])  # REA, SRF, PED -> classes 1, 2, 3 (Label_Transform's order)
CLASS_NAMES = (CLASSES[1], CLASSES[2], CLASSES[3])
N_CLASSES = len(CLASSES)
# data/data_path/multi_task/info.json and info_test.json of the original (pixels / 255, R G B order)
ORIGINAL_STATS = {"mean": [0.143694, 0.143672, 0.143650], "std": [0.097954, 0.097920, 0.097885]}
ORIGINAL_TEST_STATS = {"mean": [0.143034, 0.143031, 0.143027], "std": [0.096963, 0.096912, 0.096861]}

_LUT = np.full(256, 255, np.uint8)  # 255 marks a grey value that is not a class code
_LUT[0] = 0
for _cls, _grey in enumerate(GREY_CODES, 1):
    _LUT[_grey] = _cls


def grey_to_class(label, path="label"):
    """(H, W) uint8 grey codes -> class indices 0..3; any other grey value raises ``DataLayoutError``."""
    label = np.asarray(label)
    classes = _LUT[label]
    bad = (classes == 255)
    if bad.any():
        values = sorted(set(np.unique(label[bad]).tolist()))[:5]
        raise DataLayoutError(f"{path}: unexpected label grey values {values} (expected 0, 255 REA, 191 SRF, "
                              f"128 PED)")
    return classes


def read_label(path, size=None):
    """A label BMP as class indices (H, W) uint8."""
    return grey_to_class(read_image(path, "gray", size), path)


def slice_number(path):
    """The integer of a slice file name (``12.bmp`` -> 12, ``011.png`` -> 11)."""
    path = Path(path)
    try:
        return int(path.stem)
    except ValueError:
        raise DataLayoutError(f"{path}: slice file names must be numbers (1.bmp, 2.bmp, ... or 000.png, ...)")\
            from None


def sorted_slices(folder, extensions, first):
    """The slice files of a cube folder sorted by number; the numbers must run first, first+1, ... without gaps."""
    files = sorted(list_images(folder, extensions), key=slice_number)
    numbers = [slice_number(f) for f in files]
    expected = list(range(first, first + len(files)))
    if numbers != expected:
        missing = sorted(set(range(first, max(numbers) + 1)) - set(numbers))[:5]
        raise DataLayoutError(f"{folder}: slices are not numbered {first}..{first + len(files) - 1} "
                              f"(missing {missing})" if missing else f"{folder}: duplicate slice numbers")
    return files


def read_list(list_dir, phase, labels=True):
    """Lines of ``<phase>_images.txt`` (and ``<phase>_labels.txt``): ``images`` or ``(images, labels)``."""
    out = []
    for kind in ("images", "labels")[: 2 if labels else 1]:
        path = Path(list_dir) / f"{phase}_{kind}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run retinal_edema/gen_image.py first")
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise DataLayoutError(f"{path}: empty list")
        out.append(lines)
    if labels and len(out[0]) != len(out[1]):
        raise DataLayoutError(f"{Path(list_dir) / (phase + '_labels.txt')}: {len(out[1])} lines but "
                              f"{phase}_images.txt has {len(out[0])}")
    return out if labels else out[0]


def read_stats(list_dir, test=False):
    """``info.json`` (or ``info_test.json``) of gen_image.py: ``(mean, std)`` float32 arrays of 3."""
    path = Path(list_dir) / ("info_test.json" if test else "info.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run retinal_edema/gen_image.py first")
    info = json.loads(path.read_text())
    return np.float32(info["mean"]), np.float32(info["std"])


def load_pair(data_dir, image_rel, label_rel):
    """One training slice: (H, W, 3) uint8 RGB image and (H, W) uint8 classes, same size."""
    image = read_image(Path(data_dir) / image_rel, "rgb")
    label = read_label(Path(data_dir) / label_rel, image.shape[:2])
    return image, label


def cube_files(data_dir, image_rel, label_rel=None):
    """Slice PNGs of a stacked cube folder (000.png, ...) and, with ``label_rel``, the labels ``(k+1).bmp``."""
    images = sorted_slices(Path(data_dir) / image_rel, (".png",), 0)
    if label_rel is None:
        return images, None
    labels = [Path(data_dir) / label_rel / f"{slice_number(p) + 1}.bmp" for p in images]
    for image, label in zip(images, labels):
        if not label.is_file():
            raise ImageReadError(f"{label}: file not found (the label of {image})")
    return images, labels


def load_cube(data_dir, image_rel, label_rel=None):
    """A whole cube: images (n, H, W, 3) uint8 and labels (n, H, W) uint8 classes (or None)."""
    image_files, label_files = cube_files(data_dir, image_rel, label_rel)
    first = read_image(image_files[0], "rgb")
    images = np.stack([first] + [read_image(p, "rgb", first.shape[:2]) for p in image_files[1:]])
    if label_files is None:
        return images, None
    return images, np.stack([read_label(p, first.shape[:2]) for p in label_files])


def cube_name(image_rel):
    """``.../trans3channel_images/<cube>.img`` -> ``<cube>`` (the submission's file stem)."""
    name = Path(image_rel).name
    return name[:-4] if name.endswith(".img") else name


def presence(labels, n_classes=N_CLASSES):
    """Per-slice presence of classes 1..n-1: (B, H, W) classes -> (B, n-1) float32 0/1 (target_seg2target_cls)."""
    labels = np.asarray(labels)
    return np.stack([(labels == c).reshape(len(labels), -1).any(axis=1) for c in range(1, n_classes)],
                    axis=1).astype(np.float32)


def training_dataset(data_dir, images, labels, batch_size, mean, std, flip=True, seed=None, multi_task=True,
                     shuffle=True, num_parallel_calls=1, cache=None):
    """``tf.data`` input of train.py: shuffled slices, horizontal flip p=0.5, /255 and per-channel mean/std.

    Yields ``(x, {"seg": labels, "det": presence})`` batches (``drop_remainder``, as ``drop_last=True``);
    ``x`` float32 (B, H, W, 3), ``seg`` int32 (B, H, W), ``det`` float32 (B, 3). Files are read per batch,
    ``num_parallel_calls`` batches at a time (``--data-workers``). Which slices of a batch are flipped is a
    function of ``seed`` and the batch's slice indices, so the batches are the same for any number of calls.

    ``cache``: ``(images, labels)`` uint8 arrays of the decoded slices in the order of ``images``
    (:func:`decoded_slices`); the batches are then gathered from them and ``x`` stays uint8, to be normalised
    on the device by :func:`device_normalise` (train.py's ``--decode-cache``): the same batches after it.
    """
    import tensorflow as tf

    from common.data.preprocess import flip_image
    from common.training import without_autotune

    base_seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else int(seed)

    def gather(idx):
        if cache is None:
            xs, ys = zip(*(load_pair(data_dir, images[i], labels[i]) for i in idx))
            x, y = np.stack(xs), np.stack(ys)
        else:
            x, y = cache[0][idx], cache[1][idx]  # fancy indexing copies out of the memory maps
        if flip:
            flipped = np.random.default_rng([base_seed, *map(int, idx)]).random(len(idx)) < 0.5
            for k in np.flatnonzero(flipped):  # left-right
                x[k], y[k] = flip_image(x[k], left_right=True), flip_image(y[k], left_right=True)
        return (x if cache is not None else normalise(x, mean, std)), y.astype(np.int32), presence(y)

    h, w = load_pair(data_dir, images[0], labels[0])[1].shape
    x_dtype = tf.float32 if cache is None else tf.uint8

    def load(idx):
        x, y, det = tf.numpy_function(gather, [idx], [x_dtype, tf.int32, tf.float32])
        x.set_shape((None, h, w, 3))
        y.set_shape((None, h, w))
        det.set_shape((None, N_CLASSES - 1))
        return x, ({"seg": y, "det": det} if multi_task else {"seg": y})

    ds = tf.data.Dataset.range(len(images))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return without_autotune(ds.batch(batch_size, drop_remainder=True).map(
        load, num_parallel_calls=num_parallel_calls, deterministic=True))


def decoded_slices(data_dir, images, labels, cache_root, verbose=True):
    """``(images, labels)``: read-only uint8 memory maps (n, H, W, 3) and (n, H, W) of the training slices,
    decoded once into ``cache_root`` (common.data.decode_cache; reused while the files are unchanged)."""
    from common.data.decode_cache import decoded_arrays

    sources = [(Path(data_dir) / i, Path(data_dir) / l) for i, l in zip(images, labels)]
    return decoded_arrays(cache_root, sources, lambda i: load_pair(data_dir, images[i], labels[i]),
                          verbose=verbose, what="training slices")


def device_normalise(mean, std):
    """``x -> (x / 255 - mean) / std`` in float32 on Keras tensors: :func:`normalise` (the same float32
    arithmetic, bit for bit on a CPU) for the training step of a decoded cache."""
    mean, std = np.float32(mean), np.float32(std)

    def transform(x):
        from keras import ops

        return (ops.cast(x, "float32") / np.float32(255.0) - mean) / std

    return transform


def add_path_arguments(parser, lists="lists and info.json of gen_image.py"):
    """``-d/--data-dir`` (root of the set folders; list paths are relative to it) and ``-l/--list-dir``."""
    parser.add_argument("-d", "--data-dir", type=Path, default=DEFAULT_DATA,
                        help="folder holding Edema_trainingset/ (+ Edema_validationset/, Edema_testset/); the "
                             "list paths are relative to it (default: %(default)s)")
    parser.add_argument("-l", "--list-dir", type=Path, default=DEFAULT_LISTS, help=f"{lists} (default: %(default)s)")
