"""Patches of images, vectorised: random sampling, ordered overlapping extraction and recomposition.

The BCDU-Net retina code (after orobix/retina-unet ``extract_patches.py``) cuts patches in Python loops over
images, rows and columns. Here every operation is array-at-once on channels-last ``(N, H, W, C)`` arrays:

* :func:`sliding_windows` is a zero-copy, read-only ``numpy.lib.stride_tricks.sliding_window_view`` of the
  padded images at the given stride, shape ``(N, rows, cols, ph, pw, C)``; nothing is copied until asked.
* :func:`extract_ordered_overlap` materialises it as ``(N * rows * cols, ph, pw, C)`` in the original's order
  (image, then patch row, then patch column) after :func:`pad_to_stride` (the original's
  ``paint_border_overlap``: zeros at the bottom/right so that ``(dim - patch) % stride == 0``).
* :func:`recompose_overlap` averages overlapping patches back into images (the original's
  ``recompone_overlap``). Patches whose grid positions differ by a multiple of ``ceil(patch / stride)`` do not
  overlap, so they are added in one strided block each: ``ceil(ph/s) * ceil(pw/s)`` vectorised additions
  (169 for 64 / 5), accumulated in float64 (exact for float32 patches, so recomposing extracted patches gives
  the images back bit for bit) and divided by the analytic coverage count.
* :func:`extract_random` fancy-indexes the window view with seeded random centres (the original's
  ``extract_random``), optionally only centres inside a circular field of view (``is_patch_inside_FOV``).

``patch`` and ``stride`` are an int (square) or a ``(rows, cols)`` pair everywhere.
"""

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view


def _pair(value, name):
    pair = (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or a (rows, cols) pair, got {value!r}")
    return pair


def _as_nhwc(images):
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected channels-last images (N, H, W, C), got shape {images.shape}")
    return images


def padded_size(size, patch, stride):
    """Smallest ``size' >= max(size, patch)`` with ``(size' - patch) % stride == 0`` (one axis)."""
    size = max(int(size), int(patch))
    return size + (-(size - patch)) % stride


def pad_to_stride(images, patch, stride):
    """The original's ``paint_border_overlap``: zero-pad at the bottom and right so that whole patches at
    ``stride`` cover every pixel, i.e. ``(H - ph) % sh == 0`` and ``(W - pw) % sw == 0``.

    Images smaller than a patch are padded to the patch size. Returns the input itself when no padding is
    needed. ``(N, H, W, C)`` -> ``(N, H', W', C)``.
    """
    images = _as_nhwc(images)
    (ph, pw), (sh, sw) = _pair(patch, "patch"), _pair(stride, "stride")
    _, h, w, _ = images.shape
    hp, wp = padded_size(h, ph, sh), padded_size(w, pw, sw)
    if (hp, wp) == (h, w):
        return images
    return np.pad(images, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))


def grid_shape(image_shape, patch, stride):
    """``(rows, cols)`` of the patch grid over images of ``(H, W)`` (padded with :func:`pad_to_stride`)."""
    (ph, pw), (sh, sw) = _pair(patch, "patch"), _pair(stride, "stride")
    h, w = image_shape[-2:] if len(image_shape) == 2 else image_shape[1:3]
    return (padded_size(h, ph, sh) - ph) // sh + 1, (padded_size(w, pw, sw) - pw) // sw + 1


def sliding_windows(images, patch, stride):
    """Zero-copy read-only view ``(N, rows, cols, ph, pw, C)`` of the patches of the (already padded)
    ``images`` at ``stride``; ``view[n, i, j]`` is ``images[n, i*sh : i*sh+ph, j*sw : j*sw+pw]``."""
    images = _as_nhwc(images)
    (ph, pw), (sh, sw) = _pair(patch, "patch"), _pair(stride, "stride")
    if images.shape[1] < ph or images.shape[2] < pw:
        raise ValueError(f"images of {images.shape[1]}x{images.shape[2]} are smaller than the {ph}x{pw} patch")
    view = sliding_window_view(images, (ph, pw), axis=(1, 2))  # (N, H-ph+1, W-pw+1, C, ph, pw)
    return view[:, ::sh, ::sw].transpose(0, 1, 2, 4, 5, 3)


