"""Train a fingernail segmentation network on the arrays of prepare_data.py (the notebook's trainer class).

Defaults are the original's: images /255, Adam(lr 1e-5, beta 0.9/0.999, eps 1e-8) with the legacy Keras
``decay=1.99e-7`` (lr_t = lr / (1 + 1.99e-7 t)), batch 2, 220 epochs, no shuffling, seed 144, the held-out
test split as validation data, the thresholded batch Dice ``dice_metric`` as training metric, and the best
checkpoint on ``val_dice_metric``. The run folder gets ``best.keras`` and ``last.keras`` (the paper's Dice is
computed with the LAST epoch's weights; evaluate.py uses them by default), ``history.csv`` and curves.

Losses (``--loss``): ``bce`` = Keras binary cross-entropy; ``bce_dice`` = BCE - log(Dice). By default
(``--dice pixel``) the Dice in that loss is the original's exact one: its sums run over the channel axis only,
so with one channel it is a per-pixel Dice and every background pixel adds the constant -log(1e-7) without
gradient (spec §3). ``--dice image`` (an option, not the original) uses the standard image-level Dice; its
run id gets the tag ``DICE_IMG`` and its scores are not compared with the paper.

Models: unet2d_8_128 (U-Net2D), unet2d_res_32_512 (U-Net2D-Res), unet2d_res_srnn_32_512 (CR-UNet HW),
unet2d_res_srnn_8_128 (CR-UNet LW). The run id is the original's
``Fingernail_<study>_<model name>_<DICE|BCE>_EP<epochs>_BS<batch>_<rows>x<cols>``, followed by a tag for
every recipe option that differs from the original's (``DICE_IMG`` instead of ``DICE`` for the image-level
Dice, ``_LR<lr>``, ``_DECAY<decay>``, ``_SEED<seed>``, ``_SHUFFLE``, ``_FLOAT16``/``_BFLOAT16``), so runs of
different recipes never share a folder. A folder that holds a run is refused (one-line error) unless
``--resume`` continues it or ``--overwrite`` replaces it. ``--mixed-precision`` and ``--jit-compile`` (XLA)
are options the original did not have (off by default).

Examples::

    python fingernail/train.py                                      # U-Net2D, BCE-Dice, the paper's recipe
    python fingernail/train.py --model unet2d_res_srnn_32_512 --loss bce
    python fingernail/train.py --study dataset1+dataset2 --dice image
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.training import add_run_arguments
from fingernail.prepare_data import DEFAULT_WORK, SEED, load_split, prepared_size
from fingernail.task import RECIPE

MODELS = {  # registry name -> the original's Model name
    "unet2d_8_128": "Unet_8x128",
    "unet2d_res_32_512": "Unet_Res_32x512",
    "unet2d_res_srnn_32_512": "Unet_Res_SRNN_32x512",
    "unet2d_res_srnn_8_128": "Unet_Res_SRNN_8x128",
}
LOSSES = ("bce_dice", "bce")
DICE_VARIANTS = ("pixel", "image")  # bce_dice's Dice: the original's per-pixel one (default) or image-level
EPOCHS, BATCH_SIZE, LR, LR_DECAY = (RECIPE[k] for k in ("epochs", "batch_size", "lr", "lr_decay"))  # task.py


def dice_metric(y_true, y_pred):
    """The original's training metric: prediction > 0.5 on channel 0, sums over the whole batch.

    ``2·Σ(y·ŷ) / (Σy + Σŷ + 1e-7)``; Keras reports the mean of the per-batch values. Registered as
    ``fingernail>dice_metric`` for ``.keras`` files by :func:`compile_model` (Keras is imported lazily, so
    ``--help`` is fast).
    """
    import keras

    y_true = keras.ops.cast(y_true[..., 0], "float32")
    y_hat = keras.ops.cast(y_pred[..., 0] > 0.5, "float32")
    return 2.0 * keras.ops.sum(y_true * y_hat) / (keras.ops.sum(y_true) + keras.ops.sum(y_hat) + 1e-7)


def loss_label(loss, dice="pixel"):
    """Human-readable name of a loss variant (written into settings, tables and ``dice.json``)."""
    if loss == "bce":
        return "BCE"
    return "BCE-Dice (original, per-pixel Dice)" if dice == "pixel" else "BCE-Dice (image-level Dice)"


def run_id(study, model, loss, epochs, batch_size, rows, cols, *, dice="pixel", lr=LR, lr_decay=LR_DECAY,
           seed=SEED, shuffle=False, mixed_precision="off"):
    """The original's run id ``Fingernail_<study>_<Model>_<DICE|BCE>_EP<e>_BS<b>_<rows>x<cols>``, plus a tag
    for each recipe option that differs from the original's (so two recipes never share a run folder)."""
    from common.training import tagged_name

    tag = "BCE" if loss == "bce" else ("DICE" if dice == "pixel" else "DICE_IMG")
    return tagged_name(f"Fingernail_{study}_{MODELS[model]}_{tag}_EP{epochs}_BS{batch_size}_{rows}x{cols}", [
        (lr, LR, "LR{:g}"), (lr_decay, LR_DECAY, "DECAY{:g}"), (seed, SEED, "SEED{}"), (shuffle, False, "SHUFFLE"),
        (mixed_precision, "off", lambda p: p.upper())])


