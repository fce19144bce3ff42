"""Write the Kaggle submission CSV from the predicted test masks (the tutorial's submission.py).

Reads ``imgs_mask_test.npy`` (M,96,96,1) and ``imgs_id_test.npy`` from ``--work-dir``, and writes
``submission.csv`` with the header ``img,pixels`` and one row per test id in ascending order. Each mask is
thresholded at 0.5, resized back to 420x580 (rows x cols) and re-binarised, then run-length encoded in the
Kaggle column-major format; masks with fewer than ``--min-pixels`` (original: 10) pixels are written empty.

``--legacy`` reproduces the original script's bugs for comparison (first row of the mask instead of the mask,
580x420 instead of 420x580, no re-threshold); see README "Deviations from the original".
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
from common.rle import rle_encode
from ultrasound_nerve.data import DEFAULT_WORK, IMAGE_COLS, IMAGE_ROWS


def prep(prob, threshold=0.5, shape=(IMAGE_ROWS, IMAGE_COLS)):
    """(h, w) probabilities -> (420, 580) uint8 0/1: threshold, bilinear resize, threshold again at 0.5."""
    binary = (np.asarray(prob) > threshold).astype(np.float32)
    resized = cv2.resize(binary, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return (resized > 0.5).astype(np.uint8)


def prep_legacy(pred, threshold=0.5):
    """The original ``prep`` applied to ``masks[i, 0]`` of a channels-last prediction (bugs 1-3 of the spec).

    Returns the array the original encoder walks: (580, 420) float in [0, 1] from the first mask row.
    """
    row = (np.asarray(pred)[0] > threshold).astype(np.float32)  # masks[i, 0] -> (96, 1): first row only
    return cv2.resize(row, (IMAGE_ROWS, IMAGE_COLS), interpolation=cv2.INTER_LINEAR)  # 580 rows x 420 cols


def encode_predictions(masks, threshold=0.5, min_pixels=10, legacy=False, verbose=True):
    """RLE strings for (M, h, w, 1) predictions, one per mask."""
    rles = []
    for pred in tqdm(masks, desc="encoding", disable=not verbose):
        if legacy:
            rles.append(rle_encode(prep_legacy(pred, threshold) > 0, min_pixels))
        else:
            rles.append(rle_encode(prep(pred[:, :, 0], threshold), min_pixels))
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
        raise ValueError(f"{path}: not a submission file (header must be 'img,pixels')")
    return {int(line.split(",", 1)[0]): line.split(",", 1)[1] for line in rows[1:] if line}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with imgs_mask_test.npy and imgs_id_test.npy (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=None, help="CSV path (default: <work-dir>/submission.csv)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--min-pixels", type=int, default=10,
                        help="masks with fewer pixels are submitted empty (original: 10; 0 disables)")
    parser.add_argument("--legacy", action="store_true", help="reproduce the original script's bugs")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    for name in ("imgs_mask_test.npy", "imgs_id_test.npy"):
        if not (args.work_dir / name).is_file():
            raise FileNotFoundError(f"{args.work_dir / name}: not found; run data.py and train.py first")
    masks = np.load(args.work_dir / "imgs_mask_test.npy", mmap_mode="r")
    ids = np.load(args.work_dir / "imgs_id_test.npy")
    if masks.ndim != 4 or len(masks) != len(ids):
        raise ValueError(f"{args.work_dir / 'imgs_mask_test.npy'}: expected (M,h,w,1) for {len(ids)} ids, "
                         f"got {masks.shape}")
    rles = encode_predictions(masks, args.threshold, args.min_pixels, args.legacy, not args.quiet)
    output = args.output or args.work_dir / "submission.csv"
    write_submission(output, ids, rles)
    print(f"Wrote {len(rles)} rows to {output} ({sum(bool(r) for r in rles)} non-empty)")
    return output


if __name__ == "__main__":
    cli.run(main)
