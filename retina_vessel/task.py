"""Task descriptor of retina_vessel (BCDU-Net on DRIVE): the facts common tools need, in one place.

NumPy / OpenCV only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read
their defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

import json
import math
from pathlib import Path

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
#: prepare_datasets_DRIVE.py --images/--masks (--nnunet-dataset): DRIVE's proportions, 20 test of 40 images and
#: the last 4 of the 20 training images (validation_split 0.2) for validation
OWN_DATA = {"val_fraction": 0.1, "test_fraction": 0.5, "group_by": None, "mode": "rgb", "seed": 0}


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


def predict_images(network, images, *, inference="full", stride=INFERENCE["stride"], verbose=False, tta="none",
                   **context):
    """Probability maps (N, H, W, 1) float32 of preprocessed images (N, H, W, 1) of any size (evaluate.py and
    predict.py): ``overlap`` = windows of the network's input size at ``stride``, averaged; ``full`` = one pass
    over each image padded to a multiple of 8. ``network``: a NumPy callable with ``input_size``
    (``common.predict.KerasNetwork`` / ``OnnxNetwork``)."""
    from common.inference import predict_sliding_window, predict_whole

    if inference == "overlap":
        return predict_sliding_window(network, images, tuple(network.input_size), stride, verbose=verbose, tta=tta,
                                      chunk_size=max(2048 // max(network.batch_size, 1), 1) * network.batch_size)
    if inference == "full":
        return predict_whole(network, images, multiple=INPUT["multiple"], verbose=verbose, tta=tta)
    raise ValueError(f"unknown inference {inference!r} ({', '.join(INFERENCE['modes'])})")


def kill_border_labels(prob, fov):
    """``kill_border`` of a K-class softmax (..., H, W, K): background (class 0) with probability 1 wherever the
    FOV mask (..., H, W[, 1]) is 0, so the argmax there is 0."""
    prob = np.asarray(prob)
    inside = (np.asarray(fov) > 0).reshape(prob.shape[:-1] + (1,))
    background = np.zeros(prob.shape[-1], prob.dtype)
    background[0] = 1
    return np.where(inside, prob, background).astype(prob.dtype)


def segment(image, network, *, fov=None, threshold=INFERENCE["threshold"], **context):
    """One fundus photo (H, W, 3) uint8 -> ``{"mask": uint8 0/255, "prob": float32 (H, W)}`` (the probabilities
    after ``kill_border`` when a FOV mask (H, W) is given). A K-class network (K > 2, an own dataset prepared
    with ``--keep-labels``): ``{"mask": labels 0..K-1 (H, W) uint8 = the argmax, "prob": (H, W, K)}``, background
    outside the FOV (:func:`kill_border_labels`; ``threshold`` does not apply)."""
    out = predict_images(network, preprocess(image), **context)[0]
    if out.shape[-1] > 1:  # a K-class softmax head
        if fov is not None:
            out = kill_border_labels(out, fov)
        return {"mask": np.argmax(out, axis=-1).astype(np.uint8), "prob": out}
    prob = out[..., 0]
    if fov is not None:
        prob = kill_border(prob, fov)
    return {"mask": postprocess(prob, threshold=threshold), "prob": prob}


def add_variant_arguments(parser, trained=False):
    """``--bidirectional`` and ``--prior-output-bias``: the options that name the default run folder (shared with
    evaluate.py, where they select that folder)."""
    did = "the run used " if trained else ""
    parser.add_argument("--bidirectional", action="store_true",
                        help=did + "forward + backward ConvLSTM fusion (the paper's description; the original code "
                                   "has only the backward layer)")
    parser.add_argument("--prior-output-bias", "--prior-bias", dest="prior_bias", action="store_true",
                        help=did + "start the sigmoid output at the training vessel share instead of 0.5 (keeps the "
                                   "original's 2-channel ReLU head from dying early; default: off, as the original)")


def load_init_weights(path, bidirectional=False, mixed_precision="off"):
    """``bcdu_net_d3`` at 64 x 64 x 1 with the authors' Keras-2 checkpoint (``weight_lstm.hdf5``) loaded."""
    from common.devices import set_precision
    from common.legacy_weights import load_legacy_weights
    from common.models import build_model

    set_precision(mixed_precision)
    model = build_model(DEFAULT_MODEL, (INPUT["patch"], INPUT["patch"], 1), bidirectional=bidirectional)
    load_legacy_weights(model, path)
    return model


# --------------------------------------------------------------------------- prepared dataset (compare_models.py)

_HDF5 = "DRIVE_datasets_training_testing"
#: prepare_datasets_DRIVE.py's --work-dir after save_patch.py: the training patches and the test HDF5 files
PREPARED_FILES = ("patches_imgs_train.npy", "patches_masks_train.npy") + tuple(
    f"{_HDF5}/DRIVE_dataset_{kind}_test.hdf5" for kind in ("imgs", "groundTruth", "borderMasks"))