def default_run_dir(model, study, loss, epochs, batch_size, rows, cols, **tags):
    """``weights/fingernail/<model>/<run id>`` (``tags`` as :func:`run_id`)."""
    return cli.repo_path("weights", "fingernail", model,
                         run_id(study, model, loss, epochs, batch_size, rows, cols, **tags))


def make_loss(loss, dice="pixel"):
    import keras

    from common.losses import BCEDiceLoss

    if loss == "bce":
        return keras.losses.BinaryCrossentropy(name="binary_crossentropy")
    if loss == "bce_dice":
        if dice not in DICE_VARIANTS:
            raise ValueError(f"unknown Dice variant {dice!r} ({', '.join(DICE_VARIANTS)})")
        return BCEDiceLoss(per_pixel_dice=dice == "pixel")
    raise ValueError(f"unknown loss {loss!r} ({', '.join(LOSSES)})")


def compile_model(model, loss="bce_dice", dice="pixel", lr=LR, lr_decay=LR_DECAY, jit_compile=False):
    """Adam with the legacy Keras ``decay`` as an inverse-time schedule (eps 1e-8 as Keras 2); no XLA unless
    ``jit_compile`` (the original ran TF 2.3 graph mode without it)."""
    import keras

    keras.saving.register_keras_serializable(package="fingernail")(dice_metric)
    schedule = keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, decay_rate=lr_decay) \
        if lr_decay else lr
    model.compile(optimizer=keras.optimizers.Adam(schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
                  loss=make_loss(loss, dice), metrics=[dice_metric], jit_compile=jit_compile)
    return model


def scale_images(xb, yb):
    """uint8 storage -> the original's float input: images / 255, masks 0/1 as float."""
    import numpy as np

    return np.asarray(xb, np.float32) / 255.0, yb


def train(work_dir, run_dir, *, study="dataset1", model_name="unet2d_8_128", loss="bce_dice", dice="pixel",
          epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, lr_decay=LR_DECAY, seed=SEED, shuffle=False, resume=False,
          overwrite=False, mixed_precision="off", jit_compile=False, verbose=1, strategy="default", data_workers=1):
    """Build, compile and fit; returns ``(model, history)`` with the last epoch's weights.

    ``dice`` (``"pixel"``, the original's, or ``"image"``) is used with ``loss="bce_dice"`` only; the run's
    ``state.json`` records it (``settings["dice"]``, None for ``bce``) with every other recipe option. A
    ``run_dir`` that holds a run is refused before the data is loaded unless ``resume`` or ``overwrite``.
    """
    import keras

    from common.devices import set_precision
    from common.models import build_model
    from common.training import array_dataset, check_run_dir, fit, get_strategy

    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    dice = dice if loss == "bce_dice" else None
    strategy = get_strategy(strategy)  # before any other TensorFlow work
    (x_tr, y_tr), (x_te, y_te) = load_split(work_dir, study)
    set_precision(mixed_precision)  # before the model is built
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the weights are initialised (fit() seeds again)
    with strategy.scope():
        model = compile_model(build_model(model_name, x_tr.shape[1:]), loss, dice, lr, lr_decay,
                              jit_compile=jit_compile)
    settings = {"study": study, "model": model_name, "loss": loss, "dice": dice,
                "loss_label": loss_label(loss, dice), "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "lr_decay": lr_decay, "seed": seed, "shuffle": shuffle, "mixed_precision": mixed_precision,
                "jit_compile": jit_compile, "rows": int(x_tr.shape[1]), "cols": int(x_tr.shape[2]),
                "train": len(x_tr), "test": len(x_te)}
    train_ds = array_dataset(x_tr, y_tr, batch_size, shuffle=shuffle, seed=seed, transform=scale_images,
                             num_parallel_calls=data_workers)
    val_ds = array_dataset(x_te, y_te, batch_size, transform=scale_images, num_parallel_calls=data_workers)
    return fit(model, train_ds, val_ds, run_dir=run_dir, epochs=epochs, monitor="val_dice_metric", mode="max",
               resume=resume, overwrite=overwrite, seed=seed, verbose=verbose, settings=settings)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="root of prepare_data.py's output (default: %(default)s)")
    parser.add_argument("--study", default="dataset1",
                        help="prepared study folder under --work-dir: dataset1 or dataset1+dataset2 "
                             "(default: %(default)s)")
    parser.add_argument("--model", choices=sorted(MODELS), default="unet2d_8_128",
                        help="network (default: %(default)s)")
    parser.add_argument("--loss", choices=LOSSES, default="bce_dice",
                        help="bce_dice (BCE - log Dice) or bce (default: %(default)s)")
    parser.add_argument("--dice", choices=DICE_VARIANTS, default="pixel",
                        help="Dice of bce_dice: pixel = the original's (sums over the channel axis only, a "
                             "per-pixel Dice), image = the standard image-level Dice (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=LR, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--lr-decay", type=float, default=LR_DECAY,
                        help="legacy Keras decay, lr/(1 + decay*step); 0 = constant (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s, the original's)")
    parser.add_argument("--shuffle", action="store_true", help="reshuffle every epoch (the original does not)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoints and logs (default: weights/fingernail/<model>/<run id>)")
    add_run_arguments(parser)
    return parser


