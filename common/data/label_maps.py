"""``--keep-labels``: a prepare script keeps your own masks as label maps 0..K-1 for a K-class run.

One rule for every prepare script that offers it (retina_vessel/prepare_datasets_DRIVE.py, lung/prepare_data.py):

* the option goes with your own data only (``--images/--masks`` or ``--nnunet-dataset``), never with
  ``--foreground`` (which makes the masks one binary foreground);
* the masks are read by ``common.data.pairs.read_pair(binary=False)``'s table and must hold the labels 0..63
  (0 = background; ``common.multiclass`` infers K below 64 from the prepared targets): a mask with a label
  outside is one error line naming the file;
* K = the largest label + 1 when that label is above 1; masks with the labels 0/1 only are binary (K = 2) and
  are prepared as the task's binary recipe prepares them.
"""

import numpy as np

from common import cli
from common.errors import UserError

MAX_CLASSES = 64  # labels 0..63 (common.multiclass.MAX_INFERRED_CLASSES)
OPTION = "--keep-labels"


def add_keep_labels_argument(group, *, binary_default, head):
    """Add ``--keep-labels`` to an argparse group. ``binary_default``: what the task prepares without it (e.g.
    "binary vessels as DRIVE"); ``head``: what a K-class run trains (e.g. "train_retina.py trains a K-channel
    softmax head")."""
    group.add_argument(OPTION, action="store_true",
                       help=f"masks are label maps 0..K-1 (0 = background, K - 1 <= {MAX_CLASSES - 1}): keep the "
                            f"labels for a K-class run ({head}) instead of one binary foreground; not with "
                            f"--foreground (default: off, {binary_default})")


def check_keep_labels(args, *, own_data, benchmark):
    """One-line ``OptionError`` for ``--keep-labels`` with ``--foreground``, or without your own data
    (``own_data`` False; ``benchmark``: why the task's benchmark layout has no label maps)."""
    if not getattr(args, "keep_labels", False):
        return
    if getattr(args, "foreground", None) is not None:
        raise cli.option_error(OPTION, "keeps every label of the masks; --foreground makes them one binary "
                                       "foreground: give one of the two")
    if not own_data:
        raise cli.option_error(OPTION, f"goes with --images/--masks or --nnunet-dataset ({benchmark})")


def kept_labels(labels, path):
    """A mask's integer labels as uint8 (any shape); ``UserError`` naming ``path`` when a label lies outside
    0..63."""
    labels = np.asarray(labels)
    low = int(np.min(labels)) if labels.size else 0
    top = int(np.max(labels)) if labels.size else 0
    if low < 0 or top >= MAX_CLASSES:
        raise UserError(f"{path}: labels {low}..{top}; {OPTION} takes label maps 0..{MAX_CLASSES - 1} "
                        f"(0 = background)")
    return labels.astype(np.uint8)


def num_classes_of_labels(top):
    """K of label maps whose largest label is ``top``: ``top + 1`` when ``top`` > 1, else 2 (labels 0/1 only:
    binary, prepared as the task's binary recipe)."""
    return int(top) + 1 if top > 1 else 2
