"""Reading nnU-Net v2 raw datasets (``--nnunet-dataset DIR``) as an :class:`OwnDataset`, with nnU-Net's checks.

The format (nnU-Net's documentation/dataset_format.md)::

    DatasetXXX_Name/
    ├── dataset.json        {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1, ...},
    │                        "numTraining": 32, "file_ending": ".nii.gz"}
    ├── imagesTr/<case>_<XXXX><file_ending>    one file per input channel, XXXX = 4-digit channel index
    ├── labelsTr/<case><file_ending>           integer label map, same shape as the images
    └── imagesTs/<case>_<XXXX><file_ending>    optional: test cases without labels (OwnDataset.test, mask None)

* 2-D files: ``.png``, ``.bmp``, ``.tif``/``.tiff``, ``.jpg``/``.jpeg`` (nnU-Net itself refuses JPEG: lossy;
  a JPEG label map is read as stored, so its compression noise fails the label check). An RGB(A) file counts as
  3 (4) channels, as nnU-Net's natural-image reader reads it: an RGB photo is one ``_0000`` file and
  ``channel_names`` lists three channels (``{"0": "R", "1": "G", "2": "B"}``). Palette images are expanded to RGB;
  a palette *label* map gives its palette indices.
* NIfTI volumes (``.nii.gz``, ``.nii``): one file per channel, ``Pair.volume`` True; the task slices them.
  :func:`read_nnunet_case` returns the voxels in the file's array order (nibabel, no reorientation).

What nnU-Net's ``verify_dataset_integrity`` checks is checked here, each a one-line ``UserError`` naming the
file (exit 2 through ``common.cli.run``): dataset.json present and valid with the four keys, the file ending
of every file, every case has every channel file, ``numTraining`` equals the number of cases, every case has
its label file, labels consecutive from 0 with ``background`` = 0, label maps hold only values listed in
``labels`` (the file and the values named), images and label of one case of equal shape (and, for NIfTI,
equal voxel spacing), no NaN. Not supported, refused with a clear message: ``regions`` (a label whose value is
a list of labels, nnU-Net's region-based training of overlapping labels), the ``ignore`` label, and a
``dataset`` key listing files instead of the imagesTr/labelsTr folders.

Every label map and image is read once for these checks (as nnU-Net's check does), with a progress bar.
"""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from common.data.io import DataLayoutError, ImageReadError
from common.errors import UserError

from common.data.cases import OwnDataset, Pair

