"""Lung segmentation scores of a trained BCDU-Net on the test slices (the original's evaluate_performance.py).

The network predicts the tissue AROUND the lung; the lung is recovered as the original does:
``estimated lung = FOV AND NOT (prediction > 0.5)``, and every pixel of every test slice is counted
(pooled), against the ground-truth lung mask.

Two FOVs, both reported by default (``--fov both``) as two rows of one table, the original's first:

* ``lung-gt`` (the original's protocol, the paper's numbers; USES THE GROUND TRUTH): ``FOV_te`` from
  prepare_data.py, filled from ``body OR ground-truth lung``. It contains every lung pixel by construction,
  so it leaks the answer: a lung the body erosion opened to the outside is still inside this FOV. This row
  is the like-for-like comparison with the paper's table;
* ``body`` (leak-free): the FOV rebuilt from the test image alone, the eroded body with its holes filled
  (prepare_data.py's FOV without the ``OR lung`` term), what ``predict.py`` uses on new volumes.

Scores (``common.metrics.segmentation_scores``, threshold 0.5 on the lung score ``FOV * (1 - p)``, whose
binarisation is exactly the original's estimated lung), the original's columns first: F1 (= Dice),
sensitivity, specificity, accuracy, AUC of the binarised estimate (= (SE + SP) / 2, the original's) and "JS"
(= accuracy, the removed scikit-learn ``jaccard_similarity_score``); then the true IoU, precision, the
ROC-AUC of the continuous lung score, and HD95 / ASSD (``common.metrics.surface_scores``, MONAI's
definitions: mm, per test slice with its volume's NIfTI in-plane voxel spacing from split.json, mean over
the slices where both the ground truth and the estimate are non-empty; the counts are in the JSON).

Written to ``--out-dir`` (default ``<work-dir>/results/<run folder name>[_last][_tta-flip][_<precision>]``;
an existing folder is refused without ``--overwrite``; all files appear together or none):
``performances.md/.json`` (the paper's rows and this run's), ``performances.txt`` (the original's text
report, original FOV) and ``performances_body.txt`` (leak-free), ``roc_pr.png`` / ``roc_pr_body.png`` (ROC
and precision-recall curves of the lung score), ``sample_results.png`` (image | ground truth | estimated
lung with each FOV | predicted around-lung | FOVs for the original's test indices 1, 100, 200, 253, 193, or
five spread ones on a smaller test set), ``pred_test.npy`` (around-lung probabilities, float32) and
``estimated_lung.npy`` / ``estimated_lung_body.npy`` (uint8 0/1) and ``run.json`` (git commit, weights file
and SHA-256, options, inputs).

A K-class run (``train_lung.py --num-classes K``, K > 2, trained on prepared targets that are label maps 0..K-1
instead of the around-lung mask: your own label maps through ``prepare_data.py --keep-labels``) has no FOV step:
its test slices' softmax is scored per class against the test targets ``Test_maska.npy`` and averaged over the
foreground classes (``common.multiclass``: Dice, IoU, sensitivity, precision pooled over the slices; HD95 / ASSD
per slice as above), written as ``scores.md/.json``, ``multiclass.json``, ``labels_test.npy`` (argmax),
``overlay.png`` (image | ground truth | prediction in the palette colours), ``pred_test.npy`` (N, H, W, K) and
``run.json``. Its default run folder is train_lung.py's (``<model>_classes<K>``, K from split.json's
``num_classes``, else read from the training targets); a binary network on label-map targets is refused.

Examples::

    python lung/evaluate_performance.py                          # weights/lung/bcdu_net_d3, both FOVs
    python lung/evaluate_performance.py --bidirectional          # weights/lung/bcdu_net_d3_bidirectional
    python lung/evaluate_performance.py --run-dir weights/lung/bcdu_net_d3_epochs10 --tta flip
    python lung/evaluate_performance.py --init-weights ~/Downloads/weight_lung   # the authors' weights
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.devices import add_precision_arguments
from common.inference import add_tta_argument
from common.legacy_weights import add_init_weights_argument
from common.errors import UserError
from common.multiclass import infer_num_classes
from lung.prepare_data import DEFAULT_WORK, OUTPUTS, load_arrays, read_summary, split_num_classes
from lung.segment import (body_fov, estimated_lung, load_network, lung_score, predict_around_lung,
                          predict_probabilities)
from lung.train_lung import BATCH_SIZE, MODELS, default_run_dir

FOVS = ("lung-gt", "body")  # reporting order: the original's protocol first
FOV_CHOICES = ("both",) + FOVS
SAMPLE_INDICES = (1, 100, 200, 253, 193)  # the original's sample_results.png rows
COLUMNS = ("method", "year", "F1", "SE", "SP", "ACC", "AUC", "JS", "IoU", "PC", "AUC (scores)", "HD95", "ASSD",
           "FOV")
# README / paper table (Kaggle lung): F1, SE, SP, ACC, AUC (of binarised predictions), JS (= accuracy)
PAPER = [
    ("U-Net", 2015, 0.9658, 0.9696, 0.9872, 0.9872, 0.9784, 0.9858),
    ("Residual U-Net", 2018, 0.9638, 0.9734, 0.9866, 0.9836, 0.9800, 0.9836),
    ("R2U-Net", 2018, 0.9832, 0.9944, 0.9832, 0.9918, 0.9889, 0.9918),
    ("BCDU-Net (paper)", 2019, 0.9904, 0.9910, 0.9982, 0.9972, 0.9946, 0.9972),
]
FOV_LABELS = {"lung-gt": "original: body OR ground-truth lung (USES THE GROUND TRUTH; the paper's protocol)",
              "body": "leak-free: body only, from the image"}
SUFFIX = {"lung-gt": "", "body": "_body"}  # the original protocol keeps the original's file names


def score_lung(lung_true, prob, fov):
    """The original's pooled scores of the estimated lung (plus IoU, continuous AUC and PR AUC)."""
    from common.metrics import auc_pr, segmentation_scores

    score = lung_score(prob, fov)
    scores = segmentation_scores(lung_true, score, threshold=0.5, legacy=True, curves=True)
    scores["auc_pr_legacy"] = auc_pr(lung_true, score >= 0.5)  # the original's PR AUC, binarised estimate
    return scores, score


