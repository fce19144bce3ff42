"""Validation scores of trained retinal-edema networks (one model or the fusion of several), with figures.

The original's ``eval.py``: every cube of the list is predicted in chunks of 8 slices (model in inference
mode), the prediction is the argmax over the 4 classes and the detection the sigmoid outputs (B, 3).

* **Per-cube Dice** (``aic_fundus_lesion_segmentation``): the whole cube is flattened; for each lesion class
  (REA, SRF, PED) Dice = 2|G ∩ P| / (|G| + |P|), or NaN when the cube's ground truth has no such pixel (then
  false positives of that class cost nothing).
* **Final Dice** (``compute_segment_score``): per class, the mean of the non-NaN cube values; the score is the
  mean of the three class means (the model-selection score of train.py).
* **Detection AUC**: all slices of all cubes stacked; per class, ROC-AUC of the slice's presence (from its
  label) vs the predicted probability; the mean of the three is reported too.
* **Fusion** (``--checkpoints A B`` or ``--fusion``): average of the models' softmax probabilities (exp of the
  log-softmax outputs), then argmax; detection = average of the sigmoid outputs (the original: UNet++ with
  mix_33 and UNet with mix_3, weight 0.5 each).

Ours, beside the challenge's columns (which stay first and unchanged): per cube and lesion class, HD95 and
the average symmetric surface distance of the class's binary volume in voxel units
(``common.metrics.surface_distances``, MONAI's definitions: NaN when the class is in neither volume, inf when
in only one; the final row averages the cubes where both are finite); ``--no-surface-distances`` skips them.

Written to ``--out-dir``: ``run.json``, ``dice.md/json`` (per cube and final), ``paper.md/json`` (the original's table),
``roc.png`` (detection ROC per class), ``overlay.png`` (grey slice | prediction | ground truth, REA blue, SRF
green, PED red as the original's ``--vis``) and ``dice.png`` (per-class Dice per cube).
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
from retinal_edema.dataset import CLASS_NAMES, add_path_arguments, read_list, read_stats
from retinal_edema.task import COLOURS, colourise  # noqa: F401  (one place: task.py)
from retinal_edema.model_io import (EVAL_BATCH, FUSION, NAMES, default_checkpoints, evaluate_cubes,  # noqa: F401
                                    load_models, predict_cube)
# RGB colours of REA, SRF, PED in the original's visualisation as seen on disk (blue, green, red)
# The original's README (AI Challenger 2018, 15 validation / 15 test cubes)
PAPER = [
    {"model": "ResNet18 (ImageNet)", "multi-task": "No", "params": "11.18M", "loss": "BCE", "val Dice": None,
     "val AUC": 0.971, "test Dice": None, "test AUC": 0.904},
    {"model": "UNet", "multi-task": "No", "params": "2.47M", "loss": "WCE+Dice", "val Dice": 0.772,
     "val AUC": None, "test Dice": 0.683, "test AUC": None},
    {"model": "UNet", "multi-task": "Yes", "params": "2.47M", "loss": "WCE+Dice+BCE", "val Dice": 0.785,
     "val AUC": 0.985, "test Dice": 0.701, "test AUC": None},
    {"model": "UNet++", "multi-task": "Yes", "params": "2.95M", "loss": "WCE+Dice+BCE", "val Dice": 0.784,
     "val AUC": 0.986, "test Dice": None, "test AUC": None},
    {"model": "UNet++", "multi-task": "Yes", "params": "2.95M", "loss": "WCE+ELDice+BCE", "val Dice": 0.799,
     "val AUC": 0.989, "test Dice": 0.736, "test AUC": None},
    {"model": "Dilated UNet++", "multi-task": "Yes", "params": "5.32M", "loss": "WCE+ELDice+BCE",
     "val Dice": 0.807, "val AUC": 0.978, "test Dice": None, "test AUC": None},
    {"model": "Fusion (UNet++ ELDice + UNet)", "multi-task": "-", "params": "-", "loss": "-", "val Dice": 0.805,
     "val AUC": 0.991, "test Dice": 0.744, "test AUC": 0.986},
]


def plot_detection_roc(targets, scores, path, title=None):
    """One ROC curve per lesion class (detection), AUC in the legend."""
    from common.report import pyplot
    plt = pyplot()
    from sklearn.metrics import auc, roc_curve

    from common.data.io import atomic_path

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for k, name in enumerate(CLASS_NAMES):
        t = targets[:, k] != 0
        if 0 < t.sum() < len(t):
            fpr, tpr, _ = roc_curve(t, scores[:, k])
            ax.plot(fpr, tpr, label=f"{name}: AUC = {auc(fpr, tpr):.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title or "Detection ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_cube_dice(rows, path, title=None):
    """Grouped bars: Dice of each lesion class per cube (NaN = class absent, no bar)."""
    from common.report import pyplot
    plt = pyplot()

    from common.data.io import atomic_path

    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(rows) + 2), 3.6))
    idx = np.arange(len(rows))
    for k, name in enumerate(CLASS_NAMES):
        values = [r[f"Dice {name}"] for r in rows]
        ax.bar(idx + (k - 1) * 0.27, np.nan_to_num(values), width=0.27, label=name,
               color=COLOURS[k] / 255.0)
    ax.set_xticks(idx, [str(i + 1) for i in idx])
    ax.set(xlabel="cube", ylabel="Dice", ylim=(0, 1), title=title or "Per-cube Dice")
    ax.legend()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def write_report(result, out_dir, label):
    """Tables and figures of an ``evaluate_cubes`` result in ``out_dir``; returns the summary row."""
    from common.report import overlay_grid, write_table

    out_dir = Path(out_dir)
    summary = {"model": label, "cubes": len(result["rows"]), "Dice": result["dice"],
               **{f"Dice {n}": d for n, d in zip(CLASS_NAMES, result["dice_per_class"])},
               "AUC": result["auc"], **{f"AUC {n}": a for n, a in zip(CLASS_NAMES, result["auc_per_class"])}}
    final = {"cube": "final (NaN-skipping class means)",
             **{f"Dice {n}": d for n, d in zip(CLASS_NAMES, result["dice_per_class"])}, "Dice (cube)": result["dice"]}
    for key in [k for k in (result["rows"][0] if result["rows"] else {}) if k.startswith(("HD95 ", "ASSD "))]:
        values = np.array([r[key] for r in result["rows"]], np.float64)
        finite = np.isfinite(values)  # cubes where the class is in both truth and prediction
        final[key] = summary[key] = float(values[finite].mean()) if finite.any() else float("nan")
    rows = result["rows"] + [final]
    write_table(rows, out_dir / "dice", title=f"Per-cube Dice of {label}")
    write_table([summary], out_dir / "summary", title=f"Dice and detection AUC of {label}")
    write_table(PAPER, out_dir / "paper", title="The original's results (AI Challenger 2018)", digits=3)
    plot_cube_dice(result["rows"], out_dir / "dice.png", title=f"Per-cube Dice, {label}")
    if result["scores"] is not None:
        plot_detection_roc(result["targets"], result["scores"], out_dir / "roc.png", title=f"Detection, {label}")
    if result["examples"]:
        grey, pred, truth = zip(*result["examples"])
        overlay_grid(list(grey), [colourise(g, t) for g, t in zip(grey, truth)],
                     [colourise(g, p) for g, p in zip(grey, pred)], out_dir / "overlay.png",
                     titles=("slice", "ground truth", "prediction"))
    return summary


def add_model_arguments(parser):
    """Model choice shared by eval.py, test.py and predict.py: --name, --checkpoints or --fusion."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--name", choices=NAMES, default="unet_nested",
                       help="model whose default train.py run is used (default: %(default)s)")
    group.add_argument("--checkpoints", type=Path, nargs="+",
                       help=".keras files to use; two or more are fused (mean softmax, mean detection)")
    group.add_argument("--fusion", action="store_true",
                       help="the original's fusion: the default runs of unet_nested and unet")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="checkpoint of a default run (default: best, as the original's model_best)")


