"""Task descriptor of lung (BCDU-Net on the Kaggle lung CT volumes): the facts common tools need.

NumPy / SciPy only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read
their defaults from here (``common.tasks`` finds this module by scanning the repository).

The network predicts the AROUND-lung region of each slice; the lung is ``FOV AND NOT (p > 0.5)`` with the body
FOV taken from the image alone (the leak-free FOV of predict.py).
"""

import numpy as np

NAME = "lung"
MODELS = ("bcdu_net_d3", "bcdu_net_d1")
DEFAULT_MODEL = "bcdu_net_d3"
CLASSES = {0: "background", 1: "lung"}
#: a CT volume in Hounsfield units, slices (S, H, W); HU clipped to [-512, 512], min-max scaled over the whole
#: volume to 0..255, / 255; square slices padded to a multiple of 8 (512 x 512 for the dataset)
INPUT = {"mode": "ct_volume_hu", "channels": 1, "network_channels": 1, "size": 512, "multiple": 8,
         "hu_range": (-512, 512), "normalisation": "hu_window_minmax_volume_divide_255",
         "size_rule": "square slices, padded to a multiple of 8"}
#: train_lung.py's defaults (the original's train_lung.py, spec bcdu_net.md section 5.1)
RECIPE = {"optimizer": "adam", "lr": 1e-4, "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
          "loss": "binary_crossentropy", "batch_size": 2, "epochs": 50, "val_split": 0.2, "shuffle": True,
          "monitor": "val_loss", "schedule": "reduce_lr_on_plateau",
          "reduce_lr": {"factor": 0.1, "patience": 7, "min_delta": 1e-4, "cooldown": 0, "min_lr": 0.0}}
#: evaluate_performance.py's: around-lung p > 0.5 is not lung; body FOV eroded 15 x 15, holes filled 5 x 5
INFERENCE = {"threshold": 0.5, "erosion_size": 15, "fill_size": 5, "batch_size": 2, "mask_value": 255}
OWN_DATA = None


def preprocess(volume, **context):
    """A volume in HU (S, H, W) -> the network input (S, H, W, 1) float32: HU clipped to [-512, 512], scaled
    over the whole volume to 0..255 (prepare_data.py, 64 slices at a time in float64), / 255."""
    return (scaled_slices(volume) / np.float32(255.0))[..., None]


def scaled_slices(volume):
    """A volume in HU (S, H, W) -> the slices scaled to 0..255 (float32), as prepare_data.py."""
    from lung.prepare_data import hu_to_grayscale

    volume = np.asarray(volume)
    images = np.empty(volume.shape, np.float32)
    for i in range(0, len(volume), 64):  # the whole volume's range, 64 slices at a time in float64
        images[i:i + 64] = hu_to_grayscale(volume, np.arange(i, min(i + 64, len(volume))))
    return images


def body_fov(images, erosion_size=INFERENCE["erosion_size"], fill_size=INFERENCE["fill_size"]):
    """Leak-free FOV from the scaled slices alone: the eroded body with its holes filled (bool)."""
    from lung.prepare_data import body_mask, fill_fov

    return fill_fov(body_mask(images, erosion_size), fill_size)


def lung_score(prob, fov):
    """Continuous lung score ``FOV * (1 - p)`` from around-lung probabilities ``p`` (N, H, W[, 1]).

    ``score >= 0.5`` is exactly the original's ``FOV AND NOT (p > 0.5)``.
    """
    prob = np.asarray(prob, np.float64).reshape(np.shape(fov))
    return (np.asarray(fov) != 0) * (1.0 - prob)


def estimated_lung(prob, fov, threshold=INFERENCE["threshold"]):
    """The original's estimated lung ``FOV AND NOT (p > 0.5)`` (bool, the shape of ``fov``)."""
    return (np.asarray(fov) != 0) & ~(np.asarray(prob).reshape(np.shape(fov)) > threshold)


def postprocess(prob, *, images, erosion_size=INFERENCE["erosion_size"], fill_size=INFERENCE["fill_size"],
                min_size=0, keep_largest=0, **context):
    """Around-lung probabilities (S, H, W) and the scaled slices ``images`` (0..255) -> the lung mask (bool):
    ``FOV AND NOT (p > 0.5)``, then the optional 3-D post-processing (``min_size``, ``keep_largest``)."""
    lung = estimated_lung(prob, body_fov(images, erosion_size, fill_size))
    if min_size > 1 or keep_largest > 0:
        from common.postprocess import postprocess_mask

        lung = postprocess_mask(lung, min_size=min_size, keep_largest=keep_largest)
    return lung