def paper_rows():
    return [dict(zip(COLUMNS, row)) for row in PAPER]


def slice_spacing(settings, n):
    """In-plane voxel size (rows, cols) of each of the ``n`` test slices, from split.json's ``spacing`` of
    its volume (NIfTI zooms; axis 0 is the slice axis); ``(n, 2)`` ones when split.json has none."""
    spacing, names = settings.get("spacing"), settings.get("test_slices", settings.get("test"))  # own data: slices
    if not spacing or not names or len(names) != n:
        return np.ones((n, 2))
    return np.array([spacing[name.rsplit(":", 1)[0] if name not in spacing else name][1:3] for name in names],
                    np.float64)


def surface_columns(lung_true, estimate, spacing):
    """HD95 and ASSD of the estimated lung, per test slice with its voxel spacing
    (``common.metrics.surface_scores``, MONAI's definitions), averaged over the slices where both the
    ground truth and the estimate are non-empty (MONAI skips NaN; an empty side gives inf, counted apart)."""
    from common.metrics import surface_scores

    scores = surface_scores(np.asarray(lung_true) != 0, estimate, spacing=spacing)
    return {"HD95": scores["hd95_mean"], "ASSD": scores["assd_mean"],
            "surface_slices": {"scored": scores["n_finite"], "one_mask_empty": scores["n_one_empty"],
                               "both_empty": scores["n_both_empty"]}}


def result_row(name, scores, fov, surface=None):
    row = {"method": name, "year": "this run", "F1": scores["f1"], "SE": scores["sensitivity"],
           "SP": scores["specificity"], "ACC": scores["accuracy"], "AUC": scores["auc_legacy"],
           "JS": scores["js_legacy"], "IoU": scores["jaccard"], "PC": scores["precision"],
           "AUC (scores)": scores["auc"]}
    row.update(surface or {})
    row["FOV"] = FOV_LABELS[fov]
    return row


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


def default_out_dir(work_dir, run_dir, weights="best", tta="none", mixed_precision="off", init_weights=None):
    """``<work-dir>/results/<run folder name>[_last][_tta-flip][_<precision>]``: keyed by the run, so two runs
    (or two evaluations of one run) never share a default folder; ``init-<file name>`` for the authors'
    weights."""
    from common.run_options import tagged_name

    name = tagged_name(f"init-{Path(init_weights).name}" if init_weights is not None else Path(run_dir).name, [
        (weights if init_weights is None else None, "best", "{}"), (tta, "none", "tta-{}"),
        (mixed_precision, "off", "{}")])
    return Path(work_dir) / "results" / name


