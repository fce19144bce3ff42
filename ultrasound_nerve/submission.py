"""Write the Kaggle submission CSV from the predicted test masks (the tutorial's submission.py).

Reads ``imgs_mask_test.npy`` (M,96,96,1) and ``imgs_id_test.npy`` from ``--work-dir``, and writes
``submission.csv`` with the header ``img,pixels`` and one row per test id in ascending order. Each mask is
thresholded at 0.5, resized back to 420x580 (rows x cols) and re-binarised, then run-length encoded in the
Kaggle column-major format; masks with fewer than ``--min-pixels`` (original: 10) pixels are written empty.

``--legacy`` reproduces the original script's bugs for comparison (first row of the mask instead of the mask,
580x420 instead of 420x580, no re-threshold); see README "Deviations from the original". Options (off by
default, as the original): ``--keep-largest 1`` keeps only the largest connected region of each mask (there
is at most one brachial plexus per frame), ``--min-size N`` removes regions under N pixels (both after the
resize to 420x580, before the 10-pixel rule). An existing CSV is never replaced without ``--overwrite``.

Examples::

    python ultrasound_nerve/submission.py
    python ultrasound_nerve/submission.py --keep-largest 1 --output work/ultrasound_nerve/submission_largest.csv
    python ultrasound_nerve/submission.py --legacy --output work/ultrasound_nerve/submission_legacy.csv
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import cv2
import numpy as np
from tqdm import tqdm

from common import cli
from common.data.io import atomic_path
from common.errors import UserError
from common.postprocess import postprocess_mask
from common.rle import rle_encode
from ultrasound_nerve.data import DEFAULT_WORK, IMAGE_COLS, IMAGE_ROWS
from ultrasound_nerve.task import add_mask_options, check_mask_options, prep  # noqa: F401  (one place: task.py)


def prep_legacy(pred, threshold=0.5):
    """The original ``prep`` applied to ``masks[i, 0]`` of a channels-last prediction (bugs 1-3 of the spec).

    Returns the array the original encoder walks: (580, 420) float in [0, 1] from the first mask row.
    """
    row = (np.asarray(pred)[0] > threshold).astype(np.float32)  # masks[i, 0] -> (96, 1): first row only
    return cv2.resize(row, (IMAGE_ROWS, IMAGE_COLS), interpolation=cv2.INTER_LINEAR)  # 580 rows x 420 cols


def final_mask(prob, threshold=0.5, min_pixels=10, *, min_size=0, keep_largest=0,
               shape=(IMAGE_ROWS, IMAGE_COLS)):
    """(h, w) probabilities -> the submitted (rows, cols) uint8 0/1 mask: ``prep``, then
    ``common.postprocess.postprocess_mask`` (``min_size`` / ``keep_largest``; 0 = off, as the original), then
    empty when fewer than ``min_pixels`` pixels remain (the original's rule). evaluate.py scores exactly this."""
    mask = prep(prob, threshold, shape)
    if min_size or keep_largest:
        mask = postprocess_mask(mask, min_size, keep_largest).astype(np.uint8)
    if min_pixels and mask.sum() < min_pixels:
        mask[:] = 0
    return mask


def encode_predictions(masks, threshold=0.5, min_pixels=10, legacy=False, verbose=True, min_size=0,
                       keep_largest=0):
    """RLE strings for (M, h, w, 1) predictions, one per mask (``final_mask`` of each, at 420x580)."""
    rles = []
    for pred in tqdm(masks, desc="encoding", disable=not verbose):
        if legacy:
            rles.append(rle_encode(prep_legacy(pred, threshold) > 0, min_pixels))
        else:
            mask = final_mask(pred[:, :, 0], threshold, min_pixels, min_size=min_size, keep_largest=keep_largest)
            rles.append(rle_encode(mask, min_pixels))
    return rles


def write_submission(path, ids, rles):
    """``img,pixels`` CSV with rows sorted by id; written atomically."""
    order = np.argsort(ids, kind="stable")
    lines = ["img,pixels"] + [f"{int(ids[i])},{rles[i]}" for i in order]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def read_submission(path):
    """{id: rle} from a submission CSV."""
    rows = Path(path).read_text().splitlines()
    if not rows or rows[0] != "img,pixels":
        raise UserError(f"{path}: not a submission file (the header must be 'img,pixels')")
    return {int(line.split(",", 1)[0]): line.split(",", 1)[1] for line in rows[1:] if line}


def build_parser():
    """The command line (its defaults are the original's settings; pinned by the tests)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with imgs_mask_test.npy and imgs_id_test.npy (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=None, help="CSV path (default: <work-dir>/submission.csv)")
    add_mask_options(parser, threshold_help="default: %(default)s, as the original",
                     min_pixels_help="masks with fewer pixels are submitted empty (original: 10; 0 disables)")
    parser.add_argument("--legacy", action="store_true", help="reproduce the original script's bugs")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    parser.add_argument("--quiet", action="store_true")
    return parser


def check_options(args):
    """One-line ``OptionError`` for option values that cannot work."""
    check_mask_options(args)
    if args.legacy and (args.min_size or args.keep_largest):
        raise cli.option_error("--legacy", "reproduces the original's output; it cannot be combined with "
                                           "--min-size/--keep-largest")


def load_predictions(work_dir):
    """``(masks, ids)``: imgs_mask_test.npy (M, h, w, 1) memory-mapped and imgs_id_test.npy (M,), checked."""
    work_dir = Path(work_dir)
    for name in ("imgs_mask_test.npy", "imgs_id_test.npy"):
        if not (work_dir / name).is_file():
            raise UserError(f"{work_dir / name}: not found; run data.py and train.py first")
    try:
        masks = np.load(work_dir / "imgs_mask_test.npy", mmap_mode="r")
        ids = np.load(work_dir / "imgs_id_test.npy")
    except ValueError as exc:
        raise UserError(f"{work_dir}: cannot read the prediction arrays ({exc}); run train.py again") from None
    if masks.ndim != 4 or masks.shape[-1] != 1 or ids.ndim != 1 or len(masks) != len(ids):
        raise UserError(f"{work_dir / 'imgs_mask_test.npy'}: expected predictions of shape (M, h, w, 1) for the "
                        f"{len(ids)} ids of imgs_id_test.npy, got {masks.shape}; run train.py again")
    return masks, ids


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_options(args)
    output = args.output or args.work_dir / "submission.csv"
    if output.exists() and not args.overwrite:
        raise UserError(f"{output}: already exists; pass --overwrite to replace it, or another --output")
    masks, ids = load_predictions(args.work_dir)
    rles = encode_predictions(masks, args.threshold, args.min_pixels, args.legacy, not args.quiet,
                              min_size=args.min_size, keep_largest=args.keep_largest)
    write_submission(output, ids, rles)
    print(f"Wrote {len(rles)} rows to {output} ({sum(bool(r) for r in rles)} non-empty)")
    return output


if __name__ == "__main__":
    cli.run(main)