def extract_ordered_overlap(images, patch, stride, materialize=True):
    """Overlapping patches of every image at ``stride`` after :func:`pad_to_stride` (the original's
    ``extract_ordered_overlap`` on ``paint_border_overlap``'s output).

    Args:
        images: ``(N, H, W, C)``.
        patch, stride: int or ``(rows, cols)``.
        materialize: return a contiguous ``(N * rows * cols, ph, pw, C)`` array in the original's order (image,
            patch row, patch column); ``False`` returns the zero-copy 6-D view of :func:`sliding_windows`.
    """
    windows = sliding_windows(pad_to_stride(images, patch, stride), patch, stride)
    if not materialize:
        return windows
    n, rows, cols, ph, pw, c = windows.shape
    out = np.empty(windows.shape, windows.dtype)
    # one vectorised copy per grid row (n * rows copies of cols patches each): 3-4x faster than letting
    # np.ascontiguousarray walk the 6-D strided view
    for i in range(n):
        for r in range(rows):
            out[i, r] = windows[i, r]
    return out.reshape(n * rows * cols, ph, pw, c)


def coverage_counts(size, patch, stride):
    """How many patches of a 1-D grid over a padded axis of ``size`` cover each position (int64)."""
    starts = np.zeros(size, np.int64)
    starts[: size - patch + 1: stride] = 1
    return np.convolve(starts, np.ones(patch, np.int64))[:size]