def check_options(args):
    """Option values argparse cannot check; raises ``OptionError``."""
    if getattr(args, "dice", "pixel") != "pixel" and args.loss != "bce_dice":
        raise cli.option_error("--dice", f"applies to --loss bce_dice only, not {args.loss}; drop it")
    for name in ("epochs", "batch_size"):
        if getattr(args, name, 1) < 1:
            raise cli.option_error(f"--{name.replace('_', '-')}", f"must be at least 1, got {getattr(args, name)}")
    if getattr(args, "lr", 1.0) <= 0 or getattr(args, "lr_decay", 0.0) < 0:
        raise cli.option_error("--lr/--lr-decay", "the learning rate must be > 0 and the decay >= 0")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_options(args)
    dice = args.dice
    rows, cols = prepared_size(args.work_dir, args.study)
    run_dir = args.run_dir or default_run_dir(args.model, args.study, args.loss, args.epochs, args.batch_size,
                                              rows, cols, dice=dice, lr=args.lr, lr_decay=args.lr_decay,
                                              seed=args.seed, shuffle=args.shuffle,
                                              mixed_precision=args.mixed_precision)
    model, history = train(args.work_dir, run_dir, study=args.study, model_name=args.model, loss=args.loss,
                           dice=dice, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           lr_decay=args.lr_decay, seed=args.seed, shuffle=args.shuffle, resume=args.resume,
                           overwrite=args.overwrite, mixed_precision=args.mixed_precision,
                           jit_compile=args.jit_compile, verbose=args.verbose, strategy=args.strategy,
                           data_workers=args.data_workers)
    if history:
        print(f"{model.name}: last val_dice_metric {history['val_dice_metric'][-1]:.4f}, best "
              f"{max(history['val_dice_metric']):.4f}; checkpoints in {run_dir}")
    return run_dir


if __name__ == "__main__":
    cli.run(main)
