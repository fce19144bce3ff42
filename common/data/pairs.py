"""Your own data: one reader for a folder of images and a folder of masks (``--images DIR --masks DIR``), or
an nnU-Net v2 raw dataset (``--nnunet-dataset DIR``, read by ``common.data.nnunet``), and the seeded split.

Pairing rule (``find_pairs``)
    Both folders are searched recursively; every file whose extension is an image extension
    (``.tif .tiff .gif .png .jpg .jpeg .bmp``, or a NIfTI volume ``.nii .nii.gz``), in any letter case, counts;
    other files and names starting with ``.`` are ignored. The mask of ``a/b/x.jpg`` (path relative to the
    images folder) is ``a/b/x.<ext>`` or ``a/b/x<suffix>.<ext>`` relative to the masks folder, with any image
    extension and a suffix from ``MASK_SUFFIXES`` (``_mask _segmentation _label _labels _manual1 _gt``);
    names are compared case-insensitively. The case name is the image's relative path without its extension
    (``a/b/x``); pairs are sorted by it. Every image without a mask, every mask without an image, every name
    matching two masks (or two images) is reported in ONE error (the first 10 of each, and the count);
    ``skip_unpaired`` warns with the same list and goes on with the pairs found. When ``--images`` and
    ``--masks`` are the same folder, files whose name ends with a mask suffix are the masks; a masks folder
    inside the images folder is not searched for images.

Images and sizes (``read_pair``)
    Images are read by ``common.data.io.read_image`` (``"gray"`` or ``"rgb"`` uint8, as the benchmark path
    reads them); sizes may differ between pairs (the task's recipe resizes), but an image and its mask of
    different sizes is an error naming both files and both sizes.

Mask rules (``read_label_map``, ``binary_mask``)

    =====================================  ==================================================================
    mask file                              labels read
    =====================================  ==================================================================
    grey 0/255 or 0/1 (8-bit; 0/65535)     {0, 1}
    grey 8- or 16-bit label map            the values as stored (16-bit NOT scaled to 8 bits)
    palette PNG / GIF (mode ``P``)         the palette index of each pixel (not its colour's luminance);
                                           indices 0/255 only -> {0, 1} as for grey
    RGB with three equal channels          as grey
    RGB colour-coded                       ``label_colours`` {label: [r, g, b]} (a colour not in it is an
                                           error); without it: black = 0, the other colours found numbered
                                           1, 2, ... in sorted (r, g, b) order (``load_own_data`` builds that
                                           table once over every mask, so labels agree between files)
    JPEG (lossy)                           grey (luminance) >= 128 -> 1, else 0; a note says so once per run
    NIfTI volume                           the integer voxel values as stored
    =====================================  ==================================================================

    A binary task (``binary_mask``) takes label 0 as background and the other label as foreground; a mask
    with more than two values is an error naming the file and the values, unless ``foreground`` says which
    labels are foreground (``--foreground 1,2`` or ``--foreground all`` = every label but 0).

Split (``split_pairs``, ``write_split``)
    Seeded, by ``--val-fraction`` / ``--test-fraction`` of the names; with ``--group-by REGEX`` the names
    whose basename gives the same group (the regex's group 1, or its whole match) stay on one side. The
    split is written as ``split.json`` beside the prepared arrays::

        {"train": ["a/x", ...], "val": [...], "test": [...], "seed": 0, "group_by": "^(\\\\d+)_",
         "val_fraction": 0.1, "test_fraction": 0.2, "source": "folders", "counts": {"train": 1200, ...}}
"""

import json
import re
import sys
from pathlib import Path

import numpy as np

from common.cli import option_error
from common.data.cases import OwnDataset, Pair
from common.data.io import IMAGE_EXTENSIONS, DataLayoutError, ImageReadError, read_image, write_json
from common.errors import OptionError, UserError

MASK_SUFFIXES = ("_mask", "_segmentation", "_label", "_labels", "_manual1", "_gt")
VOLUME_EXTENSIONS = (".nii.gz", ".nii")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
JPEG_THRESHOLD = 128  # a JPEG mask pixel >= 128 is foreground
SHOW = 10  # how many files an error or warning lists before "(+N more)"

