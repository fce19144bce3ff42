"""Train a BCDU-Net family network on the ISIC 2018 arrays of prepare_isic2018.py (the original's train_isic18.py).

Defaults are the original's: BCDU_net_D3 on 256x256x3, images through ``dataset_normalized`` (each image
min-max stretched to 0..255, NOT divided by 255), soft targets mask/255, Adam(lr 1e-4), binary
cross-entropy, metric accuracy, batch 8, 100 epochs, shuffled every epoch, the validation split (259 images)
as validation data, the best checkpoint on val_loss and ReduceLROnPlateau(val_loss, factor 0.1, patience 7,
min_delta 1e-4). The arrays are memory-mapped and normalised batch by batch, so the training set is never
copied to float in memory.

``--model`` picks any of the family (bcdu_net_d3, bcdu_net_d1, sedu_net_d3, bcdu_unet); ``--bidirectional``
uses a true bidirectional ConvLSTM fusion (forward + backward, summed) instead of the original code's
single backward ConvLSTM. The run folder (default ``weights/skin_lesion/<model>`` followed by every option
that changes the network or the recipe and is not at its default, e.g. ``bcdu_net_d3_bidirectional_lr0.001``)
gets ``best.keras`` (the original's ``weight_isic18``), ``last.keras``, ``history.csv`` (the original pickled
the history to ``hist_isic18``), TensorBoard logs and ``training_curves.png``. A folder that already holds a
run is never replaced: ``--resume`` continues it, ``--overwrite`` replaces it.

Examples::

    python skin_lesion/train_isic18.py                          # the original: BCDU_net_D3, 100 epochs
    python skin_lesion/train_isic18.py --model sedu_net_d3 --encoder-weights ~/vgg16_notop.h5
    python skin_lesion/train_isic18.py --resume                 # continue an interrupted run
    python skin_lesion/train_isic18.py --mixed-precision bfloat16 --jit-compile   # faster on a recent GPU
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data.preprocess import dataset_normalized
from skin_lesion.prepare_isic2018 import DEFAULT_WORK, load_split
from skin_lesion.task import MODELS, RECIPE  # noqa: F401  (MODELS: the networks, one place)

EPOCHS, BATCH_SIZE, LR = (RECIPE[k] for k in ("epochs", "batch_size", "lr"))  # task.py
REDUCE_LR = {**RECIPE["reduce_lr"], "verbose": 1}


def run_name(model, bidirectional=False, *, prior_output_bias=False, restarts=0, encoder_weights="imagenet",
             lr=LR, batch_size=BATCH_SIZE, mixed_precision="off", init_weights=None):
    """The default run folder's name: ``<model>`` plus every network / recipe option not at its default
    (``_bidirectional``, ``_prior-bias``, ``_restarts<K>``, ``_encoder-none`` or ``_encoder-<file stem>``
    for sedu_net_d3, ``_lr<lr>``, ``_batch<n>``, ``_<mixed precision>``, ``_init-<file stem>``), so two
    variants never share one."""
    from common.training import tagged_name

    encoder = "imagenet" if model != "sedu_net_d3" else ("none" if encoder_weights is None else encoder_weights)
    return tagged_name(model, [
        (bidirectional, False, "bidirectional"), (prior_output_bias, False, "prior-bias"),
        (restarts, 0, "restarts{}"),
        (encoder, "imagenet", lambda w: "encoder-" + ("none" if w == "none" else Path(w).stem)),
        (lr, LR, "lr{:g}"), (batch_size, BATCH_SIZE, "batch{}"), (mixed_precision, "off", "{}"),
        (init_weights or None, None, lambda p: "init-" + Path(p).name.split(".")[0])])


def default_run_dir(model, bidirectional=False, **options):
    """``weights/skin_lesion/<run_name(...)>``."""
    return cli.repo_path("weights", "skin_lesion", run_name(model, bidirectional, **options))


def network_input(images):
    """uint8 images (N, H, W, 3) -> the original's network input: ``dataset_normalized`` as float32."""
    return dataset_normalized(images, dtype=np.float32)  # computed in float64 for uint8 input


def normalise_batch(xb, yb):
    """One batch as the original feeds it: images via :func:`network_input`, masks / 255 (soft targets)."""
    return network_input(xb), np.asarray(yb, np.float32) / 255.0


