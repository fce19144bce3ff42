"""Task descriptor of ultrasound_nerve (the Kaggle nerve U-Net tutorial): the facts common tools need.

NumPy / OpenCV only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read
their defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import json
from pathlib import Path

import cv2
import numpy as np

NAME = "ultrasound_nerve"
MODELS = ("nerve_unet",)
DEFAULT_MODEL = "nerve_unet"
CLASSES = {0: "background", 1: "nerve"}
#: an 8-bit grey frame of any size (420 x 580 in the dataset), resized bilinear to size x size (96) and
#: truncated to uint8, then (x - mean) / std with the TRAINING mean/std of the run (norm_stats.json)
INPUT = {"mode": "gray", "channels": 1, "network_channels": 1, "size": 96, "resize": "opencv_bilinear_truncate",
         "normalisation": "zscore_training_stats", "stats_file": "norm_stats.json",
         "size_rule": "resized to size x size", "frame": (420, 580)}
#: train.py's defaults (the tutorial's, spec ultrasound_nerve.md)
RECIPE = {"optimizer": "adam", "lr": 1e-5, "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
          "loss": "dice_coef_loss", "batch_size": 32, "epochs": 20, "val_split": 0.2, "img_size": 96,
          "shuffle": True, "monitor": "val_loss", "reload_best": True, "schedule": None}
#: submission.py's: threshold 0.5, masks with fewer than 10 pixels emptied
INFERENCE = {"threshold": 0.5, "min_pixels": 10}
#: data.py --images/--masks, --nnunet-dataset (issue 22): the tutorial trains on 80 % of the frames and
#: validates on the last 20 %; a held-out test part of 20 % of all frames leaves 16 % (= 20 % of the rest) for
#: validation. Frames of one subject (the number before the underscore) stay on one side; split seed 0.
OWN_DATA = {"val_fraction": 0.16, "test_fraction": 0.2, "group_by": r"^(\d+)_", "mode": "gray", "seed": 0}


def resize_frame(img, rows, cols):
    """(H, W) frame -> (rows, cols) uint8, the original's resize (see ``resize_frames``): OpenCV's bilinear
    resize in float64, truncated to uint8. data.py stacks own frames of another size with it."""
    import cv2

    return cv2.resize(np.asarray(img, np.float64), (cols, rows), interpolation=cv2.INTER_LINEAR).astype(np.uint8)


def resize_frames(imgs, size=INPUT["size"]):
    """(N, H, W) uint8 -> (N, size, size, 1) uint8, as the original.

    The original's ``skimage.transform.resize(img, (size, size), preserve_range=True)`` of 2017 (order 1 =
    bilinear, mode 'constant', no anti-aliasing) stored into a uint8 array, i.e. truncated. Computed here by
    OpenCV's bilinear resize in float64, which samples at the same positions with the same weights (equal to
    skimage's to about 1e-13, checked in the tests against scikit-image itself); float32 would differ by one
    grey level at a few pixels per frame after the truncation. Any input size works.
    """
    out = np.empty((len(imgs), size, size, 1), dtype=np.uint8)
    for i, img in enumerate(imgs):
        out[i, :, :, 0] = resize_frame(img, size, size)
    return out


def normalise(imgs, mean, std):
    """``(x - mean) / std`` in float32 (the training array's mean and std)."""
    return (imgs.astype(np.float32) - mean) / std


def prep(prob, threshold=0.5, shape=INPUT["frame"]):
    """(h, w) probabilities -> (420, 580) uint8 0/1: threshold, bilinear resize, threshold again at 0.5."""
    binary = (np.asarray(prob) > threshold).astype(np.float32)
    resized = cv2.resize(binary, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return (resized > 0.5).astype(np.uint8)


def preprocess(image, *, mean, std, img_size=INPUT["size"], **context):
    """One grey frame (H, W) uint8 -> (1, s, s, 1) float32: resized as the original, normalised with the run's
    training ``mean`` / ``std`` (norm_stats.json)."""
    return normalise(resize_frames([np.asarray(image)], img_size), mean, std)


def postprocess(prob, *, shape, threshold=INFERENCE["threshold"], min_pixels=INFERENCE["min_pixels"], min_size=0,
                keep_largest=0, **context):
    """Probabilities (s, s) -> the mask (H, W) uint8 0/255 at the frame's ``shape``: submission.py's ``prep``
    (threshold, bilinear resize, threshold 0.5), the optional post-processing, emptied below ``min_pixels``."""
    mask = prep(prob, threshold, shape=tuple(shape[:2])).astype(bool)
    if min_size or keep_largest:
        from common.postprocess import postprocess_mask

        mask = postprocess_mask(mask, min_size, keep_largest)
    if mask.sum() < min_pixels:  # submission.py's rule: tiny predictions are submitted empty
        mask[:] = False
    return np.where(mask, 255, 0).astype(np.uint8)


# --------------------------------------------------------------------------- prepared dataset (compare_models.py)

#: data.py's --work-dir holds these files (own data adds split.json and imgs_mask_test_true.npy, the test masks)
PREPARED_FILES = ("imgs_train.npy", "imgs_mask_train.npy")


def is_prepared(path):
    """True when ``path`` is a --work-dir written by data.py (training frames and masks)."""
    return all((Path(path) / name).is_file() for name in PREPARED_FILES)


def _binary(masks, img_size):
    """0/255 masks (N, H, W) -> (N, s, s, 1) uint8 0/1: resized as the frames, then >= 128 (the original trains on
    the resized masks / 255 without re-binarising; a comparison scores binary masks)."""
    return (resize_frames(masks, img_size) >= 128).astype(np.uint8)


def load_prepared(path, img_size=INPUT["size"]):
    """data.py's arrays -> ``{"train", "val", "test": (frames (N, s, s, 1) uint8, masks (N, s, s, 1) uint8 0/1),
    "stats": {"mean", "std"}, "split": text, "info": split.json or {}}`` at the network size ``s``.

    Own data (split.json): train = the first ``counts.train`` frames of imgs_train.npy, val = the next
    ``counts.val``, test = imgs_test.npy with imgs_mask_test_true.npy. The Kaggle layout has no test masks: its
    frames are in (subject, n) order, so test = the last 20 % of imgs_train.npy (the last subjects) and val = the
    last 20 % of the rest (train.py's ``validation_split`` rule). ``mean`` / ``std``: of the train and val frames
    together, as train.py (the whole of imgs_train.npy in the original).
    """
    from common.data.io import DataLayoutError

    folder = Path(path)

    def load(name):
        try:
            return np.load(folder / name, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataLayoutError(f"{folder / name}: not a readable .npy array ({exc.__class__.__name__}); run "
                                  f"ultrasound_nerve/data.py --overwrite again") from None

    imgs, masks = load(PREPARED_FILES[0]), load(PREPARED_FILES[1])
    if imgs.shape != masks.shape or imgs.ndim != 3:
        raise DataLayoutError(f"{folder}: imgs_train.npy {imgs.shape} and imgs_mask_train.npy {masks.shape} do not "
                              f"match; run ultrasound_nerve/data.py --overwrite again")
    info = json.loads((folder / "split.json").read_text()) if (folder / "split.json").is_file() else {}
    counts = info.get("counts")
    if counts:
        n_train, n_val = int(counts["train"]), int(counts["val"])
        if not (folder / "imgs_mask_test_true.npy").is_file():
            raise DataLayoutError(f"{folder / 'imgs_mask_test_true.npy'}: not found: the test part has no masks to "
                                  f"score (prepare with --test-fraction > 0 and masks for every test frame)")
        test = load("imgs_test.npy"), load("imgs_mask_test_true.npy")
        rule = f"split.json: train {n_train} / val {n_val} / test {len(test[0])} frames"
    else:
        n = len(imgs)
        n_test = n - int(np.floor(n * (1.0 - RECIPE["val_split"])))
        n_val = (n - n_test) - int(np.floor((n - n_test) * (1.0 - RECIPE["val_split"])))
        n_train = n - n_test - n_val
        test = imgs[n - n_test:], masks[n - n_test:]
        rule = (f"no split.json: test = the last {n_test} frames, val = the {n_val} before them, train = the first "
                f"{n_train} (frames in subject order)")
    if n_train < 1 or n_val < 1 or n_train + n_val > len(imgs) or len(test[0]) < 1:
        raise DataLayoutError(f"{folder}: {len(imgs)} training frames leave an empty train, val or test part")
    x = resize_frames(imgs[:n_train + n_val], img_size)
    y = _binary(masks[:n_train + n_val], img_size)
    stats = {"mean": float(x.mean(dtype=np.float64)), "std": float(x.std(dtype=np.float64))}
    if not stats["std"] > 0:
        raise DataLayoutError(f"{folder / PREPARED_FILES[0]}: every frame is constant (std 0)")
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:]),
            "test": (resize_frames(test[0], img_size), _binary(test[1], img_size)), "stats": stats,
            "split": rule, "info": info}


