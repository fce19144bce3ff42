"""Test-split Dice of a trained fingernail network, beside the paper's table, with figures.

Predicts the test split of prepare_data.py with the run's LAST checkpoint (the original computes its Dice
with the final-epoch weights; ``--weights best`` uses the best ``val_dice_metric`` checkpoint instead) and
computes the original's ``dice_coefficient``: prediction > threshold, then 2·Σ(y·ŷ) / (Σy + Σŷ) over the
whole test set at once. Threshold 0.3 is the one the original used (its README says 0.5); 0.5 is reported too.

The run's model, study, loss and Dice variant are read from its ``state.json`` (train.py's settings). The
paper's value is put beside ours only when the run used the original's loss (``bce``, or ``bce_dice`` with
the original's per-pixel Dice); a run with ``--dice image`` gets no paper value (the column says why).

Written to ``--out-dir`` (default ``work/fingernail/results/<run folder name>``): ``dice.md``/``dice.json`` (ours
beside the paper's value for the same model, data and loss), ``paper.md``/``paper.json`` (the whole
published table), ``pred_test.npy`` (probabilities, float32), ``overlay.png`` (image | ground truth |
prediction), ``training_curves.png`` (Dice and loss per epoch, train and test, like the original's plot) and
``run.json`` (git commit, checkpoint and its SHA-256, options). The folder appears complete or not at all, and
an existing one is replaced only with ``--overwrite``. Beside the original's columns (unchanged, first) the
table has HD95 and ASSD (pixels at the network's input size, mean over the test images whose truth and
prediction both have foreground). ``--tta flip`` and ``--mixed-precision`` are options the original did not
have; with them the paper's value is not put beside ours.

Examples::

    python fingernail/evaluate.py                                         # the default train.py run
    python fingernail/evaluate.py --model unet2d_res_srnn_32_512 --loss bce
    python fingernail/evaluate.py --run-dir weights/fingernail/unet2d_8_128/<run id> --tta flip
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.errors import UserError
from fingernail.prepare_data import DEFAULT_WORK, load_split, prepared_size
from fingernail.train import BATCH_SIZE, DICE_VARIANTS, EPOCHS, LOSSES, MODELS, default_run_dir, loss_label

THRESHOLDS = (0.3, 0.5)
# Paper (notebook value, test split, final-epoch weights, threshold 0.3, 160x192): spec §5.
# (model, study, loss) -> (notebook, README)
PAPER = {
    ("unet2d_8_128", "dataset1", "bce_dice"): (0.820733, 0.82),
    ("unet2d_8_128", "dataset1", "bce"): (0.835413, 0.84),
    ("unet2d_res_32_512", "dataset1", "bce_dice"): (0.927045, 0.93),
    ("unet2d_res_32_512", "dataset1", "bce"): (0.922492, 0.92),
    ("unet2d_res_srnn_32_512", "dataset1", "bce_dice"): (0.932680, 0.94),
    ("unet2d_res_srnn_32_512", "dataset1", "bce"): (0.938621, 0.94),
    ("unet2d_res_srnn_8_128", "dataset1", "bce_dice"): (0.852748, 0.85),
    ("unet2d_res_srnn_8_128", "dataset1", "bce"): (0.848145, 0.85),
    ("unet2d_8_128", "dataset1+dataset2", "bce_dice"): (0.605983, 0.61),
    ("unet2d_8_128", "dataset1+dataset2", "bce"): (0.701532, 0.70),
    ("unet2d_res_32_512", "dataset1+dataset2", "bce_dice"): (0.840504, 0.84),
    ("unet2d_res_32_512", "dataset1+dataset2", "bce"): (0.866593, 0.87),
    ("unet2d_res_srnn_32_512", "dataset1+dataset2", "bce_dice"): (0.830242, 0.83),
    ("unet2d_res_srnn_32_512", "dataset1+dataset2", "bce"): (0.865814, 0.87),
    ("unet2d_res_srnn_8_128", "dataset1+dataset2", "bce_dice"): (0.706235, 0.71),
    ("unet2d_res_srnn_8_128", "dataset1+dataset2", "bce"): (0.739281, 0.74),
}
PAPER_NAMES = {"unet2d_8_128": "U-Net2D (8-128)", "unet2d_res_32_512": "U-Net2D-Res (32-512)",
               "unet2d_res_srnn_32_512": "U-Net2D-Res-SRNN-HW", "unet2d_res_srnn_8_128": "U-Net2D-Res-SRNN-LW"}


def dice_coefficient(y_true, y_prob, threshold=0.3):
    """The original's test Dice: ``y_prob > threshold`` (strict), pooled over every image, no smoothing.

    Returns nan when neither the truth nor the prediction has a foreground pixel.
    """
    y_true = np.asarray(y_true).reshape(-1) != 0
    y_hat = np.asarray(y_prob).reshape(-1) > threshold
    den = int(y_true.sum()) + int(y_hat.sum())
    return 2.0 * int(np.count_nonzero(y_true & y_hat)) / den if den else float("nan")


def plot_training_curves(history, path, title=None):
    """The original's live plot as a PNG: Dice (solid, left axis) and loss (dashed, right axis), train
    orange and test blue."""
    from common.data.io import atomic_path
    from common.report import pyplot
    plt = pyplot()

    epochs = np.arange(len(history["loss"]))
    fig, ax1 = plt.subplots(figsize=(10, 5))
    lines = ax1.plot(epochs, history["dice_metric"], color="orange", lw=2, label="Train Dice Score")
    lines += ax1.plot(epochs, history["val_dice_metric"], color="blue", lw=2, label="Test Dice Score")
    ax1.set_ylabel("Dice Score", fontsize=15)
    ax1.set_xlabel("Epoch", fontsize=15)
    ax1.grid(True)
    ax2 = ax1.twinx()
    lines += ax2.plot(epochs, history["loss"], "--", color="orange", label="Train Loss")
    lines += ax2.plot(epochs, history["val_loss"], "--", color="blue", label="Test Loss")
    ax2.set_ylabel("Loss", fontsize=15)
    ax1.legend(lines, [line.get_label() for line in lines])
    if title:
        ax1.set_title(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def paper_rows():
    return [{"model": PAPER_NAMES[m], "data": "DS1" if s == "dataset1" else "DS1+2",
             "loss": "BCE-Dice" if loss == "bce_dice" else "BCE", "Dice (notebook)": nb, "Dice (README)": rd}
            for (m, s, loss), (nb, rd) in PAPER.items()]


def run_settings(run_dir, study=None, model_name=None, loss=None, dice=None):
    """The recipe of a run: train.py's settings from its ``state.json``, else the given values.

    Returns ``{"study", "model", "loss", "dice"}``; ``dice`` is ``"pixel"`` (the original's per-pixel Dice),
    ``"image"`` or None (``bce``). Runs written before the ``dice`` setting existed stored
    ``per_pixel_dice`` (False = image-level).
    """
    from common.training import read_state

    state = read_state(run_dir) or {}
    settings = state.get("settings") or {}
    loss = settings.get("loss", loss)
    if "dice" in settings:
        dice = settings["dice"]
    elif "per_pixel_dice" in settings:
        dice = "pixel" if settings["per_pixel_dice"] else "image"
    if loss == "bce_dice" and dice is None:
        dice = "pixel"
    return {"study": settings.get("study", study), "model": settings.get("model", model_name), "loss": loss,
            "dice": dice if loss == "bce_dice" else None, "settings": settings}


def recipe_differences(settings):
    """The recipe settings of a run (train.py's ``state.json``) that differ from the paper's, as text."""
    from fingernail.prepare_data import COLS, ROWS, SEED
    from fingernail.train import LR, LR_DECAY

    paper = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr": LR, "lr_decay": LR_DECAY, "seed": SEED,
             "shuffle": False, "mixed_precision": "off", "rows": ROWS, "cols": COLS}
    return [f"{k} {settings[k]}" for k, v in paper.items() if k in settings and settings[k] != v]


def paper_value(model_name, study, loss, dice):
    """``(notebook, README, note)`` of the paper's cell for this recipe; NaN values with a reason when the
    run is not comparable (the image-level Dice loss, or a cell the paper does not have)."""
    nan = float("nan")
    if loss == "bce_dice" and dice != "pixel":
        return nan, nan, "not comparable: image-level Dice loss (the paper used the per-pixel Dice)"
    if (model_name, study, loss) not in PAPER:
        return nan, nan, "no such cell in the paper's table"
    nb, readme = PAPER[(model_name, study, loss)]
    return nb, readme, "same model, data and loss"


def comparison_note(note, settings):
    """``note`` plus the run's recipe differences from the paper's (a reduced budget, another lr, ...)."""
    differences = recipe_differences(settings)
    return f"{note}; but the recipe differs: {', '.join(differences)}" if differences else note


def predict_probabilities(model, images, tta="none", batch_size=BATCH_SIZE, verbose=0):
    """The task's inference (evaluate.py and predict.py): uint8 (N, H, W, 3) at the network's size -> the
    original's input ``/ 255`` (float32) -> sigmoid probabilities (N, H, W, 1) float32. ``tta="flip"`` averages
    the predictions on the images and their horizontal and vertical flips, flipped back (not the original's)."""
    from common.inference import TTA_CHOICES, with_flips

    if tta not in TTA_CHOICES:
        raise cli.option_error("--tta", f"unknown value {tta!r}; choose one of {', '.join(TTA_CHOICES)}")

    def run(x):
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=verbose), np.float32)

    run = with_flips(run) if tta == "flip" else run
    return run(np.asarray(images).astype(np.float32) / 255.0).astype(np.float32)


def load_run_model(checkpoint, mixed_precision="off"):
    """A trained network (uncompiled) under ``--mixed-precision``; UserError if missing or unreadable."""
    from common.predict import load_checkpoint

    return load_checkpoint(checkpoint, mixed_precision)


def evaluate(run_dir, work_dir, out_dir, study=None, model_name=None, loss=None, weights="last",
             thresholds=THRESHOLDS, verbose=1, dice=None, tta="none", mixed_precision="off", overwrite=False,
             options=None):
    """Predict the test split and write the tables and figures; returns the result row (a dict).

    A K-class run (K > 2 output channels, ``train.py --num-classes K``) is scored per class on the label maps
    instead (``common.multiclass.write_multiclass_results``: ``scores.md``/``.json``, ``multiclass.json``,
    ``labels_test.npy``, ``overlay.png``); its row holds ``num_classes``, ``mean foreground Dice`` and ``scores``.

    ``study`` is the prepared study whose test split is predicted (default: the run's, else dataset1);
    ``model_name``, ``loss`` and ``dice`` are used only for a run without train.py's settings. ``out_dir`` is
    written all at once (a temporary folder renamed at the end) and an existing one is replaced only with
    ``overwrite``; it gets ``run.json`` (the commit, the checkpoint and its SHA-256, ``options``).
    """
    from common.data.io import atomic_dir, save_npy
    from common.provenance import write_run_json
    from common.report import overlay_grid, read_history, write_table

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    checkpoint = run_dir / f"{weights}.keras"
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: checkpoint not found; run fingernail/train.py first, or give --run-dir")
    if out_dir.exists() and not overwrite:
        raise UserError(f"{out_dir}: holds earlier results; pass --overwrite to replace them, or another --out-dir")
    if not thresholds:
        raise cli.option_error("--thresholds", "give at least one threshold")
    recipe = run_settings(run_dir, study, model_name, loss, dice)
    study = study or recipe["study"] or "dataset1"
    _, (x_te, y_te) = load_split(work_dir, study)
    model = load_run_model(checkpoint, mixed_precision)
    prob = predict_probabilities(model, x_te, tta=tta, verbose=verbose)

    def run_json(folder):
        write_run_json(folder, model_name=model.name, weights=[checkpoint],
                       options=dict(options or {}, run_dir=str(run_dir), study=study, weights=weights, tta=tta,
                                    mixed_precision=mixed_precision, thresholds=list(thresholds)),
                       inputs=[Path(work_dir) / study / "x_test.npy", Path(work_dir) / study / "y_test.npy"])

    if prob.shape[-1] > 2:  # a multi-class run (train.py --num-classes K): per-class scores of the argmax labels
        from common.multiclass import write_multiclass_results

        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            save_npy(tmp / "pred_test.npy", prob)
            scores = write_multiclass_results(
                tmp, model.name, y_te, prob, images=x_te, verbose=verbose,
                title=f"Test split of {run_dir.name} ({len(x_te)} images, {prob.shape[-1]} classes: per class and "
                      f"the mean over the foreground classes; HD95/ASSD in pixels)")
            run_json(tmp)
        return {"model": model.name, "data": study, "weights": weights, "tta": tta, "test images": len(x_te),
                "num_classes": int(prob.shape[-1]), "mean foreground Dice": scores["mean"]["dice"],
                "scores": scores}

    nb, readme, note = paper_value(recipe["model"], study, recipe["loss"], recipe["dice"])
    if nb == nb:
        note = comparison_note(note, recipe["settings"])
    if tta != "none" or mixed_precision != "off":
        nb, readme = float("nan"), float("nan")
        note = f"not comparable: --tta {tta} / --mixed-precision {mixed_precision} (the original: none / off)"
    row = {"model": model.name, "data": study, "loss": recipe["loss"] or "?",
           "dice": recipe["dice"], "loss variant": loss_label(recipe["loss"], recipe["dice"]) if recipe["loss"]
           else "?", "weights": weights, "tta": tta, "test images": len(x_te)}
    for t in thresholds:
        row[f"Dice@{t:g}"] = dice_coefficient(y_te, prob, t)
    row["paper (nb, @0.3)"] = nb
    row["paper (README)"] = readme
    row["paper comparison"] = note
    row.update(surface_columns(y_te, prob, thresholds[0]))
    history = read_history(run_dir / "history.csv")
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        save_npy(tmp / "pred_test.npy", prob)
        write_table([row], tmp / "dice", title=f"Test-split Dice of {run_dir.name}")
        write_table(paper_rows(), tmp / "paper", title="Paper: test-split Dice (final epoch, threshold 0.3)")
        overlay_grid(x_te, y_te, (prob > thresholds[0]).astype(np.float32), tmp / "overlay.png",
                     titles=("image", "ground truth", f"prediction > {thresholds[0]:g}"))
        if history and "val_dice_metric" in history:
            plot_training_curves(history, tmp / "training_curves.png", title=run_dir.name)
        run_json(tmp)
    return row


def surface_columns(y_true, prob, threshold):
    """Extra columns beside the original's: mean HD95 and ASSD (pixels of the network's input) of the
    images whose truth and prediction (> ``threshold``) both have foreground, and how many were left out."""
    from common.metrics import surface_scores

    scores = surface_scores(np.asarray(y_true)[..., 0] != 0, np.asarray(prob)[..., 0] > threshold)
    return {f"HD95@{threshold:g} (px)": scores["hd95_mean"], f"ASSD@{threshold:g} (px)": scores["assd_mean"],
            "images without HD95 (an empty mask)": scores["n_one_empty"] + scores["n_both_empty"]}


def build_parser():
    from common.devices import add_precision_arguments
    from common.inference import add_tta_argument

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="root of prepare_data.py's output (default: %(default)s)")
    parser.add_argument("--study", default=None,
                        help="prepared study whose test split is predicted (default: the run's, else dataset1)")
    parser.add_argument("--model", choices=sorted(MODELS), default="unet2d_8_128",
                        help="network of the run (default: %(default)s)")
    parser.add_argument("--loss", choices=LOSSES, default="bce_dice", help="loss of the run (default: %(default)s)")
    parser.add_argument("--dice", choices=DICE_VARIANTS, default="pixel",
                        help="Dice variant of the run's bce_dice loss, to find its default folder (default: "
                             "%(default)s, the original's); the run's state.json decides what is reported")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of the run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="batch size of the run (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="training run folder (default: the one train.py derives from the options above; "
                             "a run with other recipe options: give its folder)")
    parser.add_argument("--weights", choices=("last", "best"), default="last",
                        help="checkpoint to evaluate (default: last, as the original)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS),
                        help="binarisation thresholds, the first one is used for the overlay and HD95/ASSD "
                             "(default: 0.3 0.5)")
    add_tta_argument(parser)
    add_precision_arguments(parser, jit_compile=False)
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: <work-dir>/results/<run folder name>, plus _BEST, "
                             "_TTA_FLIP or _<precision> for those options)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already in --out-dir")
    parser.add_argument("--quiet", action="store_true", help="no prediction progress bar")
    return parser


