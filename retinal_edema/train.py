"""Train a multi-task retinal-edema network (segmentation of REA/SRF/PED + slice-level detection).

The original's ``train.py`` with the settings of its README commands as defaults:

=====================  ===========================  ===========================================
--name                 unet                         unet_nested, unet_nested_dilated (assumed)
--loss                 mix_3 (WCE + Dice + BCE)     mix_33 (WCE + EL-Dice + BCE)
--batch-size           32                           16
--lr-mode              step: 1e-3·0.1^(epoch//20)   poly: 1e-3·(1 - epoch/epochs)^0.9
=====================  ===========================  ===========================================

Common: 100 epochs, Adam lr 1e-3 with betas (0.9, 0.99), eps 1e-8 and *coupled* L2 weight decay 1e-4 on
every parameter (torch ``Adam(weight_decay=1e-4)`` = ``common.optimizers.AdamL2``), the lr set once per epoch,
shuffled slices with the last incomplete batch dropped, random horizontal flip (p = 0.5, image and label),
pixels/255 then per-channel (x - mean)/std from ``info.json``, seed 1234. After every epoch all validation
cubes are scored as eval.py does (``dice_val`` = final Dice, ``auc_val`` = mean detection AUC, per class too,
all in history.csv); ``best.keras`` is the epoch with the best ``dice_val`` (the original's model_best),
``last.keras`` the latest (checkpoint_latest). Losses: ``common.losses.edema_losses``; models:
``common.models.unet_plusplus`` (``unet`` is registered as ``edema_unet``).
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.data.io import DataLayoutError
from common.run_options import add_decode_cache_argument, add_run_arguments, decode_cache_dir
from retinal_edema.dataset import CLASS_NAMES, add_path_arguments, read_list, read_stats
from retinal_edema.model_io import (COMMON, LOSSES, NAMES, PRESETS, REGISTRY, VAL_BATCH,  # noqa: F401
                                    default_run_dir, preset, run_name)


def learning_rate(epoch, lr, lr_mode, epochs, step):
    """The original's ``adjust_learning_rate`` (epoch 0-based, set at the start of each epoch)."""
    if lr_mode == "step":
        return lr * 0.1 ** (epoch // step)
    if lr_mode == "poly":
        return lr * (1 - epoch / epochs) ** 0.9
    raise ValueError(f"unknown lr mode {lr_mode!r} (step, poly)")


def compile_model(model, loss, lr, weight_decay, multi_task=True, jit_compile=False):
    from common.losses import edema_losses
    from common.optimizers import AdamL2

    model.compile(optimizer=AdamL2(lr, beta_1=0.9, beta_2=0.99, epsilon=1e-8, l2=weight_decay),
                  loss=edema_losses(loss, multi_task), jit_compile=jit_compile)
    return model


def validation_callback(data_dir, images, labels, mean, std, batch=VAL_BATCH, verbose=1):
    """Keras callback adding ``dice_val``, ``dice_val_<class>``, ``auc_val``, ``auc_val_<class>`` to the logs."""
    import keras

    from retinal_edema.model_io import evaluate_cubes

    class ValidationScores(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            result = evaluate_cubes([self.model], data_dir, images, labels, mean, std, batch, verbose=False)
            logs = logs if logs is not None else {}
            logs["dice_val"] = result["dice"]
            logs["auc_val"] = result["auc"]
            for name, d, a in zip(CLASS_NAMES, result["dice_per_class"], result["auc_per_class"]):
                logs[f"dice_val_{name}"], logs[f"auc_val_{name}"] = d, a
            if verbose:
                print(f" - dice_val {result['dice']:.4f} - auc_val {result['auc']:.4f}")

    return ValidationScores()


def _check_settings(s):
    """Option values that cannot train: one-line ``OptionError`` naming the option."""
    for key, option in (("epochs", "--epochs"), ("batch_size", "--batch-size"), ("lr", "--lr"),
                        ("step", "--step")):
        if s[key] <= 0:
            raise cli.option_error(option, f"must be positive, got {s[key]:g}")
    if s["weight_decay"] < 0:
        raise cli.option_error("--weight-decay", f"must be >= 0, got {s['weight_decay']:g}")


def train(data_dir, list_dir, run_dir, name="unet_nested", loss=None, epochs=None, batch_size=None, lr=None,
          lr_mode=None, step=None, weight_decay=None, flip=True, multi_task=True, seed=None, resume=False,
          verbose=1, strategy="default", overwrite=False, mixed_precision="off", jit_compile=False,
          data_workers=1, decode_cache=None):
    """Build, compile and fit; ``None`` settings take the model's preset. Returns ``(model, history)``.

    ``decode_cache``: a folder: the training slices are decoded once into uint8 arrays there and normalised in
    the training step (``--decode-cache``; the same batches).

    A ``run_dir`` that holds a run is refused before any data is read, unless ``resume`` or ``overwrite``.
    """
    s = preset(name)
    s.update({k: v for k, v in dict(loss=loss, epochs=epochs, batch_size=batch_size, lr=lr, lr_mode=lr_mode,
                                    step=step, weight_decay=weight_decay, seed=seed).items() if v is not None})
    _check_settings(s)
    from common.training import check_run_dir, get_strategy

    check_run_dir(run_dir, resume=resume, overwrite=overwrite)  # before any data is read

    strategy = get_strategy(strategy)  # before other TensorFlow work
    import keras

    from common.data.io import read_image
    from common.devices import set_precision
    from common.models import build_model
    from common.training import fit
    from retinal_edema.dataset import decoded_slices, device_normalise, training_dataset

    images, labels = read_list(list_dir, "train")
    if len(images) < s["batch_size"]:
        raise DataLayoutError(f"{Path(list_dir) / 'train_images.txt'}: {len(images)} slices, fewer than one batch "
                              f"of {s['batch_size']} (the last incomplete batch is dropped); pass a smaller "
                              f"--batch-size")
    mean, std = read_stats(list_dir)
    shape = read_image(Path(data_dir) / images[0], "rgb").shape
    if shape[0] % 16 or shape[1] % 16:
        raise DataLayoutError(f"{Path(data_dir) / images[0]}: {shape[0]}x{shape[1]} slices, height and width must "
                              f"be multiples of 16")
    callbacks, monitor = [], "loss"
    if (Path(list_dir) / "val_images.txt").is_file():
        val_images, val_labels = read_list(list_dir, "val")
        callbacks.append(validation_callback(data_dir, val_images, val_labels, mean, std, verbose=verbose))
        monitor = "dice_val"
    elif verbose:
        print(f"warning: {Path(list_dir) / 'val_images.txt'} not found: no validation, best = lowest loss")
    callbacks.append(keras.callbacks.LearningRateScheduler(
        lambda epoch: learning_rate(epoch, s["lr"], s["lr_mode"], s["epochs"], s["step"])))

    policy = set_precision(mixed_precision)  # before the model is built
    keras.utils.set_random_seed(s["seed"])  # before the weights are initialised (fit() seeds again)
    with strategy.scope():
        model = compile_model(build_model(REGISTRY[name], shape, multi_task=multi_task), s["loss"], s["lr"],
                              s["weight_decay"], multi_task, jit_compile)
    cache = None if decode_cache is None else decoded_slices(data_dir, images, labels, decode_cache, verbose=verbose)
    data = training_dataset(data_dir, images, labels, s["batch_size"], mean, std, flip=flip, seed=s["seed"],
                            multi_task=multi_task, num_parallel_calls=data_workers, cache=cache)
    settings = {"name": name, **s, "flip": flip, "multi_task": multi_task, "train_slices": len(images),
                "input_shape": list(shape), "mean": mean.tolist(), "std": std.tolist(), "dtype_policy": policy,
                "jit_compile": jit_compile, "decode_cache": None if decode_cache is None else str(decode_cache)}
    return fit(model, data, None, run_dir=run_dir, epochs=s["epochs"], monitor=monitor, mode="auto",
               resume=resume, overwrite=overwrite, seed=s["seed"], verbose=verbose, callbacks=callbacks,
               settings=settings, input_transform=None if cache is None else device_normalise(mean, std))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    add_path_arguments(parser)
    parser.add_argument("--name", choices=NAMES, default="unet_nested", help="network (default: %(default)s)")
    parser.add_argument("--loss", choices=LOSSES, default=None,
                        help="mix_3 = WCE + Dice + BCE, mix_33 = WCE + EL-Dice + BCE (default: the model's preset)")
    parser.add_argument("--epochs", type=int, default=None, help=f"default: {COMMON['epochs']}")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 (unet) or 16 (UNet++)")
    parser.add_argument("--lr", type=float, default=None, help=f"initial learning rate (default: {COMMON['lr']:g})")
    parser.add_argument("--lr-mode", choices=("step", "poly"), default=None,
                        help="step: lr·0.1^(epoch//step); poly: lr·(1-epoch/epochs)^0.9 (default: step for unet, "
                             "poly for UNet++)")
    parser.add_argument("--step", type=int, default=None, help=f"epochs per step decay (default: {COMMON['step']})")
    parser.add_argument("--weight-decay", "--wd", type=float, default=None,
                        help=f"coupled L2 of Adam, torch's weight_decay (default: {COMMON['weight_decay']:g})")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    parser.add_argument("--no-detection", action="store_true",
                        help="segmentation only (the README's 'Multi-task: No' rows: WCE + Dice without BCE)")
    parser.add_argument("--seed", type=int, default=None, help=f"default: {COMMON['seed']} (the original's)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoints and logs (default: weights/retinal_edema/<name>_nopre_<loss>_<lr>, the "
                             "original's result folder name, plus a suffix per setting that differs from the "
                             "model's preset, e.g. _b8_e12_noflip)")
    add_run_arguments(parser)
    add_decode_cache_argument(parser, "--list-dir")
    return parser


EXAMPLES = """examples:
  python retinal_edema/train.py --name unet_nested             # mix_33, batch 16, poly lr, 100 epochs
  python retinal_edema/train.py --name unet                    # mix_3, batch 32, step lr
  python retinal_edema/train.py --name unet --resume           # continue the interrupted default run
  python retinal_edema/train.py --name unet --batch-size 8 --mixed-precision float16 --jit-compile
  python retinal_edema/train.py --decode-cache --data-workers 8  # a GPU host: slices decoded once (~19 GB)
"""


def main(argv=None):
    args = build_parser().parse_args(argv)
    s = preset(args.name)
    loss = args.loss or s["loss"]
    lr = s["lr"] if args.lr is None else args.lr
    run_dir = args.run_dir or default_run_dir(
        args.name, loss, lr, batch_size=args.batch_size, epochs=args.epochs, lr_mode=args.lr_mode, step=args.step,
        weight_decay=args.weight_decay, flip=not args.no_flip, multi_task=not args.no_detection, seed=args.seed)
    model, history = train(args.data_dir, args.list_dir, run_dir, args.name, loss, args.epochs, args.batch_size,
                           lr, args.lr_mode, args.step, args.weight_decay, not args.no_flip, not args.no_detection,
                           args.seed, args.resume, args.verbose, args.strategy, overwrite=args.overwrite,
                           mixed_precision=args.mixed_precision, jit_compile=args.jit_compile,
                           data_workers=args.data_workers,
                           decode_cache=decode_cache_dir(args.decode_cache, args.list_dir))
    if history and "dice_val" in history:
        print(f"{args.name}: last dice_val {history['dice_val'][-1]:.4f}, best {max(history['dice_val']):.4f}; "
              f"checkpoints in {run_dir}")
    return run_dir


if __name__ == "__main__":
    cli.run(main)