def evaluate(run_dir, work_dir, out_dir, fov="both", weights="best", batch_size=BATCH_SIZE, verbose=1, *,
             overwrite=False, tta="none", mixed_precision="off", init_weights=None, model_name="bcdu_net_d3",
             bidirectional=False):
    """Predict the test slices, score the estimated lung with each FOV and write tables and figures.

    ``fov``: ``both`` (default: the original's ``lung-gt`` row first, then ``body``), ``lung-gt`` or
    ``body``. ``init_weights`` (the authors' Keras-2 file, loaded into ``model_name``) replaces the run's
    checkpoint. ``out_dir`` is written all at once (``common.data.io.atomic_dir``); an existing one is
    refused unless ``overwrite``. Returns ``{fov: row}`` in reporting order.

    A K-class run (its network has K > 2 softmax channels; the prepared test targets are label maps 0..K-1) is
    scored per class instead (:func:`evaluate_multiclass`; returns ``common.metrics.multiclass_scores``' dict,
    whose keys are ``classes`` and ``mean``). Label-map targets with a binary network: ``UserError``.
    """
    from common.data.io import atomic_dir, save_npy
    from common.provenance import write_run_json
    from common.report import overlay_grid, plot_roc_pr, write_table

    if fov not in FOV_CHOICES:
        raise cli.option_error("--fov", f"{fov!r} is not one of {', '.join(FOV_CHOICES)}")
    fovs = FOVS if fov == "both" else (fov,)
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    has_split = (Path(work_dir) / "split.json").is_file()
    settings = read_summary(work_dir) if has_split else None
    test = load_arrays(work_dir, "test", ("image", "target"))
    label_maps = (split_num_classes(work_dir) or infer_num_classes(test["target"])) > 2  # targets 0..K-1
    # label-map data may hold only the slices and targets: the rest is read once the network is known to be binary
    only_targets = not all((Path(work_dir) / f"{OUTPUTS[key][1]}.npy").is_file() for key in ("lung", "fov"))

    def binary_inputs():  # the task's own data: split.json and all four arrays, as the original
        return (settings if settings is not None else read_summary(work_dir)), load_arrays(work_dir, "test")

    if not label_maps and not only_targets:
        settings, test = binary_inputs()
    size = test["image"].shape[1]
    checkpoint = None if init_weights is not None else run_dir / f"{weights}.keras"
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        model = load_network(checkpoint=checkpoint, init_weights=init_weights, model_name=model_name,
                             bidirectional=bidirectional, size=size, mixed_precision=mixed_precision)
        source = f"init weights {Path(init_weights).name}" if init_weights is not None else f"{weights} weights"
        if model.output_shape[-1] > 2:  # a K-class run: per-class scores of the label maps
            if fov != "both":
                raise cli.option_error("--fov", f"turns the binary around-lung prediction into a lung; {model.name} "
                                                f"has {model.output_shape[-1]} classes (leave --fov out)")
            return evaluate_multiclass(model, test, settings or {}, tmp, work_dir=work_dir, run_dir=run_dir,
                                       checkpoint=checkpoint, source=source, weights=weights,
                                       batch_size=batch_size, tta=tta, mixed_precision=mixed_precision,
                                       verbose=verbose)
        if not label_maps and only_targets:
            settings, test = binary_inputs()  # names the missing array
        if label_maps:
            raise UserError(f"{Path(work_dir) / OUTPUTS['target'][1]}.npy: holds label maps 0.."
                            f"{int(np.max(test['target']))}; {checkpoint or init_weights} is a binary around-lung "
                            f"network: evaluate a run trained with train_lung.py --num-classes K on these targets")
        prob = predict_around_lung(model, test["image"], batch_size, tta=tta, verbose=verbose)
        masks = {"lung-gt": lambda: np.asarray(test["fov"]) != 0,
                 "body": lambda: body_fov(test["image"], settings["erosion_size"], settings["fill_size"])}
        rows, fov_masks, estimates = {}, {}, {}
        save_npy(tmp / "pred_test.npy", prob)
        for name in fovs:
            fov_masks[name] = masks[name]()
            scores, score = score_lung(test["lung"], prob, fov_masks[name])
            estimates[name] = estimated_lung(prob, fov_masks[name])
            surface = surface_columns(test["lung"], estimates[name], slice_spacing(settings, len(prob)))
            rows[name] = result_row(f"{model.name} ({source}{', tta ' + tta if tta != 'none' else ''})", scores,
                                    name, surface)
            save_npy(tmp / f"estimated_lung{SUFFIX[name]}.npy", estimates[name].astype(np.uint8))
            (tmp / f"performances{SUFFIX[name]}.txt").write_text(performances_text(scores))
            plot_roc_pr(test["lung"], score, tmp / f"roc_pr{SUFFIX[name]}.png",
                        title=f"lung score FOV*(1-p), FOV {FOV_LABELS[name].split(':')[0]}")
        unit = "mm" if settings.get("spacing") else "pixels"
        write_table(paper_rows() + list(rows.values()), tmp / "performances", columns=COLUMNS,
                    title=f"Lung segmentation, {len(prob)} test slices (pooled pixels; HD95/ASSD in {unit}, mean "
                          "over slices); paper rows from the README; the original FOV uses the ground truth, the "
                          "leak-free one does not")
        write_run_json(tmp, model_name=model.name, weights=[checkpoint or init_weights],
                       options={"fov": fov, "weights": weights, "batch_size": batch_size, "tta": tta,
                                "mixed_precision": mixed_precision, "init_weights": init_weights,
                                "work_dir": str(work_dir), "run_dir": None if init_weights else str(run_dir)},
                       inputs=[Path(work_dir) / name for name in ("data_test.npy", "mask_test.npy", "FOV_te.npy",
                                                                   "split.json")])
        idx = sample_indices(len(prob))
        first = fovs[0]
        extra = [estimates[name][idx] for name in fovs[1:]] + [prob[idx] > 0.5] + [fov_masks[n][idx] for n in fovs]
        titles = (["image", "ground truth lung"] + [f"estimated lung, {n} FOV" for n in fovs]
                  + ["predicted around-lung"] + [f"FOV {n}" for n in fovs])
        overlay_grid(np.asarray(test["image"][idx]).astype(np.uint8), test["lung"][idx], estimates[first][idx],
                     tmp / "sample_results.png", max_rows=len(idx), titles=titles, extra=extra)
    return rows