def build(model_name, input_shape, bidirectional=False, encoder_weights="imagenet", lr=LR, jit_compile=False):
    """The registered network compiled as the original: Adam(lr), binary cross-entropy, accuracy.

    ``encoder_weights`` only applies to sedu_net_d3 (``imagenet``, ``none`` or a file path); a file that is
    not Keras's VGG16 notop weights file raises ``UserError`` naming it. ``jit_compile``: XLA (an option).
    """
    import keras

    from common.errors import UserError
    from common.models import build_model

    options = {"bidirectional": bidirectional} if bidirectional else {}
    if model_name == "sedu_net_d3":
        options["encoder_weights"] = None if encoder_weights in (None, "none") else encoder_weights
    try:
        model = build_model(model_name, input_shape, **options)
    except ValueError as exc:  # load_vgg16_notop_weights: "<file>: not a Keras VGG16 notop weights file"
        if model_name == "sedu_net_d3" and options.get("encoder_weights") and "VGG16" in str(exc):
            raise UserError(f"{' '.join(str(exc).split())[:300]}; pass --encoder-weights imagenet, none or the "
                            f"path of Keras's VGG16 notop weights file") from None
        raise
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="binary_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def legacy_model(model_name, input_shape, path, bidirectional=False):
    """The network (uncompiled) with the authors' Keras-2 HDF5 checkpoint loaded into it (``weight_isic18``,
    any name; ``common.legacy_weights.load_legacy_weights``: by layer order, shape by shape)."""
    from common.legacy_weights import load_legacy_weights
    from common.models import build_model

    options = {"bidirectional": bidirectional} if bidirectional else {}
    if model_name == "sedu_net_d3":
        options["encoder_weights"] = None  # the file holds every weight
    model = build_model(model_name, tuple(input_shape), **options)
    load_legacy_weights(model, path)
    return model


def head_collapsed(model, images):
    """True when no channel of the ReLU head conv (``head_conv``) that raises the output (positive weight in
    the 1x1 sigmoid layer ``head_output``) is active at any pixel of ``images``.

    The network can then predict no more foreground than its output bias allows, and a ReLU channel that is
    zero everywhere gets no gradient to come back (both channels dead = a constant output).
    """
    import keras

    probe = keras.Model(model.input, model.get_layer("head_conv").output)
    active = np.max(probe.predict(images, verbose=0), axis=(0, 1, 2)) > 0
    raising = model.get_layer("head_output").get_weights()[0].reshape(-1) > 0
    return not bool(np.any(active & raising))


def train(work_dir, run_dir, model_name="bcdu_net_d3", bidirectional=False, encoder_weights="imagenet",
          epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, seed=None, resume=False, verbose=1, strategy="default",
          prior_output_bias=False, restarts=0, *, overwrite=False, mixed_precision="off", jit_compile=False,
          init_weights=None, data_workers=1):
    """Build, compile and fit; returns ``(model, history)`` (``common.training.fit``).

    ``restarts`` > 0: after the first epoch, a network whose head collapsed (:func:`head_collapsed` on the
    first training images) is rebuilt with the next seed (``seed + 1000 k``) and its first epoch trained again, at
    most ``restarts`` times; then training continues from that epoch's checkpoint.
    A ``run_dir`` that holds a run is refused before any data is read unless ``resume`` or ``overwrite``.
    ``mixed_precision`` (``off``/``float16``/``bfloat16``) and ``jit_compile`` are the GPU options.
    ``init_weights``: start from the authors' Keras-2 checkpoint (``weight_isic18``) instead of a random
    initialisation (:func:`legacy_model`).
    """
    import keras

    from common.devices import set_precision
    from common.training import (array_dataset, check_run_dir, fit, foreground_fraction, get_strategy,
                                 set_output_prior)

    check_run_dir(run_dir, resume=resume, overwrite=overwrite)  # before the data is loaded
    strategy = get_strategy(strategy)  # before any other TensorFlow work
    if restarts and strategy.__class__.__name__.startswith("MultiWorker"):
        raise cli.option_error("--restarts", "not supported with --strategy multi_worker; pass --restarts 0")
    set_precision(mixed_precision)  # before the model is built
    (x_tr, m_tr), (x_val, m_val) = load_split(work_dir, "train"), load_split(work_dir, "val")
    y_tr, y_val = m_tr[..., None], m_val[..., None]  # views of the memory maps, (N, H, W, 1)
    settings = {"model": model_name, "bidirectional": bidirectional, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "seed": seed, "train": len(x_tr), "val": len(x_val), "input_shape": list(x_tr.shape[1:]),
                "prior_output_bias": prior_output_bias, "restarts": restarts, "encoder_weights": str(encoder_weights),
                "mixed_precision": mixed_precision, "jit_compile": jit_compile,
                "init_weights": str(init_weights) if init_weights else None}
    val_ds = array_dataset(x_val, y_val, batch_size, transform=normalise_batch, num_parallel_calls=data_workers)
    options = dict(run_dir=run_dir, monitor="val_loss", mode="min", reduce_lr=REDUCE_LR, verbose=verbose)
    warmed_up = False
    for attempt in range(restarts + 1):
        attempt_seed = None if seed is None else seed + 1000 * attempt
        if attempt_seed is not None:
            keras.utils.set_random_seed(attempt_seed)  # before the weights are initialised
        with strategy.scope():
            model = build(model_name, x_tr.shape[1:], bidirectional, encoder_weights, lr, jit_compile)
            if init_weights:
                from common.legacy_weights import load_legacy_weights

                load_legacy_weights(model, init_weights)
            if prior_output_bias:
                set_output_prior(model, foreground_fraction(m_tr, scale=255.0))
        train_ds = array_dataset(x_tr, y_tr, batch_size, shuffle=True, seed=attempt_seed, transform=normalise_batch,
                                 num_parallel_calls=data_workers)
        settings["attempt_seed"] = attempt_seed
        if not restarts or resume or epochs < 2:
            break
        # the first attempt may replace an earlier run only with --overwrite; later ones replace this one's
        model, _ = fit(model, train_ds, val_ds, epochs=1, seed=attempt_seed, settings=settings,
                       overwrite=overwrite or attempt > 0, **options)
        warmed_up = True  # the final fit continues from this first epoch
        if not head_collapsed(model, network_input(np.asarray(x_tr[:4 * batch_size]))):
            break
        if attempt < restarts:
            print(f"{model.name}: no head channel that raises the output is active on the training images after "
                  f"the first epoch (collapsed head, see README); re-initialising ({attempt + 1} of {restarts})")
    return fit(model, train_ds, val_ds, epochs=epochs, resume=resume or warmed_up, seed=attempt_seed,
               settings=settings, overwrite=overwrite and not warmed_up, **options)


