"""Task descriptor of retinal_edema (UNet++ / U-Net on AI Challenger 2018 OCT cubes): the facts common tools need.

NumPy only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read their
defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import numpy as np

NAME = "retinal_edema"
#: the script's model names -> build_model registry names
REGISTRY = {"unet": "edema_unet", "unet_nested": "unet_nested", "unet_nested_dilated": "unet_nested_dilated"}
MODELS = tuple(REGISTRY.values())
DEFAULT_MODEL = "unet_nested"
CLASSES = {0: "background", 1: "REA", 2: "SRF", 3: "PED"}
#: grey code of each class in the challenge's label BMPs
GREY_CODES = {0: 0, 1: 255, 2: 191, 3: 128}
#: a cube of 8-bit grey B-scans (n, H, W); slice i -> RGB [slice i+1, slice i, slice i-1] (edges replicated),
#: (x / 255 - mean) / std per channel with the run's training statistics, padded to multiples of 16
INPUT = {"mode": "gray_cube", "channels": 1, "network_channels": 3, "multiple": 16,
         "normalisation": "divide_255_zscore_training_stats", "stats_file": "state.json",
         "size_rule": "any size, padded to a multiple of 16"}
#: train.py's defaults: the README commands (main.sh) per model over the common settings (spec retinal_edema.md 4)
RECIPE = {"optimizer": "adam_l2", "adam": {"beta_1": 0.9, "beta_2": 0.99, "epsilon": 1e-8}, "epochs": 100,
          "lr": 1e-3, "weight_decay": 1e-4, "step": 20, "seed": 1234, "shuffle": True, "drop_last": True,
          "flip_probability": 0.5, "monitor": "dice_val",
          "per_model": {  # unet_nested_dilated: not given, assumed as unet_nested
              "unet": {"loss": "mix_3", "batch_size": 32, "lr_mode": "step"},
              "unet_nested": {"loss": "mix_33", "batch_size": 16, "lr_mode": "poly"},
              "unet_nested_dilated": {"loss": "mix_33", "batch_size": 16, "lr_mode": "poly"}}}
INFERENCE = {"batch_size": 8}
OWN_DATA = None


def stack_slices(slices):
    """(n, H, W) B-scans of one cube -> (n, H, W, 3) RGB = [next, current, previous], edges replicated."""
    slices = np.asarray(slices)
    n = len(slices)
    prev = slices[np.maximum(np.arange(n) - 1, 0)]
    nxt = slices[np.minimum(np.arange(n) + 1, n - 1)]
    return np.stack([nxt, slices, prev], axis=-1)


def normalise(images, mean, std):
    """uint8 (..., 3) -> float32 ``(x / 255 - mean) / std`` per channel (ToTensor + Normalize)."""
    return (np.asarray(images, np.float32) / 255.0 - mean) / std


def preprocess(slices, *, mean, std, **context):
    """A cube (n, H, W) uint8 -> the network input (n, H', W', 3) float32, H' and W' padded with black (before
    normalisation, as predict.py) at the bottom/right to multiples of 16."""
    slices = np.asarray(slices)
    if slices.ndim == 2:
        slices = slices[None]
    n, h, w = slices.shape
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    x = np.pad(stack_slices(slices), ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    return np.asarray(normalise(x, np.float32(mean), np.float32(std)), np.float32)


def postprocess(prob, *, shape=None, min_size=0, **context):
    """Softmax (n, H', W', 4) -> the challenge's grey label slices (n, H, W) uint8 (cropped to ``shape``
    (H, W), argmax, optional per-slice small-region removal)."""
    prob = np.asarray(prob)
    if shape is not None:
        prob = prob[:, :shape[0], :shape[1]]
    pred = np.argmax(prob, axis=-1).astype(np.uint8)
    if min_size > 0:
        from common.postprocess import remove_small_regions

        pred = np.stack([remove_small_regions(p, min_size) for p in pred]).astype(np.uint8)
    return np.array([GREY_CODES[c] for c in sorted(GREY_CODES)], np.uint8)[pred]