def evaluate_multiclass(model, test, settings, out_dir, *, work_dir, run_dir, checkpoint, source, weights,
                        batch_size, tta, mixed_precision, verbose):
    """A K-class run (``train_lung.py --num-classes K``, label-map targets): the test slices' softmax, scored per
    class against the prepared test targets (``Test_maska.npy``, labels 0..K-1) and averaged over the foreground
    classes (``common.multiclass.write_multiclass_results``: Dice, IoU, sensitivity, precision pooled over the
    slices; HD95 / ASSD per slice with its volume's spacing from split.json, else in pixels). No FOV step: the
    targets are the label maps themselves. Writes ``pred_test.npy`` (N, H, W, K), the tables and ``run.json``
    into ``out_dir``; returns ``common.metrics.multiclass_scores``' dict."""
    from common.data.io import save_npy
    from common.multiclass import write_multiclass_results
    from common.provenance import write_run_json

    num_classes = model.output_shape[-1]
    top = int(np.max(test["target"])) if len(test["target"]) else 0
    if top >= num_classes:
        raise UserError(f"{Path(work_dir) / OUTPUTS['target'][1]}.npy: holds labels up to {top}; {model.name} has "
                        f"{num_classes} classes (0..{num_classes - 1}): evaluate it on the data it was trained for")
    prob = predict_probabilities(model, test["image"], batch_size, tta=tta, verbose=verbose)
    save_npy(out_dir / "pred_test.npy", prob)
    unit = "mm" if settings.get("spacing") else "pixels"
    scores = write_multiclass_results(
        out_dir, model.name, test["target"], prob, spacing=slice_spacing(settings, len(prob)),
        images=np.clip(np.asarray(test["image"]), 0, 255).astype(np.uint8), verbose=verbose,
        title=f"Lung test slices ({len(prob)}, {source}{', tta ' + tta if tta != 'none' else ''}), {num_classes} "
              f"classes: per class and the mean over the foreground classes (pooled pixels; HD95/ASSD in {unit}, "
              f"mean over slices)")
    split = Path(work_dir) / "split.json"
    write_run_json(out_dir, model_name=model.name, weights=[checkpoint],
                   options={"weights": weights, "batch_size": batch_size, "tta": tta, "num_classes": num_classes,
                            "mixed_precision": mixed_precision, "work_dir": str(work_dir), "run_dir": str(run_dir)},
                   inputs=[Path(work_dir) / f"{name}.npy" for name in (OUTPUTS["image"][1], OUTPUTS["target"][1])]
                   + ([split] if split.is_file() else []))
    return scores


