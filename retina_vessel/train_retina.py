"""Train BCDU-Net (BCDU_net_D3) on the random DRIVE patches of save_patch.py (the original's train_retina.py).

Defaults are the original's: ``bcdu_net_d3`` at 64 x 64 x 1 (20,659,717 parameters; the patch size is read
from the patch file), Adam(lr 1e-4), binary cross-entropy, accuracy, batch 8, 50 epochs, shuffled, the LAST
20 % of the patches as validation (Keras ``validation_split``: the last 4 of the 20 training images), the best
``val_loss`` checkpoint, ReduceLROnPlateau(val_loss, factor 0.1, patience 7, min_delta 1e-4).

The patch files are opened as memory maps (the originals' 2 x 6.5 GB arrays were loaded whole); batches are
gathered from them on the fly. The run folder (``--run-dir``, default ``weights/retina_vessel/bcdu_net_d3``)
gets ``best.keras`` (the original's ``weight_lstm.hdf5``), ``last.keras``, ``history.csv`` and curves;
``--resume`` continues an interrupted run. ``--strategy mirrored|multi_worker`` distributes the training.
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.training import add_strategy_argument
from retina_vessel.prepare_datasets_DRIVE import DEFAULT_WORK
from retina_vessel.save_patch import IMGS_FILE, MASKS_FILE

MODEL = "bcdu_net_d3"
EPOCHS, BATCH_SIZE, LR, VAL_SPLIT = 50, 8, 1e-4, 0.2
REDUCE_LR = {"factor": 0.1, "patience": 7, "min_delta": 1e-4, "cooldown": 0, "min_lr": 0.0}
DEFAULT_RUN = cli.repo_path("weights", "retina_vessel", MODEL)  # the faithful run's folder


def run_name(bidirectional=False, prior_bias=False):
    """``bcdu_net_d3[_bidirectional][_prior_bias]``: every option that changes the network or its
    initialisation has its own default run folder."""
    return MODEL + ("_bidirectional" if bidirectional else "") + ("_prior_bias" if prior_bias else "")


def default_run_dir(bidirectional=False, prior_bias=False):
    """``weights/retina_vessel/<run_name>``."""
    return cli.repo_path("weights", "retina_vessel", run_name(bidirectional, prior_bias))


def load_patches(work_dir):
    """The patch arrays of save_patch.py as read-only memory maps ``(x, y)``."""
    work_dir = Path(work_dir)
    arrays = []
    for name in (IMGS_FILE, MASKS_FILE):
        path = work_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run retina_vessel/save_patch.py first")
        arrays.append(np.load(path, mmap_mode="r"))
    x, y = arrays
    if x.ndim != 4 or x.shape[:3] != y.shape[:3] or x.shape[1] != x.shape[2]:
        raise ValueError(f"{work_dir}: patch arrays {x.shape} and {y.shape} do not match")
    return x, y


def compile_model(model, lr=LR):
    """The original's compile: Adam(lr), binary cross-entropy, accuracy."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def train(work_dir, run_dir, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, val_split=VAL_SPLIT, seed=None,
          bidirectional=False, prior_bias=False, resume=False, verbose=1, strategy="default"):
    """Build, compile and fit; returns ``(model, history)`` (the trained model, last epoch's weights)."""
    import keras

    from common.models import build_model
    from common.training import fit, foreground_fraction, get_strategy, set_output_prior, split_last

    strategy = get_strategy(strategy)  # before any other TensorFlow work
    x, y = load_patches(work_dir)
    (x_tr, y_tr), (x_val, y_val) = split_last(val_split, x, y)
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the weights are initialised
    with strategy.scope():
        model = compile_model(build_model(MODEL, x.shape[1:], bidirectional=bidirectional), lr)
        prior = set_output_prior(model, foreground_fraction(y_tr)) if prior_bias else None
    settings = {"prior_bias": prior, "model": MODEL, "input": list(x.shape[1:]), "epochs": epochs,
                "batch_size": batch_size, "lr": lr,
                "val_split": val_split, "seed": seed, "bidirectional": bidirectional, "train": len(x_tr),
                "validation": len(x_val)}
    return fit(model, (x_tr, y_tr), (x_val, y_val), run_dir=run_dir, epochs=epochs, batch_size=batch_size,
               monitor="val_loss", mode="min", resume=resume, seed=seed, reduce_lr=REDUCE_LR, verbose=verbose,
               settings=settings)


def add_variant_arguments(parser, trained=False):
    """``--bidirectional`` and ``--prior-output-bias``: the options that name the default run folder (shared with
    evaluate.py, where they select that folder)."""
    did = "the run used " if trained else ""
    parser.add_argument("--bidirectional", action="store_true",
                        help=did + "forward + backward ConvLSTM fusion (the paper's description; the original code "
                                   "has only the backward layer)")
    parser.add_argument("--prior-output-bias", "--prior-bias", dest="prior_bias", action="store_true",
                        help=did + "start the sigmoid output at the training vessel share instead of 0.5 (keeps the "
                                   "original's 2-channel ReLU head from dying early; default: off, as the original)")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with save_patch.py's patch files (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoints and logs (default: weights/retina_vessel/bcdu_net_d3"
                             "[_bidirectional][_prior_bias])")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=LR, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--val-split", type=float, default=VAL_SPLIT,
                        help="last fraction of the patches used for validation (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: none, as the original)")
    add_variant_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --run-dir")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    add_strategy_argument(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    run_dir = args.run_dir or default_run_dir(args.bidirectional, args.prior_bias)
    model, history = train(args.work_dir, run_dir, args.epochs, args.batch_size, args.lr, args.val_split,
                           args.seed, args.bidirectional, args.prior_bias, args.resume, args.verbose,
                           args.strategy)
    if history:
        print(f"{model.name}: best val_loss {min(history['val_loss']):.4f}; checkpoints in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
