"""Train BCDU-Net (BCDU_net_D3) on the random DRIVE patches of save_patch.py (the original's train_retina.py).

Defaults are the original's: ``bcdu_net_d3`` at 64 x 64 x 1 (20,659,717 parameters; the patch size is read
from the patch file), Adam(lr 1e-4), binary cross-entropy, accuracy, batch 8, 50 epochs, shuffled, the LAST
20 % of the patches as validation (Keras ``validation_split``: the last 4 of the 20 training images), the best
``val_loss`` checkpoint, ReduceLROnPlateau(val_loss, factor 0.1, patience 7, min_delta 1e-4).

The patch files are opened as memory maps (the originals' 2 x 6.5 GB arrays were loaded whole); batches are
gathered from them on the fly. The run folder (``--run-dir``, default ``weights/retina_vessel/bcdu_net_d3``)
gets ``best.keras`` (the original's ``weight_lstm.hdf5``), ``last.keras``, ``history.csv`` and curves;
``--resume`` continues an interrupted run; a folder that holds a run is never replaced without ``--overwrite``.
Every option that changes the network or the recipe names the default folder (``bcdu_net_d3`` for the
original's settings, e.g. ``bcdu_net_d3_prior_bias_e10_lr0.001`` otherwise), so variants never collide.
``--strategy mirrored|multi_worker`` distributes the training; ``--mixed-precision`` and ``--jit-compile`` (XLA)
are GPU options, off by default. ``--num-classes`` / ``--multiclass-loss``: for an own dataset prepared with
``prepare_datasets_DRIVE.py --keep-labels`` whose patch masks are label maps 0..K-1 (K > 2), a K-channel softmax
head (the last 1x1 conv; the original's 2-channel ReLU conv before it is kept) trained with the multi-class loss
(``ce`` by default) into ``..._classes<K>``; the default reads K from the patch masks (DRIVE: 2, the original).

    python retina_vessel/train_retina.py                        # the original's 50 epochs
    python retina_vessel/train_retina.py --prior-output-bias    # -> weights/retina_vessel/bcdu_net_d3_prior_bias
    python retina_vessel/train_retina.py --resume               # continue an interrupted run
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.legacy_weights import add_init_weights_argument
from common.run_options import add_run_arguments
from retina_vessel.prepare_datasets_DRIVE import DEFAULT_WORK, read_own_split, split_path
from retina_vessel.save_patch import IMGS_FILE, MASKS_FILE
from retina_vessel.task import DEFAULT_MODEL, RECIPE, add_variant_arguments  # noqa: F401  (one place: task.py)

MODEL = DEFAULT_MODEL  # task.py
EPOCHS, BATCH_SIZE, LR, VAL_SPLIT = (RECIPE[k] for k in ("epochs", "batch_size", "lr", "val_split"))  # task.py
REDUCE_LR = RECIPE["reduce_lr"]
DEFAULT_RUN = cli.repo_path("weights", "retina_vessel", MODEL)  # the faithful run's folder


def run_name(bidirectional=False, prior_bias=False, *, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR,
             val_split=VAL_SPLIT, seed=None, init_weights=None, mixed_precision="off", num_classes=2,
             multiclass_loss="ce"):
    """``bcdu_net_d3[_bidirectional][_prior_bias]`` plus a tag for every other recipe option that differs from
    the original's (``_e10``, ``_b16``, ``_lr0.001``, ``_val0.1``, ``_seed3``, ``_init-<file stem>``,
    ``_mp-float16``, ``_classes<K>[_<multi-class loss>]`` for K > 2): a variant never lands in another's default
    run folder; the faithful run is ``bcdu_net_d3``."""
    from common.run_options import tagged_name

    multiclass = num_classes is not None and num_classes > 2
    return tagged_name(MODEL, [(bidirectional, False, "bidirectional"), (prior_bias, False, "prior_bias"),
                               (epochs, EPOCHS, "e{}"), (batch_size, BATCH_SIZE, "b{}"), (lr, LR, "lr{:g}"),
                               (val_split, VAL_SPLIT, "val{:g}"), (seed, None, "seed{}"),
                               (init_weights, None, lambda p: f"init-{Path(p).stem}"),
                               (mixed_precision, "off", "mp-{}"),
                               (num_classes if multiclass else 2, 2, "classes{}"),
                               (multiclass_loss if multiclass else "ce", "ce", "{}")])


def default_run_dir(bidirectional=False, prior_bias=False, **recipe):
    """``weights/retina_vessel/<run_name>``."""
    return cli.repo_path("weights", "retina_vessel", run_name(bidirectional, prior_bias, **recipe))


def load_patches(work_dir):
    """The patch arrays of save_patch.py as read-only memory maps ``(x, y)``; ``UserError`` if they are missing,
    unreadable or do not match."""
    from common.errors import UserError

    work_dir = Path(work_dir)
    arrays = []
    for name in (IMGS_FILE, MASKS_FILE):
        path = work_dir / name
        if not path.is_file():
            raise FileNotFoundError(2, "not found; run retina_vessel/save_patch.py first", str(path))
        try:
            arrays.append(np.load(path, mmap_mode="r"))
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{path}: not a readable .npy patch file ({' '.join(str(exc).split())[:120]}); "
                            f"run retina_vessel/save_patch.py again") from None
    x, y = arrays
    if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[-1] != 1:
        raise UserError(f"{work_dir / IMGS_FILE}: patch array of shape {x.shape}, expected (N, P, P, 1); "
                        f"run retina_vessel/save_patch.py again")
    if y.shape != x.shape:
        raise UserError(f"{work_dir / MASKS_FILE}: shape {y.shape} does not match the images {x.shape} of "
                        f"{IMGS_FILE}; the two files come from different save_patch.py runs, run it again")
    return x, y


def split_own_patches(own, work_dir, x, y):
    """Own data: the patches of the last ``counts.val`` training images of ``split.json`` (save_patch.py draws
    the same number from every image, in image order) are the validation part."""
    from common.errors import UserError

    n_images = own["counts"]["train"] + own["counts"]["val"]
    if len(x) % n_images:
        raise UserError(f"{Path(work_dir) / IMGS_FILE}: {len(x)} patches are not an equal share of the {n_images} "
                        f"training images of {split_path(work_dir)}; run retina_vessel/save_patch.py --overwrite")
    n_val = len(x) // n_images * own["counts"]["val"]
    return (x[:len(x) - n_val], y[:len(y) - n_val]), (x[len(x) - n_val:], y[len(y) - n_val:])


def compile_model(model, lr=LR, jit_compile=False):
    """The original's compile: Adam(lr), binary cross-entropy, accuracy (``jit_compile``: XLA, an option)."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="binary_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def train(work_dir, run_dir, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, val_split=VAL_SPLIT, seed=None,
          bidirectional=False, prior_bias=False, resume=False, verbose=1, strategy="default", overwrite=False,
          mixed_precision="off", jit_compile=False, callbacks=(), init_weights=None, data_workers=1,
          num_classes=None, multiclass_loss="ce"):
    """Build, compile and fit; returns ``(model, history)`` (the trained model, last epoch's weights).

    A ``run_dir`` that holds a run is refused (nothing touched) unless ``resume`` or ``overwrite``;
    ``callbacks`` are passed to ``common.training.fit``. With an own-data ``split.json`` (prepare_datasets_DRIVE.py
    ``--images``) the validation part is the patches of its val images and ``val_split`` is not used.

    ``num_classes``: None = from the patch masks (``common.multiclass.resolve_num_classes``: DRIVE's 0/1 vessels
    give 2, the original's head); K > 2 (an own dataset prepared with ``--keep-labels``, patch masks 0..K-1)
    builds the network with a K-channel softmax head and trains it with ``multiclass_loss`` (an option, not the
    original; ``prior_bias`` and ``init_weights`` belong to the binary head and are refused)."""
    import keras

    from common.devices import set_precision
    from common.errors import OptionError
    from common.models import build_model
    from common.multiclass import compile_multiclass, is_multiclass, resolve_num_classes
    from common.training import check_run_dir, fit, foreground_fraction, get_strategy, set_output_prior, split_last

    check_run_dir(run_dir, resume=resume, overwrite=overwrite)  # before any data is loaded
    own = read_own_split(work_dir)  # own data: validate on the patches of split.json's val images
    if not 0 < val_split < 1:
        raise OptionError(f"--val-split: {val_split} must lie strictly between 0 and 1")
    strategy = get_strategy(strategy)  # before any other TensorFlow work
    x, y = load_patches(work_dir)
    num_classes = resolve_num_classes(num_classes, y)
    multiclass = is_multiclass(num_classes)
    if multiclass:
        for option, given in (("--prior-output-bias", prior_bias), ("--init-weights", init_weights is not None)):
            if given:
                raise OptionError(f"{option}: belongs to the original's binary head, not a {num_classes}-class "
                                  f"softmax head")
    if own is not None:
        (x_tr, y_tr), (x_val, y_val) = split_own_patches(own, work_dir, x, y)
        val_split = own["counts"]["val"] / (own["counts"]["train"] + own["counts"]["val"])
    else:
        try:
            (x_tr, y_tr), (x_val, y_val) = split_last(val_split, x, y)
        except ValueError as exc:
            raise OptionError(f"--val-split: {exc} ({len(x)} patches)") from None
    set_precision(mixed_precision)
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the weights are initialised
    with strategy.scope():
        if multiclass:
            model = compile_multiclass(build_model(MODEL, x.shape[1:], bidirectional=bidirectional,
                                                   num_classes=num_classes),
                                       multiclass_loss, lr=lr, jit_compile=jit_compile)
        else:
            model = compile_model(build_model(MODEL, x.shape[1:], bidirectional=bidirectional), lr, jit_compile)
        if init_weights is not None:  # the authors' Keras-2 checkpoint as the starting point
            from common.legacy_weights import load_legacy_weights

            load_legacy_weights(model, init_weights)
        prior = set_output_prior(model, foreground_fraction(y_tr)) if prior_bias else None
    settings = {"prior_bias": prior, "model": MODEL, "input": list(x.shape[1:]), "epochs": epochs,
                "batch_size": batch_size, "lr": lr,
                "val_split": val_split, "seed": seed, "bidirectional": bidirectional, "train": len(x_tr),
                "validation": len(x_val), "mixed_precision": mixed_precision, "jit_compile": jit_compile,
                "init_weights": None if init_weights is None else str(init_weights), "num_classes": num_classes,
                "multiclass_loss": multiclass_loss if multiclass else None}
    return fit(model, (x_tr, y_tr), (x_val, y_val), run_dir=run_dir, epochs=epochs, batch_size=batch_size,
               monitor="val_loss", mode="min", resume=resume, overwrite=overwrite, seed=seed, reduce_lr=REDUCE_LR,
               verbose=verbose, settings=settings, callbacks=callbacks, data_workers=data_workers)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with save_patch.py's patch files (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoints and logs (default: weights/retina_vessel/bcdu_net_d3 plus a tag per "
                             "non-default option, e.g. bcdu_net_d3_prior_bias_e10_lr0.001)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=LR, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--val-split", type=float, default=VAL_SPLIT,
                        help="last fraction of the patches used for validation (default: %(default)s; not used "
                             "with your own data's split.json: its val images are the validation part)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: none, as the original)")
    add_variant_arguments(parser)
    add_init_weights_argument(parser)
    add_run_arguments(parser)
    from common.multiclass import add_num_classes_arguments

    add_num_classes_arguments(parser, default_loss="ce")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    num_classes = args.num_classes
    if not args.run_dir:  # the default run folder names K > 2 classes: read K from the patch masks first
        from common.multiclass import resolve_num_classes

        num_classes = resolve_num_classes(num_classes, load_patches(args.work_dir)[1])
    run_dir = args.run_dir or default_run_dir(
        args.bidirectional, args.prior_bias, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        val_split=args.val_split, seed=args.seed, init_weights=args.init_weights,
        mixed_precision=args.mixed_precision, num_classes=num_classes, multiclass_loss=args.multiclass_loss)
    model, history = train(args.work_dir, run_dir, args.epochs, args.batch_size, args.lr, args.val_split,
                           args.seed, args.bidirectional, args.prior_bias, args.resume, args.verbose,
                           args.strategy, overwrite=args.overwrite, mixed_precision=args.mixed_precision,
                           jit_compile=args.jit_compile, init_weights=args.init_weights,
                           data_workers=args.data_workers, num_classes=num_classes,
                           multiclass_loss=args.multiclass_loss)
    if history:
        print(f"{model.name}: best val_loss {min(history['val_loss']):.4f}; checkpoints in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
