"""The originals' image normalisations (BCDU-Net ``help_functions.py`` / ``pre_processing.py``), shared.

All functions take channels-last arrays ``(N, H, W)`` or ``(N, H, W, C)`` (the originals were channels-first;
the task scripts transpose at the HDF5 boundary) and work image by image, so they can be applied to chunks
of a dataset that does not fit in memory and give the same result as on the whole array.
"""

import cv2
import numpy as np

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def rgb2gray(rgb):
    """``0.299 R + 0.587 G + 0.114 B`` (float64) of ``(N, H, W, 3)`` -> ``(N, H, W, 1)``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb2gray expects (N, H, W, 3) images, got shape {rgb.shape}")
    return (rgb.astype(np.float64) @ np.asarray(GRAY_WEIGHTS))[..., None]


def dataset_normalized(images, dtype=np.float64):
    """The original's ``dataset_normalized``: global z-score, then each image min-max stretched to [0, 255].

    The global mean and standard deviation cancel in the per-image min-max, so this is computed directly as
    ``(x - min_i) / (max_i - min_i) * 255`` with the extremes of each image over all its pixels and channels
    (equal to the original up to float rounding, and independent of the other images). Divided before the
    multiplication by 255, as the original, so each image's brightest pixel is exactly 255.0 (multiplying by
    ``255 / span`` gives 254.99999999999997 for some spans, which a later uint8 cast truncates to 254). A
    constant image, for which the original divides 0 by 0 and yields NaN, maps to zeros.

    uint8 images (ISIC's stored arrays) take a lookup table per image: the 256 possible values through the
    same float64 formula, then cast to ``dtype``, so the result is the float64 computation's, bit for bit,
    about 3x faster (the ISIC input pipeline's bound, bench/input_pipeline.py).
    """
    x = np.asarray(images)
    axes = tuple(range(1, x.ndim))
    if x.dtype == np.uint8 and x.ndim > 1:
        low = x.min(axis=axes).astype(np.float64)[:, None]
        span = x.max(axis=axes).astype(np.float64)[:, None] - low
        table = np.where(span > 0, (np.arange(256.0) - low) / np.where(span > 0, span, 1.0) * 255.0, 0.0)
        table = table.astype(dtype)
        out = np.empty(x.shape, dtype)
        for i in range(len(x)):
            np.take(table[i], x[i], out=out[i])
        return out
    x = x.astype(dtype, copy=False)
    low = x.min(axis=axes, keepdims=True)
    span = x.max(axis=axes, keepdims=True) - low
    out = (x - low) / np.where(span > 0, span, 1.0) * 255.0
    return np.where(span > 0, out, 0.0).astype(dtype, copy=False)


def clahe_equalized(images, clip_limit=2.0, tile_grid_size=(8, 8)):
    """OpenCV CLAHE on each single-channel image cast to uint8 by truncation (as the original). -> uint8."""
    x = np.asarray(images)
    if x.ndim == 4:
        if x.shape[-1] != 1:
            raise ValueError(f"CLAHE expects single-channel images, got shape {x.shape}")
        return clahe_equalized(x[..., 0], clip_limit, tile_grid_size)[..., None]
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tuple(tile_grid_size))
    return np.stack([clahe.apply(_to_uint8(img)) for img in x])


def gamma_table(gamma=1.2):
    """The 256-entry look-up table ``uint8(((i / 255) ** (1 / gamma)) * 255)`` (truncated)."""
    return (((np.arange(256) / 255.0) ** (1.0 / gamma)) * 255).astype(np.uint8)


def adjust_gamma(images, gamma=1.2):
    """Apply :func:`gamma_table` to the images cast to uint8 by truncation. -> uint8."""
    return gamma_table(gamma)[_to_uint8(images)]


def my_preproc(rgb_images):
    """DRIVE preprocessing ``my_PreProc``: gray -> dataset_normalized -> CLAHE -> gamma 1.2 -> /255.

    ``(N, H, W, 3)`` RGB in 0..255 -> ``(N, H, W, 1)`` float32 in [0, 1].
    """
    gray = dataset_normalized(rgb2gray(rgb_images))
    return (adjust_gamma(clahe_equalized(gray)) / 255.0).astype(np.float32)


def _to_uint8(x):
    """C-style cast as ``np.array(x, dtype=np.uint8)`` on floats in [0, 255]: truncation toward zero."""
    x = np.asarray(x)
    return x if x.dtype == np.uint8 else x.astype(np.uint8)


def flip_image(image, *, up_down=False, left_right=False):
    """``image`` (H, W) or (H, W, C) flipped up-down and/or left-right: a new array of the same shape, the
    values of ``image[::-1, ::-1]`` (or one of the two), copied by OpenCV, 30-100x faster than NumPy's copy of a
    reversed view for uint8 RGB (NumPy copies one byte at a time at a stride of -3; bench/input_pipeline.py's
    decode-cache pipelines). The training pipelines' random flips."""
    image = np.asarray(image)
    if not (up_down or left_right):
        return image.copy()
    code = -1 if up_down and left_right else (0 if up_down else 1)
    return cv2.flip(np.ascontiguousarray(image), code).reshape(image.shape)  # cv2 drops a channel axis of 1
