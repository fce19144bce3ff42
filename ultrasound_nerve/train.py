"""Train the nerve U-Net and predict the test masks (the tutorial's train.py).

Defaults are the original's: frames resized to 96x96 (bilinear, no anti-aliasing, truncated to uint8),
one global mean/std from the training array, masks /255, negative batch-level Dice loss (smooth 1),
Adam(1e-5, eps 1e-8), batch 32, 20 epochs, last 20 % as validation, best checkpoint on val_loss; then the
best model predicts the test set: ``imgs_mask_test.npy`` (M,96,96,1) float32 and ``preds/<id>_pred.png``.
"""

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import cv2
import keras
import numpy as np

from common import cli
from common.data.io import atomic_path, save_npy, write_image
from common.losses import dice_coef, dice_coef_loss
from common.models import build_model
from common.training import add_strategy_argument, fit, get_strategy, is_chief, split_last
from ultrasound_nerve.data import DEFAULT_WORK, load_test_data, load_train_data

DEFAULT_RUN = cli.repo_path("weights", "ultrasound_nerve", "nerve_unet")


def preprocess(imgs, size=96):
    """(N, H, W) uint8 -> (N, size, size, 1) uint8, as the original.

    Bilinear resampling without anti-aliasing (skimage ``order=1, anti_aliasing=False`` of 2017), computed
    in float and truncated (not rounded) when stored as uint8.
    """
    out = np.empty((len(imgs), size, size, 1), dtype=np.uint8)
    for i, img in enumerate(imgs):
        out[i, :, :, 0] = cv2.resize(np.asarray(img, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return out


def normalise(imgs, mean, std):
    return (imgs.astype(np.float32) - mean) / std


def compile_model(model, lr):
    # Keras 2.0's Adam had epsilon 1e-8 (Keras 3 defaults to 1e-7).
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr, epsilon=1e-8), loss=dice_coef_loss,
                  metrics=[dice_coef])
    return model


def train(work_dir, run_dir, epochs=20, batch_size=32, lr=1e-5, val_split=0.2, img_size=96, seed=None,
          resume=False, verbose=1, strategy="default"):
    """Preprocess, normalise, train with ``common.training.fit``.

    Returns the best model (None on a non-chief worker of a multi-worker run) and the normalisation stats.
    """
    strategy = get_strategy(strategy)  # before any other TensorFlow work
    imgs, masks = load_train_data(work_dir)
    x = preprocess(imgs, img_size).astype(np.float32)
    mean, std = float(x.mean()), float(x.std())  # over the whole array, validation part included
    x = (x - mean) / std
    y = preprocess(masks, img_size).astype(np.float32) / 255.0  # not re-binarised, as the original
    stats = {"mean": mean, "std": std, "img_size": img_size}
    with atomic_path(Path(work_dir) / "norm_stats.json") as tmp:
        tmp.write_text(json.dumps(stats))

    (x_tr, y_tr), (x_val, y_val) = split_last(val_split, x, y)
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the weights are initialised (fit() seeds again)
    with strategy.scope():
        model = compile_model(build_model("nerve_unet", (img_size, img_size, 1)), lr)
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "val_split": val_split,
                "img_size": img_size, "seed": seed}
    model, _ = fit(model, (x_tr, y_tr), (x_val, y_val), run_dir=run_dir, epochs=epochs, batch_size=batch_size,
                   monitor="val_loss", resume=resume, seed=seed, verbose=verbose, settings=settings)
    if not is_chief(strategy):  # only the chief of a multi-worker run wrote checkpoints and predicts
        return None, stats
    best = keras.models.load_model(Path(run_dir) / "best.keras")  # the original reloads the best weights
    return best, stats


def predict_test(model, work_dir, stats, write_png=True, verbose=1):
    """Predict the test set; writes imgs_mask_test.npy and preds/<id>_pred.png (prob x 255)."""
    imgs, ids = load_test_data(work_dir)
    x = normalise(preprocess(imgs, stats["img_size"]), stats["mean"], stats["std"])
    pred = model.predict(x, batch_size=32, verbose=verbose).astype(np.float32)
    save_npy(Path(work_dir) / "imgs_mask_test.npy", pred)
    if write_png:
        for image_id, p in zip(ids, pred):
            write_image(Path(work_dir) / "preds" / f"{image_id}_pred.png", (p[:, :, 0] * 255).astype(np.uint8))
    return pred


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="folder with the .npy files of data.py; predictions go here (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN,
                        help="checkpoints and logs (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--val-split", type=float, default=0.2, help="last fraction used for validation")
    parser.add_argument("--img-size", type=int, default=96, help="network input size, divisible by 16")
    parser.add_argument("--seed", type=int, default=None, help="random seed (the original sets none)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --run-dir")
    parser.add_argument("--no-predict", action="store_true", help="skip the test-set prediction")
    parser.add_argument("--no-png", action="store_true", help="do not write preds/<id>_pred.png")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    add_strategy_argument(parser)
    args = parser.parse_args(argv)
    if args.img_size % 16:
        parser.error("--img-size must be divisible by 16")
    model, stats = train(args.work_dir, args.run_dir, args.epochs, args.batch_size, args.lr, args.val_split,
                         args.img_size, args.seed, args.resume, args.verbose, args.strategy)
    if not args.no_predict and model is not None:
        predict_test(model, args.work_dir, stats, not args.no_png, args.verbose)
        print(f"Saved test predictions to {args.work_dir / 'imgs_mask_test.npy'}")


if __name__ == "__main__":
    cli.run(main)