IMAGE_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
VOLUME_ENDINGS = (".nii.gz", ".nii")
FILE_ENDINGS = IMAGE_ENDINGS + VOLUME_ENDINGS
REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _first(items, n=5):
    items = list(items)
    return ", ".join(str(i) for i in items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _ending(name):
    """The file ending of a name among FILE_ENDINGS (case-insensitive), or ''."""
    lower = name.lower()
    return next((e for e in sorted(FILE_ENDINGS, key=len, reverse=True) if lower.endswith(e)), "")


def _int_value(value, path, key):
    """An integer label value of dataset.json (nnU-Net accepts ints and integer strings)."""
    try:
        if isinstance(value, bool) or float(value) != int(value):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{path}: label {key!r} has the value {value!r}; label values are integers 0, 1, 2, ...")


def parse_labels(labels, path):
    """dataset.json ``labels`` (name -> value) -> ``{value: name}``, checked as nnU-Net's LabelManager does."""
    if not isinstance(labels, dict) or not labels:
        raise UserError(f"{path}: 'labels' must be an object of label names to values, e.g. "
                        f'{{"background": 0, "tumour": 1}}')
    regions = {k: v for k, v in labels.items() if isinstance(v, (list, tuple)) and len(set(v)) > 1}
    if regions:
        name, value = next(iter(regions.items()))
        raise UserError(f"{path}: label {name!r} is the region {value} (nnU-Net's region-based training of "
                        f"overlapping labels), which is not supported here; give every label one integer value "
                        f"(and drop 'regions_class_order')")
    if "ignore" in labels:
        raise UserError(f"{path}: the 'ignore' label (nnU-Net's sparse annotation) is not supported here; remove "
                        f"it from 'labels' and from the label maps")
    by_value = {}
    for name, value in labels.items():
        value = _int_value(value[0] if isinstance(value, (list, tuple)) and value else value, path, name)
        if value in by_value:
            raise UserError(f"{path}: labels {by_value[value]!r} and {name!r} both have the value {value}; give "
                            f"each label its own value")
        by_value[value] = name
    if by_value.get(0) != "background" or labels.get("background") is None:
        raise UserError(f"{path}: 'labels' needs \"background\": 0 (nnU-Net's background label), found "
                        f"{json.dumps(labels)}")
    values = sorted(by_value)
    if values != list(range(len(values))):
        raise UserError(f"{path}: label values must be consecutive 0, 1, 2, ... (nnU-Net's rule), found "
                        f"{values}; renumber the labels and their maps")
    return dict(sorted(by_value.items()))


def parse_channels(channels, path):
    """dataset.json ``channel_names`` ({"0": "T2", ...}) -> list of names in channel order."""
    if not isinstance(channels, dict) or not channels:
        raise UserError(f"{path}: 'channel_names' must be an object of channel indices to names, e.g. "
                        f'{{"0": "CT"}}')
    try:
        indices = sorted(int(k) for k in channels)
    except ValueError:
        raise UserError(f"{path}: 'channel_names' keys must be channel indices \"0\", \"1\", ...; found "
                        f"{list(channels)}") from None
    if indices != list(range(len(indices))):
        raise UserError(f"{path}: 'channel_names' keys must be 0, 1, 2, ... without gaps; found {indices}")
    return [str(channels[k]) for k in sorted(channels, key=int)]


def load_dataset_json(folder):
    """``(dataset.json as a dict, channel names, {value: label name}, file ending)``, every key checked."""
    path = Path(folder) / "dataset.json"
    if not path.is_file():
        raise DataLayoutError(f"{path}: not found; an nnU-Net raw dataset needs dataset.json beside imagesTr/ and "
                              f"labelsTr/ (see nnU-Net's documentation/dataset_format.md)")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({' '.join(str(exc).split())}); fix the file") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: must hold a JSON object with {', '.join(REQUIRED_KEYS)}")
    if "channel_names" not in meta and "modality" in meta:  # nnU-Net v1's name, which v2 still reads
        meta["channel_names"] = meta["modality"]
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)}; nnU-Net v2 needs "
                        f"{', '.join(REQUIRED_KEYS)}")
    if "dataset" in meta:
        raise UserError(f"{path}: a 'dataset' key listing the files is not supported here; put the files in "
                        f"imagesTr/ and labelsTr/ instead")
    labels = parse_labels(meta["labels"], path)
    if "regions_class_order" in meta:
        raise UserError(f"{path}: 'regions_class_order' (nnU-Net's region-based training of overlapping labels) "
                        f"is not supported here; give every label one integer value and drop the key")
    channels = parse_channels(meta["channel_names"], path)
    ending = meta["file_ending"]
    if not isinstance(ending, str) or ending.lower() not in FILE_ENDINGS:
        raise UserError(f"{path}: file_ending {ending!r} is not supported here; use one of "
                        f"{', '.join(FILE_ENDINGS)}")
    n = meta["numTraining"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"{path}: numTraining must be a positive integer, found {n!r}")
    return meta, channels, labels, ending


# --- reading files -------------------------------------------------------------------------------------------

