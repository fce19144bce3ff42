"""Score train.py's test predictions against the held-out masks of an own-data ``--work-dir``.

For data.py's own-data arrays (``--images/--masks`` or ``--nnunet-dataset``), whose test part has masks
(``imgs_mask_test_true.npy``). Each prediction of ``imgs_mask_test.npy`` (M, 96, 96, 1) becomes exactly the
mask submission.py would submit (``submission.final_mask``: threshold 0.5, bilinear back to the frame's
size, binarised again, ``--min-size``/``--keep-largest`` if given, empty under ``--min-pixels`` = 10 pixels)
and is compared with the frame's true mask at the stored frame size:

* Dice per image: 2|A∩B| / (|A|+|B|) of each frame, 1 when both are empty (the Kaggle competition's
  metric, ``common.metrics.dice_score``), then the mean and the median over the frames;
* pooled Dice: the same ratio over every pixel of the test part at once (``segmentation_scores``'s F1),
  with the pooled sensitivity and precision;
* HD95 (``common.metrics.surface_scores``, MONAI's definition) in pixels of the stored frames: the mean
  over the frames whose truth and prediction both have foreground; the frames with one empty mask (HD95
  infinite) are counted beside it.

Written to ``--out-dir`` (default ``<work-dir>/evaluation``), the folder complete or not at all, replaced
only with ``--overwrite``: ``scores.md``/``scores.json`` (the table), ``per_image.csv`` (name, Dice, HD95,
pixels true/predicted), ``scores.png`` (per-image Dice histogram and HD95) and ``examples.png`` (frame |
truth | prediction for the worst, median and best frames).

Examples::

    python ultrasound_nerve/data.py --images frames/ --masks masks/ --work-dir work/nerve_own
    python ultrasound_nerve/train.py --work-dir work/nerve_own --run-dir weights/nerve_own
    python ultrasound_nerve/evaluate.py --work-dir work/nerve_own
"""

import argparse
import csv
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.errors import UserError
from ultrasound_nerve.data import DEFAULT_WORK, OUTPUTS, TRUE_MASKS, read_split
from ultrasound_nerve.submission import final_mask, load_predictions
from ultrasound_nerve.task import add_mask_options, check_mask_options


def score_masks(truths, masks):
    """Dice per image (both empty: 1), pooled Dice and HD95 of (M, H, W) truths and predicted masks.

    Returns ``(summary dict, per-image dict of arrays)``.
    """
    from common.metrics import dice_score, segmentation_scores, surface_scores

    truths, masks = np.asarray(truths) != 0, np.asarray(masks) != 0
    dice = np.array([dice_score(t, p, empty_score=1.0) for t, p in zip(truths, masks)])
    pooled = segmentation_scores(truths, masks.astype(np.float32), threshold=0.5)
    surface = surface_scores(truths, masks)
    summary = {
        "frames": int(len(truths)),
        "dice_per_image_mean": float(dice.mean()),
        "dice_per_image_median": float(np.median(dice)),
        "dice_pooled": pooled["f1"],
        "sensitivity_pooled": pooled["sensitivity"],
        "precision_pooled": pooled["precision"],
        "hd95_mean_px": surface["hd95_mean"],
        "hd95_frames": surface["n_finite"],
        "one_mask_empty": surface["n_one_empty"],
        "empty_predictions": int((~masks.reshape(len(masks), -1).any(axis=1)).sum()),
    }
    per_image = {"dice": dice, "hd95": surface["hd95"], "true_pixels": truths.reshape(len(truths), -1).sum(1),
                 "pred_pixels": masks.reshape(len(masks), -1).sum(1)}
    return summary, per_image


def _figures(folder, frames, truths, masks, per_image, title):
    from common.report import overlay_grid, plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.hist(per_image["dice"], bins=np.linspace(0, 1, 21), color="tab:blue")
    a1.set(xlabel="Dice per image", ylabel="frames", title=f"mean {per_image['dice'].mean():.3f}")
    finite = per_image["hd95"][np.isfinite(per_image["hd95"])]
    a2.hist(finite, bins=20, color="tab:orange")
    a2.set(xlabel="HD95 (pixels)", ylabel="frames",
           title=f"mean {finite.mean():.1f} ({len(finite)} frames)" if len(finite) else "no finite HD95")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(folder / "scores.png", dpi=100)
    plt.close(fig)
    order = np.argsort(per_image["dice"], kind="stable")
    picks = list(dict.fromkeys([*order[:2], *order[len(order) // 2:len(order) // 2 + 2], *order[-2:]]))
    overlay_grid(frames[picks], truths[picks], masks[picks], folder / "examples.png",
                 titles=("frame (worst, median, best Dice)", "truth", "prediction"))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="data.py's own-data arrays with train.py's imgs_mask_test.npy (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: <work-dir>/evaluation")
    add_mask_options(parser, threshold_help="default: %(default)s, as submission.py",
                     min_pixels_help="predictions with fewer pixels count as empty (default: %(default)s, "
                                     "submission.py's rule; 0 disables)")
    parser.add_argument("--title", default=None, help="title of the figures and the table")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out-dir")
    return parser


def main(argv=None):
    from common.data.io import atomic_dir
    from common.report import write_table

    args = build_parser().parse_args(argv)
    check_mask_options(args)
    work_dir = Path(args.work_dir)
    out_dir = args.out_dir or work_dir / "evaluation"
    if out_dir.exists() and not args.overwrite:
        raise UserError(f"{out_dir}: already exists; pass --overwrite to replace it, or another --out-dir")
    if not (work_dir / TRUE_MASKS).is_file():
        raise UserError(f"{work_dir / TRUE_MASKS}: not found; evaluate.py scores data.py's own-data arrays "
                        f"(--images/--masks) whose test part has masks (the Kaggle test set has none: "
                        f"submission.py writes its CSV)")
    probs, ids = load_predictions(work_dir)
    truths = np.load(work_dir / TRUE_MASKS)
    frames = np.load(work_dir / OUTPUTS[2])
    if len(truths) != len(probs) or truths.shape != frames.shape:
        raise UserError(f"{work_dir / 'imgs_mask_test.npy'}: {len(probs)} predictions for {len(truths)} test "
                        f"masks {truths.shape} and frames {frames.shape}; run train.py again on this --work-dir")
    split = read_split(work_dir)
    names = split["test"] if split and len(split["test"]) == len(ids) else [str(i) for i in ids]
    shape = truths.shape[1:]
    masks = np.stack([final_mask(p[:, :, 0], args.threshold, args.min_pixels, min_size=args.min_size,
                                 keep_largest=args.keep_largest, shape=shape) for p in probs])
    summary, per_image = score_masks(truths, masks)
    summary = {"work_dir": str(work_dir), "frame_size": f"{shape[0]}x{shape[1]}", **summary,
               "threshold": args.threshold, "min_pixels": args.min_pixels}
    with atomic_dir(out_dir, overwrite=args.overwrite) as tmp:
        text = write_table([summary], tmp / "scores", title=args.title or "Held-out test part", digits=4)
        with open(tmp / "per_image.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "dice", "hd95_px", "true_pixels", "pred_pixels"])
            for i, name in enumerate(names):
                writer.writerow([name, f"{per_image['dice'][i]:.6f}", f"{per_image['hd95'][i]:.4f}",
                                 int(per_image["true_pixels"][i]), int(per_image["pred_pixels"][i])])
        _figures(tmp, frames, truths, masks, per_image, args.title)
    print(text)
    print(f"Wrote {out_dir}/scores.md, scores.json, per_image.csv, scores.png, examples.png")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
