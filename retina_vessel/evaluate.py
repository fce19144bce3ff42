"""Segment the DRIVE test set with a trained BCDU-Net and score it inside the FOV (the original's evaluate.py).

Test-set mode (default). The 20 full test images (584 x 565, no crop) are preprocessed as in training
(``my_PreProc``) and segmented with ``--inference``:

* ``overlap`` (default, the original): 64 x 64 windows at ``--stride`` 5 over the images zero-padded at the
  bottom/right (565 -> 569 columns), predicted in batches of ``--batch-size`` 16 and averaged per pixel
  (10,710 windows per image). The windows are streamed through the network in chunks, never all in memory.
* ``full``: each image zero-padded to a multiple of 8 goes through the fully-convolutional network once
  (a copy of the network built for that size, same weights): about 80x less computation at stride 5.

Then ``kill_border`` (probability 0 outside the FOV mask) and the scores on the FOV pixels of all images
pooled: AUC-ROC of the probabilities, AUC-PR, and at ``--threshold`` 0.5 F1 (Dice), sensitivity,
specificity, accuracy, precision, IoU (true Jaccard) and the original's "Jaccard" (``js_legacy`` = accuracy)
plus the confusion matrix, beside the paper's BCDU-Net row.

Written to ``--out-dir`` (default ``<work-dir>/test/<run folder name>``, so two runs never share one):
``performances.md/.json`` (ours beside the paper; after the original columns HD95 and ASSD: the mean per-image
95 % Hausdorff and average symmetric surface distances of the binary maps in pixels, inside the FOV, over the
images where both masks are non-empty, ``common.metrics.surface_scores``), ``details.md/.json``
(confusion matrix, inference mode, time and peak memory), ``paper.md/.json`` (the published DRIVE table),
``roc_pr.png``, ``sample_results.png`` (image | ground truth | probability | binary, per image),
``pred_imgs.npy`` (probabilities after kill_border, (N, H, W, 1) float32) and ``run.json`` (git commit, model,
weights file and SHA-256, options, inputs). ``--tta flip`` averages each prediction over the input and its two
flips (an option; the original has none); ``--mixed-precision`` is a GPU option.

A K-class run (an own dataset prepared with ``prepare_datasets_DRIVE.py --keep-labels``, trained with a K-channel
softmax head): the same inference, background outside the FOV, then per-class scores and their mean over the
foreground classes (Dice, IoU, sensitivity, precision pooled over the images; HD95 / ASSD per image, pixels) in
``scores.md/.json``, ``multiclass.json``, ``labels_test.npy``, ``overlay.png``, ``pred_imgs.npy`` (N, H, W, K) and
``run.json``; its default run folder ends in ``_classes<K>`` (K from split.json). ``--threshold`` does not apply.

One-image mode: ``--image PATH [--fov PATH]`` is predict.py's single-file case (same code): it writes
``<stem>_prob.png`` (probability x 255), ``<stem>_prob.npy`` (float32), ``<stem>_mask.png`` (0/255 at
``--threshold``), all of the input's size, and ``run.json`` into ``--out-dir`` (default: beside the image).
With ``--fov`` the probabilities outside the FOV are set to 0.

    python retina_vessel/evaluate.py                                   # the original: stride-5 windows
    python retina_vessel/evaluate.py --inference full                  # one pass per image, ~100x faster
    python retina_vessel/evaluate.py --prior-output-bias               # the run trained with that option
    python retina_vessel/evaluate.py --image eye.tif --fov eye_fov.gif --out-dir out
"""

import argparse
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.devices import add_precision_arguments
from common.inference import add_tta_argument
from common.legacy_weights import add_init_weights_argument
from retina_vessel.prepare_datasets_DRIVE import DEFAULT_WORK, hdf5_path, load_split, num_classes_of, truth_labels
from retina_vessel.task import INFERENCE as TASK_INFERENCE  # noqa: F401  (one place: task.py)
from retina_vessel.task import kill_border, load_init_weights, predict_images  # noqa: F401
from retina_vessel.train_retina import add_variant_arguments, default_run_dir