__all__ = ["MASK_SUFFIXES", "Pair", "OwnDataset", "find_pairs", "read_label_map", "read_label_colours",
           "binary_mask", "read_pair", "split_pairs", "write_split", "add_own_data_arguments",
           "load_own_data", "parse_foreground", "dataset_colours", "split_own_data"]


def print_to_stderr(message):
    print(message, file=sys.stderr)


# ----------------------------------------------------------------------------------------------- pairing

def _split_extension(name):
    """``("x", ".png")`` for ``x.png``; ``("v", ".nii.gz")`` for ``v.nii.gz``; ``(name, None)`` when not an image."""
    lower = name.lower()
    for ext in VOLUME_EXTENSIONS + IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[:-len(ext)], ext
    return name, None


def _image_files(folder, exclude=None):
    """``{relative stem: [paths]}`` of the image files under ``folder`` (recursive, hidden names skipped)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if exclude is not None and exclude in path.resolve().parents:
            continue
        stem, ext = _split_extension(rel.as_posix())
        if ext is not None:
            found.setdefault(stem, []).append(path)
    return found


def _mask_stem_key(stem):
    """The image key a mask stem answers to: without a mask suffix (if it has one), lower case."""
    lower = stem.lower()
    for suffix in MASK_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix) and not lower[:-len(suffix)].endswith("/"):
            return lower[:-len(suffix)]
    return None


def _listing(paths, folder, show=SHOW):
    names = [Path(p).relative_to(folder).as_posix() if folder is not None else str(p) for p in paths]
    more = f" (+{len(names) - show} more)" if len(names) > show else ""
    return ", ".join(names[:show]) + more


def _check_folder(folder, option):
    folder = Path(folder)
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: folder not found ({option})" if option else f"{folder}: folder not found")
    return folder


def find_pairs(images_dir, masks_dir, *, skip_unpaired=False, warn=print_to_stderr):
    """Pair the images under ``images_dir`` with the masks under ``masks_dir`` (see the module docstring).

    Args:
        images_dir, masks_dir: folders (may be the same folder: then masks are the files with a mask suffix).
        skip_unpaired: warn (through ``warn``) with the list of unpaired and ambiguous files and go on.
        warn: function taking one message string (default: print to stderr).
    Returns:
        tuple of ``Pair`` sorted by name; ``Pair.volume`` is True for NIfTI images.
    Raises:
        DataLayoutError: a missing or image-less folder, unpaired files or ambiguous names (one error listing
            them all), or no pair at all.
    """
    images_dir = _check_folder(images_dir, "--images")
    masks_dir = _check_folder(masks_dir, "--masks")
    same = images_dir.resolve() == masks_dir.resolve()
    masks_inside = not same and images_dir.resolve() in masks_dir.resolve().parents
    image_files = _image_files(images_dir, exclude=masks_dir.resolve() if masks_inside else None)
    mask_files = image_files if same else _image_files(masks_dir)
    if same:  # one folder: the files with a mask suffix are the masks
        mask_files = {s: p for s, p in image_files.items() if _mask_stem_key(s) is not None}
        image_files = {s: p for s, p in image_files.items() if _mask_stem_key(s) is None}
    exts = ", ".join(VOLUME_EXTENSIONS + IMAGE_EXTENSIONS)
    if not image_files:
        raise DataLayoutError(f"{images_dir}: no image files ({exts}, searched recursively); "
                              "point --images at the folder that holds the images")
    if not mask_files:
        raise DataLayoutError(f"{masks_dir}: no mask files ({exts}, searched recursively)"
                              + ("; in one folder the masks need a suffix " + ", ".join(MASK_SUFFIXES)
                                 if same else "; point --masks at the folder that holds the masks"))

    images_by_key, masks_by_key = {}, {}
    for stem, paths in image_files.items():
        images_by_key.setdefault(stem.lower(), []).extend(paths)
    for stem, paths in mask_files.items():
        for key in {stem.lower(), _mask_stem_key(stem)} - {None}:
            masks_by_key.setdefault(key, []).extend(paths)

    pairs, lonely_images, ambiguous, used, claimed = [], [], [], {}, set()
    for key in sorted(images_by_key):
        images = images_by_key[key]
        masks = sorted(set(masks_by_key.get(key, [])))
        name = _split_extension(images[0].relative_to(images_dir).as_posix())[0]
        if len(images) > 1:  # x.png and x.jpg (or X.png and x.png) among the images
            ambiguous.append(f"{name} (images " + ", ".join(p.relative_to(images_dir).as_posix() for p in images)
                             + ")")
            claimed.update(masks)
            continue
        if not masks:
            lonely_images.append(images[0])
            continue
        for m in masks:
            used.setdefault(m, []).append(images[0])
        if len(masks) > 1:
            ambiguous.append(f"{name} (masks " + ", ".join(p.relative_to(masks_dir).as_posix() for p in masks) + ")")
            continue
        pairs.append((images[0], masks[0]))
    # a mask claimed by two images (images x.png and x_mask.png, mask x_mask.png): ambiguous too
    shared = {m for m, imgs in used.items() if len(imgs) > 1}
    if shared:
        for m in sorted(shared):
            ambiguous.append(f"{m.relative_to(masks_dir).as_posix()} (mask of images "
                             + ", ".join(p.relative_to(images_dir).as_posix() for p in used[m]) + ")")
        pairs = [(i, m) for i, m in pairs if m not in shared]
    lonely_masks = sorted(p for paths in mask_files.values() for p in paths if p not in used and p not in claimed)

    problems = []
    if lonely_images:
        problems.append(f"{len(lonely_images)} image(s) without a mask: {_listing(lonely_images, images_dir)}")
    if lonely_masks:
        problems.append(f"{len(lonely_masks)} mask(s) without an image: {_listing(lonely_masks, masks_dir)}")
    if ambiguous:
        more = f" (+{len(ambiguous) - SHOW} more)" if len(ambiguous) > SHOW else ""
        problems.append(f"{len(ambiguous)} name(s) matching two files: " + "; ".join(ambiguous[:SHOW]) + more)
    where = f"{images_dir}" if same else f"{images_dir} and {masks_dir}"
    if problems and not skip_unpaired:
        raise DataLayoutError(
            f"{where}: {'; '.join(problems)}. The mask of a/b/x.jpg must be a/b/x.<ext> or a/b/x<suffix>.<ext> "
            f"(suffix {', '.join(MASK_SUFFIXES)}; any image extension; relative to the masks folder); rename "
            f"or move these files, or pass --skip-unpaired to go on with the {len(pairs)} pair(s) found")
    if problems:
        warn(f"warning: {where}: skipping {'; '.join(problems)}")
    if not pairs:
        raise DataLayoutError(f"{where}: no image has a mask; the mask of a/b/x.jpg must be a/b/x.<ext> or "
                              f"a/b/x<suffix>.<ext> (suffix {', '.join(MASK_SUFFIXES)})")
    result = []
    for image, mask in pairs:
        stem, ext = _split_extension(image.relative_to(images_dir).as_posix())
        result.append(Pair(name=stem, image=(image,), mask=mask, volume=ext in VOLUME_EXTENSIONS))
    return tuple(sorted(result, key=lambda p: p.name))


# ----------------------------------------------------------------------------------------------- masks

_NOTED = set()


def _note_once(key, message):
    if key not in _NOTED:
        _NOTED.add(key)
        print(f"note: {message}", file=sys.stderr)


def read_label_colours(path):
    """``{label: (r, g, b)}`` and ``{label: name}`` from a ``--label-colours`` JSON file.

    Layout: ``{"0": [0, 0, 0], "1": [255, 0, 0]}`` or with names ``{"1": {"name": "tumour", "colour":
    [255, 0, 0]}}``; labels are integers >= 0, colours three integers 0..255, each colour once.
    Returns ``(colours, names)``.
    """
    path = Path(path)
    where = f"--label-colours {path}"
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise OptionError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OptionError(f"{where}: not a JSON file ({exc})") from None
    if not isinstance(table, dict) or not table:
        raise OptionError(f'{where}: expected an object {{"label": [r, g, b], ...}}, e.g. '
                          '{"0": [0, 0, 0], "1": [255, 0, 0]}')
    colours, names = {}, {}
    for key, value in table.items():
        name = None
        if isinstance(value, dict):
            name, value = value.get("name"), value.get("colour", value.get("color"))
        try:
            label = int(key)
            ok = label >= 0 and str(label) == str(key).strip()
        except ValueError:
            ok = False
        if not ok:
            raise OptionError(f"{where}: label {key!r} is not an integer >= 0")
        if (not isinstance(value, (list, tuple)) or len(value) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
            raise OptionError(f"{where}: label {key}: colour {value!r} is not three integers 0..255 [r, g, b]")
        colour = tuple(int(v) for v in value)
        if colour in colours.values():
            raise OptionError(f"{where}: colour {list(colour)} is given to two labels")
        colours[label] = colour
        names[label] = str(name) if name is not None else ",".join(map(str, colour))
    return colours, names


def _colour_table(label_colours):
    if label_colours is None or isinstance(label_colours, dict):
        return label_colours
    return read_label_colours(label_colours)[0]  # a path


def _open_mode(path):
    """PIL mode and format of an image file (header only), or (None, None) when PIL cannot open it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode, img.format
    except Exception:  # read_image reports the reason
        return None, None


