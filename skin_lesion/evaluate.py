"""Test-split scores of a trained ISIC 2018 network beside the paper's table, with figures (the original's evaluate.py).

Predicts the 520 test images of prepare_isic2018.py with the run's best checkpoint (the original's
``weight_isic18``) and scores every pixel of every test image pooled, twice:

* **original definitions** (``evaluate.py`` of the original, the paper's table): ground truth = resized mask
  > 0.5 on its 0..255 scale (any non-zero pixel, border pixels included), prediction = probability > 0.5,
  "JS" = scikit-learn's removed ``jaccard_similarity_score``, which on 1-D labels was pixel accuracy, and
  "AUC" = ROC-AUC of the binarised prediction, i.e. (sensitivity + specificity) / 2;
* **correct definitions**: ground truth = mask / 255 >= 0.5 (the soft training target rounded), Jaccard =
  IoU = TP / (TP + FP + FN), ROC-AUC and PR-AUC of the continuous probabilities.

Extra columns after the original ones (not in the paper): ``HD95 px`` and ``ASSD px``, the 95th-percentile
Hausdorff and the average symmetric surface distance per test image (``common.metrics.surface_scores``,
in pixels of the 256x256 resized images, with each row's own ground truth and binarisation), averaged over
the images where both masks are non-empty (MONAI's convention; the images with exactly one empty mask
are counted in ``surface.json``).

The images are normalised as in training (``dataset_normalized``); ``--raw-input`` predicts on the raw 0..255
images instead, as the original's script did (it normalised a copy and never used it).

Written to ``--out-dir`` (default ``<work-dir>/results/<run folder name>[_last][_raw-input][_tta-flip]``,
one folder per run and evaluation variant): ``scores.md``/``.json`` (the paper's BCDU-Net row and ours),
``paper.md``/``.json`` (the whole published ISIC table), ``roc_pr.png`` (ROC and precision-recall curves),
``overlay.png`` (image | ground truth | prediction, first test images), ``sample_results.png`` (the
original's pick: the first 10 test images with fewer than 300 wrong pixels), ``pred_test.npy``
(probabilities, float32) and ``run.json`` (commit, checkpoint and its SHA-256, options). The folder is
written all at once (nothing is left of a failed run) and never replaced without ``--overwrite``.

Examples::

    python skin_lesion/evaluate.py                              # the default run, best checkpoint
    python skin_lesion/evaluate.py --run-dir weights/skin_lesion/bcdu_net_d3_bidirectional --tta flip
    python skin_lesion/evaluate.py --raw-input                  # the original script's raw-image prediction
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.metrics import segmentation_scores
from skin_lesion.prepare_isic2018 import DEFAULT_WORK, load_split
from skin_lesion.train_isic18 import BATCH_SIZE, MODELS, default_run_dir, network_input

# README / paper table (ISIC 2018): F1, SE, SP, ACC, PC, JS ("JS" is pixel accuracy, see above)
PAPER = [
    ("U-Net", 2015, 0.647, 0.708, 0.964, 0.890, 0.779, 0.549),
    ("Residual U-Net", 2018, 0.679, 0.792, 0.928, 0.880, 0.741, 0.581),
    ("Attention U-Net", 2018, 0.665, 0.717, 0.967, 0.897, 0.787, 0.566),
    ("R2U-Net", 2018, 0.691, 0.726, 0.971, 0.904, 0.822, 0.592),
    ("BCDU-Net", 2019, 0.847, 0.783, 0.980, 0.936, 0.922, 0.936),
    ("MCGU-Net (arXiv 2003.05056)", 2020, 0.895, 0.848, 0.986, 0.955, 0.947, 0.955),
]
COLUMNS = ("F1", "SE", "SP", "ACC", "PC", "JS", "AUC", "PR AUC")
SURFACE_COLUMNS = ("HD95 px", "ASSD px")  # extra columns, after the original ones
GOOD_PREDICTION_ERRORS = 300  # the original's sample_results.png shows test images with fewer wrong pixels


def paper_rows():
    return [dict(zip(("method", "year") + COLUMNS[:6], row)) for row in PAPER]


def isic_scores(masks, prob):
    """Both score sets of a test split: ``{"original": {...}, "correct": {...}}`` keyed by ``COLUMNS``.

    Args:
        masks: resized masks on their 0..255 scale (uint8, any shape).
        prob: predicted probabilities, same number of values.
    """
    masks = np.asarray(masks)
    prob = np.asarray(prob, dtype=np.float32).reshape(masks.shape)
    binary = (prob > 0.5).astype(np.float32)  # the original binarises the scores before every metric
    old = segmentation_scores(masks > 0.5, binary, threshold=0.5, legacy=True, curves=True)
    new = segmentation_scores(masks >= 128, prob, threshold=0.5, curves=True)
    keys = ("f1", "sensitivity", "specificity", "accuracy", "precision")
    return {"original": dict(zip(COLUMNS, [old[k] for k in keys] + [old["js_legacy"], old["auc_legacy"],
                                                                    old["auc_pr"]])),
            "correct": dict(zip(COLUMNS, [new[k] for k in keys] + [new["jaccard"], new["auc"], new["auc_pr"]]))}


def surface_columns(masks, prob):
    """HD95 / ASSD per image for both definitions of :func:`isic_scores`: ``{"original": {...}, "correct":
    {...}}`` keyed by ``SURFACE_COLUMNS`` (means over images with both masks non-empty) plus the counts of
    images with one or both masks empty.

    Args:
        masks: (N, H, W) resized masks on their 0..255 scale; prob: (N, H, W[, 1]) probabilities.
    """
    from common.metrics import surface_scores

    masks = np.asarray(masks)
    prob = np.asarray(prob, dtype=np.float32).reshape(masks.shape)
    out = {}
    for name, truth, pred in (("original", masks > 0.5, prob > 0.5), ("correct", masks >= 128, prob >= 0.5)):
        s = surface_scores(truth, pred)
        out[name] = {SURFACE_COLUMNS[0]: s["hd95_mean"], SURFACE_COLUMNS[1]: s["assd_mean"],
                     "images": int(len(masks)), "both_non_empty": s["n_finite"], "one_empty": s["n_one_empty"],
                     "both_empty": s["n_both_empty"]}
    return out


def good_predictions(masks, prob, max_errors=GOOD_PREDICTION_ERRORS, n=10):
    """The original's sample pick: indices of the first ``n`` images with fewer than ``max_errors`` wrong
    pixels (mask > 0.5 vs probability > 0.5), padded with image 0 when there are fewer."""
    wrong = ((np.asarray(masks) > 0.5) != (np.asarray(prob).reshape(np.shape(masks)) > 0.5))
    errors = wrong.reshape(len(wrong), -1).sum(axis=1)
    good = list(np.flatnonzero(errors < max_errors)[:n])
    return good + [0] * (n - len(good))


def predict(model, images, batch_size=BATCH_SIZE, raw_input=False, verbose=1, tta="none"):
    """Probabilities (N, H, W, 1) float32 (N, H, W, K for a K-class model) for uint8 images (N, H, W, 3) of the network's input size,
    normalised chunk by chunk as in training (``raw_input``: the raw 0..255 values, as the original's
    evaluate.py). ``tta="flip"``: the mean over the image and its horizontal and vertical flips
    (``common.inference.with_flips``)."""
    from tqdm import tqdm

    from common.inference import with_flips

    def run(x):
        return model.predict(x, batch_size=batch_size, verbose=0)

    if tta == "flip":
        run = with_flips(run)
    out = np.empty(images.shape[:3] + (model.output_shape[-1],), np.float32)  # K channels for a K-class head
    chunk = 8 * batch_size
    for start in tqdm(range(0, len(images), chunk), desc="predict", unit="chunk", disable=not verbose):
        x = np.asarray(images[start:start + chunk])
        x = x.astype(np.float32) if raw_input else network_input(x)
        out[start:start + len(x)] = run(x)
    return out


def load_checkpoint(checkpoint, mixed_precision="off"):
    """The saved model (uncompiled) under ``--mixed-precision``; ``UserError`` naming a missing or bad file."""
    from common.errors import UserError
    from common.predict import load_checkpoint as load

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: not found; run skin_lesion/train_isic18.py first, or pass --run-dir")
    return load(checkpoint, mixed_precision)


def out_name(run_dir, weights="best", raw_input=False, tta="none"):
    """Default results folder name: the run folder's name plus every option that changes the scores."""
    from common.run_options import tagged_name

    return tagged_name(Path(run_dir).name, [(weights == "last", False, "last"), (raw_input, False, "raw-input"),
                                            (tta, "none", "tta-{}")])