STRIDE, BATCH_SIZE, THRESHOLD = TASK_INFERENCE["stride"], TASK_INFERENCE["batch_size"], TASK_INFERENCE["threshold"]
INFERENCE = TASK_INFERENCE["modes"]
# spec §6: the README / paper table on DRIVE (F1, sensitivity, specificity, accuracy, AUC-ROC)
PAPER = [
    ("Chen et al. hybrid features", 2014, None, 0.7252, 0.9798, 0.9474, 0.9648),
    ("Azzopardi et al. COSFIRE", 2015, None, 0.7655, 0.9704, 0.9442, 0.9614),
    ("Roychowdhury et al.", 2016, None, 0.7250, 0.9830, 0.9520, 0.9620),
    ("Liskowski et al.", 2016, None, 0.7763, 0.9768, 0.9495, 0.9720),
    ("Qiaoliang et al.", 2016, None, 0.7569, 0.9816, 0.9527, 0.9738),
    ("U-Net", 2015, 0.8142, 0.7537, 0.9820, 0.9531, 0.9755),
    ("Residual U-Net (Alom)", 2018, 0.8149, 0.7726, 0.9820, 0.9553, 0.9779),
    ("Attention U-Net", 2018, 0.8155, 0.7751, 0.9816, 0.9556, 0.9782),
    ("R2U-Net", 2018, 0.8171, 0.7792, 0.9813, 0.9556, 0.9784),
    ("BCDU-Net", 2019, 0.8222, 0.8012, 0.9784, 0.9559, 0.9788),
]
COLUMNS = ("method", "F1", "SE", "SP", "ACC", "AUC", "AUC-PR", "PC", "IoU", "JS (legacy)")


def paper_rows():
    return [{"method": m, "year": y, "F1": "-" if f1 is None else f1, "SE": se, "SP": sp, "ACC": acc, "AUC": auc}
            for m, y, f1, se, sp, acc, auc in PAPER]


def load_model(run_dir, weights="best", mixed_precision="off"):
    """``(model, checkpoint path)`` of a train_retina.py run (``common.predict.load_model``)."""
    from common.predict import load_model as load

    return load(argparse.Namespace(model=None, run_dir=Path(run_dir), weights=weights,
                                   mixed_precision=mixed_precision))


def segment(model, images, inference="overlap", stride=STRIDE, batch_size=BATCH_SIZE, verbose=False, tta="none"):
    """Probability maps (N, H, W, 1) float32 of preprocessed images (N, H, W, 1) of any size (``tta="flip"``:
    the mean over the image and its two flips): ``retina_vessel.task.predict_images`` with ``model`` compiled
    once per input size (one implementation with predict.py)."""
    from common.predict import KerasNetwork

    return predict_images(KerasNetwork(model, batch_size), images, inference=inference, stride=stride,
                          verbose=verbose, tta=tta)


def peak_rss_mb():
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def score_row(method, scores):
    return {"method": method, "F1": scores["f1"], "SE": scores["sensitivity"], "SP": scores["specificity"],
            "ACC": scores["accuracy"], "AUC": scores["auc"], "AUC-PR": scores["auc_pr"], "PC": scores["precision"],
            "IoU": scores["jaccard"], "JS (legacy)": scores["js_legacy"]}