def variant_options(args):
    """The options of ``args`` that name the default run folder (:func:`run_name`), as keywords."""
    return {"prior_output_bias": args.prior_output_bias, "restarts": args.restarts,
            "encoder_weights": args.encoder_weights, "lr": args.lr, "batch_size": args.batch_size,
            "mixed_precision": args.mixed_precision, "init_weights": args.init_weights}


def check_options(args):
    """One-line ``OptionError`` for values and combinations that cannot work."""
    if args.bidirectional and args.model == "bcdu_unet":
        raise cli.option_error("--bidirectional", "needs a model with ConvLSTM fusions (not bcdu_unet)")
    if args.encoder_weights != "imagenet" and args.model != "sedu_net_d3":
        raise cli.option_error("--encoder-weights", f"only sedu_net_d3 has a VGG16 encoder, not {args.model}")
    for name in ("epochs", "batch_size", "lr"):
        if getattr(args, name) <= 0:
            raise cli.option_error("--" + name.replace("_", "-"), f"must be positive, got {getattr(args, name)}")
    if args.restarts < 0:
        raise cli.option_error("--restarts", f"must be 0 or more, got {args.restarts}")
    if args.init_weights:
        for flag, given in (("--resume", args.resume), ("--restarts", args.restarts),
                            ("--prior-output-bias", args.prior_output_bias)):
            if given:
                raise cli.option_error("--init-weights", f"cannot be combined with {flag} (the checkpoint sets "
                                                         f"every weight)")
        if not Path(args.init_weights).is_file():
            raise cli.option_error("--init-weights", f"{args.init_weights}: file not found")


def build_parser():
    """The command line (its defaults are the original's settings; pinned by the tests)."""
    from common.legacy_weights import add_init_weights_argument
    from common.training import add_run_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with the .npy files of prepare_isic2018.py (default: %(default)s)")
    parser.add_argument("--model", choices=MODELS, default="bcdu_net_d3", help="network (default: %(default)s)")
    parser.add_argument("--bidirectional", action="store_true",
                        help="true bidirectional ConvLSTM fusion (forward + backward summed) instead of the "
                             "original's single backward ConvLSTM")
    parser.add_argument("--encoder-weights", default="imagenet",
                        help="sedu_net_d3 only: 'imagenet' (Keras's VGG16 notop file from the Keras cache, never "
                             "downloaded), a path to that file, or 'none' (default: %(default)s, as the original)")
    parser.add_argument("--prior-output-bias", action="store_true",
                        help="initialise the output bias to the logit of the training masks' mean instead of 0 "
                             "(keeps the 2-channel ReLU head from dying early in training; see README)")
    parser.add_argument("--restarts", type=int, default=0,
                        help="re-initialise (next seed) a network whose 2-channel ReLU head collapsed in the first "
                             "epoch, up to this many times (default: %(default)s, as the original; see README)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=LR, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: none, as the original)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoints and logs (default: weights/skin_lesion/<model>[_<option>...], one name "
                             "per variant: see the description)")
    add_run_arguments(parser)
    add_init_weights_argument(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_options(args)
    run_dir = args.run_dir or default_run_dir(args.model, args.bidirectional, **variant_options(args))
    model, history = train(args.work_dir, run_dir, args.model, args.bidirectional, args.encoder_weights,
                           args.epochs, args.batch_size, args.lr, args.seed, args.resume, args.verbose,
                           args.strategy, args.prior_output_bias, args.restarts, overwrite=args.overwrite,
                           mixed_precision=args.mixed_precision, jit_compile=args.jit_compile,
                           init_weights=args.init_weights, data_workers=args.data_workers)
    if history:
        print(f"{model.name}: best val_loss {min(history['val_loss']):.4f} after {len(history['val_loss'])} "
              f"epochs; checkpoints in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