def evaluate(run_dir, work_dir, out_dir, weights="best", raw_input=False, batch_size=BATCH_SIZE, verbose=1, *,
             tta="none", overwrite=False, mixed_precision="off", options=None, init_weights=None,
             model_name="bcdu_net_d3", bidirectional=False):
    """Predict the test split, write the tables and figures; returns ``isic_scores``' dict.

    A K-class model (K > 2, ``train_isic18.py --num-classes K``) is scored per class on the label maps instead
    (``common.multiclass.write_multiclass_results``; returns ``common.metrics.multiclass_scores``' dict).

    ``out_dir`` is written as a whole (``common.data.io.atomic_dir``): a non-empty folder is refused unless
    ``overwrite``, checked before the model is loaded. ``init_weights``: evaluate the authors' Keras-2
    checkpoint (``weight_isic18``) in a ``model_name`` network instead of a run's ``<weights>.keras``.
    """
    from common.data.io import atomic_dir, save_npy
    from common.provenance import write_run_json

    run_dir, out_dir, work_dir = Path(run_dir), Path(out_dir), Path(work_dir)
    checkpoint = Path(init_weights) if init_weights else run_dir / f"{weights}.keras"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: not found; run skin_lesion/train_isic18.py first")
    images, masks = load_split(work_dir, "test")
    overwrite = overwrite or (out_dir.is_dir() and not any(out_dir.iterdir()))  # an empty folder is fine
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        if init_weights:
            from common.devices import set_precision
            from skin_lesion.train_isic18 import legacy_model

            set_precision(mixed_precision)
            model = legacy_model(model_name, images.shape[1:], checkpoint, bidirectional)
        else:
            model = load_checkpoint(checkpoint, mixed_precision)
        prob = predict(model, images, batch_size, raw_input, verbose, tta)
        save_npy(tmp / "pred_test.npy", prob)
        source = (f"{checkpoint.name} (Keras-2 checkpoint)" if init_weights
                  else f"{weights} checkpoint of {run_dir.name}")
        if prob.shape[-1] > 2:  # a multi-class run (--num-classes K): scores per class, labels = the masks
            from common.multiclass import write_multiclass_results

            scores = write_multiclass_results(
                tmp, model.name, masks, prob, verbose=verbose, images=images,
                title=f"test split ({len(masks)} images, {source}, {prob.shape[-1]} classes: per class and the "
                      f"mean over the foreground classes; HD95/ASSD in pixels)")
        else:
            scores = _write_results(tmp, model.name, images, masks, prob, source, weights, raw_input, tta, verbose)
        write_run_json(tmp, model_name=model.name, weights=[checkpoint],
                       options=dict(options or {}, weights=weights, raw_input=raw_input, tta=tta,
                                    mixed_precision=mixed_precision, batch_size=batch_size),
                       inputs=[work_dir / "data_test.npy", work_dir / "mask_test.npy"])
    return scores