def evaluate(work_dir, run_dir, out_dir, weights="best", inference="overlap", stride=STRIDE, batch_size=BATCH_SIZE,
             threshold=THRESHOLD, verbose=True, tta="none", mixed_precision="off", options=None, init_weights=None,
             overwrite=False):
    """Segment and score the prepared test set; writes the tables, figures and run.json, returns the result
    dict. HD95 and ASSD (mean per image, pixels, inside the FOV) follow the original columns. With
    ``init_weights`` the authors' Keras-2 checkpoint is evaluated instead of ``run_dir``. ``out_dir`` is
    written as a whole (``common.data.io.atomic_dir``); an existing one is refused unless ``overwrite``."""
    from common.data.io import atomic_dir
    from common.data.preprocess import my_preproc
    from common.errors import UserError
    from common.metrics import segmentation_scores

    final_dir = Path(out_dir)
    if final_dir.exists() and not overwrite:  # checked before any work
        raise UserError(f"{final_dir}: already holds results; pass --overwrite to replace them, or --out-dir")
    imgs, truth, fov = load_split(work_dir, "test")
    num_classes = num_classes_of(work_dir)
    x = my_preproc(imgs)
    if init_weights is not None:  # the authors' checkpoint instead of a run of ours
        model, checkpoint = load_init_weights(init_weights, mixed_precision=mixed_precision), Path(init_weights)
    else:
        model, checkpoint = load_model(run_dir, weights, mixed_precision)
    if model.output_shape[-1] > 1:  # a K-class run: per-class scores of the label maps
        return evaluate_multiclass(model, checkpoint, x, truth_labels(truth, num_classes), fov, final_dir,
                                   work_dir=work_dir, inference=inference, stride=stride, batch_size=batch_size,
                                   verbose=verbose, tta=tta, overwrite=overwrite,
                                   options=dict(options or {}, inference=inference, stride=stride, weights=weights,
                                                tta=tta, mixed_precision=mixed_precision))
    if num_classes > 2:
        raise UserError(f"{hdf5_path(work_dir, 'groundTruth', 'test')}: holds label maps of {num_classes} classes "
                        f"(prepared with --keep-labels); {checkpoint} is a binary network: evaluate a run trained "
                        f"on these labels (train_retina.py --num-classes {num_classes})")
    start = time.time()
    prob = kill_border(segment(model, x, inference, stride, batch_size, verbose, tta), fov)
    seconds = time.time() - start
    scores = segmentation_scores(truth, prob, threshold=threshold, fov=fov, legacy=True, curves=True)
    row = score_row(f"ours ({model.name}, {inference}" + (", flip TTA)" if tta == "flip" else ")"), scores)
    surface = surface_columns(truth, prob >= threshold, fov)  # extra columns after the original ones
    row.update(surface)
    columns = COLUMNS + tuple(surface)
    paper = dict(zip(("F1", "SE", "SP", "ACC", "AUC"), PAPER[-1][2:]), method="paper BCDU-Net (2019)")
    (tn, fp), (fn, tp) = scores["confusion"]
    details = {"inference": inference, "stride": stride if inference == "overlap" else None, "weights": weights,
               "tta": tta, "mixed_precision": mixed_precision,
               "threshold": threshold, "test images": len(x), "FOV pixels": tn + fp + fn + tp,
               "confusion [[TN, FP], [FN, TP]]": scores["confusion"], "seconds": round(seconds, 2),
               "peak RSS MB": round(peak_rss_mb())}
    with atomic_dir(final_dir, overwrite=overwrite) as out_dir:
        _write_results(out_dir, row=row, paper=paper, columns=columns, details=details, x=x, truth=truth,
                       prob=prob, fov=fov, inference=inference, threshold=threshold, model=model,
                       checkpoint=checkpoint, work_dir=work_dir,
                       options=dict(options or {}, inference=inference, stride=stride, weights=weights,
                                    threshold=threshold, tta=tta, mixed_precision=mixed_precision))
    return {"scores": scores, "row": row, **details}


