"""Train BCDU-Net on the prepared lung CT slices (the original's train_lung.py).

Defaults are the original's: BCDU_net_D3 at 512x512x1 (20,659,717 parameters; ``--model bcdu_net_d1`` is the
Lung folder's D1, 8,861,189 parameters, whose bottleneck output is used without its dropout), input
``data_train / 255``, target the around-lung mask ``Train_maska`` (0/1), binary cross-entropy,
Adam(lr 1e-4, eps 1e-7), accuracy as metric, batch 2, 50 epochs, shuffled every epoch, the LAST 20 % of the
training slices as validation (Keras ``validation_split``), the best checkpoint on val_loss and
ReduceLROnPlateau(val_loss, factor 0.1, patience 7, min_delta 1e-4). The run folder (default
``weights/lung/<model>``) gets ``best.keras`` (the original's ``weight_lung``), ``last.keras``,
``history.csv`` (the original's ``hist_lung`` pickle) and training curves. Data prepared from your own
volumes or slices (prepare_data.py ``--images`` / ``--nnunet-dataset``) is validated on its validation cases'
slices, stored last in the train arrays (``n_val`` in split.json), instead of the last ``--val-split``.

A run folder that already holds a run is refused (``--resume`` continues it, ``--overwrite`` replaces it);
every option that changes the network or the recipe is part of the default folder's name, so two variants
never share one. Options beyond the original: ``--bidirectional``, ``--mixed-precision``, ``--jit-compile``,
``--init-weights`` (the authors' Keras-2 ``weight_lung``), ``--strategy``, ``--seed``, and ``--num-classes`` /
``--multiclass-loss`` for prepared targets that are label maps 0..K-1 (K > 2: a K-channel softmax head; the
default is split.json's ``num_classes`` of own label maps prepared with ``prepare_data.py --keep-labels``, else K
read from the targets: this task's own around-lung targets are binary, so 2; the run folder gets
``_classes<K>``; evaluate_performance.py scores such a run per class, predict.py writes label maps).

Examples::

    python lung/train_lung.py                                   # the original: -> weights/lung/bcdu_net_d3/
    python lung/train_lung.py --bidirectional                   # -> weights/lung/bcdu_net_d3_bidirectional/
    python lung/train_lung.py --resume                          # continue the killed default run
    python lung/train_lung.py --mixed-precision bfloat16 --jit-compile --run-dir /scratch/lung_bf16
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.legacy_weights import add_init_weights_argument
from common.run_options import add_run_arguments
from lung.prepare_data import DEFAULT_WORK, load_arrays, read_summary, split_num_classes
from lung.task import MODELS, RECIPE  # noqa: F401  (MODELS: the networks, one place)

EPOCHS, BATCH_SIZE, LR, VAL_SPLIT = (RECIPE[k] for k in ("epochs", "batch_size", "lr", "val_split"))  # task.py
ADAM = RECIPE["adam"]
REDUCE_LR = {**RECIPE["reduce_lr"], "verbose": 1}
#: recipe options that appear in the default run folder's name when they differ from the original's
RECIPE_DEFAULTS = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr": LR, "val_split": VAL_SPLIT, "seed": None,
                   "mixed_precision": "off", "init_weights": None, "num_classes": 2, "multiclass_loss": "ce"}
_NAME_PARTS = {"epochs": "epochs{}", "batch_size": "batch{}", "lr": "lr{:g}", "val_split": "val{:g}",
               "seed": "seed{}", "mixed_precision": "{}", "init_weights": lambda p: f"init-{Path(p).name}",
               "num_classes": "classes{}", "multiclass_loss": "{}"}


def run_name(model_name, bidirectional=False, **recipe):
    """Default run folder name: the model, ``_bidirectional``, and every recipe option (``RECIPE_DEFAULTS``)
    that differs from the original's, e.g. ``bcdu_net_d3``, ``bcdu_net_d3_bidirectional_epochs4_lr0.001``.

    Two runs that differ in the network or the training recipe never share a default folder.
    """
    unknown = set(recipe) - set(RECIPE_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown recipe options {sorted(unknown)}")
    from common.run_options import tagged_name

    return tagged_name(model_name, [(bidirectional, False, "bidirectional")] + [
        (recipe.get(key, default), default, _NAME_PARTS[key]) for key, default in RECIPE_DEFAULTS.items()])


def default_run_dir(model_name, bidirectional=False, **recipe):
    """``weights/lung/<run_name(...)>`` (``weights/lung/bcdu_net_d3`` with the original's settings)."""
    return cli.repo_path("weights", "lung", run_name(model_name, bidirectional, **recipe))


def build(model_name, size, bidirectional=False, num_classes=2):
    """The Lung folder's network for ``size x size x 1`` slices (its D1 feeds the undropped bottleneck on);
    ``num_classes`` > 2: a K-channel softmax head (an option for label-map targets)."""
    from common.models import build_model

    options = {"bidirectional": bidirectional}
    if num_classes and num_classes > 2:
        options["num_classes"] = num_classes
    if model_name == "bcdu_net_d1":
        options["bottleneck_dropout"] = 0.0
    return build_model(model_name, (size, size, 1), **options)


def compile_model(model, lr=LR, jit_compile=False):
    """The original's compile: Adam(lr, beta 0.9/0.999, eps 1e-7), binary cross-entropy, accuracy."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr, **ADAM), loss="binary_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def scale_images(xb, yb):
    """Stored slices (0..255) -> the original's network input ``/ 255``; the 0/1 target as float."""
    import numpy as np

    return np.asarray(xb, np.float32) / 255.0, yb


def own_val_count(work_dir):
    """The number of validation slices at the end of the train arrays of an own-data folder (split.json's
    ``n_val``, written by prepare_data.py for --images/--nnunet-dataset), or None (the Kaggle layout: the
    last ``--val-split`` validates, as the original's Keras ``validation_split``)."""
    path = Path(work_dir) / "split.json"
    if not path.is_file():
        return None
    n_val = read_summary(work_dir).get("n_val")
    return None if n_val is None else int(n_val)


def train(work_dir, run_dir, model_name="bcdu_net_d3", bidirectional=False, epochs=EPOCHS, batch_size=BATCH_SIZE,
          lr=LR, val_split=VAL_SPLIT, seed=None, resume=False, verbose=1, strategy="default", overwrite=False,
          mixed_precision="off", jit_compile=False, init_weights=None, data_workers=1, num_classes=None,
          multiclass_loss="ce", in_memory=False):
    """Build, compile and fit; returns ``(model, history)``.

    ``num_classes``: None = split.json's ``num_classes`` of own label maps (``prepare_data.py --keep-labels``),
    else from the training targets (``common.multiclass.resolve_num_classes``; the prepared around-lung targets
    are 0/1, so 2); K > 2 (targets that are label maps 0..K-1) trains a K-channel softmax
    head with ``multiclass_loss`` (an option, not the original).

    The run folder is checked first (:func:`common.training.check_run_dir`: a folder holding a run is
    refused without ``resume`` or ``overwrite``), before any data is read.
    """
    import keras

    from common.devices import set_precision
    from common.multiclass import compile_multiclass, is_multiclass, resolve_num_classes
    from common.training import array_dataset, check_run_dir, fit, get_strategy, split_last

    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    strategy = get_strategy(strategy)  # before any other TensorFlow work
    arrays = load_arrays(work_dir, "train", ("image", "target"))
    x, y = arrays["image"][..., None], arrays["target"][..., None]  # (n, S, S, 1) views of the memory maps
    size = x.shape[1]
    if num_classes is None:  # an own label-map dataset's K (split.json), else read from the targets
        num_classes = split_num_classes(work_dir)
    num_classes = resolve_num_classes(num_classes, arrays["target"])
    multiclass = is_multiclass(num_classes)
    if multiclass and init_weights is not None:
        raise cli.option_error("--init-weights", f"the authors' checkpoint has the binary head, not {num_classes} "
                                                 f"classes")
    n_val = own_val_count(work_dir)
    if n_val is None:
        (x_tr, y_tr), (x_val, y_val) = split_last(val_split, x, y)
    else:  # own data: the validation cases' slices are the last n_val (split.json), not the last val_split
        (x_tr, y_tr), (x_val, y_val) = (x[:len(x) - n_val], y[:len(y) - n_val]), (x[len(x) - n_val:],
                                                                                  y[len(y) - n_val:])
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the weights are initialised (fit() seeds again)
    set_precision(mixed_precision)  # before the model is built
    with strategy.scope():
        model = build(model_name, size, bidirectional, **({"num_classes": num_classes} if multiclass else {}))
        if init_weights is not None:
            from common.legacy_weights import load_legacy_weights

            load_legacy_weights(model, init_weights)
        if multiclass:
            model = compile_multiclass(model, multiclass_loss, jit_compile=jit_compile,
                                       optimizer=keras.optimizers.Adam(learning_rate=lr, **ADAM))
        else:
            model = compile_model(model, lr, jit_compile)
    settings = {"model": model_name, "bidirectional": bidirectional, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "val_split": val_split if n_val is None else "split.json n_val", "seed": seed,
                "slice_size": size, "train": len(x_tr),
                "validation": len(x_val), "mixed_precision": mixed_precision, "jit_compile": jit_compile,
                "init_weights": None if init_weights is None else str(init_weights), "num_classes": num_classes,
                "multiclass_loss": multiclass_loss if multiclass else None}
    train_ds = array_dataset(x_tr, y_tr, batch_size, shuffle=True, seed=seed, transform=scale_images,
                             num_parallel_calls=data_workers, in_memory=in_memory)
    val_ds = array_dataset(x_val, y_val, batch_size, transform=scale_images, num_parallel_calls=data_workers,
                           in_memory=in_memory)
    return fit(model, train_ds, val_ds, run_dir=run_dir, epochs=epochs, monitor="val_loss", mode="min",
               resume=resume, overwrite=overwrite, seed=seed, reduce_lr=REDUCE_LR, verbose=verbose,
               settings=settings)


def check_options(args):
    """One-line ``OptionError`` for option values the original's recipe cannot run with."""
    if args.epochs < 1:
        raise cli.option_error("--epochs", f"{args.epochs} must be at least 1")
    if args.batch_size < 1:
        raise cli.option_error("--batch-size", f"{args.batch_size} must be at least 1")
    if not args.lr > 0:
        raise cli.option_error("--lr", f"{args.lr} must be a positive learning rate")
    if not 0 < args.val_split < 1:
        raise cli.option_error("--val-split", f"{args.val_split} must lie strictly between 0 and 1")
    if args.init_weights is not None and not Path(args.init_weights).is_file():
        raise cli.option_error("--init-weights", f"{args.init_weights}: file not found")


def build_parser():
    """The command line (defaults = the original's settings; pinned by tests/test_lung.py)."""
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
                        help="checkpoints and logs (default: weights/lung/<model>[_bidirectional][_<each "
                             "recipe option that differs from the original, e.g. epochs4_lr0.001>])")
    add_run_arguments(parser)
    parser.add_argument("--in-memory", action="store_true",
                        help="hold the training and validation arrays in memory as float32 tensors (batches gathered "
                             "inside the pipeline, no Python call per batch): the same batches; needs "
                             "4 bytes a pixel of every slice (2,000 slices of 512x512: 2.1 GB). "
                             "Default: off (memory maps)")
    add_init_weights_argument(parser)
    from common.multiclass import add_num_classes_arguments

    add_num_classes_arguments(parser, default_loss="ce")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_options(args)
    num_classes = args.num_classes
    if not args.run_dir:  # the default run folder names K > 2 classes: read K from the targets first
        from common.multiclass import resolve_num_classes

        num_classes = resolve_num_classes(num_classes if num_classes is not None else
                                          split_num_classes(args.work_dir),
                                          load_arrays(args.work_dir, "train", ("target",))["target"])
    multiclass = bool(num_classes and num_classes > 2)
    run_dir = args.run_dir or default_run_dir(args.model, args.bidirectional, epochs=args.epochs,
                                              batch_size=args.batch_size, lr=args.lr, val_split=args.val_split,
                                              seed=args.seed, mixed_precision=args.mixed_precision,
                                              init_weights=args.init_weights,
                                              num_classes=num_classes if multiclass else 2,
                                              multiclass_loss=args.multiclass_loss if multiclass else "ce")
    model, history = train(args.work_dir, run_dir, args.model, args.bidirectional, args.epochs, args.batch_size,
                           args.lr, args.val_split, args.seed, args.resume, args.verbose, args.strategy,
                           overwrite=args.overwrite, mixed_precision=args.mixed_precision,
                           jit_compile=args.jit_compile, init_weights=args.init_weights,
                           data_workers=args.data_workers, num_classes=num_classes,
                           multiclass_loss=args.multiclass_loss, in_memory=args.in_memory)
    if history:
        print(f"{model.name}: best val_loss {min(history['val_loss']):.4f}; checkpoints in {run_dir}")
    return run_dir


if __name__ == "__main__":
    cli.run(main)
