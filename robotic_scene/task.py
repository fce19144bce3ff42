"""Task descriptor of robotic_scene (TDSNet on EndoVis 2018): the facts common tools need, in one place.

NumPy only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read their
defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import numpy as np

from robotic_scene.prepare import CLASS_COLOURS, CLASS_NAMES

NAME = "robotic_scene"
MODELS = ("tdsnet",)
DEFAULT_MODEL = "tdsnet"
CLASSES = dict(enumerate(CLASS_NAMES))
#: an RGB frame of any size (1024 x 1280 in the dataset); ``torch`` = (x / 255 - mean) / std (RGB), ``caffe`` =
#: BGR 0..255 minus the Caffe means (Keras's ImageNet VGG16); padded with zeros to multiples of 32
INPUT = {"mode": "rgb", "channels": 3, "network_channels": 3, "multiple": 32, "normalisation": ("torch", "caffe"),
         "torch_mean": (0.485, 0.456, 0.406), "torch_std": (0.229, 0.224, 0.225),
         "caffe_mean_bgr": (103.939, 116.779, 123.68), "size_rule": "any size, padded to a multiple of 32"}
#: train.py's defaults (train.sh, spec tdsnet.md 2.1): (name, alpha, beta, gamma, Adam lr, cumulative epochs)
RECIPE = {"optimizer": "adam", "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}, "batch_size": 1,
          "seed": 0, "shuffle": True, "loss": "loss_hybrid", "monitor": "val_mean_iou", "val_seqs": (1, 2, 3, 4),
          "stages": (("segmentation", 0.0, 0.0, 0.0, 1e-4, 10), ("class", 0.2, 0.0, 0.0, 1e-4, 30),
                     ("sync", 0.2, 0.6, 0.0, 5e-5, 50), ("scene", 0.2, 0.6, 0.2, 5e-5, 70))}
INFERENCE = {"min_size": 0}
OWN_DATA = None


def normalise(images, mode="torch"):
    """uint8-valued RGB (..., H, W, 3) -> network input float32 (NumPy twin of train.py's graph version)."""
    x = np.asarray(images, np.float32)
    if mode == "torch":
        return (x / 255.0 - np.float32(INPUT["torch_mean"])) / np.float32(INPUT["torch_std"])
    if mode == "caffe":
        return x[..., ::-1] - np.float32(INPUT["caffe_mean_bgr"])
    raise ValueError(f"unknown normalisation {mode!r} (torch, caffe)")


def preprocess(image, *, normalise_mode="torch", **context):
    """One RGB frame (H, W, 3) uint8 -> (1, H', W', 3) float32: normalised, then zero-padded (the mean colour)
    at the bottom/right to multiples of 32."""
    x = normalise(np.asarray(image)[None, ..., :3], normalise_mode)
    h, w = x.shape[1:3]
    return np.pad(x, ((0, 0), (0, -h % 32), (0, -w % 32), (0, 0))).astype(np.float32)


def remove_small_regions(pred, min_size):
    """Per class (not background), 8-connected regions of fewer than ``min_size`` pixels -> background 0."""
    from common.postprocess import remove_small_regions as remove

    return remove(pred, min_size, background=0, connectivity=2).astype(np.uint8)


def postprocess(prob, *, shape=None, min_size=INFERENCE["min_size"], **context):
    """Softmax (H', W', 12) -> the label in the EndoVis colours (H, W, 3) uint8, cropped to ``shape``."""
    prob = np.asarray(prob)
    if shape is not None:
        prob = prob[:shape[0], :shape[1]]
    pred = np.argmax(prob, axis=-1).astype(np.uint8)
    if min_size > 0:
        pred = remove_small_regions(pred, min_size)
    return CLASS_COLOURS[pred]
