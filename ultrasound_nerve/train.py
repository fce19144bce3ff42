"""Train the nerve U-Net and predict the test masks (the tutorial's train.py).

Defaults are the original's: frames resized to 96x96 (bilinear, no anti-aliasing, truncated to uint8),
one global mean/std from the training array, masks /255, negative batch-level Dice loss (smooth 1),
Adam(1e-5, eps 1e-8), batch 32, 20 epochs, last 20 % as validation (for data.py's own-data arrays: the val part of
its split.json), best checkpoint on val_loss; then the
best model predicts the test set: ``imgs_mask_test.npy`` (M,96,96,1) float32 and ``preds/<id>_pred.png``.

The run folder (default ``weights/ultrasound_nerve/nerve_unet`` followed by every recipe option that is not
the original's, e.g. ``nerve_unet_lr0.0001_size64``) gets ``best.keras`` (the original's ``weights.h5``),
``last.keras``, ``history.csv``, ``training_curves.png`` and ``norm_stats.json`` (the training mean/std that
predict.py needs). A folder that holds a run, and test predictions already in ``--work-dir``, are never
replaced without ``--overwrite`` (checked before any data is read).

Multi-class data (an option, not the original): when the prepared masks are integer label maps 0..K-1 (K > 2,
0 = background), ``--num-classes`` (default: read from the training masks; 2 = binary, the original) builds the
U-Net with a K-channel softmax head; the label maps are resized with nearest-neighbour sampling (bilinear would
invent labels between two classes) and not divided by 255, the loss is ``--multiclass-loss`` (default ``dice``:
the soft Dice averaged over the foreground classes, the multi-class form of the tutorial's loss; ``ce``,
``ce_dice``), the metric ``foreground_dice``. The test predictions are then (M, s, s, K) probabilities and
``preds/<id>_pred.png`` palette label maps (``common.data.io.write_label_map``); submission.py (a binary RLE)
does not apply. The run folder gets ``_classes<K>`` (and ``_<loss>`` for a loss other than dice).

Examples::

    python ultrasound_nerve/train.py                    # the original recipe
    python ultrasound_nerve/train.py --resume           # continue an interrupted run
    python ultrasound_nerve/train.py --mixed-precision float16 --jit-compile
    python ultrasound_nerve/train.py --work-dir my_labels --num-classes 4   # label maps 0..3
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import cv2
import numpy as np

from common import cli
from common.data.io import atomic_dir, save_npy, write_image, write_json
from common.errors import UserError
from ultrasound_nerve.data import DEFAULT_WORK, load_test_data, load_train_data, read_split
from ultrasound_nerve.task import INPUT, RECIPE, normalise, read_stats  # noqa: F401  (one place: task.py)
from ultrasound_nerve.task import resize_frames as preprocess

# the original's settings (specs/ultrasound_nerve.md section 2)
EPOCHS, BATCH_SIZE, LR, VAL_SPLIT, IMG_SIZE = (RECIPE[k]  # the recipe in task.py
                                              for k in ("epochs", "batch_size", "lr", "val_split", "img_size"))
EPSILON = RECIPE["adam"]["epsilon"]
DEFAULT_RUN = cli.repo_path("weights", "ultrasound_nerve", "nerve_unet")
STATS_FILE = INPUT["stats_file"]  # task.py


def run_name(*, lr=LR, batch_size=BATCH_SIZE, val_split=VAL_SPLIT, img_size=IMG_SIZE, mixed_precision="off",
             init_weights=None, num_classes=2, multiclass_loss="dice"):
    """``nerve_unet`` plus every recipe option not at the original's value (``_lr``, ``_batch``, ``_val``,
    ``_size``, ``_<mixed precision>``, ``_init-<file stem>``, and ``_classes<K>``, ``_<multi-class loss>`` when
    K > 2), so two variants never share a default run folder."""
    from common.run_options import tagged_name

    multiclass = bool(num_classes and num_classes > 2)
    return tagged_name("nerve_unet", [
        (lr, LR, "lr{:g}"), (batch_size, BATCH_SIZE, "batch{}"), (val_split, VAL_SPLIT, "val{:g}"),
        (img_size, IMG_SIZE, "size{}"), (mixed_precision, "off", "{}"),
        (init_weights or None, None, lambda p: "init-" + Path(p).name.split(".")[0]),
        (num_classes if multiclass else 2, 2, "classes{}"), (multiclass_loss if multiclass else "dice", "dice", "{}")])


def default_run_dir(**options):
    """``weights/ultrasound_nerve/<run_name(...)>``."""
    return cli.repo_path("weights", "ultrasound_nerve", run_name(**options))


def preprocess_labels(masks, size=IMG_SIZE):
    """(N, H, W) label maps -> (N, size, size, 1) uint8 by nearest-neighbour resizing (multi-class runs)."""
    out = np.empty((len(masks), size, size, 1), dtype=np.uint8)
    for i, mask in enumerate(masks):
        out[i, :, :, 0] = cv2.resize(np.asarray(mask, np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return out


def norm_stats(imgs, img_size=IMG_SIZE):
    """The original's normalisation: one mean and std over the whole preprocessed training array."""
    x = preprocess(imgs, img_size).astype(np.float32)
    return {"mean": float(x.mean()), "std": float(x.std()), "img_size": int(img_size)}


