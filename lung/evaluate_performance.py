"""Lung segmentation scores of a trained BCDU-Net on the test slices (the original's evaluate_performance.py).

The network predicts the tissue AROUND the lung; the lung is recovered as the original does:
``estimated lung = FOV AND NOT (prediction > 0.5)``, and every pixel of every test slice is counted
(pooled), against the ground-truth lung mask.

Which FOV (``--fov``):

* ``body`` (default, leak-free): the FOV is rebuilt from the test image alone, the eroded body with its holes
  filled (prepare_data.py's FOV without the ``OR lung`` term);
* ``lung-gt`` (the original's evaluation): ``FOV_te`` from prepare_data.py, which was filled from
  ``body OR ground-truth lung``. It contains every lung pixel by construction, so it leaks the answer: a
  lung the body erosion opened to the outside is still inside this FOV.

Scores (``common.metrics.segmentation_scores``, threshold 0.5 on the lung score ``FOV * (1 - p)``, whose
binarisation is exactly the original's estimated lung): F1 (= Dice), sensitivity, specificity, accuracy,
precision, the true IoU, the ROC-AUC of the continuous lung score, and the original's definitions beside the
paper's table: AUC of the binarised estimate (= (SE + SP) / 2) and "JS" (= accuracy, the removed scikit-learn
``jaccard_similarity_score``).

Written to ``--out-dir`` (default ``work/lung/results/<model>``): ``performances.md/.json`` (the paper's rows and
this run's), ``performances.txt`` (the original's text report), ``roc_pr.png`` (ROC and precision-recall
curves), ``sample_results.png`` (image | ground truth | estimated lung | predicted around-lung | FOV for the
original's test indices 1, 100, 200, 253, 193, or five spread ones on a smaller test set), ``pred_test.npy``
(around-lung probabilities, float32) and ``estimated_lung.npy`` (uint8 0/1).
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from lung.prepare_data import DEFAULT_WORK, body_mask, fill_fov, load_arrays, read_summary
from lung.train_lung import BATCH_SIZE, MODELS, default_run_dir

FOVS = ("body", "lung-gt")
SAMPLE_INDICES = (1, 100, 200, 253, 193)  # the original's sample_results.png rows
COLUMNS = ("method", "year", "F1", "SE", "SP", "ACC", "AUC", "JS", "IoU", "PC", "AUC (scores)", "FOV")
# README / paper table (Kaggle lung): F1, SE, SP, ACC, AUC (of binarised predictions), JS (= accuracy)
PAPER = [
    ("U-Net", 2015, 0.9658, 0.9696, 0.9872, 0.9872, 0.9784, 0.9858),
    ("Residual U-Net", 2018, 0.9638, 0.9734, 0.9866, 0.9836, 0.9800, 0.9836),
    ("R2U-Net", 2018, 0.9832, 0.9944, 0.9832, 0.9918, 0.9889, 0.9918),
    ("BCDU-Net (paper)", 2019, 0.9904, 0.9910, 0.9982, 0.9972, 0.9946, 0.9972),
]
FOV_LABELS = {"body": "body (no ground truth)", "lung-gt": "body OR GT lung (original, leaks)"}


def body_fov(images, erosion_size, fill_size):
    """Leak-free FOV from the scaled slices alone: the eroded body with its holes filled (bool)."""
    return fill_fov(body_mask(images, erosion_size), fill_size)


def lung_score(prob, fov):
    """Continuous lung score ``FOV * (1 - p)`` from around-lung probabilities ``p`` (N, H, W[, 1]).

    ``score >= 0.5`` is exactly the original's ``FOV AND NOT (p > 0.5)``.
    """
    prob = np.asarray(prob, np.float64).reshape(np.shape(fov))
    return (np.asarray(fov) != 0) * (1.0 - prob)


def score_lung(lung_true, prob, fov):
    """The original's pooled scores of the estimated lung (plus IoU, continuous AUC and PR AUC)."""
    from common.metrics import auc_pr, segmentation_scores

    score = lung_score(prob, fov)
    scores = segmentation_scores(lung_true, score, threshold=0.5, legacy=True, curves=True)
    scores["auc_pr_legacy"] = auc_pr(lung_true, score >= 0.5)  # the original's PR AUC, binarised estimate
    return scores, score


def paper_rows():
    return [dict(zip(COLUMNS, row)) for row in PAPER]


def result_row(name, scores, fov):
    return {"method": name, "year": "this run", "F1": scores["f1"], "SE": scores["sensitivity"],
            "SP": scores["specificity"], "ACC": scores["accuracy"], "AUC": scores["auc_legacy"],
            "JS": scores["js_legacy"], "IoU": scores["jaccard"], "PC": scores["precision"],
            "AUC (scores)": scores["auc"], "FOV": FOV_LABELS[fov]}


