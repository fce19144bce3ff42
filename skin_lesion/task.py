"""Task descriptor of skin_lesion (BCDU-Net on ISIC 2018): the facts common tools need, in one place.

NumPy / Pillow only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read
their defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import numpy as np

NAME = "skin_lesion"
MODELS = ("bcdu_net_d3", "bcdu_net_d1", "sedu_net_d3", "bcdu_unet")
DEFAULT_MODEL = "bcdu_net_d3"
CLASSES = {0: "background", 1: "lesion"}
#: an RGB photo of any size, resized (Pillow bilinear) to the network's square side (256 for the original)
INPUT = {"mode": "rgb", "channels": 3, "network_channels": 3, "size": 256, "resize": "pillow_bilinear",
         "normalisation": "dataset_normalized", "size_rule": "resized to size x size"}
#: train_isic18.py's defaults (the original's train_isic18.py, spec bcdu_net.md section 5.1)
RECIPE = {"optimizer": "adam", "lr": 1e-4, "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
          "loss": "binary_crossentropy", "batch_size": 8, "epochs": 100, "shuffle": True, "monitor": "val_loss",
          "schedule": "reduce_lr_on_plateau", "reduce_lr": {"factor": 0.1, "patience": 7, "min_delta": 1e-4}}
INFERENCE = {"threshold": 0.5}
OWN_DATA = None


def preprocess(image, *, size=INPUT["size"], raw_input=False, **context):
    """One RGB photo (H, W, 3) uint8 -> (1, size, size, 3) float32: resized as prepare_isic2018.py, then
    ``dataset_normalized`` (``raw_input``: the raw 0..255 values, as the original's evaluate.py)."""
    from common.data.preprocess import dataset_normalized
    from skin_lesion.prepare_isic2018 import resize

    x = resize(np.asarray(image)[..., :3], size)[None]
    return x.astype(np.float32) if raw_input else dataset_normalized(x, dtype=np.float32)


def resize_back(prob, shape):
    """(S, S) probabilities -> (H, W) float32 at ``shape`` (Pillow bilinear on floats), clipped to [0, 1]."""
    from PIL import Image

    out = Image.fromarray(np.asarray(prob, np.float32)).resize((shape[1], shape[0]), Image.BILINEAR)
    return np.clip(np.asarray(out), 0, 1)


def postprocess(prob, *, shape=None, threshold=INFERENCE["threshold"], **context):
    """Network probabilities (S, S) -> the ISIC mask at the photo's ``shape`` (H, W): uint8 0/255 where the
    bilinearly resized probability is above ``threshold`` (evaluate.py's)."""
    prob = np.asarray(prob, np.float32)
    if shape is not None:
        prob = resize_back(prob, shape)
    return np.where(prob > threshold, 255, 0).astype(np.uint8)
