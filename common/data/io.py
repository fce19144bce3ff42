"""Reading and writing images and arrays, with one clear error per bad file and atomic writes.

* ``read_image(path, mode)`` reads TIFF, GIF, PNG, JPG/JPEG and BMP through Pillow and returns uint8
  (or the file's own integer dtype with ``mode="unchanged"``). A missing, empty, truncated or undecodable
  file raises ``ImageReadError`` whose message names the file.
* ``atomic_path(path)`` yields a temporary name beside ``path`` and renames it into place only when the
  block succeeds, so an interrupted run never leaves a half-written output; ``stale_temporaries(path)`` finds
  the temporaries a killed process left (``remove_stale_temporaries`` deletes them).
* ``read_image(..., exif=False)`` returns the stored pixel grid; ``exif=True`` applies an orientation tag as
  ``cv2.imread`` does; ``warn_orientation`` names, in one warning, the files that carry such a tag.
* ``pair_files`` matches images to masks by a key and reports unmatched names.
"""

import contextlib
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.errors import UserError

IMAGE_EXTENSIONS = (".tif", ".tiff", ".gif", ".png", ".jpg", ".jpeg", ".bmp")


class ImageReadError(UserError):
    """An image file is missing, empty, truncated or cannot be decoded."""


class DataLayoutError(UserError):
    """A dataset folder does not have the expected layout (missing folder, unmatched pairs, ...)."""


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _eight_bit(values, path):
    """16-bit (or 32-bit integer) samples -> uint8 as OpenCV's 8-bit readers convert them
    (``cv2.imread`` with IMREAD_GRAYSCALE / IMREAD_COLOR: the high byte, ``v >> 8``)."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageReadError(f"{path}: 32-bit integer samples outside 0..65535 (min {values.min()}, max "
                             f"{values.max()}); save the image as 8- or 16-bit")
    return (values.astype(np.uint32) >> 8).astype(np.uint8)


#: Orientation tag (EXIF / TIFF 274) -> the transposition that undoes Pillow's display transposition.
_UNDO_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                     4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
                     7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
_ORIENTATION = 0x0112


def exif_orientation(path):
    """The orientation tag of an image file (EXIF, or TIFF's own tag 274): 1 = shown as stored, 2-8 = a viewer
    rotates and/or mirrors the stored pixels for display. 1 when the file has none (or cannot be read)."""
    try:
        with Image.open(path) as img:
            value = img.getexif().get(_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 1
    return value if value in _UNDO_ORIENTATION else 1


def warn_orientation(paths, *, applied, reader, what="training files"):
    """Warn once, naming the files, when any of ``paths`` carries a non-identity orientation tag; returns
    ``[(path, tag), ...]`` of those files.

    Args:
        applied: whether the caller reads them with ``exif=True`` (rotated as a viewer shows them).
        reader: the original's reader, named in the message (``"scipy.misc.imread"``, ``"cv2.imread"``).
    """
    tagged = [(Path(p), tag) for p in paths if (tag := exif_orientation(p)) != 1]
    if tagged:
        names = ", ".join(f"{p} (tag {tag})" for p, tag in tagged[:5])
        more = f" and {len(tagged) - 5} more" if len(tagged) > 5 else ""
        how = ("rotated/mirrored as the tag says, as the original's " if applied
               else "as stored (the pixel grid, not rotated for display), as the original's ")
        warnings.warn(f"{len(tagged)} of the {what} carry an EXIF orientation tag: {names}{more}; they are read "
                      f"{how}{reader} read them: check that each image and its mask are in the same orientation",
                      stacklevel=2)
    return tagged


def read_image(path, mode="gray", size=None, *, exif=False):
    """Read one image file as a NumPy array.

    What the formats allow, and what comes back:

    * 8-bit grey, RGB, palette (GIF masks: their colours' values), 1-bit, CMYK JPEG -> converted by Pillow;
      an alpha channel is dropped (RGBA -> RGB, LA -> L), as OpenCV's colour/grey readers do.
    * Orientation tags (EXIF in JPEG/PNG/WebP, TIFF's tag 274; photos from cameras and phones): with
      ``exif=False`` (default) the array is the pixel grid as stored, as ``PIL.Image.open``,
      ``scipy.misc.imread``, ``skimage.io.imread`` and ``tifffile`` read it (recent Pillow releases orient
      TIFFs while loading them; that is undone here);
      with ``exif=True`` it is rotated/mirrored as a viewer shows it, as ``cv2.imread`` does (IMREAD_COLOR /
      IMREAD_GRAYSCALE; JPEG since OpenCV 3.1, PNG since 4.5.2). Each task reads as its original did.
    * 16-bit samples (TIFF, PNG) are scaled to 8 bits as OpenCV's 8-bit readers (``cv2.imread`` without
      IMREAD_ANYDEPTH, the readers of the originals) convert them: ``v >> 8``. They are never clipped.
      ``mode="unchanged"`` returns them as stored (uint16).
    * 32-bit float images are refused (no 8-bit meaning; NaN possible): save them as 8- or 16-bit.

    Args:
        path: file path.
        mode: ``"gray"`` (H, W) uint8, ``"rgb"`` (H, W, 3) uint8, or ``"unchanged"`` (as stored; palette
            images such as GIF masks are returned as their palette indices' luminance).
        size: optional expected ``(height, width)``; a different size raises ``ImageReadError``.
        exif: apply the orientation tag (True) or return the stored pixel grid (False).
    Raises:
        ImageReadError: with the file name and the reason.
    """
    path = Path(path)
    if mode not in ("gray", "rgb", "unchanged"):
        raise ValueError(f"unknown mode {mode!r} (gray, rgb, unchanged)")
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                tag = img.getexif().get(_ORIENTATION, 1)
                img.load()  # decodes now, so truncation is detected here
                if exif:
                    img = ImageOps.exif_transpose(img)
                elif tag in _UNDO_ORIENTATION and img.getexif().get(_ORIENTATION, 1) != tag:
                    img = img.transpose(_UNDO_ORIENTATION[tag])  # recent Pillow orients TIFFs while loading
                if img.mode in ("F", "I;32F"):
                    raise ImageReadError(f"{path}: 32-bit floating-point image; save it as an 8- or 16-bit image")
                if img.mode in _SIXTEEN_BIT_MODES:
                    array = np.asarray(img)
                    if mode != "unchanged":
                        array = _eight_bit(array, path)
                        if mode == "rgb":
                            array = np.repeat(array[..., None], 3, axis=-1)
                elif mode == "gray":
                    array = np.asarray(img.convert("L"))
                elif mode == "rgb":
                    array = np.asarray(img.convert("RGB"))
                else:
                    if img.mode == "P":
                        img = img.convert("L")
                    array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from None
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if size is not None and array.shape[:2] != tuple(size):
        raise ImageReadError(f"{path}: expected {size[0]}x{size[1]} (rows x cols), got "
                             f"{array.shape[0]}x{array.shape[1]}")
    return array


def write_image(path, array):
    """Write a uint8 (H, W) or (H, W, 3) array; the format follows the extension. Atomic."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8, got {array.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image extension")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=fmt)


def _umask():
    with _UMASK_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def _default_file_mode():
    """0666 minus the process's umask: the mode ``open(path, "w")`` gives a new file."""
    return 0o666 & ~_umask()


_UMASK_LOCK = threading.Lock()


def _temporary_affixes(path):
    """``(prefix, suffix)`` of :func:`atomic_path`'s temporary names for ``path``: ``.<stem>.`` and
    ``.tmp<suffix>`` (both suffixes of ``.nii.gz``); ``mkstemp`` puts 8 random characters between them."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix in (".gz", ".bz2", ".xz") else path.suffix  # .nii.gz
    stem = path.name[:len(path.name) - len(suffix)] if suffix else path.name
    return f".{stem}.", f".tmp{suffix}"


def stale_temporaries(path):
    """The temporary files that interrupted :func:`atomic_path` writes of ``path`` left beside it.

    A process killed while writing (SIGKILL, power loss) cannot delete its temporary file; this finds exactly
    those names (``.<stem>.<8 random characters of mkstemp>.tmp<suffix>`` in ``path``'s folder), nothing else.
    """
    path = Path(path)
    prefix, suffix = _temporary_affixes(path)
    pattern = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}" + re.escape(suffix))
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file())


def remove_stale_temporaries(paths):
    """Delete :func:`stale_temporaries` of each of ``paths`` (call it only where no other process writes
    them); returns the removed files."""
    removed = []
    for path in paths:
        for tmp in stale_temporaries(path):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The temporary name keeps the final suffix (``.x.tmp123.npy``; both of ``.nii.gz``) so libraries that
    insist on an extension (Keras ``.keras``, ``np.save``, nibabel) accept it. The file gets the mode an ordinary ``open()`` would
    give it (0666 minus the umask), not ``mkstemp``'s 0600, so others can read results on a shared server.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temporary_affixes(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _default_file_mode())  # mkstemp's 0600 -> what open() would give (0666 minus the umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def save_npy(path, array):
    """``np.save`` written atomically."""
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(array))


@contextlib.contextmanager
def open_npy_writer(path, shape, dtype):
    """A ``.npy`` file of ``shape``/``dtype`` memory-mapped for filling in place, then renamed into place.

    Lets a prepare script stream images into a dataset-sized array with bounded memory.
    """
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        try:
            yield array
            array.flush()
        finally:
            del array


def list_images(folder, extensions=IMAGE_EXTENSIONS):
    """Sorted image files of ``folder``; a missing or image-less folder raises ``DataLayoutError``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataLayoutError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise DataLayoutError(f"{folder}: no image files ({', '.join(extensions)})")
    return files


def pair_files(images, masks, image_key, mask_key, strict=True):
    """Match image paths to mask paths by key.

    Args:
        images, masks: iterables of paths.
        image_key, mask_key: functions path -> hashable key (e.g. the stem without ``_mask``).
        strict: raise ``DataLayoutError`` naming the unmatched files; else return them.
    Returns:
        ``pairs`` (list of (image, mask) sorted by image path), or with ``strict=False``
        ``(pairs, unmatched_images, unmatched_masks)``.
    """
    by_key = {}
    for m in masks:
        key = mask_key(Path(m))
        if key in by_key:
            raise DataLayoutError(f"{m}: two masks for the same image ({by_key[key].name})")
        by_key[key] = Path(m)
    pairs, lonely_images = [], []
    for img in sorted(Path(i) for i in images):
        mask = by_key.pop(image_key(img), None)
        if mask is None:
            lonely_images.append(img)
        else:
            pairs.append((img, mask))
    lonely_masks = sorted(by_key.values())
    if strict and (lonely_images or lonely_masks):
        parts = []
        if lonely_images:
            parts.append("no mask for " + ", ".join(str(p) for p in lonely_images[:5])
                         + (f" (+{len(lonely_images) - 5} more)" if len(lonely_images) > 5 else ""))
        if lonely_masks:
            parts.append("no image for " + ", ".join(str(p) for p in lonely_masks[:5])
                         + (f" (+{len(lonely_masks) - 5} more)" if len(lonely_masks) > 5 else ""))
        raise DataLayoutError("; ".join(parts))
    return pairs if strict else (pairs, lonely_images, lonely_masks)


@contextlib.contextmanager
def atomic_dir(path, overwrite=False):
    """Yield a temporary folder beside ``path``; on success it replaces ``path``, on error it is deleted.

    For outputs made of several files (a prepared dataset, an export): either all of them appear or none.
    An existing ``path`` raises ``UserError`` unless ``overwrite`` (then it is replaced only once the new
    folder is complete).
    """
    import shutil

    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists; pass --overwrite to replace it, or choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 -> what mkdir() would give
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def json_ready(value):
    """``value`` with NumPy scalars/arrays as Python numbers/lists and non-finite floats as None (JSON null)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path, value, indent=2):
    """Standard JSON (``null`` for NaN/inf, never the non-standard ``NaN``), written atomically."""
    import json

    text = json.dumps(json_ready(value), indent=indent, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