def evaluate_multiclass(model, checkpoint, x, labels, fov, out_dir, *, work_dir, inference, stride, batch_size,
                        verbose, tta, overwrite, options):
    """A K-class run (an own dataset prepared with ``--keep-labels``): the test images' softmax (``inference`` as
    the binary path), background outside the FOV (``kill_border_labels``; the ground truth is taken as
    background there too), scored per class and averaged over the foreground classes
    (``common.multiclass.write_multiclass_results``: Dice, IoU, sensitivity, precision pooled over the images;
    HD95 / ASSD per image in pixels). Pixels outside the FOV are true negatives of every class, which none of
    these scores counts, so the scores are those of the FOV pixels. Writes ``scores.md/.json``,
    ``multiclass.json``, ``labels_test.npy``, ``overlay.png``, ``pred_imgs.npy`` (N, H, W, K) and ``run.json``
    into ``out_dir``; returns ``{"multiclass": multiclass_scores' dict, "num_classes": K, "seconds": ...}``."""
    from common.data.io import atomic_dir, save_npy
    from common.errors import UserError
    from common.multiclass import write_multiclass_results
    from common.provenance import write_run_json
    from retina_vessel.task import kill_border_labels

    num_classes = model.output_shape[-1]
    inside = np.asarray(fov) > 0
    labels = np.where(inside, np.asarray(labels), 0).astype(np.uint8)
    top = int(labels.max(initial=0))
    if top >= num_classes:
        raise UserError(f"{hdf5_path(work_dir, 'groundTruth', 'test')}: holds labels up to {top}; {checkpoint} has "
                        f"{num_classes} classes (0..{num_classes - 1}): evaluate it on the data it was trained for")
    start = time.time()
    prob = kill_border_labels(segment(model, x, inference, stride, batch_size, verbose, tta), fov)
    seconds = time.time() - start
    with atomic_dir(Path(out_dir), overwrite=overwrite) as tmp:
        save_npy(tmp / "pred_imgs.npy", prob)
        scores = write_multiclass_results(
            tmp, model.name, labels, prob, verbose=verbose, images=np.clip(x[..., 0] * 255, 0, 255).astype(np.uint8),
            title=f"Test set ({len(x)} images, {inference} inference{', flip TTA' if tta == 'flip' else ''}), "
                  f"{num_classes} classes, FOV pixels: per class and the mean over the foreground classes; "
                  f"HD95/ASSD in pixels")
        write_run_json(tmp, model_name=model.name, weights=[checkpoint], options=dict(options, num_classes=num_classes),
                       inputs=[str(p) for p in load_split_names(work_dir)])
    return {"multiclass": scores, "num_classes": num_classes, "seconds": round(seconds, 2),
            "inference": inference}


def _write_results(out_dir, *, row, paper, columns, details, x, truth, prob, fov, inference, threshold, model,
                   checkpoint, work_dir, options):
    """The tables, figures, predictions and run.json of :func:`evaluate` into ``out_dir``."""
    from common.data.io import save_npy
    from common.provenance import write_run_json
    from common.report import overlay_grid, plot_roc_pr, write_table

    write_table([row, paper], out_dir / "performances", columns=columns,
                title=f"DRIVE test set, FOV pixels only ({inference} inference)")
    write_table([details], out_dir / "details", title="Evaluation settings, confusion matrix, time and memory")
    write_table(paper_rows(), out_dir / "paper", title="Paper: DRIVE (README table)")
    save_npy(out_dir / "pred_imgs.npy", prob)
    plot_roc_pr(truth, prob, out_dir / "roc_pr.png", fov=fov, title=f"DRIVE test, FOV pixels ({inference})")
    overlay_grid(x, truth / 255.0, prob, out_dir / "sample_results.png", max_rows=len(x),
                 titles=("image", "ground truth", "probability", f"binary (>= {threshold:g})"),
                 extra=[(prob >= threshold).astype(np.float32)], value_range=(0, 1))
    test_files = [str(p) for p in load_split_names(work_dir)]
    write_run_json(out_dir, model_name=model.name, weights=[checkpoint], options=options, inputs=test_files)


def load_split_names(work_dir):
    """The test HDF5 files evaluated (the inputs named in run.json)."""
    from retina_vessel.prepare_datasets_DRIVE import KINDS, hdf5_path

    return [hdf5_path(work_dir, kind, "test") for kind in KINDS]