def _write_results(out_dir, model_name, images, masks, prob, source, weights, raw_input, tta, verbose):
    """The tables and figures of :func:`evaluate` into ``out_dir``; returns ``isic_scores``' dict."""
    from common.report import overlay_grid, plot_roc_pr, write_table

    from common.data.io import write_json

    scores = isic_scores(masks, prob)
    surface = surface_columns(masks, prob)
    write_json(out_dir / "surface.json", surface)
    paper = paper_rows()[4]
    rows = [dict({"scores": "paper: BCDU-Net (README, original definitions)"},
                 **{k: paper.get(k, float("nan")) for k in COLUMNS + SURFACE_COLUMNS}),
            dict({"scores": f"{model_name}, original definitions"}, **scores["original"],
                 **{k: surface["original"][k] for k in SURFACE_COLUMNS}),
            dict({"scores": f"{model_name}, correct definitions"}, **scores["correct"],
                 **{k: surface["correct"][k] for k in SURFACE_COLUMNS})]
    n = len(masks)
    table = write_table(rows, out_dir / "scores", digits=4,
                        title=f"ISIC 2018 test split ({n} images, {source}, "
                              f"{'raw' if raw_input else 'normalised'} input"
                              f"{', flip test-time augmentation' if tta == 'flip' else ''})")
    write_table(paper_rows(), out_dir / "paper", title="Paper: ISIC 2018 (README table; JS = pixel accuracy)",
                digits=3)
    plot_roc_pr(masks >= 128, prob, out_dir / "roc_pr.png", title=f"{model_name}: test pixels (mask >= 128)")
    binary = (prob > 0.5).astype(np.float32)
    overlay_grid(images, masks, binary, out_dir / "overlay.png",
                 titles=("image", "ground truth", "prediction > 0.5"))
    pick = good_predictions(masks, prob)
    overlay_grid(images[pick], masks[pick] > 0.5, binary[pick], out_dir / "sample_results.png", max_rows=10,
                 titles=("image", "ground truth > 0.5", f"prediction (< {GOOD_PREDICTION_ERRORS} wrong px)"))
    if verbose:
        print(table)
    return scores