class OverlapAccumulator:
    """Sums overlapping patches into images, block by block, and averages them at the end.

    ``add(patches, first)`` adds patches whose flat grid index (image, row, col in the original's order)
    starts at ``first``; any number of calls in any order, so predictions can be streamed batch by batch
    with memory bounded by the images plus one batch. ``result()`` divides by the coverage counts and crops
    the padding (to ``image_shape``).
    """

    def __init__(self, image_shape, patch, stride, dtype=np.float32):
        n, h, w, c = image_shape
        self.image_shape, self.dtype = tuple(image_shape), dtype
        (self.ph, self.pw), (self.sh, self.sw) = _pair(patch, "patch"), _pair(stride, "stride")
        self.hp, self.wp = padded_size(h, self.ph, self.sh), padded_size(w, self.pw, self.sw)
        self.rows, self.cols = (self.hp - self.ph) // self.sh + 1, (self.wp - self.pw) // self.sw + 1
        self.total = n * self.rows * self.cols
        self.sum = np.zeros((n, self.hp, self.wp, c), np.float64)
        # grid positions k apart (k = ceil(patch / stride)) never overlap: each residue class is one block
        self.ki, self.kj = math.ceil(self.ph / self.sh), math.ceil(self.pw / self.sw)

    def add(self, patches, first=0):
        patches = np.asarray(patches)
        if patches.ndim == 3:
            patches = patches[..., None]
        if patches.shape[1:] != (self.ph, self.pw, self.sum.shape[-1]):
            raise ValueError(f"patches of shape {patches.shape[1:]} do not match {self.ph}x{self.pw}x"
                             f"{self.sum.shape[-1]}")
        last = first + len(patches)
        if first < 0 or last > self.total:
            raise ValueError(f"patches {first}..{last} outside the grid of {self.total}")
        per_image = self.rows * self.cols
        # split at image boundaries and then at row boundaries of the grid: whole rows go in as a block
        start = first
        while start < last:
            img, rest = divmod(start, per_image)
            row0, col0 = divmod(rest, self.cols)
            if col0 == 0:  # as many whole rows of this image as available
                n_rows = min((last - start) // self.cols, self.rows - row0)
                if n_rows:
                    block = patches[start - first: start - first + n_rows * self.cols]
                    self._add_rows(img, row0, block.reshape(n_rows, self.cols, *block.shape[1:]), 0)
                    start += n_rows * self.cols
                    continue
            n = min(last - start, self.cols - col0)  # part of one grid row
            block = patches[start - first: start - first + n]
            self._add_rows(img, row0, block[None], col0)
            start += n

    def _add_rows(self, img, row0, grid, col0):
        """Add ``grid`` (rows, cols, ph, pw, C) whose first patch sits at grid position (row0, col0)."""
        target = self.sum[img]
        s0, s1, s2 = target.strides
        rows, cols = grid.shape[:2]
        for a in range(min(self.ki, rows)):
            for b in range(min(self.kj, cols)):
                sub = grid[a::self.ki, b::self.kj]  # non-overlapping patches
                r0, c0 = (row0 + a) * self.sh, (col0 + b) * self.sw
                view = as_strided(target[r0:, c0:], shape=(sub.shape[0], self.ph, sub.shape[1], self.pw,
                                                           sub.shape[-1]),
                                  strides=(s0 * self.sh * self.ki, s0, s1 * self.sw * self.kj, s1, s2),
                                  writeable=True)
                view += sub.transpose(0, 2, 1, 3, 4)

    def result(self):
        counts = (coverage_counts(self.hp, self.ph, self.sh)[:, None]
                  * coverage_counts(self.wp, self.pw, self.sw)[None, :])
        _, h, w, _ = self.image_shape
        return (self.sum[:, :h, :w] / counts[:h, :w, None]).astype(self.dtype)


def recompose_overlap(patches, image_shape, stride):
    """Average overlapping patches back into images (the original's ``recompone_overlap``), vectorised.

    Args:
        patches: ``(N * rows * cols, ph, pw[, C])`` in :func:`extract_ordered_overlap`'s order.
        image_shape: ``(N, H, W[, C])`` of the images the patches came from, before or after padding; the
            result is cropped to it.
        stride: int or ``(rows, cols)``.
    Returns:
        ``(N, H, W, C)`` in the patches' floating dtype (float32 for integer patches). Each pixel is the plain
        mean of the patch values covering it.
    """
    patches = np.asarray(patches)
    if patches.ndim == 3:
        patches = patches[..., None]
    image_shape = tuple(image_shape) + ((patches.shape[-1],) if len(image_shape) == 3 else ())
    dtype = patches.dtype if np.issubdtype(patches.dtype, np.floating) else np.float32
    acc = OverlapAccumulator(image_shape, patches.shape[1:3], stride, dtype)
    if len(patches) != acc.total:
        raise ValueError(f"{len(patches)} patches, but {image_shape[0]} images of {image_shape[1]}x"
                         f"{image_shape[2]} at stride {stride} need {acc.total}")
    acc.add(patches)
    return acc.result()


def fov_centre_mask(height, width, patch, fov_radius=270):
    """The original's ``is_patch_inside_FOV`` for every centre: True where the whole patch lies inside the
    circle of radius ``fov_radius`` around ``(int(W/2), int(H/2))``, i.e. the centre's distance is below
    ``fov_radius - int(ph * sqrt(2) / 2)`` (225 px for 64x64 patches on DRIVE)."""
    ph = _pair(patch, "patch")[0]
    limit = fov_radius - int(ph * np.sqrt(2.0) / 2.0)
    y = np.arange(height)[:, None] - int(height / 2)
    x = np.arange(width)[None, :] - int(width / 2)
    return np.sqrt(x * x + y * y) < limit


def extract_random(images, masks, n_patches, patch, seed=None, inside_fov=False, fov_radius=270):
    """Random patches, the same number from every image (the original's ``extract_random``).

    The centre ``(y, x)`` of each patch is drawn uniformly from ``[ph//2, H - ph//2]`` x ``[pw//2, W - pw//2]``
    (inclusive, as Python's ``random.randint`` in the original) and the patch is
    ``rows [y - ph//2, y - ph//2 + ph)``, ``cols [x - pw//2, x - pw//2 + pw)``. With ``inside_fov`` only centres
    passing :func:`fov_centre_mask` are kept (rejection sampling, as the original's loop).

    Args:
        images, masks: ``(N, H, W, C)`` and ``(N, H, W, C')``.
        n_patches: total; must be a multiple of N (``n_patches // N`` per image, in image order).
        patch: int or ``(rows, cols)``.
        seed: int or ``numpy.random.Generator``.
    Returns:
        ``(image_patches, mask_patches)`` of shapes ``(n_patches, ph, pw, C)`` and ``(n_patches, ph, pw, C')``.
    """
    images, masks = _as_nhwc(images), _as_nhwc(masks)
    if images.shape[:3] != masks.shape[:3]:
        raise ValueError(f"images {images.shape} and masks {masks.shape} differ in size")
    n, h, w, _ = images.shape
    ph, pw = _pair(patch, "patch")
    if n_patches % n:
        raise ValueError(f"n_patches ({n_patches}) must be a multiple of the number of images ({n})")
    if h < ph or w < pw:
        raise ValueError(f"images of {h}x{w} are smaller than the {ph}x{pw} patch")
    per_image = n_patches // n
    rng = np.random.default_rng(seed)
    lo_y, hi_y, lo_x, hi_x = ph // 2, h - ph // 2, pw // 2, w - pw // 2
    hi_y, hi_x = min(hi_y, h - ph + ph // 2), min(hi_x, w - pw + pw // 2)  # odd sizes: stay inside
    if inside_fov:
        allowed = fov_centre_mask(h, w, (ph, pw), fov_radius)[lo_y:hi_y + 1, lo_x:hi_x + 1]
        cy, cx = np.nonzero(allowed)
        if cy.size == 0:
            raise ValueError(f"no {ph}x{pw} patch fits inside a FOV of radius {fov_radius} in {h}x{w} images")
        # uniform over the allowed centres = rejection sampling from the uniform square
        pick = rng.integers(0, cy.size, size=(n, per_image))
        ys, xs = cy[pick] + lo_y, cx[pick] + lo_x
    else:
        ys = rng.integers(lo_y, hi_y + 1, size=(n, per_image))
        xs = rng.integers(lo_x, hi_x + 1, size=(n, per_image))
    idx = np.repeat(np.arange(n), per_image)
    top, left = ys.ravel() - ph // 2, xs.ravel() - pw // 2
    return gather_patches(images, idx, top, left, (ph, pw)), gather_patches(masks, idx, top, left, (ph, pw))


def gather_patches(images, index, top, left, patch):
    """Copy the patches ``images[index[k], top[k]:top[k]+ph, left[k]:left[k]+pw]`` for all k at once.

    Each patch row (``pw * C`` contiguous values) is viewed as one fixed-size record of a flat record array
    that overlaps the image buffer, so the whole gather is a single fancy index of ``K * ph`` records (about
    twice as fast as fancy-indexing a ``sliding_window_view``, and far faster than a loop). -> ``(K, ph, pw, C)``.
    """
    images = np.ascontiguousarray(_as_nhwc(images))
    n, h, w, c = images.shape
    ph, pw = _pair(patch, "patch")
    index, top, left = (np.asarray(a, np.int64).ravel() for a in (index, top, left))
    if index.size and (top.min() < 0 or left.min() < 0 or top.max() > h - ph or left.max() > w - pw
                       or index.min() < 0 or index.max() >= n):
        raise ValueError(f"a {ph}x{pw} patch position lies outside the {n} images of {h}x{w}")
    row = np.dtype((np.void, pw * c * images.itemsize))
    records = np.ndarray(shape=(images.size // c - pw + 1,), dtype=row, buffer=images,
                         strides=(c * images.itemsize,))
    first = (index * h + top) * w + left
    out = records[first[:, None] + np.arange(ph) * w]  # (K, ph) records
    return out.view(images.dtype).reshape(len(first), ph, pw, c)