def _read_2d(path, label):
    """A 2-D file as stored: image (H, W) or (H, W, C) (RGB 3, RGBA 4); label map (H, W) integer."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                raise ImageReadError(f"{path}: a multi-page (3-D) TIFF; store volumes as .nii.gz")
            img.load()
            if label:
                if img.mode in ("RGB", "RGBA", "CMYK", "LA", "YCbCr"):
                    raise ImageReadError(f"{path}: a {img.mode} label map; nnU-Net label maps are single-channel "
                                         f"integer images (one value per class)")
                array = np.asarray(img)  # palette: the indices; 16-bit: as stored
            else:
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                elif img.mode in ("LA", "PA"):
                    img = img.convert("L")
                elif img.mode in ("CMYK", "YCbCr"):
                    img = img.convert("RGB")
                array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from None
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array


def _read_volume(path):
    """``(voxels as stored, spacing)`` of a NIfTI file."""
    import zlib

    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
        return np.asanyarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms()[:3])
    except (OSError, ValueError, EOFError, zlib.error, ImageFileError) as exc:
        raise ImageReadError(f"{path}: cannot read NIfTI ({exc.__class__.__name__}: {exc})") from None


def _channels(array, volume):
    """Channels-last view: 2-D (H, W) -> (H, W, 1); volumes always one channel per file."""
    if volume:
        return array[..., None]
    return array[..., None] if array.ndim == 2 else array


def read_nnunet_case(pair):
    """``(image, label)`` of a case of :func:`read_nnunet_dataset`: the channel files stacked channels-last,
    values as stored (2-D: (H, W, C); NIfTI: (X, Y, Z, C) in the file's voxel order), and the label map
    (H, W) / (X, Y, Z) as int64, or None for a test case."""
    parts = [_channels(_read_volume(p)[0] if pair.volume else _read_2d(p, label=False), pair.volume)
             for p in pair.image]
    image = np.concatenate(parts, axis=-1)
    label = None
    if pair.mask is not None:
        label = _read_volume(pair.mask)[0] if pair.volume else _read_2d(pair.mask, label=True)
        label = np.asarray(label).astype(np.int64)
    return image, label


# --- the dataset -----------------------------------------------------------------------------------------------

def _case_files(folder, ending, kind):
    """``{case: {channel: path}}`` of an images folder; files with another ending are an error."""
    folder = Path(folder)
    cases = defaultdict(dict)
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if not path.name.endswith(ending):
            if _ending(path.name):
                raise UserError(f"{path}: its file ending is not dataset.json's file_ending {ending!r}; convert the "
                                f"file or set file_ending (one ending for the whole dataset)")
            continue  # README, thumbnails db, ...
        match = _CHANNEL_SUFFIX.match(path.name[:-len(ending)])
        if match is None:
            raise UserError(f"{path}: no 4-digit channel suffix; {kind} files are named "
                            f"<case>_<XXXX>{ending} (e.g. {path.name[:-len(ending)]}_0000{ending})")
        cases[match["case"]][int(match["channel"])] = path
    return dict(sorted(cases.items()))


def _check_channel_files(cases, folder, ending, channels):
    """Every case has the files _0000 .. _{k-1}, k the largest count any case has (RGB files count once)."""
    n_files = max(max(files) for files in cases.values()) + 1
    if n_files > len(channels):
        case = next(c for c, files in cases.items() if max(files) + 1 == n_files)
        raise UserError(f"{Path(folder) / f'{case}_{n_files - 1:04d}{ending}'}: channel {n_files - 1}, but "
                        f"dataset.json's channel_names lists {len(channels)} channel(s) ({', '.join(channels)}); "
                        f"add the channel to channel_names or remove the file")
    for case, files in cases.items():
        missing = [i for i in range(n_files) if i not in files]
        if missing:
            name = channels[missing[0]] if missing[0] < len(channels) else "?"
            raise UserError(f"{Path(folder) / f'{case}_{missing[0]:04d}{ending}'}: missing (channel {missing[0]} "
                            f"{name!r} of case {case!r}); every case needs the same channel files "
                            f"_0000{ending} .. _{n_files - 1:04d}{ending}")
    return n_files


def _check_case(pair, channels, labels, progress_label=True):
    """Read one case and apply nnU-Net's per-case checks (channel count, shapes, spacing, NaN, label values)."""
    shapes, spacings, n_channels = [], [], 0
    for path in pair.image:
        if pair.volume:
            array, spacing = _read_volume(path)
            if array.ndim not in (2, 3):
                raise UserError(f"{path}: a {array.ndim}-D NIfTI image; store each channel of a case as its own "
                                f"<case>_<XXXX> file of 2 or 3 dimensions")
            spacings.append(spacing)
            shape, c = array.shape, 1
        else:
            array = _read_2d(path, label=False)
            shape, c = array.shape[:2], (1 if array.ndim == 2 else array.shape[2])
        if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
            raise UserError(f"{path}: the image holds NaN values; replace them with a meaningful value")
        shapes.append(tuple(shape))
        n_channels += c
    if len(set(shapes)) > 1:
        raise UserError(f"{pair.image[0]}: the channel files of case {pair.name!r} differ in shape "
                        f"({', '.join(f'{p.name} {s}' for p, s in zip(pair.image, shapes))}); all channels of a "
                        f"case must have the same shape")
    if n_channels != len(channels):
        raise UserError(f"{pair.image[0]}: case {pair.name!r} has {n_channels} channel(s) in its file(s) "
                        f"({', '.join(p.name for p in pair.image)}) but dataset.json's channel_names lists "
                        f"{len(channels)} ({', '.join(channels)}); an RGB file counts as three channels")
    if pair.mask is None:
        return
    if pair.volume:
        label, spacing = _read_volume(pair.mask)
        if spacings and not np.allclose(spacing, spacings[0]):
            raise UserError(f"{pair.mask}: voxel spacing {spacing} differs from its image's {spacings[0]} "
                            f"({pair.image[0].name}); image and label must share the geometry")
    else:
        label = _read_2d(pair.mask, label=True)
    if tuple(label.shape) != shapes[0]:
        raise UserError(f"{pair.mask}: label shape {tuple(label.shape)} differs from its image's {shapes[0]} "
                        f"({pair.image[0].name}); image and label must have the same shape")
    values = np.unique(np.asarray(label))
    if np.issubdtype(values.dtype, np.floating) and (np.isnan(values).any() or (values != np.round(values)).any()):
        bad = values[np.isnan(values) | (values != np.round(values))]
        raise UserError(f"{pair.mask}: non-integer label value(s) {_first(bad.tolist())}; label maps hold the "
                        f"integer values of dataset.json's labels")
    unknown = [int(v) for v in values if int(v) not in labels]
    if unknown:
        known = ", ".join(f"{v} {n}" for v, n in labels.items())
        raise UserError(f"{pair.mask}: label value(s) {_first(unknown)} not in dataset.json's labels ({known}); "
                        f"add them to 'labels' or fix the label map")


def read_nnunet_dataset(path, *, verbose=True):
    """An nnU-Net v2 raw dataset folder -> :class:`OwnDataset` (source ``"nnunet"``), checked as nnU-Net's
    ``verify_dataset_integrity`` checks it (see the module docstring).

    ``pairs``: one :class:`Pair` per training case (name = nnU-Net's case identifier, image = its channel files
    in channel order, mask = its labelsTr file), sorted by name; ``labels``: ``{value: name}``; ``test``: the
    imagesTs cases (mask None), or ``()``. Raises ``UserError`` (one line naming the file) for any problem.
    """
    from tqdm import tqdm

    folder = Path(path)
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: folder not found (--nnunet-dataset names a DatasetXXX_Name folder with "
                              f"dataset.json, imagesTr/ and labelsTr/)")
    meta, channels, labels, ending = load_dataset_json(folder)
    volume = ending.lower() in VOLUME_ENDINGS
    for sub in ("imagesTr", "labelsTr"):
        if not (folder / sub).is_dir():
            raise DataLayoutError(f"{folder / sub}: folder not found; an nnU-Net raw dataset has imagesTr/ and "
                                  f"labelsTr/ beside dataset.json")
    cases = _case_files(folder / "imagesTr", ending, "imagesTr")
    if not cases:
        raise DataLayoutError(f"{folder / 'imagesTr'}: no <case>_0000{ending} files")
    n_files = _check_channel_files(cases, folder / "imagesTr", ending, channels)
    if len(cases) != meta["numTraining"]:
        raise UserError(f"{folder / 'dataset.json'}: numTraining is {meta['numTraining']} but imagesTr holds "
                        f"{len(cases)} case(s) ({_first(cases)}); set numTraining to {len(cases)} or add the "
                        f"missing cases")
    label_dir = folder / "labelsTr"
    for file in sorted(label_dir.iterdir()):
        if not file.name.startswith(".") and file.is_file() and _ending(file.name) \
                and not file.name.endswith(ending):
            raise UserError(f"{file}: its file ending is not dataset.json's file_ending {ending!r}; convert the "
                            f"file or set file_ending (one ending for the whole dataset)")
    pairs = []
    for case, files in cases.items():
        mask = label_dir / f"{case}{ending}"
        if not mask.is_file():
            raise UserError(f"{mask}: missing, the label of case {case!r} "
                            f"({files[0].name}); every imagesTr case needs labelsTr/<case>{ending}")
        pairs.append(Pair(name=case, image=tuple(files[i] for i in range(n_files)), mask=mask, volume=volume))
    orphans = sorted({p.name[:-len(ending)] for p in label_dir.iterdir() if p.name.endswith(ending)
                      and not p.name.startswith(".")} - set(cases))
    if orphans:
        print(f"warning: {label_dir}: {len(orphans)} label file(s) without images, ignored: {_first(orphans)}",
              file=sys.stderr)
    test = []
    if (folder / "imagesTs").is_dir():
        test_cases = _case_files(folder / "imagesTs", ending, "imagesTs")
        if test_cases:
            n_test_files = _check_channel_files(test_cases, folder / "imagesTs", ending, channels)
            test = [Pair(name=case, image=tuple(files[i] for i in range(n_test_files)), mask=None, volume=volume)
                    for case, files in test_cases.items()]
    for pair in tqdm(pairs + test, desc="checking nnU-Net cases", unit="case", disable=not verbose, file=sys.stderr):
        _check_case(pair, channels, labels)
    return OwnDataset(pairs=tuple(pairs), labels=labels, test=tuple(test), source="nnunet")


# --- writing ---------------------------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def case_identifier(name):
    """An nnU-Net case identifier from a case name of a split: the image extension dropped, ``/`` of nested
    folders -> ``__``, any other character outside ``A-Z a-z 0-9 _ . -`` -> ``_`` (``dataset1/a b.png`` ->
    ``dataset1__a_b``)."""
    name = str(name)
    ending = _ending(name)
    if ending:
        name = name[:-len(ending)]
    return _SAFE_NAME.sub("_", name.replace("\\", "/").replace("/", "__"))


def _label_array(label, name, labels):
    label = np.asarray(label)
    if label.dtype == bool:
        label = label.astype(np.uint8)
    if not np.issubdtype(label.dtype, np.integer):
        raise UserError(f"case {name!r}: label map of dtype {label.dtype}; labels are integer maps")
    values = np.unique(label)
    unknown = [int(v) for v in values if int(v) not in labels]
    if unknown:
        raise UserError(f"case {name!r}: label value(s) {_first(unknown)} not among the labels "
                        f"{dict(labels)}; map them to a listed label first")
    return label.astype(np.uint8 if values.max(initial=0) < 256 else np.uint16)


def _write_png(path, array):
    from PIL import Image

    array = np.asarray(array)
    if array.dtype == np.uint16 and array.ndim == 2:
        Image.fromarray(np.ascontiguousarray(array)).save(path)  # mode I;16
    elif array.dtype == np.uint8:
        Image.fromarray(np.ascontiguousarray(array)).save(path)
    else:
        raise UserError(f"{path.name}: {array.dtype} {'RGB ' if array.ndim == 3 else ''}values cannot be stored "
                        f"in PNG (uint8, or uint16 grey); use --format nifti")


def _write_nifti(path, array, spacing):
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array), affine=np.diag([*spacing, 1.0]))
    img.header.set_zooms(spacing)
    nib.save(img, str(path))


