"""Task descriptor of retina_vessel (BCDU-Net on DRIVE): the facts common tools need, in one place.

NumPy / OpenCV only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read
their defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import numpy as np

NAME = "retina_vessel"
MODELS = ("bcdu_net_d3",)
DEFAULT_MODEL = "bcdu_net_d3"
CLASSES = {0: "background", 1: "vessel"}
#: raw input: an RGB fundus photo of any size; the network sees my_PreProc's one grey channel in [0, 1],
#: trained on 64 x 64 patches, predicted on the whole image padded to a multiple of 8 or on 64 x 64 windows.
INPUT = {"mode": "rgb", "channels": 3, "network_channels": 1, "patch": 64, "multiple": 8,
         "normalisation": "my_preproc", "size_rule": "any size: padded to a multiple of 8 (full) or 64x64 windows"}
#: train_retina.py's defaults (the original's train_retina.py, spec bcdu_net.md section 5.1)
RECIPE = {"optimizer": "adam", "lr": 1e-4, "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
          "loss": "binary_crossentropy", "batch_size": 8, "epochs": 50, "val_split": 0.2, "shuffle": True,
          "monitor": "val_loss", "schedule": "reduce_lr_on_plateau",
          "reduce_lr": {"factor": 0.1, "patience": 7, "min_delta": 1e-4, "cooldown": 0, "min_lr": 0.0}}
#: evaluate.py / predict.py defaults: windows of the patch size at stride 5 in batches of 16, threshold 0.5
INFERENCE = {"stride": 5, "batch_size": 16, "threshold": 0.5, "modes": ("overlap", "full")}
OWN_DATA = None


def preprocess(image, **context):
    """One RGB photo (H, W, 3) uint8 -> the network input (1, H, W, 1) float32: ``my_PreProc`` (grey,
    dataset_normalized, CLAHE, gamma 1.2, / 255) of the one image."""
    from common.data.preprocess import my_preproc

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return my_preproc(image[None, ..., :3])


def kill_border(prob, fov):
    """The original's ``kill_border``: probability 0 wherever the FOV mask is 0."""
    return np.where(np.asarray(fov) > 0, prob, 0).astype(np.asarray(prob).dtype)


def postprocess(prob, *, fov=None, threshold=INFERENCE["threshold"], **context):
    """Probabilities (H, W) at the image's size -> the vessel mask (H, W) uint8 0/255 (``prob >= threshold``,
    zero outside the FOV mask when one is given)."""
    prob = np.asarray(prob)
    if fov is not None:
        prob = kill_border(prob, fov)
    return ((prob >= threshold) * 255).astype(np.uint8)
