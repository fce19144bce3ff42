"""Task descriptor of lung (BCDU-Net on the Kaggle lung CT volumes): the facts common tools need.

NumPy / SciPy only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read
their defaults from here (``common.tasks`` finds this module by scanning the repository).

The network predicts the AROUND-lung region of each slice; the lung is ``FOV AND NOT (p > 0.5)`` with the body
FOV taken from the image alone (the leak-free FOV of predict.py).
"""

import json
import math
from pathlib import Path

import cv2
import numpy as np

from common.errors import UserError

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
#: prepare_data.py --images/--masks, --nnunet-dataset: of the original's slices 30 % test and 70 % x 20 % = 14 %
#: validation; a case is a volume (sliced along slice_axis) or a 2-D slice (grey); without group_by, 2-D slices
#: are grouped by slice_group searched in their relative path (folder and name without the trailing number)
OWN_DATA = {"val_fraction": 0.14, "test_fraction": 0.3, "group_by": None, "mode": "gray", "slice_axis": 0,
            "slice_group": r"^(.+?)[-_. ]*\d+$"}


def hu_to_grayscale(volume, slices=None, hu_range=INPUT["hu_range"]):
    """HU clipped to ``hu_range``, min-max scaled over the WHOLE volume to [0, 255] (float64), as the original.

    ``slices`` (indices along axis 0) returns only those slices, scaled with the whole volume's range, so a
    large volume is never held in float64 at once.
    """
    volume = np.asarray(volume)
    low, high = np.clip([volume.min(), volume.max()], *hu_range).astype(np.float64)
    part = volume if slices is None else volume[slices]
    return (np.clip(part.astype(np.float64), *hu_range) - low) / max(high - low, 1e-3) * 255.0


