"""Task descriptor of ultrasound_nerve (the Kaggle nerve U-Net tutorial): the facts common tools need.

NumPy / OpenCV only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read
their defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import numpy as np

NAME = "ultrasound_nerve"
MODELS = ("nerve_unet",)
DEFAULT_MODEL = "nerve_unet"
CLASSES = {0: "background", 1: "nerve"}
#: an 8-bit grey frame of any size (420 x 580 in the dataset), resized bilinear to size x size (96) and
#: truncated to uint8, then (x - mean) / std with the TRAINING mean/std of the run (norm_stats.json)
INPUT = {"mode": "gray", "channels": 1, "network_channels": 1, "size": 96, "resize": "opencv_bilinear_truncate",
         "normalisation": "zscore_training_stats", "stats_file": "norm_stats.json",
         "size_rule": "resized to size x size"}
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


def preprocess(image, *, mean, std, img_size=INPUT["size"], **context):
    """One grey frame (H, W) uint8 -> (1, s, s, 1) float32: resized as the original, normalised with the run's
    training ``mean`` / ``std`` (norm_stats.json)."""
    return normalise(resize_frames([np.asarray(image)], img_size), mean, std)


def postprocess(prob, *, shape, threshold=INFERENCE["threshold"], min_pixels=INFERENCE["min_pixels"], min_size=0,
                keep_largest=0, **context):
    """Probabilities (s, s) -> the mask (H, W) uint8 0/255 at the frame's ``shape``: submission.py's ``prep``
    (threshold, bilinear resize, threshold 0.5), the optional post-processing, emptied below ``min_pixels``."""
    from ultrasound_nerve.submission import prep

    mask = prep(prob, threshold, shape=tuple(shape[:2])).astype(bool)
    if min_size or keep_largest:
        from common.postprocess import postprocess_mask

        mask = postprocess_mask(mask, min_size, keep_largest)
    if mask.sum() < min_pixels:  # submission.py's rule: tiny predictions are submitted empty
        mask[:] = False
    return np.where(mask, 255, 0).astype(np.uint8)
