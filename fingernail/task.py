"""Task descriptor of fingernail (U-Net family on the fingernail photos): the facts common tools need.

NumPy / Pillow only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read
their defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

NAME = "fingernail"
MODELS = ("unet2d_8_128", "unet2d_res_32_512", "unet2d_res_srnn_32_512", "unet2d_res_srnn_8_128")
DEFAULT_MODEL = "unet2d_8_128"
CLASSES = {0: "background", 1: "nail"}
#: an RGB photo of any size; a portrait photo is rotated +90 degrees, resized bicubic to rows x cols, / 255
INPUT = {"mode": "rgb", "channels": 3, "network_channels": 3, "rows": 160, "cols": 192, "resize": "pillow_bicubic",
         "rotate_portrait": True, "normalisation": "divide_255", "size_rule": "resized to rows x cols"}
#: train.py's defaults (the notebook's, spec fingernail.md section 3)
RECIPE = {"optimizer": "adam", "lr": 1e-5, "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
          "lr_decay": 1.99e-7, "schedule": "inverse_time_decay", "loss": "bce_dice", "dice": "pixel",
          "batch_size": 2, "epochs": 220, "shuffle": False, "seed": 144, "monitor": "val_dice_metric",
          "weights": "last", "reduce_lr": {"factor": 0.8, "patience": 3, "min_lr": 1e-5}}
#: the threshold of the original's Dice (p > 0.3)
INFERENCE = {"threshold": 0.3, "weights": "last"}
#: prepare_data.py --images/--masks (--nnunet-dataset): the original's proportions (test ratio 0.1, seed 144; the
#: original validates on the test split, hence no val part), the study folder and the mask rule (see its --help)
OWN_DATA = {"val_fraction": 0.0, "test_fraction": 0.1, "group_by": None, "mode": "rgb", "seed": RECIPE["seed"],
            "study": "own", "mask_rule": "labels"}


def rotated(shape, rotate_portrait=INPUT["rotate_portrait"]):
    """True when a photo of ``shape`` (H, W[, C]) is rotated before prediction (portrait: width < height)."""
    return bool(rotate_portrait) and shape[1] < shape[0]


def network_input(image, rows=INPUT["rows"], cols=INPUT["cols"], rotate_portrait=True):
    """A photo (H, W, 3) uint8 -> the network's uint8 input (rows, cols, 3), as the loaders prepare images:
    a portrait photo (width < height) is rotated by +90 degrees (counter-clockwise, dataset2's loader; no
    dataset1 photo is portrait), then resized bicubic. Returns ``(input, rotated)``."""
    pil = Image.fromarray(np.asarray(image))
    rotated = rotate_portrait and pil.size[0] < pil.size[1]
    if rotated:
        pil = pil.rotate(90, expand=True)
    return np.asarray(pil.resize((cols, rows), Image.BICUBIC)), rotated


def preprocess(image, *, rows=INPUT["rows"], cols=INPUT["cols"], rotate_portrait=INPUT["rotate_portrait"],
               **context):
    """One RGB photo (H, W, 3) uint8 -> (1, rows, cols, 3) float32 in [0, 1] (prepare_data.py's input / 255)."""
    x, _ = network_input(np.asarray(image)[..., :3], rows, cols, rotate_portrait)
    return x[None].astype(np.float32) / 255.0


def resize_back(prob, shape, rotate_portrait=INPUT["rotate_portrait"]):
    """(rows, cols) probabilities -> (H, W) float32 in [0, 1] at the photo's ``shape``: bilinear, rotated back."""
    from PIL import Image

    height, width = shape[:2]
    turned = rotated(shape, rotate_portrait)
    size = (height, width) if turned else (width, height)  # PIL (width, height) of the rotated photo
    full = Image.fromarray(np.asarray(prob, np.float32)).resize(size, Image.BILINEAR)
    if turned:
        full = full.rotate(-90, expand=True)
    return np.clip(np.asarray(full, np.float32), 0.0, 1.0)


def postprocess(prob, *, shape=None, threshold=INFERENCE["threshold"], rotate_portrait=INPUT["rotate_portrait"],
                **context):
    """Network probabilities (rows, cols) -> the nail mask (H, W) uint8 0/255 at the photo's ``shape``."""
    prob = np.asarray(prob, np.float32)
    if shape is not None:
        prob = resize_back(prob, shape, rotate_portrait)
    return np.where(prob > threshold, 255, 0).astype(np.uint8)


# --------------------------------------------------------------------------- prepared dataset (compare_models.py)

#: prepare_data.py's study folder (``<work-dir>/<study>``) holds these files
PREPARED_FILES = ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy", "split.json")


def is_prepared(path):
    """True when ``path`` is a study folder written by prepare_data.py (its arrays and split.json)."""
    return all((Path(path) / name).is_file() for name in PREPARED_FILES)


def load_prepared(path):
    """A prepared study -> ``{"train", "val", "test": (images (N, rows, cols, 3) uint8, masks (N, rows, cols, 1)
    uint8 0/1), "stats": {}, "split": text, "info": split.json}``, memory-mapped (nothing is copied).

    Validation: split.json's ``val`` part (own data stores train then val in x_train.npy, its ``counts``); without
    one (the benchmark layout, whose original validates on the test split) the last ``ceil(0.1 n)`` training
    images, so that no checkpoint is chosen on the test images.
    """
    from common.data.io import DataLayoutError

    folder = Path(path)
    arrays = {}
    for name in PREPARED_FILES[:4]:
        try:
            arrays[name[:-4]] = np.load(folder / name, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataLayoutError(f"{folder / name}: not a readable .npy array ({exc.__class__.__name__}); run "
                                  f"fingernail/prepare_data.py --overwrite again") from None
    info = json.loads((folder / "split.json").read_text())
    x, y = arrays["x_train"], arrays["y_train"]
    n_val = int((info.get("counts") or {}).get("val") or 0)
    rule = f"split.json's val part ({n_val} images)"
    if not n_val:
        n_val = math.ceil(0.1 * len(x))
        rule = (f"the last {n_val} training images (ceil 10 %; the original validates on its test split, a "
                f"comparison must not choose checkpoints on the test images)")
    if not 0 < n_val < len(x) or len(y) != len(x) or len(arrays["x_test"]) != len(arrays["y_test"]):
        raise DataLayoutError(f"{folder}: {len(x)} training images leave no train/val split, or images and "
                              f"masks differ in number; run fingernail/prepare_data.py --overwrite again")
    return {"train": (x[:-n_val], y[:-n_val]), "val": (x[-n_val:], y[-n_val:]),
            "test": (arrays["x_test"], arrays["y_test"]), "stats": {}, "split": f"validation: {rule}", "info": info}


def prepared_input(images, **stats):
    """Prepared uint8 images -> the network input float32: ``/ 255`` (train.py's ``scale_images``)."""
    return np.asarray(images, np.float32) / 255.0


def segment(image, network, *, threshold=INFERENCE["threshold"], tta="none", rotate_portrait=INPUT["rotate_portrait"],
            **context):
    """One photo (H, W, 3) uint8 -> ``{"mask": uint8 0/255, "prob": float32 in [0, 1]}`` at the photo's size; a
    K-class network (K > 2): ``{"mask": labels 0..K-1 uint8, "prob": (H, W, K)}``."""
    from common.inference import TTA_CHOICES, with_flips

    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {tta!r}")
    rows, cols = network.input_size
    x = preprocess(image, rows=rows, cols=cols, rotate_portrait=rotate_portrait)
    out = (with_flips(network) if tta == "flip" else network)(x)[0]
    if out.shape[-1] > 1:  # a K-class softmax head (--num-classes K > 2): the label map of the resized channels
        from common.multiclass import label_map_result

        return label_map_result(out, lambda p: resize_back(p, np.shape(image), rotate_portrait))
    prob = resize_back(out[..., 0], np.shape(image), rotate_portrait)
    return {"mask": np.where(prob > threshold, 255, 0).astype(np.uint8), "prob": prob}