def performances_text(scores):
    """The original's performances.txt (AUC and PR AUC of the binarised estimate, as it computed them)."""
    (tn, fp), (fn, tp) = scores["confusion"]
    return (f"Area under the ROC curve: {scores['auc_legacy']}\n"
            f"Area under Precision-Recall curve: {scores['auc_pr_legacy']}\n"
            f"Jaccard similarity score: {scores['js_legacy']}\n"
            f"F1 score (F-measure): {scores['f1']}\n\n"
            f"Confusion matrix:[[{tn} {fp}]\n [{fn} {tp}]]\n"
            f"ACCURACY: {scores['accuracy']}\nSENSITIVITY: {scores['sensitivity']}\n"
            f"SPECIFICITY: {scores['specificity']}\nPRECISION: {scores['precision']}\n")


def sample_indices(n, wanted=SAMPLE_INDICES):
    """The original's sample rows when the test set is large enough, else five evenly spread slices."""
    if max(wanted) < n:
        return list(wanted)
    return sorted(set(np.linspace(0, n - 1, min(5, n)).round().astype(int).tolist()))


def evaluate(run_dir, work_dir, out_dir, fov="body", weights="best", batch_size=BATCH_SIZE, verbose=1):
    """Predict the test slices, score the estimated lung and write tables and figures; returns the row."""
    import keras

    import common.layers  # noqa: F401  (registers the custom ConvLSTM activation for loading)
    from common.data.io import atomic_path, save_npy
    from common.report import overlay_grid, plot_roc_pr, write_table

    if fov not in FOVS:
        raise ValueError(f"fov must be one of {', '.join(FOVS)}, got {fov!r}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    checkpoint = run_dir / f"{weights}.keras"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: not found; run lung/train_lung.py first")
    settings = read_summary(work_dir)
    test = load_arrays(work_dir, "test")
    model = keras.models.load_model(checkpoint, compile=False)
    x = np.asarray(test["image"], np.float32)[..., None] / 255.0
    prob = model.predict(x, batch_size=batch_size, verbose=verbose)[..., 0].astype(np.float32)
    if fov == "body":
        fov_mask = body_fov(test["image"], settings["erosion_size"], settings["fill_size"])
    else:
        fov_mask = np.asarray(test["fov"]) != 0
    scores, score = score_lung(test["lung"], prob, fov_mask)
    estimated = (score >= 0.5).astype(np.uint8)
    save_npy(out_dir / "pred_test.npy", prob)
    save_npy(out_dir / "estimated_lung.npy", estimated)

    row = result_row(f"{model.name} ({weights} weights)", scores, fov)
    write_table(paper_rows() + [row], out_dir / "performances", columns=COLUMNS,
                title=f"Lung segmentation, {len(prob)} test slices (pooled pixels); paper rows from the README")
    with atomic_path(out_dir / "performances.txt") as tmp:
        tmp.write_text(performances_text(scores))
    plot_roc_pr(test["lung"], score, out_dir / "roc_pr.png", title=f"lung score FOV*(1-p), FOV: {FOV_LABELS[fov]}")
    idx = sample_indices(len(prob))
    overlay_grid(np.asarray(test["image"][idx]).astype(np.uint8), test["lung"][idx], estimated[idx],
                 out_dir / "sample_results.png", max_rows=len(idx),
                 titles=("image", "ground truth lung", "estimated lung", "predicted around-lung", "FOV"),
                 extra=[prob[idx] > 0.5, fov_mask[idx]])
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with the arrays of prepare_data.py (default: %(default)s)")
    parser.add_argument("--model", choices=MODELS, default="bcdu_net_d3",
                        help="network of the run, for the default --run-dir (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="training run folder (default: weights/lung/<model>)")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="checkpoint to evaluate (default: best, the original's weight_lung)")
    parser.add_argument("--fov", choices=FOVS, default="body",
                        help="FOV that turns the around-lung prediction into a lung: body (default, from the "
                             "image only) or lung-gt (the original's, built with the ground truth: leaks)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="prediction batch (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: <work-dir>/results/<model>)")
    parser.add_argument("--quiet", action="store_true", help="no prediction progress bar")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or default_run_dir(args.model)
    out_dir = args.out_dir or args.work_dir / "results" / args.model
    row = evaluate(run_dir, args.work_dir, out_dir, args.fov, args.weights, args.batch_size,
                   verbose=0 if args.quiet else 1)
    print(f"{row['method']}, FOV {row['FOV']}: F1 {row['F1']:.4f}, SE {row['SE']:.4f}, SP {row['SP']:.4f}, "
          f"ACC {row['ACC']:.4f}, AUC {row['AUC']:.4f}, IoU {row['IoU']:.4f} (paper F1 0.9904). "
          f"Tables and figures in {out_dir}")
    return row


if __name__ == "__main__":
    cli.run(main)