def build_parser():
    """The command line (defaults = the original's settings; pinned by tests/test_lung.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with the arrays of prepare_data.py (default: %(default)s)")
    parser.add_argument("--model", choices=MODELS, default="bcdu_net_d3",
                        help="network of the run, for the default --run-dir and --init-weights "
                             "(default: %(default)s)")
    parser.add_argument("--bidirectional", action="store_true",
                        help="the run was trained with --bidirectional (for the default --run-dir and "
                             "--init-weights)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="training run folder (default: weights/lung/<model>[_bidirectional], the run "
                             "train_lung.py makes with the original's recipe)")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="checkpoint to evaluate (default: best, the original's weight_lung)")
    add_init_weights_argument(parser)
    parser.add_argument("--fov", choices=FOV_CHOICES, default="both",
                        help="FOV that turns the around-lung prediction into a lung: both (default: the "
                             "original's lung-gt row, built with the ground truth as in the paper, then the "
                             "leak-free body row), lung-gt or body (binary runs; a K-class run has no FOV step)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="prediction batch (default: %(default)s)")
    add_tta_argument(parser)
    add_precision_arguments(parser, jit_compile=False)
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: <work-dir>/results/<run folder name>[_last][_tta-flip]"
                             "[_<precision>])")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out-dir (default: refuse)")
    parser.add_argument("--quiet", action="store_true", help="no prediction progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise cli.option_error("--batch-size", f"{args.batch_size} must be at least 1")
    if args.init_weights is not None and args.run_dir is not None:
        raise cli.option_error("--init-weights/--run-dir", "choose one: the authors' weights or a training run")
    num_classes = 2
    if args.run_dir is None and args.init_weights is None:  # train_lung.py's default folder names K > 2 classes
        train_targets = Path(args.work_dir) / f"{OUTPUTS['target'][0]}.npy"
        num_classes = split_num_classes(args.work_dir) or 2  # own label maps (--keep-labels): split.json's K
        if num_classes == 2 and train_targets.is_file():
            num_classes = infer_num_classes(load_arrays(args.work_dir, "train", ("target",))["target"])
    run_dir = args.run_dir or default_run_dir(args.model, args.bidirectional,
                                              **({"num_classes": num_classes} if num_classes > 2 else {}))
    out_dir = args.out_dir or default_out_dir(args.work_dir, run_dir, args.weights, args.tta, args.mixed_precision,
                                              args.init_weights)
    rows = evaluate(run_dir, args.work_dir, out_dir, args.fov, args.weights, args.batch_size,
                    verbose=not args.quiet, overwrite=args.overwrite, tta=args.tta,
                    mixed_precision=args.mixed_precision, init_weights=args.init_weights, model_name=args.model,
                    bidirectional=args.bidirectional)
    if "mean" in rows:  # a K-class run
        print(f"test Dice averaged over the foreground classes {rows['mean']['dice']:.4f} (per class in "
              f"scores.md); tables and figures in {out_dir}")
        return rows
    for name, row in rows.items():
        print(f"{row['method']}, FOV {row['FOV']}: F1 {row['F1']:.4f}, SE {row['SE']:.4f}, SP {row['SP']:.4f}, "
              f"ACC {row['ACC']:.4f}, AUC {row['AUC']:.4f}, IoU {row['IoU']:.4f}")
    print(f"(paper: F1 0.9904 with the original FOV). Tables and figures in {out_dir}")
    return rows


if __name__ == "__main__":
    cli.run(main)