def _write_case(folder, name, image, label, *, ending, n_channels, labels, label_dir=None):
    """One case's channel files (and label). ``image`` is channels-last: 2-D (H, W, C), volume (X, Y, Z, C)."""
    image = np.asarray(image)
    spatial = image.shape[:-1]
    if image.ndim not in (3, 4):
        raise UserError(f"case {name!r}: image of shape {image.shape}; expected channels-last (H, W, C) or "
                        f"(X, Y, Z, C)")
    png = ending == ".png"
    if png and image.ndim != 3:
        raise UserError(f"case {name!r}: a volume {image.shape[:-1]} cannot be written as PNG; use --format nifti")
    if image.shape[-1] != n_channels:
        raise UserError(f"case {name!r}: {image.shape[-1]} channel(s), but channel_names lists {n_channels}")
    if label is not None:
        label = _label_array(label, name, labels)
        if label.shape != spatial:
            raise UserError(f"case {name!r}: label shape {label.shape} differs from the image's {spatial}")
    if png:
        rgb = n_channels == 3 and image.dtype == np.uint8  # one RGB file, nnU-Net's natural-image convention
        files = [image] if rgb else [image[..., c] for c in range(n_channels)]
        for c, array in enumerate(files):
            _write_png(folder / f"{name}_{c:04d}{ending}", array)
        if label is not None:
            _write_png(label_dir / f"{name}{ending}", label)
    else:
        pseudo = image.ndim == 3  # a 2-D image as a one-slice volume (nnU-Net's NIfTI readers need 3-D)
        spacing = (1.0, 1.0, 999.0) if pseudo else (1.0, 1.0, 1.0)
        for c in range(n_channels):
            channel = image[..., c]
            _write_nifti(folder / f"{name}_{c:04d}{ending}", channel[..., None] if pseudo else channel, spacing)
        if label is not None:
            _write_nifti(label_dir / f"{name}{ending}", label[..., None] if pseudo else label, spacing)