def build_parser():
    """The command line (its defaults are the original's settings; pinned by the tests)."""
    from common.devices import add_precision_arguments
    from common.inference import add_tta_argument
    from common.legacy_weights import add_init_weights_argument

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with the .npy files of prepare_isic2018.py (default: %(default)s)")
    parser.add_argument("--model", choices=MODELS, default="bcdu_net_d3",
                        help="network of the run, to find its default run folder (default: %(default)s)")
    parser.add_argument("--bidirectional", action="store_true", help="the run used --bidirectional")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="training run folder (default: weights/skin_lesion/<model>[_bidirectional]; runs "
                             "with other options: give their folder)")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="checkpoint to evaluate (default: best on val_loss, as the original)")
    parser.add_argument("--raw-input", action="store_true",
                        help="predict on the raw 0..255 images as the original's evaluate.py did, instead of the "
                             "normalised images the network was trained on")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="default: %(default)s")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: <work-dir>/results/<run folder name>[_last][_raw-input]"
                             "[_tta-flip])")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in the output folder")
    add_tta_argument(parser)
    add_precision_arguments(parser, jit_compile=False)
    add_init_weights_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table on stdout")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size <= 0:
        raise cli.option_error("--batch-size", f"must be positive, got {args.batch_size}")
    if args.bidirectional and args.model == "bcdu_unet":
        raise cli.option_error("--bidirectional", "needs a model with ConvLSTM fusions (not bcdu_unet)")
    if args.init_weights and (args.run_dir or args.weights != "best"):
        raise cli.option_error("--init-weights", "evaluates that file: leave out --run-dir and --weights")
    if not args.run_dir and not args.init_weights:  # train_isic18.py's default folder names K > 2 classes
        from common.multiclass import infer_num_classes

        classes = infer_num_classes(load_split(args.work_dir, "train")[1])
    run_dir = args.run_dir or default_run_dir(args.model, args.bidirectional,
                                              num_classes=2 if args.init_weights else classes)
    named = Path(args.init_weights.name.split(".")[0]) if args.init_weights else run_dir
    out_dir = args.out_dir or args.work_dir / "results" / out_name(named, args.weights, args.raw_input, args.tta)
    scores = evaluate(run_dir, args.work_dir, out_dir, args.weights, args.raw_input, args.batch_size,
                      verbose=0 if args.quiet else 1, tta=args.tta, overwrite=args.overwrite,
                      mixed_precision=args.mixed_precision,
                      options={"model": args.model, "bidirectional": args.bidirectional},
                      init_weights=args.init_weights, model_name=args.model, bidirectional=args.bidirectional)
    if "mean" in scores:  # a multi-class run
        print(f"test Dice averaged over the foreground classes {scores['mean']['dice']:.4f}; tables and figures "
              f"in {out_dir}")
    else:
        print(f"test F1 (Dice) {scores['correct']['F1']:.4f} (original definitions "
              f"{scores['original']['F1']:.4f}); tables and figures in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
