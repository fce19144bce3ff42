"""Task descriptor of skin_lesion (BCDU-Net on ISIC 2018): the facts common tools need, in one place.

NumPy / Pillow only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read
their defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

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
#: prepare_isic2018.py --images/--masks, --nnunet-dataset: the original's 259/2594 validation and 520/2594 test
#: to 4 digits (on 2,594 photos they give its 1815/259/520 split sizes); photos read as RGB
OWN_DATA = {"val_fraction": 0.0998, "test_fraction": 0.2005, "group_by": None, "mode": "rgb"}


def resize(array, size=INPUT["size"]):
    """Pillow bilinear resize of a uint8 (H, W) or (H, W, 3) array to (size, size) uint8 (antialiased when
    shrinking, like scipy.misc.imresize)."""
    return np.asarray(Image.fromarray(array).resize((size, size), Image.BILINEAR))


def preprocess(image, *, size=INPUT["size"], raw_input=False, **context):
    """One RGB photo (H, W, 3) uint8 -> (1, size, size, 3) float32: resized as prepare_isic2018.py, then
    ``dataset_normalized`` (``raw_input``: the raw 0..255 values, as the original's evaluate.py)."""
    from common.data.preprocess import dataset_normalized

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


# --------------------------------------------------------------------------- prepared dataset (compare_models.py)

#: prepare_isic2018.py's --work-dir holds these files
PREPARED_FILES = tuple(f"{kind}_{part}.npy" for part in ("train", "val", "test") for kind in ("data", "mask"))


def is_prepared(path):
    """True when ``path`` is a --work-dir written by prepare_isic2018.py (the six arrays)."""
    return all((Path(path) / name).is_file() for name in PREPARED_FILES)


def load_prepared(path):
    """The six arrays -> ``{"train", "val", "test": (images (N, S, S, 3) uint8, masks (N, S, S, 1) uint8 0/1),
    "stats": {}, "split": text, "info": split.json or {}}``; images memory-mapped. Masks (resized bilinear, soft
    borders: the original trains on mask / 255) are binarised at 128 for scoring."""
    from common.data.io import DataLayoutError

    folder = Path(path)
    parts = {}
    for part in ("train", "val", "test"):
        try:
            x = np.load(folder / f"data_{part}.npy", mmap_mode="r")
            y = np.load(folder / f"mask_{part}.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataLayoutError(f"{folder}: data_{part}.npy / mask_{part}.npy not readable "
                                  f"({exc.__class__.__name__}); run skin_lesion/prepare_isic2018.py again") from None
        if len(x) != len(y) or not len(x) or x.shape[1:3] != y.shape[1:3]:
            raise DataLayoutError(f"{folder}: data_{part}.npy {x.shape} and mask_{part}.npy {y.shape} do not match")
        parts[part] = (x, (np.asarray(y) >= 128).astype(np.uint8).reshape(y.shape[:3] + (1,)))
    info = json.loads((folder / "split.json").read_text()) if (folder / "split.json").is_file() else {}
    counts = " / ".join(f"{k} {len(v[0])}" for k, v in parts.items())
    return {**parts, "stats": {}, "split": f"the prepared parts ({counts})", "info": info}


def prepared_input(images, **stats):
    """Prepared uint8 images -> the network input: ``dataset_normalized`` (train_isic18.py's, float32)."""
    from common.data.preprocess import dataset_normalized

    return dataset_normalized(np.asarray(images), dtype=np.float32)


def segment(image, network, *, raw_input=False, tta="none", threshold=INFERENCE["threshold"], **context):
    """One RGB photo (H, W, 3) uint8 -> ``{"mask": uint8 0/255 (H, W), "prob": float32 (H, W)}`` (evaluate.py's
    path at the network's input size, the probabilities resized back bilinearly). A K-class network (K > 2):
    ``{"mask": labels 0..K-1 (H, W) uint8, "prob": (H, W, K)}``."""
    from common.inference import with_flips

    x = preprocess(image, size=network.input_size[0], raw_input=raw_input)
    out = (with_flips(network) if tta == "flip" else network)(x)[0]
    if out.shape[-1] > 1:  # a K-class softmax head (--num-classes K > 2): the label map of the resized channels
        from common.multiclass import label_map_result

        return label_map_result(out, lambda p: resize_back(p, np.shape(image)[:2]))
    prob = resize_back(out[..., 0], np.shape(image)[:2])
    return {"mask": postprocess(prob, threshold=threshold), "prob": prob}