def compile_model(model, lr, jit_compile=False):
    import keras

    from common.losses import dice_coef, dice_coef_loss

    # Keras 2.0's Adam had epsilon 1e-8 (Keras 3 defaults to 1e-7).
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr, epsilon=EPSILON), loss=dice_coef_loss,
                  metrics=[dice_coef], jit_compile=jit_compile)
    return model


def split_validation(work_dir, val_split, *arrays):
    """The last ``val_split`` of the frames (the original's ``validation_split``), or, for data.py's own-data
    arrays (``split.json`` in ``work_dir``), its last ``counts["val"]`` frames: data.py stores train then val."""
    from common.training import split_last

    split = read_split(work_dir)
    if split is None:
        return split_last(val_split, *arrays)
    n_train, n_val = split["counts"]["train"], split["counts"]["val"]
    if n_train + n_val != len(arrays[0]) or not n_train or not n_val:
        raise UserError(f"{Path(work_dir) / 'split.json'}: says train {n_train} + val {n_val} frames but "
                        f"imgs_train.npy holds {len(arrays[0])}; run data.py --overwrite again")
    print(f"validation: the {n_val} val frames of split.json (train {n_train}; --val-split is not used)")
    return tuple(a[:n_train] for a in arrays), tuple(a[n_train:] for a in arrays)