def resolve_checkpoints(args):
    """(checkpoint paths, label) from the options of ``add_model_arguments``."""
    if args.checkpoints:
        paths = list(args.checkpoints)
        label = "fusion of " + " + ".join(p.parent.name or p.stem for p in paths) if len(paths) > 1 \
            else paths[0].parent.name
        return paths, label
    names = FUSION if args.fusion else (args.name,)
    return default_checkpoints(names, args.weights), "fusion" if args.fusion else args.name


def run_key(checkpoints):
    """A folder name that identifies the run(s) and checkpoint(s): ``<run folder>_<best|last>`` joined by
    ``+`` for a fusion, so results of different runs of the same network never share a folder."""
    return "+".join(f"{Path(p).parent.name or 'model'}_{Path(p).stem}" for p in checkpoints)


def default_out_dir(kind, checkpoints, phase=None, tta="none", min_size=0):
    """``work/retinal_edema/<kind>/<run_key>[_<phase>][_tta-flip][_min<N>]``."""
    from common.run_options import tagged_name

    return cli.repo_path("work", "retinal_edema", kind, tagged_name(run_key(checkpoints), [
        (phase or None, "val", "{}"), (tta, "none", "tta-{}"), (min_size, 0, "min{}")]))


def check_out_dir(out_dir, names, overwrite=False):
    """Refuse to overwrite earlier results (any of ``names`` in ``out_dir``) without ``--overwrite``."""
    found = [n for n in names if (Path(out_dir) / n).exists()]
    if found and not overwrite:
        raise cli.option_error("--out-dir", f"{out_dir} already holds results ({', '.join(found[:3])}); pass "
                                            f"--overwrite to replace them, or another --out-dir")