def write_nnunet_dataset(out_dir, *, train_cases, test_cases=(), labels, channel_names, file_ending=".png",
                         dataset_name="Dataset", overwrite=False, verbose=True, description=None):
    """Write an nnU-Net v2 raw dataset: ``imagesTr``/``labelsTr`` from ``train_cases``, ``imagesTs`` from
    ``test_cases`` (their labels, when given, go to ``labelsTs``, which nnU-Net ignores; for scoring its
    predictions with ``nnUNetv2_evaluate_folder``) and ``dataset.json``.

    Args:
        out_dir: the dataset folder (``.../nnUNet_raw/DatasetXXX_Name``); written whole into a temporary folder
            and renamed into place, so a failure leaves nothing; an existing folder only with ``overwrite``.
        train_cases, test_cases: sequences of ``(name, image, label or None)``; ``image`` channels-last, 2-D
            ``(H, W, C)`` or a volume ``(X, Y, Z, C)``; ``label`` an integer map of the spatial shape. Names become
            case identifiers through :func:`case_identifier`; two cases with one identifier are an error.
        labels: ``{value: name}``, consecutive from 0 (0 = background).
        channel_names: one name per channel, e.g. ``["R", "G", "B"]``.
        file_ending: ``".png"`` (uint8 or 16-bit grey; an RGB uint8 image becomes ONE ``_0000`` file with three
            channels, as nnU-Net's natural-image reader expects) or ``".nii.gz"`` (one file per channel; a 2-D
            image as a one-slice volume (H, W, 1) with spacing (1, 1, 999), a volume with spacing 1).
        dataset_name: dataset.json's ``name``.
    Returns:
        ``{"train": [identifiers], "test": [identifiers]}``.
    """
    from tqdm import tqdm

    from common.data.io import atomic_dir, write_json

    if file_ending not in (".png", ".nii.gz"):
        raise ValueError(f"file_ending must be .png or .nii.gz, got {file_ending!r}")
    labels = {int(k): str(v) for k, v in dict(labels).items()}
    if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
        raise UserError(f"labels {labels}: values must be consecutive from 0 (0 = background), at least two")
    names = {}
    total = len(train_cases) + len(test_cases)
    written = {"train": [], "test": []}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        progress = tqdm(total=total, desc="writing nnU-Net dataset", unit="case", disable=not verbose,
                        file=sys.stderr)
        for part, cases, images_sub, labels_sub in (("train", train_cases, "imagesTr", "labelsTr"),
                                                    ("test", test_cases, "imagesTs", "labelsTs")):
            for name, image, label in cases:
                if part == "train" and label is None:
                    raise UserError(f"case {name!r}: a training case without a label map")
                ident = case_identifier(name)
                if not ident:
                    raise UserError(f"case {name!r}: empty case identifier; give the case a name")
                if ident in names:
                    raise UserError(f"cases {names[ident]!r} and {name!r}: both become the nnU-Net case "
                                    f"identifier {ident!r}; rename one")
                names[ident] = name
                (tmp / images_sub).mkdir(exist_ok=True)
                if label is not None:
                    (tmp / labels_sub).mkdir(exist_ok=True)
                _write_case(tmp / images_sub, ident, image, label, ending=file_ending,
                            n_channels=len(channel_names), labels=labels, label_dir=tmp / labels_sub)
                written[part].append(ident)
                progress.update()
        progress.close()
        (tmp / "labelsTr").mkdir(exist_ok=True)
        (tmp / "imagesTr").mkdir(exist_ok=True)
        meta = {"channel_names": {str(i): str(n) for i, n in enumerate(channel_names)},
                "labels": {("background" if value == 0 else name): value for value, name in sorted(labels.items())},
                "numTraining": len(written["train"]),
                "file_ending": file_ending,
                "name": dataset_name}
        if description:
            meta["description"] = description
        write_json(tmp / "dataset.json", meta)
    return written