def train(work_dir, run_dir, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, val_split=VAL_SPLIT, img_size=IMG_SIZE,
          seed=None, resume=False, verbose=1, strategy="default", *, overwrite=False, mixed_precision="off",
          jit_compile=False, init_weights=None, data_workers=1, num_classes=None, multiclass_loss="dice"):
    """Preprocess, normalise, train with ``common.training.fit``.

    ``num_classes``: None = from the training masks (``common.multiclass.resolve_num_classes``); K > 2 trains a
    K-channel softmax head on the label maps with ``multiclass_loss`` (see the module description).
    A ``run_dir`` that holds a run is refused before any data is read unless ``resume`` or ``overwrite``.
    Returns the best model (None on a non-chief worker of a multi-worker run) and the normalisation stats,
    which are also written to ``<run_dir>/norm_stats.json``. ``init_weights``: start from the tutorial's
    Keras-2 ``weights.h5`` (``common.legacy_weights``) instead of a random initialisation.
    """
    import keras

    from common.devices import set_precision
    from common.models import build_model
    from common.multiclass import compile_multiclass, is_multiclass, resolve_num_classes
    from common.training import check_run_dir, fit, get_strategy, is_chief

    check_run_dir(run_dir, resume=resume, overwrite=overwrite)  # before the data is loaded
    strategy = get_strategy(strategy)  # before any other TensorFlow work
    set_precision(mixed_precision)  # before the model is built
    imgs, masks = load_train_data(work_dir)
    num_classes = resolve_num_classes(num_classes, masks)
    multiclass = is_multiclass(num_classes)
    if multiclass and init_weights:
        raise cli.option_error("--init-weights", f"the tutorial's weights.h5 has the binary head, not {num_classes} "
                                                 f"classes")
    x = preprocess(imgs, img_size).astype(np.float32)
    mean, std = float(x.mean()), float(x.std())  # over the whole array, validation part included (norm_stats)
    if not std > 0:
        raise UserError(f"{Path(work_dir) / 'imgs_train.npy'}: every training frame is constant (std 0); "
                        f"check the raw data")
    x = (x - mean) / std
    if multiclass:  # label maps: nearest neighbour, the labels as they are
        y = preprocess_labels(masks, img_size).astype(np.float32)
    else:
        y = preprocess(masks, img_size).astype(np.float32) / 255.0  # not re-binarised, as the original
    stats = {"mean": mean, "std": std, "img_size": img_size}

    (x_tr, y_tr), (x_val, y_val) = split_validation(work_dir, val_split, x, y)
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the weights are initialised (fit() seeds again)
    with strategy.scope():
        if multiclass:
            model = compile_multiclass(build_model("nerve_unet", (img_size, img_size, 1), num_classes=num_classes),
                                       multiclass_loss, jit_compile=jit_compile,
                                       optimizer=keras.optimizers.Adam(learning_rate=lr, epsilon=EPSILON))
        else:
            model = compile_model(build_model("nerve_unet", (img_size, img_size, 1)), lr, jit_compile)
        if init_weights:
            from common.legacy_weights import load_legacy_weights

            load_legacy_weights(model, init_weights)
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "val_split": val_split,
                "img_size": img_size, "seed": seed, "mixed_precision": mixed_precision, "jit_compile": jit_compile,
                "norm_stats": stats, "init_weights": str(init_weights) if init_weights else None,
                "num_classes": num_classes, "multiclass_loss": multiclass_loss if multiclass else None}
    if is_chief(strategy):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(run_dir) / STATS_FILE, stats)  # what predict.py needs beside the checkpoints
    model, _ = fit(model, (x_tr, y_tr), (x_val, y_val), run_dir=run_dir, epochs=epochs, batch_size=batch_size,
                   monitor="val_loss", resume=resume, overwrite=overwrite, seed=seed, verbose=verbose,
                   settings=settings, data_workers=data_workers)
    if not is_chief(strategy):  # only the chief of a multi-worker run wrote checkpoints and predicts
        return None, stats
    best = keras.models.load_model(Path(run_dir) / "best.keras")  # the original reloads the best weights
    return best, stats


def predict_frames(model, imgs, stats, batch_size=32, verbose=0, tta="none"):
    """(N, H, W) uint8 frames of any size -> (N, s, s, 1) float32 probabilities at the network's size: the
    original's preprocessing and normalisation (the training mean/std of ``stats``); ``tta="flip"``: the
    mean over the frame and its flips (``common.inference.with_flips``)."""
    from common.inference import with_flips

    x = normalise(preprocess(imgs, stats["img_size"]), stats["mean"], stats["std"])

    def run(batch):
        return model.predict(batch, batch_size=batch_size, verbose=verbose)

    return np.asarray((with_flips(run) if tta == "flip" else run)(x), dtype=np.float32)


def prediction_outputs(work_dir):
    return [Path(work_dir) / "imgs_mask_test.npy", Path(work_dir) / "preds"]


def check_prediction_outputs(work_dir, overwrite=False):
    """``UserError`` when test predictions of an earlier run are in ``work_dir`` and ``overwrite`` is not given."""
    existing = [p for p in prediction_outputs(work_dir) if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: test predictions of an earlier run are there; pass --overwrite to replace "
                        f"them (with --resume: move them away), --no-predict to train only, or another --work-dir")