def surface_columns(truth, pred, fov):
    """``{"HD95": mean, "ASSD": mean}`` of the per-image surface distances (pixels) of the binary maps inside
    the FOV (``common.metrics.surface_scores``: means over the images where both masks are non-empty, MONAI's
    conventions)."""
    from common.metrics import surface_scores

    inside = np.asarray(fov) > 0
    result = surface_scores((np.asarray(truth) > 0) & inside, np.asarray(pred) & inside)
    return {"HD95": result["hd95_mean"], "ASSD": result["assd_mean"]}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="prepare_datasets_DRIVE.py's --work-dir (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="train_retina.py's run folder (default: weights/retina_vessel/bcdu_net_d3"
                             "[_bidirectional][_prior_bias], chosen by the two options below)")
    add_variant_arguments(parser, trained=True)
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="checkpoint (default: best val_loss, the original's weight_lstm.hdf5)")
    parser.add_argument("--inference", choices=INFERENCE, default="overlap",
                        help="overlap: averaged sliding windows (the original); full: one pass per whole image "
                             "padded to a multiple of 8 (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=STRIDE, help="window stride for overlap (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="prediction batch (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help="probability threshold of the binary maps (default: %(default)s)")
    parser.add_argument("--image", type=Path, default=None,
                        help="segment this one fundus image (any size) instead of the test set")
    parser.add_argument("--fov", type=Path, default=None, help="with --image: its FOV mask (same size)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: <work-dir>/test/<run folder name>, or beside --image)")
    add_init_weights_argument(parser)
    add_tta_argument(parser)
    add_precision_arguments(parser, jit_compile=False)
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    from common.errors import OptionError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fov is not None and args.image is None:
        raise OptionError("--fov: needs --image (the FOV mask of that one image)")
    if args.stride < 1:
        raise OptionError(f"--stride: {args.stride} must be at least 1")
    if not 0 <= args.threshold <= 1:
        raise OptionError(f"--threshold: {args.threshold} must lie in [0, 1]")
    if args.run_dir is None:  # a K-class dataset's (--keep-labels) default run folder names its classes
        args.run_dir = default_run_dir(args.bidirectional, args.prior_bias, num_classes=num_classes_of(args.work_dir))
    if args.image is not None:  # predict.py's single-file case (one implementation)
        from retina_vessel import predict

        out_dir = args.out_dir or args.image.parent
        source = ["--init-weights", str(args.init_weights)] if args.init_weights else ["--run-dir", str(args.run_dir)]
        forwarded = [str(args.image), "--out-dir", str(out_dir), *source, "--weights", args.weights,
                     "--inference", args.inference, "--stride", str(args.stride), "--batch-size", str(args.batch_size),
                     "--threshold", str(args.threshold), "--tta", args.tta, "--mixed-precision", args.mixed_precision,
                     "--save-probabilities"]
        forwarded += (["--fov", str(args.fov)] if args.fov else []) + (["--quiet"] if args.quiet else [])
        forwarded += ["--overwrite"] if args.overwrite else []
        return predict.main(forwarded)
    source = f"init_{args.init_weights.name}" if args.init_weights else args.run_dir.name
    out_dir = args.out_dir or args.work_dir / "test" / source  # keyed by the run (or the authors' file)
    result = evaluate(args.work_dir, args.run_dir, out_dir, args.weights, args.inference, args.stride,
                      args.batch_size, args.threshold, not args.quiet, args.tta, args.mixed_precision,
                      options={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                      init_weights=args.init_weights, overwrite=args.overwrite)
    if "multiclass" in result:
        print(f"test set ({args.inference}, {result['num_classes']} classes): Dice averaged over the foreground "
              f"classes {result['multiclass']['mean']['dice']:.4f} (per class in scores.md). Tables and figures in "
              f"{out_dir}")
        return 0
    s = result["scores"]
    print(f"DRIVE test ({args.inference}, {result['seconds']:.1f} s, peak RSS {result['peak RSS MB']} MB): "
          f"AUC {s['auc']:.4f} (paper 0.9788), F1 {s['f1']:.4f} (0.8222), SE {s['sensitivity']:.4f} (0.8012), "
          f"SP {s['specificity']:.4f} (0.9784), ACC {s['accuracy']:.4f} (0.9559). Tables and figures in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
