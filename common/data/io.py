"""Reading and writing images and arrays, with one clear error per bad file and atomic writes.

* ``read_image(path, mode)`` reads TIFF, GIF, PNG, JPG/JPEG and BMP through Pillow and returns uint8
  (or the file's own integer dtype with ``mode="unchanged"``). A missing, empty, truncated or undecodable
  file raises ``ImageReadError`` whose message names the file.
* ``atomic_path(path)`` yields a temporary name beside ``path`` and renames it into place only when the
  block succeeds, so an interrupted run never leaves a half-written output.
* ``pair_files`` matches images to masks by a key and reports unmatched names.
"""

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".tif", ".tiff", ".gif", ".png", ".jpg", ".jpeg", ".bmp")


class ImageReadError(ValueError):
    """An image file is missing, empty, truncated or cannot be decoded."""


class DataLayoutError(ValueError):
    """A dataset folder does not have the expected layout (missing folder, unmatched pairs, ...)."""


def read_image(path, mode="gray", size=None):
    """Read one image file as a NumPy array.

    Args:
        path: file path.
        mode: ``"gray"`` (H, W) uint8, ``"rgb"`` (H, W, 3) uint8, or ``"unchanged"`` (as stored; palette
            images such as GIF masks are returned as their palette indices' luminance).
        size: optional expected ``(height, width)``; a different size raises ``ImageReadError``.
    Raises:
        ImageReadError: with the file name and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # decodes now, so truncation is detected here
                if mode == "gray":
                    img = img.convert("L")
                elif mode == "rgb":
                    img = img.convert("RGB")
                elif mode == "unchanged":
                    if img.mode == "P":
                        img = img.convert("L")
                else:
                    raise ValueError(f"unknown mode {mode!r} (gray, rgb, unchanged)")
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


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The temporary name keeps the final suffix (``.x.tmp123.npy``) so libraries that insist on an
    extension (Keras ``.keras``, ``np.save``) accept it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
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