def is_prepared(path):
    """True when ``path`` is a --work-dir with save_patch.py's patches and prepare_datasets_DRIVE.py's test files."""
    return all((Path(path) / name).is_file() for name in PREPARED_FILES)


def _read_hdf5(path):
    import h5py

    from common.data.io import DataLayoutError

    try:
        with h5py.File(path, "r") as f:
            return f["image"][()]
    except (OSError, KeyError) as exc:
        raise DataLayoutError(f"{path}: not a DRIVE HDF5 file with an 'image' dataset ({exc.__class__.__name__}); "
                              f"run retina_vessel/prepare_datasets_DRIVE.py --overwrite again") from None


def load_prepared(path):
    """The patches and the test images -> ``{"train", "val": (patches (N, P, P, 1) float32 in [0, 1] (my_PreProc
    done by save_patch.py), masks (N, P, P, 1) uint8), "test": (images (N, H, W, 1) float32 (my_PreProc of the
    whole test set, as evaluate.py), vessels (N, H, W, 1) uint8 0/1), "test_fov": (N, H, W, 1) uint8 0/1,
    "stats": {}, "split": text, "info": split.json or {}}``; the patches memory-mapped.

    Train / validation: the patches, split as train_retina.py (own data: the patches of split.json's last
    ``counts.val`` training images; DRIVE: the last 20 %, Keras ``validation_split``). Test: the whole prepared
    test images at their own size (the models are trained on patches: compare_models.py predicts each whole image
    in one pass, zero-padded to the model's multiple, as evaluate.py ``--inference full``), with the FOV masks
    (``test_fov``: probabilities outside them are set to 0, the original's ``kill_border``).
    """
    from common.data.io import DataLayoutError
    from common.data.preprocess import my_preproc

    folder = Path(path)
    try:
        x, y = (np.load(folder / name, mmap_mode="r") for name in PREPARED_FILES[:2])
    except (OSError, ValueError, EOFError) as exc:
        raise DataLayoutError(f"{folder}: the patch files are not readable .npy arrays ({exc.__class__.__name__}); "
                              f"run retina_vessel/save_patch.py --overwrite again") from None
    if x.ndim != 4 or x.shape != y.shape or not len(x):
        raise DataLayoutError(f"{folder}: patches {x.shape} and masks {y.shape} do not match; run "
                              f"retina_vessel/save_patch.py --overwrite again")
    split_file = folder / _HDF5 / "split.json"
    info = json.loads(split_file.read_text()) if split_file.is_file() else {}
    counts = info.get("counts")
    n = len(x)
    if counts:
        n_images = int(counts["train"]) + int(counts["val"])
        n_val = n // n_images * int(counts["val"]) if n % n_images == 0 else 0
        rule = f"validation: the patches of split.json's {counts['val']} validation images ({n_val} patches)"
    else:
        n_val = n - int(math.floor(n * (1.0 - RECIPE["val_split"])))
        rule = f"validation: the last {n_val} patches (20 %, the original's validation_split)"
    if not 0 < n_val < n:
        raise DataLayoutError(f"{folder}: {n} patches leave no train/validation split (save_patch.py --n-patches "
                              f"must be a multiple of the training images); run it again")
    imgs, truth, fov = (_read_hdf5(folder / name).transpose(0, 2, 3, 1) for name in PREPARED_FILES[2:])
    if not (imgs.shape[:3] == truth.shape[:3] == fov.shape[:3]) or not len(imgs):
        raise DataLayoutError(f"{folder / _HDF5}: the test images {imgs.shape}, ground truth {truth.shape} and FOV "
                              f"masks {fov.shape} do not match; run retina_vessel/prepare_datasets_DRIVE.py again")
    labels = truth.astype(np.uint8) if int(info.get("num_classes") or 2) > 2 else (truth / 255.0).astype(np.uint8)
    h, w = imgs.shape[1:3]
    rule += (f"; train / val: save_patch.py's {x.shape[1]}x{x.shape[2]} patches; test: the {len(imgs)} whole test "
             f"images ({h}x{w}), one pass each zero-padded to the model's multiple, 0 outside the FOV")
    return {"train": (x[:n - n_val], y[:n - n_val]), "val": (x[n - n_val:], y[n - n_val:]),
            "test": (my_preproc(imgs), labels), "test_fov": (fov > 0).astype(np.uint8), "stats": {}, "split": rule,
            "info": info}


def prepared_input(images, **stats):
    """Prepared patches and test images are already the network input (``my_PreProc``, float32 in [0, 1])."""
    return np.asarray(images, np.float32)
