"""Kaggle run-length encoding (ultrasound nerve segmentation format).

Pixels are numbered from 1, top to bottom within a column, then left to right across columns
(column-major: number = col * height + row + 1). A mask is written as space-separated ``start length``
pairs with ascending starts; a run may continue across a column boundary; an empty mask is ``""``.

Worked example (3x4)::

    0 1 1 0
    0 1 0 0     ->  "3 5 12 1"
    1 1 0 1
"""

import numpy as np


def rle_encode(mask, min_pixels=0):
    """Encode a 2-D mask (nonzero = foreground) as a Kaggle RLE string.

    Args:
        mask: 2-D array (H, W); any dtype, nonzero counts as foreground.
        min_pixels: masks with fewer foreground pixels than this encode as ``""`` (the nerve tutorial's
            rule uses 10; 0 disables it).
    Returns:
        The RLE string, ``""`` for an empty mask.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2-D mask, got shape {mask.shape}")
    fg = mask != 0
    count = np.count_nonzero(fg)
    if count == 0 or count < min_pixels:
        return ""
    # Run edges in column-major pixel numbering, found on the row-major array (no transposed copy):
    # a change between rows r and r+1 of column c is an edge at c*H + r + 1; a change from the last row of
    # column c to the first row of column c+1 is an edge at (c+1)*H; the mask's ends close the first/last run.
    height, width = fg.shape
    rows, cols = np.divmod(np.flatnonzero(fg[1:] != fg[:-1]), width)  # flatnonzero is faster than 2-D nonzero
    wrap = np.flatnonzero(fg[-1, :-1] != fg[0, 1:])
    edges = np.concatenate((
        [0] if fg[0, 0] else [],
        cols.astype(np.int64) * height + rows + 1,
        (wrap.astype(np.int64) + 1) * height,
        [fg.size] if fg[-1, -1] else [],
    )).astype(np.int64)
    edges.sort()
    starts, ends = edges[0::2], edges[1::2]
    pairs = np.empty(edges.size, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(pairs.astype(str).tolist())


def rle_decode(rle, shape):
    """Decode a Kaggle RLE string into a uint8 mask of ``shape`` (H, W) with values 0/1.

    Raises ``ValueError`` for an odd number of values, non-positive starts/lengths or runs that leave the
    image, so a malformed submission line is reported instead of silently clipped.
    """
    height, width = shape
    mask = np.zeros(height * width, dtype=np.uint8)
    rle = (rle or "").strip()
    if not rle:
        return mask.reshape((width, height)).T
    values = np.asarray(rle.split(), dtype=np.int64)
    if values.size % 2:
        raise ValueError(f"RLE has an odd number of values ({values.size})")
    starts, lengths = values[0::2] - 1, values[1::2]
    if (starts < 0).any() or (lengths <= 0).any() or (starts + lengths > mask.size).any():
        raise ValueError(f"RLE run outside a {height}x{width} image or with a non-positive start/length")
    # Mark run boundaries with +1/-1 and integrate: no loop over runs.
    delta = np.zeros(mask.size + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, starts + lengths, -1)
    mask[:] = np.cumsum(delta[:-1]) > 0
    return mask.reshape((width, height)).T
