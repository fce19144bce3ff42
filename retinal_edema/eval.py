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

Written to ``--out-dir``: ``dice.md/json`` (per cube and final), ``paper.md/json`` (the original's table),
``roc.png`` (detection ROC per class), ``overlay.png`` (grey slice | prediction | ground truth, REA blue, SRF
green, PED red as the original's ``--vis``) and ``dice.png`` (per-class Dice per cube).
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli
from common.metrics import lesion_dice_per_class, nan_skipping_means, per_class_auc
from retinal_edema.dataset import (CLASS_NAMES, add_path_arguments, cube_name, load_cube, normalise, presence,
                                   read_list, read_stats)

EVAL_BATCH = 8
FUSION = ("unet_nested", "unet")  # the original's fusion pair (UNet++ mix_33, UNet mix_3)
# RGB colours of REA, SRF, PED in the original's visualisation as seen on disk (blue, green, red)
COLOURS = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 0]], np.uint8)
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


def load_models(checkpoints):
    """Load ``.keras`` checkpoints for inference (no optimizer state needed)."""
    import keras

    import common.losses  # noqa: F401  (registers the edema losses)
    import common.optimizers  # noqa: F401  (registers AdamL2)

    models = []
    for path in checkpoints:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: not found; run retinal_edema/train.py first")
        models.append(keras.models.load_model(path, compile=False))
    return models


def predict_cube(models, x, batch=EVAL_BATCH, mean=None, std=None):
    """Predict a cube (n, H, W, 3) with one model or the fusion of several.

    ``x`` is normalised already, or uint8 with ``mean``/``std`` given (then each chunk is normalised on the
    fly, which keeps a real 128 x 1024 x 512 cube at 200 MB instead of 800 MB of float32). Returns
    ``(prediction, detection)``: (n, H, W) uint8 classes and (n, 3) float32 probabilities (or None for a model
    without detection head). Several models: mean softmax (exp of the log-probabilities) and mean detection,
    equal weights.
    """
    seg_out, det_out = [], []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch] if mean is None else normalise(x[start:start + batch], mean, std)
        prob, det = 0.0, 0.0
        for model in models:
            out = model(chunk, training=False)
            prob = prob + np.exp(np.asarray(out["seg"], np.float32)) / len(models)
            det = det + np.asarray(out["det"], np.float32) / len(models) if "det" in out else None
        seg_out.append(np.argmax(prob, axis=-1).astype(np.uint8))
        det_out.append(det)
    detection = None if det_out[0] is None else np.concatenate(det_out).astype(np.float32)
    return np.concatenate(seg_out), detection


def evaluate_cubes(models, data_dir, images, labels, mean, std, batch=EVAL_BATCH, verbose=True, keep=0):
    """Per-cube Dice, final Dice and detection AUC of ``models`` on the listed cubes.

    Returns a dict: ``rows`` (per cube: name, Dice per class, the cube's mean of non-NaN classes), ``dice``
    (final), ``dice_per_class``, ``auc`` (mean of the three), ``auc_per_class`` and, with ``keep`` > 0,
    ``examples`` = [(green channel, prediction, label)] of the middle slice of the first ``keep`` cubes.
    """
    rows, targets, scores, examples = [], [], [], []
    for image_rel, label_rel in tqdm(list(zip(images, labels)), desc="cubes", unit="cube", disable=not verbose):
        x, y = load_cube(data_dir, image_rel, label_rel)
        pred, det = predict_cube(models, x, batch, mean, std)
        dice = lesion_dice_per_class(y, pred)
        valid = [d for d in dice if not np.isnan(d)]
        rows.append({"cube": cube_name(image_rel), **{f"Dice {n}": d for n, d in zip(CLASS_NAMES, dice)},
                     "Dice (cube)": float(np.mean(valid)) if valid else float("nan")})
        targets.append(presence(y))
        if det is not None:
            scores.append(det)
        if len(examples) < keep:
            k = len(x) // 2
            examples.append((x[k, :, :, 1], pred[k], y[k]))
    final, class_means = nan_skipping_means([[r[f"Dice {n}"] for n in CLASS_NAMES] for r in rows])
    result = {"rows": rows, "dice": final, "dice_per_class": class_means, "examples": examples,
              "targets": np.concatenate(targets), "scores": np.concatenate(scores) if scores else None}
    aucs = per_class_auc(result["targets"], result["scores"]) if scores else [float("nan")] * 3
    result["auc_per_class"] = aucs
    result["auc"] = float(np.mean(aucs))
    return result


def colourise(grey, classes):
    """Grey slice (H, W) with the classes 1..3 filled in REA blue, SRF green, PED red -> (H, W, 3) uint8."""
    rgb = np.repeat(np.asarray(grey, np.uint8)[..., None], 3, axis=-1)
    for c in range(1, 4):
        rgb[classes == c] = COLOURS[c - 1]
    return rgb


def plot_detection_roc(targets, scores, path, title=None):
    """One ROC curve per lesion class (detection), AUC in the legend."""
    import common.report  # noqa: F401  (Agg backend)
    import matplotlib.pyplot as plt
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
    import common.report  # noqa: F401
    import matplotlib.pyplot as plt

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
    rows = result["rows"] + [{"cube": "final (NaN-skipping class means)",
                              **{f"Dice {n}": d for n, d in zip(CLASS_NAMES, result["dice_per_class"])},
                              "Dice (cube)": result["dice"]}]
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


def default_checkpoints(names, weights="best"):
    """``weights/retinal_edema/<run>/<weights>.keras`` of train.py's default run for each model name."""
    from retinal_edema.train import default_run_dir, preset

    return [default_run_dir(name, preset(name)["loss"], preset(name)["lr"]) / f"{weights}.keras" for name in names]


def add_model_arguments(parser):
    """Model choice shared by eval.py and test.py: --name, --checkpoints or --fusion."""
    from retinal_edema.train import NAMES

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_arguments(parser)
    parser.add_argument("--phase", choices=("val", "test"), default="val",
                        help="list to score: val, or test when the test set has labels (default: %(default)s)")
    add_model_arguments(parser)
    parser.add_argument("--batch", type=int, default=EVAL_BATCH, help="slices per forward pass (default: 8)")
    parser.add_argument("--vis", type=int, default=8, help="cubes shown in overlay.png (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: work/retinal_edema/eval/<model or fusion>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    checkpoints, label = resolve_checkpoints(args)
    images, labels = read_list(args.list_dir, args.phase)
    mean, std = read_stats(args.list_dir)
    models = load_models(checkpoints)
    result = evaluate_cubes(models, args.data_dir, images, labels, mean, std, args.batch, not args.quiet,
                            keep=args.vis)
    out_dir = args.out_dir or cli.repo_path("work", "retinal_edema", "eval", label.replace(" ", "_"))
    summary = write_report(result, out_dir, label)
    per_class = ", ".join(f"{n} {d:.4f}" for n, d in zip(CLASS_NAMES, result["dice_per_class"]))
    print(f"{label} on {len(images)} {args.phase} cubes: Dice {result['dice']:.4f} ({per_class}); detection AUC "
          f"{result['auc']:.4f}. Tables and figures in {out_dir}")
    return summary


if __name__ == "__main__":
    cli.run(main)
