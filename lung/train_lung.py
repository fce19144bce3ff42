"""Train BCDU-Net on the prepared lung CT slices (the original's train_lung.py).

Defaults are the original's: BCDU_net_D3 at 512x512x1 (20,659,717 parameters; ``--model bcdu_net_d1`` is the
Lung folder's D1, 8,861,189 parameters, whose bottleneck output is used without its dropout), input
``data_train / 255``, target the around-lung mask ``Train_maska`` (0/1), binary cross-entropy,
Adam(lr 1e-4, eps 1e-7), accuracy as metric, batch 2, 50 epochs, shuffled every epoch, the LAST 20 % of the
training slices as validation (Keras ``validation_split``), the best checkpoint on val_loss and
ReduceLROnPlateau(val_loss, factor 0.1, patience 7, min_delta 1e-4). The run folder (default
``weights/lung/<model>``) gets ``best.keras`` (the original's ``weight_lung``), ``last.keras``,
``history.csv`` (the original's ``hist_lung`` pickle) and training curves.
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.training import add_strategy_argument
from lung.prepare_data import DEFAULT_WORK, load_arrays

MODELS = ("bcdu_net_d3", "bcdu_net_d1")
EPOCHS, BATCH_SIZE, LR, VAL_SPLIT = 50, 2, 1e-4, 0.2
REDUCE_LR = {"factor": 0.1, "patience": 7, "min_delta": 1e-4, "cooldown": 0, "min_lr": 0.0, "verbose": 1}


def default_run_dir(model_name):
    return cli.repo_path("weights", "lung", model_name)


def build(model_name, size, bidirectional=False):
    """The Lung folder's network for ``size x size x 1`` slices (its D1 feeds the undropped bottleneck on)."""
    from common.models import build_model

    options = {"bidirectional": bidirectional}
    if model_name == "bcdu_net_d1":
        options["bottleneck_dropout"] = 0.0
    return build_model(model_name, (size, size, 1), **options)


def compile_model(model, lr=LR):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7),
                  loss="binary_crossentropy", metrics=["accuracy"])
    return model


def scale_images(xb, yb):
    """Stored slices (0..255) -> the original's network input ``/ 255``; the 0/1 target as float."""
    return xb / 255.0, yb


def train(work_dir, run_dir, model_name="bcdu_net_d3", bidirectional=False, epochs=EPOCHS, batch_size=BATCH_SIZE,
          lr=LR, val_split=VAL_SPLIT, seed=None, resume=False, verbose=1, strategy="default"):
    """Build, compile and fit; returns ``(model, history)``."""
    import keras

    from common.training import array_dataset, fit, get_strategy, split_last

    strategy = get_strategy(strategy)  # before any other TensorFlow work
    arrays = load_arrays(work_dir, "train", ("image", "target"))
    x, y = arrays["image"][..., None], arrays["target"][..., None]  # (n, S, S, 1) views of the memory maps
    size = x.shape[1]
    (x_tr, y_tr), (x_val, y_val) = split_last(val_split, x, y)
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the weights are initialised (fit() seeds again)
    with strategy.scope():
        model = compile_model(build(model_name, size, bidirectional), lr)
    settings = {"model": model_name, "bidirectional": bidirectional, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "val_split": val_split, "seed": seed, "slice_size": size, "train": len(x_tr),
                "validation": len(x_val)}
    train_ds = array_dataset(x_tr, y_tr, batch_size, shuffle=True, seed=seed, transform=scale_images)
    val_ds = array_dataset(x_val, y_val, batch_size, transform=scale_images)
    return fit(model, train_ds, val_ds, run_dir=run_dir, epochs=epochs, monitor="val_loss", mode="min",
               resume=resume, seed=seed, reduce_lr=REDUCE_LR, verbose=verbose, settings=settings)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with the arrays of prepare_data.py (default: %(default)s)")
    parser.add_argument("--model", choices=MODELS, default="bcdu_net_d3", help="network (default: %(default)s)")
    parser.add_argument("--bidirectional", action="store_true",
                        help="forward + backward ConvLSTM fusions summed (the paper's description) instead of "
                             "the original code's single backward ConvLSTM")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=LR, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--val-split", type=float, default=VAL_SPLIT,
                        help="last fraction of the training slices used for validation (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: none, as the original)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoints and logs (default: weights/lung/<model>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --run-dir")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    add_strategy_argument(parser)
    args = parser.parse_args(argv)
    run_dir = args.run_dir or default_run_dir(args.model)
    model, history = train(args.work_dir, run_dir, args.model, args.bidirectional, args.epochs, args.batch_size,
                           args.lr, args.val_split, args.seed, args.resume, args.verbose, args.strategy)
    if history:
        print(f"{model.name}: best val_loss {min(history['val_loss']):.4f}; checkpoints in {run_dir}")
    return run_dir


if __name__ == "__main__":
    cli.run(main)