def _palette_indices(path):
    """The palette indices of a palette image, on the stored pixel grid (as ``read_image``'s default reads the
    images: an orientation tag is not applied to either side of a pair)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        indices = np.asarray(img)
        return indices[..., 0] if indices.ndim == 3 else indices  # PA: drop the alpha


def _read_volume(path):
    """Voxels of a NIfTI file as stored; an unreadable file raises ImageReadError naming it."""
    import zlib

    import nibabel as nib

    try:
        return np.asanyarray(nib.load(path).dataobj)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read NIfTI volume ({exc.__class__.__name__}: {exc})") from None


def _colour_labels(rgb, path, label_colours):
    """(H, W, 3) uint8 colour map -> (H, W) labels."""
    flat = rgb.reshape(-1, 3)
    codes = (flat[:, 0].astype(np.uint32) << 16) | (flat[:, 1].astype(np.uint32) << 8) | flat[:, 2]
    found, inverse = np.unique(codes, return_inverse=True)
    colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in found.tolist()]
    if label_colours is None:
        ordered = sorted(c for c in colours if c != (0, 0, 0))
        table = {c: i + 1 for i, c in enumerate(ordered)}
        table[(0, 0, 0)] = 0
    else:
        table = {tuple(c): label for label, c in label_colours.items()}
        missing = [c for c in colours if c not in table]
        if missing:
            listed = ", ".join(str(list(c)) for c in missing[:SHOW])
            more = f" (+{len(missing) - SHOW} more)" if len(missing) > SHOW else ""
            raise UserError(f"{path}: colour(s) {listed}{more} not in --label-colours; add them to the JSON file "
                            "(label -> [r, g, b]) or fix the mask")
    lut = np.array([table[c] for c in colours], dtype=np.int64)
    labels = lut[inverse.reshape(-1)].reshape(rgb.shape[:2])
    return labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)


def read_label_map(path, *, label_colours=None):
    """Read a mask file as integer labels, by the rules of the module docstring's table.

    Args:
        path: a mask file (any image extension, or NIfTI).
        label_colours: for RGB colour-coded masks: ``{label: (r, g, b)}`` or the path of a ``--label-colours``
            JSON file; None = black 0, the other colours found 1, 2, ... in sorted (r, g, b) order.
    Returns:
        (H, W) integer array (uint8, uint16 or the volume's integer type; (D, H, W) for NIfTI).
    Raises:
        ImageReadError / UserError naming the file (unreadable, a colour not in ``label_colours``, non-integer
        volume labels).
    """
    path = Path(path)
    stem, ext = _split_extension(path.name)
    if ext in VOLUME_EXTENSIONS:
        voxels = _read_volume(path)
        if not np.issubdtype(voxels.dtype, np.integer):
            if not np.all(np.isfinite(voxels)) or not np.all(voxels == np.round(voxels)) or voxels.min() < 0:
                raise UserError(f"{path}: mask volume holds values that are not labels (integers >= 0); "
                                "save it with integer labels")
            voxels = voxels.astype(np.int32)
        return voxels
    pil_mode, pil_format = _open_mode(path)
    if pil_format == "JPEG" or ext in JPEG_EXTENSIONS:
        grey = read_image(path, mode="gray")  # a missing, empty or truncated file -> one error naming it
        _note_once("jpeg", f"JPEG masks are lossy: binarised at {JPEG_THRESHOLD} (grey >= {JPEG_THRESHOLD} is "
                           "foreground); save masks as PNG to keep exact labels")
        return (grey >= JPEG_THRESHOLD).astype(np.uint8)
    stored = read_image(path, mode="unchanged")  # validates the file: missing, empty, truncated -> one error
    array = _palette_indices(path) if pil_mode in ("P", "PA") else np.asarray(stored)
    if array.ndim == 3:
        if array.shape[-1] in (2, 4):  # grey + alpha, RGBA: drop the alpha
            array = array[..., :-1]
        if array.shape[-1] == 1 or (np.array_equal(array[..., 0], array[..., 1])
                                    and np.array_equal(array[..., 0], array[..., -1])):
            array = array[..., 0]
        else:
            return _colour_labels(array.astype(np.uint8), path, _colour_table(label_colours))
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise UserError(f"{path}: negative mask values ({array.min()}); labels must be integers >= 0")
    values = np.unique(array)
    top = 65535 if array.dtype == np.uint16 else 255
    if values.size and set(values.tolist()) <= {0, top} and top in values:  # 0/255 (or 0/65535) binary
        return (array == top).astype(np.uint8)
    return array


def parse_foreground(text):
    """``--foreground`` value: ``"all"`` or the labels ``1,2`` -> ``"all"`` or a frozenset of ints."""
    import argparse

    if text is None or text == "all" or isinstance(text, (set, frozenset)):
        return text
    if not isinstance(text, str):
        return frozenset(int(v) for v in text)
    try:
        labels = frozenset(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        labels = None
    if not labels or any(v < 0 for v in labels):
        raise argparse.ArgumentTypeError(f"{text!r} is not 'all' or a comma-separated list of labels like 1,2")
    return labels


def binary_mask(labels, path, *, foreground=None):
    """Integer labels -> (H, W) bool foreground.

    Args:
        labels: integer array from ``read_label_map``.
        path: the mask file (named in the error).
        foreground: None (label 0 is background, the other value foreground; more than two values is an
            error), ``"all"`` (every label but 0), or the foreground labels (a set, or ``"1,2"``).
    Raises:
        UserError naming the file and the values found, when ``foreground`` is None and the mask holds more
        than two values (or two values, neither of them 0).
    """
    labels = np.asarray(labels)
    if foreground is None:
        values = np.unique(labels)
        if values.size > 2 or (values.size == 2 and values[0] != 0):
            shown = ", ".join(str(v) for v in values[:SHOW].tolist()) + (
                f" (+{values.size - SHOW} more)" if values.size > SHOW else "")
            raise UserError(f"{path}: mask has {values.size} values ({shown}) but the task is binary; pass "
                            "--foreground with the labels that are foreground (e.g. --foreground "
                            f"{','.join(str(v) for v in values[1:3].tolist())}) or --foreground all (every label "
                            "but 0)")
        return labels != 0
    foreground = parse_foreground(foreground)
    if foreground == "all":
        return labels != 0
    return np.isin(labels, np.fromiter(foreground, dtype=np.int64))


def _shape_text(shape):
    return "x".join(str(s) for s in shape)


def read_pair(pair, *, mode="gray", binary=True, foreground=None, label_colours=None, mask_reader=None):
    """Read one ``Pair``: ``(image, mask)``.

    Args:
        pair: a ``Pair``.
        mode: ``"gray"`` (H, W) or ``"rgb"`` (H, W, 3) uint8 through ``common.data.io.read_image``; several
            channel files are stacked on the last axis (H, W, C). NIfTI volumes come as stored (D, H, W).
        binary: True -> mask (H, W) bool via ``binary_mask``; False -> integer labels.
        foreground: ``binary_mask``'s ``foreground`` (``--foreground``).
        label_colours: ``read_label_map``'s (``dataset.label_colours`` or the ``--label-colours`` file).
        mask_reader: a task's own mask rule instead of the table's (e.g. fingernail's ``--mask-rule photo``):
            a function ``path -> array (H, W[, C])``; its array is returned as read (``binary``,
            ``foreground`` and ``label_colours`` are not used) after the same size check on (H, W).
    Returns:
        ``(image, mask)``; ``mask`` is None when ``pair.mask`` is None.
    Raises:
        UserError naming both files and both sizes when the image and its mask differ in size.
    """
    if pair.volume:
        images = [_read_volume(p) for p in pair.image]
    else:
        images = [read_image(p, mode=mode if len(pair.image) == 1 else "gray") for p in pair.image]
    for path, other in zip(pair.image[1:], images[1:]):
        if other.shape != images[0].shape:
            raise UserError(f"{path}: channel is {_shape_text(other.shape)} but {pair.image[0]} is "
                            f"{_shape_text(images[0].shape)}; every channel file of a case must have one size")
    image = images[0] if len(images) == 1 else np.stack(images, axis=-1)
    if pair.mask is None:
        return image, None
    if mask_reader is not None:
        labels = np.asarray(mask_reader(pair.mask))
    else:
        labels = read_label_map(pair.mask, label_colours=_colour_table(label_colours))
    size = image.shape[:3] if pair.volume else image.shape[:2]
    if labels.shape[:len(size)] != size or (labels.ndim != len(size) and mask_reader is None):
        unit = "" if pair.volume else " (rows x cols)"
        raise UserError(f"{pair.mask}: mask is {_shape_text(labels.shape)}{unit} but its image {pair.image[0]} is "
                        f"{_shape_text(size)}; an image and its mask must have the same size")
    if binary and mask_reader is None:
        return image, binary_mask(labels, pair.mask, foreground=foreground)
    return image, labels


def dataset_colours(masks):
    """The colour table ``{label: (r, g, b)}`` of colour-coded RGB masks: black 0, the other colours found in
    any of ``masks`` 1, 2, ... in sorted (r, g, b) order; None when no mask is colour-coded (only the file
    headers are read for grey, palette and JPEG masks)."""
    from tqdm import tqdm

    colours = set()
    for path in tqdm(list(masks), desc="mask colours", unit="mask", leave=False, disable=None):
        if path is None:
            continue
        mode, fmt = _open_mode(path)
        if mode not in ("RGB", "RGBA") or fmt == "JPEG":
            continue
        rgb = np.asarray(read_image(path, mode="rgb"))
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            continue
        flat = rgb.reshape(-1, 3)
        codes = np.unique((flat[:, 0].astype(np.uint32) << 16) | (flat[:, 1].astype(np.uint32) << 8) | flat[:, 2])
        colours.update(((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in codes.tolist())
    if not colours:
        return None
    ordered = sorted(colours - {(0, 0, 0)})
    table = {0: (0, 0, 0)}
    table.update({i + 1: c for i, c in enumerate(ordered)})
    return table


# ----------------------------------------------------------------------------------------------- split

def _check_fraction(value, option):
    if not 0 <= value < 1:
        raise option_error(option, f"{value} must be in [0, 1)")


def split_pairs(names, *, val_fraction, test_fraction, seed, group_by=None, test_names=()):
    """Seeded split of ``names`` into train / val / test, keeping each group on one side.

    Groups are shuffled with ``numpy.random.default_rng(seed)``; walking them in that order, a group goes to
    test while the middle of its run of names lies below ``test_fraction * n``, then to val while below
    ``(test_fraction + val_fraction) * n``, then to train. Without ``group_by`` every name is its own group.

    Args:
        names: case names (``Pair.name``).
        val_fraction, test_fraction: fractions of the names (0 = no such split).
        seed: the shuffle's seed.
        group_by: regex searched in each name's basename; its group 1 (or whole match) is the group. Names it
            does not match are each their own group (a note says how many).
        test_names: a fixed test split (nnU-Net ``imagesTs``): ``test`` is these names, ``test_fraction``
            is not used.
    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted.
    Raises:
        OptionError naming the fraction that leaves its split (or the training split) empty, or ``--group-by``
        when the regex is invalid or matches no name.
    """
    names = sorted(names)
    _check_fraction(val_fraction, "--val-fraction")
    _check_fraction(test_fraction, "--test-fraction")
    if test_names:
        test_fraction = 0.0
    if val_fraction + test_fraction >= 1:
        raise option_error("--val-fraction", f"{val_fraction} + --test-fraction {test_fraction} leave no training "
                           "data; their sum must be below 1")
    if group_by:
        try:
            regex = re.compile(group_by)
        except re.error as exc:
            raise option_error("--group-by", f"{group_by!r} is not a regular expression ({exc})") from None
        groups, unmatched = {}, []
        for name in names:
            match = regex.search(name.rsplit("/", 1)[-1])
            if match is None:
                unmatched.append(name)
                key = ("name", name)
            else:
                key = ("group", match.group(1) if regex.groups else match.group(0))
            groups.setdefault(key, []).append(name)
        if names and len(unmatched) == len(names):
            raise option_error("--group-by", f"{group_by!r} matches none of the {len(names)} names (e.g. "
                               f"{', '.join(names[:3])}); the regex is searched in each file name without "
                               "extension, its group 1 is the group (e.g. '^(\\d+)_' for 12_3)")
        if unmatched:
            _note_once(("group", group_by), f"--group-by {group_by!r} does not match {len(unmatched)} of "
                       f"{len(names)} names ({_listing(unmatched, None)}); each of those is its own group")
    else:
        groups = {("name", name): [name] for name in names}
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    n = len(names)
    split = {"train": [], "val": [], "test": []}
    done = 0
    for index in order:
        members = groups[keys[index]]
        middle = done + len(members) / 2
        part = ("test" if middle < test_fraction * n else
                "val" if middle < (test_fraction + val_fraction) * n else "train")
        split[part].extend(members)
        done += len(members)
    if test_names:
        split["test"] = list(test_names)
    for part, fraction, option in (("val", val_fraction, "--val-fraction"),
                                   ("test", test_fraction, "--test-fraction")):
        if fraction > 0 and not split[part]:
            raise option_error(option, f"{fraction} leaves the {part} split empty ({n} names in {len(keys)} "
                               f"groups); raise it, or pass 0 for no {part} split")
    if not split["train"]:
        raise option_error("--val-fraction", f"{val_fraction} and --test-fraction {test_fraction} leave the "
                           f"training split empty ({n} names in {len(keys)} groups); lower them")
    return {part: sorted(values) for part, values in split.items()}


def write_split(path, split, *, source, seed, group_by, fractions, verbose=True, extra=None):
    """Write ``split.json`` (atomically) and print the counts ``split.json: train 1200 / val 150 / test 300``.

    Layout: ``{"train": [names], "val": [...], "test": [...], "seed", "group_by", "val_fraction",
    "test_fraction", "source", "counts": {"train": n, "val": n, "test": n}}``.

    Args:
        path: the JSON file (``<prepared folder>/split.json``).
        split: ``split_pairs``'s result.
        source: ``"folders"`` | ``"nnunet"``.
        seed, group_by: as given to ``split_pairs``.
        fractions: ``(val_fraction, test_fraction)`` or a dict with ``val`` / ``test`` (or ``val_fraction`` /
            ``test_fraction``).
        extra: more keys the task keeps beside the split (e.g. the prepared size), added to the record.
    """
    if isinstance(fractions, dict):
        val = fractions.get("val", fractions.get("val_fraction"))
        test = fractions.get("test", fractions.get("test_fraction"))
    else:
        val, test = fractions
    counts = {part: len(split.get(part, [])) for part in ("train", "val", "test")}
    record = {part: list(split.get(part, [])) for part in ("train", "val", "test")}
    record.update(seed=seed, group_by=group_by, val_fraction=val, test_fraction=test, source=source, counts=counts)
    record.update(extra or {})
    write_json(path, record)
    if verbose:
        print(f"{Path(path).name}: " + " / ".join(f"{part} {counts[part]}" for part in counts))
    return record


# ----------------------------------------------------------------------------------------------- command line

def add_own_data_arguments(parser, *, val_fraction, test_fraction, group_by=None, binary=True):
    """Add the own-data options to an argparse parser (one argument group) and return the group.

    ``--images DIR --masks DIR`` | ``--nnunet-dataset DIR``, ``--skip-unpaired``, ``--foreground`` (binary
    tasks), ``--label-colours FILE.json``, ``--val-fraction``, ``--test-fraction``, ``--group-by REGEX``.
    The defaults given here are the task's (its original's proportions); ``--seed`` stays the script's own.
    """
    group = parser.add_argument_group(
        "your own data", "a folder of images and a folder of masks (paired by relative path and name: the mask "
        "of a/b/x.jpg is a/b/x.<ext> or a/b/x<suffix>.<ext>, suffix one of " + ", ".join(MASK_SUFFIXES) + "), "
        "or an nnU-Net v2 raw dataset")
    group.add_argument("--images", type=Path, metavar="DIR", help="folder of images (searched recursively)")
    group.add_argument("--masks", type=Path, metavar="DIR", help="folder of masks, paired with --images")
    group.add_argument("--nnunet-dataset", type=Path, metavar="DIR",
                       help="an nnU-Net v2 raw dataset (dataset.json, imagesTr/, labelsTr/, optional imagesTs/)")
    group.add_argument("--skip-unpaired", action="store_true",
                       help="warn about images without a mask (and masks without an image) and go on")
    if binary:
        group.add_argument("--foreground", type=parse_foreground, metavar="LABELS|all",
                           help="labels that are foreground when masks hold more than two values, e.g. 1,2, or "
                                "'all' (every label but 0)")
    group.add_argument("--label-colours", type=Path, metavar="FILE.json",
                       help='colour table of RGB colour-coded masks, e.g. {"0": [0, 0, 0], "1": [255, 0, 0]} '
                            "(default: black 0, the other colours 1, 2, ... in sorted RGB order)")
    group.add_argument("--val-fraction", type=float, default=val_fraction,
                       help="fraction of the cases for validation (default: %(default)s)")
    group.add_argument("--test-fraction", type=float, default=test_fraction,
                       help="fraction of the cases for testing (default: %(default)s)")
    group.add_argument("--group-by", metavar="REGEX", default=group_by,
                       help="cases whose file name gives the same regex group 1 stay on one side of the split "
                            "(e.g. '^(\\d+)_' for subject 12 of 12_3.tif; default: %(default)s)")
    return group


def load_own_data(args, *, binary=True, mask_reader=None):
    """The dataset named by ``--images/--masks`` or ``--nnunet-dataset``, or None when neither is given.

    For RGB colour-coded masks without ``--label-colours``, the colour table is built once over every mask
    (``dataset_colours``) so labels agree between files; it is in ``OwnDataset.label_colours``. A task that
    reads its masks by its own rule (``read_pair``'s ``mask_reader``) passes it here too: no colour table is
    built then.
    """
    images, masks = getattr(args, "images", None), getattr(args, "masks", None)
    nnunet = getattr(args, "nnunet_dataset", None)
    if images is None and masks is None and nnunet is None:
        return None
    if nnunet is not None and (images is not None or masks is not None):
        raise option_error("--nnunet-dataset", "give either --nnunet-dataset or --images/--masks, not both")
    if nnunet is None and (images is None or masks is None):
        missing, given = ("--masks", "--images") if masks is None else ("--images", "--masks")
        raise option_error(given, f"needs {missing} DIR too (a folder of images and a folder of masks)")
    for option in ("val_fraction", "test_fraction"):
        value = getattr(args, option, None)
        if value is not None:
            _check_fraction(value, "--" + option.replace("_", "-"))
    colour_file = getattr(args, "label_colours", None)
    colours, names = read_label_colours(colour_file) if colour_file is not None else (None, None)
    if nnunet is not None:
        try:
            from common.data.nnunet import read_nnunet_dataset
        except ModuleNotFoundError as exc:
            if exc.name != "common.data.nnunet":
                raise
            raise option_error("--nnunet-dataset", "the nnU-Net reader (common/data/nnunet.py) is not in this "
                               "checkout; convert the dataset to --images/--masks folders") from None
        dataset = read_nnunet_dataset(Path(nnunet))
        if colours is not None:
            from dataclasses import replace
            dataset = replace(dataset, label_colours=colours)
        return dataset
    pairs = find_pairs(images, masks, skip_unpaired=getattr(args, "skip_unpaired", False))
    if colours is None and mask_reader is None:
        colours = dataset_colours(p.mask for p in pairs)
        names = None if colours is None else {k: ",".join(map(str, c)) for k, c in colours.items()}
        if colours is not None:
            print(f"note: colour-coded masks: labels {', '.join(f'{k} = {list(c)}' for k, c in colours.items())} "
                  "(black 0, then sorted by RGB; --label-colours FILE.json fixes them)", file=sys.stderr)
    return OwnDataset(pairs=pairs, labels=names, source="folders", label_colours=colours)


def split_own_data(dataset, args):
    """``split_pairs`` of an ``OwnDataset`` with the options of ``add_own_data_arguments`` and ``args.seed``
    (nnU-Net ``imagesTs`` is the test split when present)."""
    return split_pairs([p.name for p in dataset.pairs], val_fraction=args.val_fraction,
                       test_fraction=args.test_fraction, seed=args.seed, group_by=args.group_by,
                       test_names=[p.name for p in dataset.test])