def default_out_dir(work_dir, run_dir, weights="last", tta="none", mixed_precision="off"):
    """``<work-dir>/results/<run folder name>[_BEST][_TTA_FLIP][_FLOAT16]``: keyed by the run and by every
    evaluation option that changes the numbers, so two evaluations never share a folder."""
    from common.run_options import tagged_name

    return Path(work_dir) / "results" / tagged_name(Path(run_dir).name, [
        (weights, "last", lambda w: w.upper()), (tta, "none", lambda t: f"TTA_{t.upper()}"),
        (mixed_precision, "off", lambda p: p.upper())])


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.dice != "pixel" and args.loss != "bce_dice":
        raise cli.option_error("--dice", f"applies to --loss bce_dice only, not {args.loss}; drop it")
    if any(not 0 <= t < 1 for t in args.thresholds):
        raise cli.option_error("--thresholds", f"each must lie in [0, 1), got {args.thresholds}")
    study = args.study or "dataset1"
    if not args.run_dir:  # train.py's default run id: the number of classes comes from the training masks
        from common.multiclass import infer_num_classes

        num_classes = infer_num_classes(load_split(args.work_dir, study)[0][1])
    run_dir = args.run_dir or default_run_dir(args.model, study, args.loss, args.epochs, args.batch_size,
                                              *prepared_size(args.work_dir, study), dice=args.dice,
                                              num_classes=num_classes)
    out_dir = args.out_dir or default_out_dir(args.work_dir, run_dir, args.weights, args.tta, args.mixed_precision)
    row = evaluate(run_dir, args.work_dir, out_dir, args.study, args.model, args.loss, args.weights,
                   args.thresholds, verbose=0 if args.quiet else 1, dice=args.dice, tta=args.tta,
                   mixed_precision=args.mixed_precision, overwrite=args.overwrite,
                   options={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    if "num_classes" in row:
        print(f"{row['model']} ({args.weights} weights, {row['test images']} test images, {row['num_classes']} "
              f"classes): Dice averaged over the foreground classes {row['mean foreground Dice']:.4f}. Tables and "
              f"figures in {out_dir}")
        return row
    scores = ", ".join(f"Dice@{t:g} = {row[f'Dice@{t:g}']:.4f}" for t in args.thresholds)
    paper = (f"paper {row['paper (nb, @0.3)']:.4f}" if row["paper (nb, @0.3)"] == row["paper (nb, @0.3)"]
             else f"paper: {row['paper comparison']}")
    print(f"{row['model']} ({args.weights} weights, {row['test images']} test images, {row['loss variant']}): "
          f"{scores}; {paper}. Tables and figures in {out_dir}")
    return row


if __name__ == "__main__":
    cli.run(main)