def check_common_options(args):
    if args.batch <= 0:
        raise cli.option_error("--batch", f"must be positive, got {args.batch}")
    if getattr(args, "min_size", 0) < 0:
        raise cli.option_error("--min-size", f"must be >= 0, got {args.min_size}")


REPORT_FILES = ("dice.md", "dice.json", "summary.json", "paper.json", "dice.png", "roc.png", "overlay.png")

EXAMPLES = """examples:
  python retinal_edema/eval.py --name unet_nested                 # the default unet_nested run, best.keras
  python retinal_edema/eval.py --fusion                           # the original's fusion (unet_nested + unet)
  python retinal_edema/eval.py --checkpoints weights/retinal_edema/unet_nopre_mix_3_0.001/best.keras --tta flip
"""


def add_inference_arguments(parser, kind, suffixes, replaces):
    """The options eval.py and test.py share after the model's: batch, TTA, small-region removal, the output
    folder (``work/retinal_edema/<kind>/...``), overwrite, precision, quiet."""
    parser.add_argument("--batch", type=int, default=EVAL_BATCH, help="slices per forward pass (default: 8)")
    add_tta_argument(parser)
    parser.add_argument("--min-size", type=int, default=0,
                        help="ours: per slice, lesion regions smaller than this many pixels become background "
                             "(default: %(default)s = off, as the original)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help=f"output folder (default: work/retinal_edema/{kind}/<run folder>_<best|last>, plus "
                             f"{suffixes} for non-default options)")
    parser.add_argument("--overwrite", action="store_true", help=f"replace {replaces} already in --out-dir")
    add_precision_arguments(parser, jit_compile=False)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    add_path_arguments(parser)
    parser.add_argument("--phase", choices=("val", "test"), default="val",
                        help="list to score: val, or test when the test set has labels (default: %(default)s)")
    add_model_arguments(parser)
    parser.add_argument("--vis", type=int, default=8, help="cubes shown in overlay.png (default: %(default)s)")
    parser.add_argument("--no-surface-distances", action="store_true",
                        help="skip the HD95/ASSD columns (ours, beside the challenge's Dice; voxel units)")
    add_inference_arguments(parser, "eval", "_test, _tta-flip, _min<N>", "the results")
    return parser


def main(argv=None):
    from common.devices import set_precision

    parser = build_parser()
    args = parser.parse_args(argv)
    check_common_options(args)
    checkpoints, label = resolve_checkpoints(args)
    out_dir = args.out_dir or default_out_dir("eval", checkpoints, args.phase, args.tta, args.min_size)
    check_out_dir(out_dir, REPORT_FILES, args.overwrite)
    images, labels = read_list(args.list_dir, args.phase)
    mean, std = read_stats(args.list_dir)
    set_precision(args.mixed_precision)  # before the models are loaded
    models = load_models(checkpoints, args.mixed_precision)
    result = evaluate_cubes(models, args.data_dir, images, labels, mean, std, args.batch, not args.quiet,
                            keep=args.vis, tta=args.tta, min_size=args.min_size,
                            surface=not args.no_surface_distances)
    summary = write_report(result, out_dir, label)
    write_provenance(out_dir, label, checkpoints, vars(args), [str(Path(args.data_dir) / p) for p in images])
    per_class = ", ".join(f"{n} {d:.4f}" for n, d in zip(CLASS_NAMES, result["dice_per_class"]))
    print(f"{label} on {len(images)} {args.phase} cubes: Dice {result['dice']:.4f} ({per_class}); detection AUC "
          f"{result['auc']:.4f}. Tables and figures in {out_dir}")
    return summary


def write_provenance(out_dir, label, checkpoints, options, inputs):
    """``run.json`` (common.provenance): git commit, model, weights files + SHA-256, options, inputs."""
    from common.provenance import write_run_json

    write_run_json(out_dir, model_name=label, weights=[str(p) for p in checkpoints], options=options,
                   inputs=inputs)


if __name__ == "__main__":
    cli.run(main)