def predict_test(model, work_dir, stats, write_png=True, verbose=1, overwrite=False):
    """Predict the test set; writes imgs_mask_test.npy and preds/<id>_pred.png (prob x 255; for a K-class model
    the argmax label map as a palette PNG), the folder as a whole."""
    from common.data.io import write_label_map

    imgs, ids = load_test_data(work_dir)
    if not len(imgs):  # own data prepared with --test-fraction 0
        print(f"no test frames in {Path(work_dir) / 'imgs_test.npy'}: nothing to predict")
        return None
    pred = predict_frames(model, imgs, stats, verbose=verbose)
    save_npy(Path(work_dir) / "imgs_mask_test.npy", pred)
    if write_png:
        preds = Path(work_dir) / "preds"
        with atomic_dir(preds, overwrite=overwrite or preds.exists()) as tmp:  # checked before training
            for image_id, p in zip(ids, pred):
                if p.shape[-1] > 1:
                    write_label_map(tmp / f"{image_id}_pred.png", np.argmax(p, axis=-1).astype(np.uint8))
                else:
                    write_image(tmp / f"{image_id}_pred.png", (p[:, :, 0] * 255).astype(np.uint8))
    return pred


def build_parser():
    """The command line (its defaults are the original's settings; pinned by the tests)."""
    from common.legacy_weights import add_init_weights_argument
    from common.run_options import add_run_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with the .npy files of data.py; predictions go here (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help=f"checkpoints and logs (default: {DEFAULT_RUN}[_<option>...], one name per variant)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=LR, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--val-split", type=float, default=VAL_SPLIT,
                        help="last fraction used for validation (default: %(default)s)")
    parser.add_argument("--img-size", type=int, default=IMG_SIZE,
                        help="network input size, divisible by 16 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (the original sets none)")
    add_run_arguments(parser)
    parser.add_argument("--no-predict", action="store_true", help="skip the test-set prediction")
    parser.add_argument("--no-png", action="store_true", help="do not write preds/<id>_pred.png")
    add_init_weights_argument(parser)
    from common.multiclass import add_num_classes_arguments

    add_num_classes_arguments(parser, default_loss="dice")
    return parser


def check_options(args):
    """One-line ``OptionError`` for option values that cannot work."""
    if args.img_size <= 0 or args.img_size % 16:
        raise cli.option_error("--img-size", f"must be a positive multiple of 16 (four 2x2 poolings), got "
                                             f"{args.img_size}")
    for name in ("epochs", "batch_size", "lr"):
        if getattr(args, name) <= 0:
            raise cli.option_error("--" + name.replace("_", "-"), f"must be positive, got {getattr(args, name)}")
    if not 0 < args.val_split < 1:
        raise cli.option_error("--val-split", f"must be between 0 and 1 (exclusive), got {args.val_split}")
    if args.init_weights and args.resume:
        raise cli.option_error("--init-weights", "cannot be combined with --resume (the resumed run has its weights)")
    if args.init_weights and not Path(args.init_weights).is_file():
        raise cli.option_error("--init-weights", f"{args.init_weights}: file not found")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_options(args)
    from common.training import check_run_dir

    num_classes = args.num_classes
    masks_file = Path(args.work_dir) / "imgs_mask_train.npy"
    if not args.run_dir and masks_file.is_file():  # the default run folder names the number of classes
        from common.multiclass import resolve_num_classes

        try:
            masks = np.load(masks_file, mmap_mode="r")
        except (OSError, ValueError):
            masks = None  # train() reports the unreadable file
        num_classes = num_classes if masks is None else resolve_num_classes(num_classes, masks)
    run_dir = args.run_dir or default_run_dir(lr=args.lr, batch_size=args.batch_size, val_split=args.val_split,
                                              img_size=args.img_size, mixed_precision=args.mixed_precision,
                                              init_weights=args.init_weights, num_classes=num_classes,
                                              multiclass_loss=args.multiclass_loss)
    check_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
    if not args.no_predict:
        check_prediction_outputs(args.work_dir, args.overwrite)
    model, stats = train(args.work_dir, run_dir, args.epochs, args.batch_size, args.lr, args.val_split,
                         args.img_size, args.seed, args.resume, args.verbose, args.strategy, overwrite=args.overwrite,
                         mixed_precision=args.mixed_precision, jit_compile=args.jit_compile,
                         init_weights=args.init_weights, data_workers=args.data_workers, num_classes=num_classes,
                         multiclass_loss=args.multiclass_loss)
    if not args.no_predict and model is not None:
        if predict_test(model, args.work_dir, stats, not args.no_png, args.verbose, overwrite=args.overwrite) is not None:
            print(f"Saved test predictions to {args.work_dir / 'imgs_mask_test.npy'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
