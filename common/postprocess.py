"""Post-processing of predicted masks: small connected components removed, the largest ones kept.

``scipy.ndimage.label`` on one image or one volume at a time (any number of dimensions). ``connectivity``
follows ``scipy.ndimage.generate_binary_structure``: 1 = faces only (4-neighbours in 2-D, 6 in 3-D), up to
``ndim`` = every neighbour touching a corner (8 in 2-D, 26 in 3-D; the default, as OpenCV's and
scikit-image's default for 2-D masks).
"""

import numpy as np


def _structure(ndim, connectivity):
    from scipy import ndimage

    connectivity = ndim if connectivity is None else int(connectivity)
    if not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be in 1..{ndim}, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, connectivity)


def _components(mask, connectivity):
    from scipy import ndimage

    mask = np.asarray(mask) != 0
    labels, n = ndimage.label(mask, structure=_structure(mask.ndim, connectivity))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return mask, labels, sizes


def remove_small_components(mask, min_size, connectivity=None):
    """``mask`` (bool) without its connected components of fewer than ``min_size`` pixels/voxels."""
    mask, labels, sizes = _components(mask, connectivity)
    if min_size <= 1:
        return mask
    return (sizes >= min_size)[labels] & mask


def keep_largest_components(mask, k, connectivity=None):
    """``mask`` (bool) with only its ``k`` largest connected components (ties: the lower label, i.e. the
    component met first in C order); ``k <= 0`` keeps everything."""
    mask, labels, sizes = _components(mask, connectivity)
    if k <= 0:
        return mask
    order = np.argsort(-sizes[1:], kind="stable")[:k] + 1
    keep = np.zeros(len(sizes), bool)
    keep[order] = True
    keep[0] = False
    return keep[labels] & mask


def remove_small_regions(labels, min_size, background=0, connectivity=None):
    """A label map (integers, one class per pixel) where every connected region of a class smaller than
    ``min_size`` pixels is set to ``background``."""
    labels = np.asarray(labels)
    if min_size <= 1:
        return labels.copy()
    out = labels.copy()
    for value in np.unique(labels):
        if value == background:
            continue
        region = labels == value
        out[region & ~remove_small_components(region, min_size, connectivity)] = background
    return out


def add_postprocess_arguments(parser, min_size=0, keep_largest=0):
    """``--min-size`` and ``--keep-largest`` (defaults given by the task: 0 = off)."""
    parser.add_argument("--min-size", type=int, default=min_size,
                        help="remove predicted connected regions smaller than this many pixels "
                             "(default: %(default)s; 0 = off)")
    parser.add_argument("--keep-largest", type=int, default=keep_largest,
                        help="keep only the K largest predicted connected regions (default: %(default)s; 0 = all)")


def postprocess_mask(mask, min_size=0, keep_largest=0, connectivity=None):
    """Both steps on one binary image or volume: small regions removed, then the largest ``keep_largest``."""
    mask = remove_small_components(mask, min_size, connectivity) if min_size > 1 else np.asarray(mask) != 0
    return keep_largest_components(mask, keep_largest, connectivity) if keep_largest > 0 else mask