def prepared_input(images, *, mean, std, **stats):
    """Prepared uint8 frames -> the network input: ``(x - mean) / std`` with the training statistics."""
    return normalise(np.asarray(images), mean, std)


def read_stats(folder):
    """The ``norm_stats.json`` (mean, std, img_size) of a run folder; ``UserError`` when it is missing."""
    import json
    from pathlib import Path

    from common.errors import UserError

    path = Path(folder) / INPUT["stats_file"]
    if not path.is_file():
        raise UserError(f"{path}: not found; the nerve network needs its training mean/std: give the --run-dir "
                        f"of the training run (train.py writes it there)")
    stats = json.loads(path.read_text())
    if not {"mean", "std", "img_size"} <= set(stats) or not stats["std"] > 0:
        raise UserError(f"{path}: expected mean, std > 0 and img_size, got {stats}")
    return stats


def run_context(run_dir, **options):
    """The run's own preprocessing: its training mean/std (norm_stats.json), unless ``options`` give them."""
    return {} if {"mean", "std", "img_size"} <= set(options) else read_stats(run_dir)


def segment(frame, network, *, mean, std, img_size=INPUT["size"], tta="none", **context):
    """One grey frame (H, W) uint8 -> ``{"mask": uint8 0/255 (H, W), "prob": float32 (s, s) at the network's
    size}`` (train.py's test prediction, then submission.py's rule; ``context``: postprocess's options). A K-class
    network (K > 2): ``{"mask": labels 0..K-1 (H, W) uint8 (argmax of the bilinearly resized softmax; the binary
    rule's threshold / min_pixels do not apply), "prob": (H, W, K)}``."""
    from common.inference import with_flips

    frame = np.asarray(frame)
    x = preprocess(frame, mean=mean, std=std, img_size=img_size)
    out = (with_flips(network) if tta == "flip" else network)(x)[0]
    if out.shape[-1] > 1:  # a K-class softmax head (--num-classes K > 2): the label map of the resized channels
        from common.multiclass import label_map_result

        return label_map_result(out, lambda p: cv2.resize(p, (frame.shape[1], frame.shape[0]),
                                                          interpolation=cv2.INTER_LINEAR))
    prob = out[..., 0]
    options = {k: context[k] for k in ("threshold", "min_pixels", "min_size", "keep_largest") if k in context}
    return {"mask": postprocess(prob, shape=frame.shape[:2], **options), "prob": prob}


def add_mask_options(parser, *, threshold_help, min_pixels_help):
    """``--threshold``, ``--min-pixels`` (submission.py's rule) and the post-processing options that
    submission.py, evaluate.py and predict.py share (defaults: INFERENCE, the original's)."""
    from common.postprocess import add_postprocess_arguments

    parser.add_argument("--threshold", type=float, default=INFERENCE["threshold"], help=threshold_help)
    parser.add_argument("--min-pixels", type=int, default=INFERENCE["min_pixels"], help=min_pixels_help)
    add_postprocess_arguments(parser)


def check_mask_options(args):
    """One-line ``OptionError`` for a threshold outside [0, 1) or a negative size option."""
    from common.cli import option_error

    if not 0 <= args.threshold < 1:
        raise option_error("--threshold", f"must be in [0, 1), got {args.threshold}")
    for name in ("min_pixels", "min_size", "keep_largest"):
        if getattr(args, name) < 0:
            raise option_error("--" + name.replace("_", "-"), f"must be 0 or more, got {getattr(args, name)}")