def body_mask(images, erosion_size=INFERENCE["erosion_size"]):
    """(S, H, W) bool: ``images > 0`` eroded slice by slice with a ``k x k`` all-ones element.

    Pixels outside the slice count as background (``scipy.ndimage.binary_erosion``'s default border 0),
    so the body also shrinks away from the slice border.
    """
    images = np.asarray(images)
    kernel = np.ones((erosion_size, erosion_size), np.uint8)
    out = np.empty(images.shape, bool)
    for i, image in enumerate(images):
        out[i] = cv2.erode((image > 0).astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return out


def fill_fov(mask, fill_size=INFERENCE["fill_size"]):
    """(S, H, W) bool: every slice with its holes filled, the background connected through ``k x k`` steps.

    ``scipy.ndimage.binary_fill_holes(slice, structure=np.ones((k, k)))`` of each slice, computed for the
    whole stack at once (a (1, k, k) structure never connects two slices).
    """
    from scipy.ndimage import binary_fill_holes

    structure = np.ones((1, fill_size, fill_size), bool)
    return binary_fill_holes(np.asarray(mask) != 0, structure=structure)


def preprocess(volume, **context):
    """A volume in HU (S, H, W) -> the network input (S, H, W, 1) float32: HU clipped to [-512, 512], scaled
    over the whole volume to 0..255 (prepare_data.py, 64 slices at a time in float64), / 255."""
    return (scaled_slices(volume) / np.float32(255.0))[..., None]


def scaled_slices(volume):
    """A volume in HU (S, H, W) -> the slices scaled to 0..255 (float32), as prepare_data.py."""
    volume = np.asarray(volume)
    images = np.empty(volume.shape, np.float32)
    for i in range(0, len(volume), 64):  # the whole volume's range, 64 slices at a time in float64
        images[i:i + 64] = hu_to_grayscale(volume, np.arange(i, min(i + 64, len(volume))))
    return images


def body_fov(images, erosion_size=INFERENCE["erosion_size"], fill_size=INFERENCE["fill_size"]):
    """Leak-free FOV from the scaled slices alone: the eroded body with its holes filled (bool)."""
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
    fov = context.get("fov")
    lung = estimated_lung(prob, body_fov(images, erosion_size, fill_size) if fov is None else fov)
    if min_size > 1 or keep_largest > 0:
        from common.postprocess import postprocess_mask

        lung = postprocess_mask(lung, min_size=min_size, keep_largest=keep_largest)
    return lung


def network_side(h, w):
    """The square network size for ``h x w`` slices: the next multiple of 8 of the larger side."""
    return -(-max(h, w) // INPUT["multiple"]) * INPUT["multiple"]


def predict_slices(network, images, *, tta="none", batch_size=INFERENCE["batch_size"], verbose=False, **context):
    """Network outputs (S, H, W, C) float32 of scaled slices (S, H, W) 0..255, ``batch_size`` at a time: input
    ``/ 255`` zero-padded at the bottom/right to the square network side, cropped back (``tta="flip"``: the mean
    over each slice's flips). C = 1 (the around-lung probability) or K (a K-class softmax head, ``--num-classes``).
    ``network``: a NumPy callable (``common.predict.KerasNetwork`` / ``OnnxNetwork``)."""
    from tqdm import tqdm

    from common.inference import TTA_CHOICES, with_flips

    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {tta!r}")
    images = np.asarray(images)
    n, h, w = images.shape
    side = network_side(h, w)

    def run(x):
        x = np.pad(x, ((0, 0), (0, side - h), (0, side - w), (0, 0)))
        return np.asarray(network(x), np.float32)[:, :h, :w]

    if tta == "flip":
        run = with_flips(run)
    out = None
    for i in tqdm(range(0, n, batch_size), desc="slices", disable=not verbose):
        pred = run((np.asarray(images[i:i + batch_size], np.float32) / 255.0)[..., None])
        if out is None:
            out = np.empty((n, h, w, pred.shape[-1]), np.float32)
        out[i:i + batch_size] = pred
    return np.empty((n, h, w, 1), np.float32) if out is None else out


def predict_around_lung(network, images, *, tta="none", batch_size=INFERENCE["batch_size"], verbose=False,
                        **context):
    """Around-lung probabilities (S, H, W) float32 of scaled slices (S, H, W) 0..255 (:func:`predict_slices`'
    one channel of the original's binary head)."""
    return predict_slices(network, images, tta=tta, batch_size=batch_size, verbose=verbose)[..., 0]


def segment(volume, network, *, erosion_size=INFERENCE["erosion_size"], fill_size=INFERENCE["fill_size"],
            min_size=0, keep_largest=0, **context):
    """The lung mask of one volume (S, H, W) in HU, as evaluate_performance.py estimates it (leak-free FOV).

    Returns ``{"mask": bool lung after the optional post-processing, "prob": lung score FOV*(1-p) float32,
    "images": scaled slices float32, "around_lung": p, "fov": body FOV}``. A K-class network (K > 2, trained with
    ``--num-classes K`` on label-map targets): ``{"mask": labels 0..K-1 (S, H, W) uint8 = the argmax, "prob":
    the softmax (S, H, W, K), "images": ..., "around_lung": None, "fov": None}`` (no FOV step: its targets are
    the label maps themselves; ``min_size`` / ``keep_largest`` apply to the binary lung mask only).
    """
    images = scaled_slices(volume)
    out = predict_slices(network, images, **context)
    if out.shape[-1] > 1:  # a K-class softmax head: the label maps are the network's own answer
        return {"mask": np.argmax(out, axis=-1).astype(np.uint8), "prob": out, "images": images,
                "around_lung": None, "fov": None}
    prob = out[..., 0]
    fov = body_fov(images, erosion_size, fill_size)
    lung = postprocess(prob, images=images, fov=fov, min_size=min_size, keep_largest=keep_largest)
    return {"mask": lung, "prob": lung_score(prob, fov).astype(np.float32), "images": images, "around_lung": prob,
            "fov": fov}


def check_lung_network(model, source):
    """``UserError`` naming ``source`` unless ``model`` takes one-channel square slices and gives one channel (the
    around-lung probability) or K > 2 (a K-class softmax head, ``train_lung.py --num-classes K``)."""
    shape = tuple(model.input_shape) if len(model.inputs) == 1 else None
    out = model.output_shape[-1] if len(model.outputs) == 1 else None
    if shape is None or len(shape) != 4 or shape[-1] != 1 or shape[1] != shape[2] or out is None or out == 2:
        raise UserError(f"{source}: a network with inputs {model.input_shape} and outputs {model.output_shape} is "
                        "not a lung network (one-channel square slices in, one around-lung channel or K > 2 class "
                        "channels out)")


def load_keras_network(checkpoint, mixed_precision="off"):
    """A lung checkpoint as a Keras model, checked to be a lung network (lazy Keras import)."""
    from common.predict import load_checkpoint

    model = load_checkpoint(checkpoint, mixed_precision)
    check_lung_network(model, checkpoint)
    return model


# --------------------------------------------------------------------------- prepared dataset (compare_models.py)

#: prepare_data.py's --work-dir holds these arrays (and split.json): the scaled slices and the around-lung targets
PREPARED_FILES = ("data_train.npy", "Train_maska.npy", "data_test.npy", "Test_maska.npy")


def is_prepared(path):
    """True when ``path`` is a --work-dir written by prepare_data.py (its slices and around-lung targets)."""
    return all((Path(path) / name).is_file() for name in PREPARED_FILES)


def load_prepared(path):
    """prepare_data.py's arrays -> ``{"train", "val", "test": (slices (N, S, S, 1) float32 0..255, targets (N, S,
    S, 1) uint8 0/1), "stats": {}, "split": text, "info": split.json or {}}``, memory-mapped (nothing copied).

    The target is the task's own: the AROUND-lung region (``Train_maska`` / ``Test_maska``, what BCDU-Net learns
    here with binary cross-entropy; the lung is ``FOV AND NOT (p > 0.5)``, a step of evaluate_performance.py
    that a comparison does not take), so a comparison scores every model on the around-lung region of the test
    slices, not on the lung. Validation as train_lung.py: split.json's ``n_val`` last training slices (own
    data: the validation cases), else the last 20 % (Keras ``validation_split``, the original's).
    """
    from common.data.io import DataLayoutError

    folder = Path(path)
    arrays = {}
    for name in PREPARED_FILES:
        try:
            arrays[name[:-4]] = np.load(folder / name, mmap_mode="r")
        except (OSError, ValueError, EOFError) as exc:
            raise DataLayoutError(f"{folder / name}: not a readable .npy array ({exc.__class__.__name__}); run "
                                  f"lung/prepare_data.py --overwrite again") from None
    for part in ("train", "test"):
        x, y = arrays[f"data_{part}"], arrays[f"{part.capitalize()}_maska"]
        if x.ndim != 3 or x.shape != y.shape or not len(x):
            raise DataLayoutError(f"{folder}: data_{part}.npy {x.shape} and {part.capitalize()}_maska.npy {y.shape} "
                                  f"do not match; run lung/prepare_data.py --overwrite again")
    info = json.loads((folder / "split.json").read_text()) if (folder / "split.json").is_file() else {}
    x, y = arrays["data_train"][..., None], arrays["Train_maska"][..., None]
    n = len(x)
    n_val = info.get("n_val")
    if n_val:
        n_val = int(n_val)
        rule = f"validation: split.json's validation cases ({n_val} slices)"
    else:
        n_val = n - int(math.floor(n * (1.0 - RECIPE["val_split"])))
        rule = f"validation: the last {n_val} training slices (20 %, the original's validation_split)"
    if not 0 < n_val < n:
        raise DataLayoutError(f"{folder}: {n} training slices leave no train/validation split; prepare more data")
    rule += ("; targets: the around-lung region (Train_maska / Test_maska, what the task's network learns; the "
             "lung itself is scored by lung/evaluate_performance.py)")
    return {"train": (x[:n - n_val], y[:n - n_val]), "val": (x[n - n_val:], y[n - n_val:]),
            "test": (arrays["data_test"][..., None], arrays["Test_maska"][..., None]), "stats": {}, "split": rule,
            "info": info}


def prepared_input(images, **stats):
    """Prepared slices (0..255) -> the network input float32: ``/ 255`` (train_lung.py's ``scale_images``)."""
    return np.asarray(images, np.float32) / np.float32(255.0)
