"""Task descriptor of retinal_edema (UNet++ / U-Net on AI Challenger 2018 OCT cubes): the facts common tools need.

NumPy only (no TensorFlow, no Keras): the TensorFlow-free predict path uses it. The scripts read their
defaults from here (``common.tasks`` finds this module by scanning the repository).
"""

from pathlib import Path

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
#: overlay colours of REA, SRF, PED
COLOURS = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 0]], np.uint8)
#: gen_image.py's own-data defaults (--images/--masks or --nnunet-dataset): fractions of the CUBES as the
#: challenge's 70 / 15 / 15 cubes; slices of one cube always stay on one side (a slice's cube = its folder, a
#: volume's file, or for flat names "<cube>_<slice number>"); --group-by REGEX on cube names groups cubes
#: further (e.g. one patient's eyes); labels: class indices 0..3 or the challenge's grey codes (0, 255, 191, 128)
OWN_DATA = {"val_fraction": 0.15, "test_fraction": 0.15, "group_by": None, "mode": "gray", "binary": False,
            "split_unit": "cube", "slice_pattern": r"^(.+?)[_-]?(\d+)$", "seed": 0}


#: compare_models.py: why its prepared data cannot feed the binary models it compares (refused in one line)
NOT_COMPARABLE = ("its prepared data are 3-slice OCT stacks with 4-class lesion label maps (REA, SRF, PED) and a "
                  "lesion-presence (detection) target; compare_models.py compares binary segmentation models, none "
                  "of which can take them: train and score the edema models with retinal_edema/train.py and eval.py")


def is_prepared(path):
    """True for gen_image.py's output: its ``--data-dir`` (``Edema_trainingset/trans3channel_images``) or its
    ``--list-dir`` (``train_images.txt`` and ``info.json``)."""
    path = Path(path)
    return (path / "Edema_trainingset" / "trans3channel_images").is_dir() or (
        (path / "train_images.txt").is_file() and (path / "info.json").is_file())


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


def read_stats_file(path):
    """(mean, std) of an info.json (gen_image.py's statistics); ``UserError`` for a missing or bad file."""
    import json
    from pathlib import Path

    from common.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: --stats file not found (gen_image.py's info.json)")
    try:
        info = json.loads(path.read_text())
        mean, std = np.float32(info["mean"]), np.float32(info["std"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not an info.json with 'mean' and 'std' of 3 channels") from None
    if mean.shape != (3,) or std.shape != (3,):
        raise UserError(f"{path}: 'mean' and 'std' must hold 3 values (R, G, B)")
    return mean, std


def run_context(run_dir, **options):
    """The run's training mean/std (``state.json`` settings) unless ``options`` give them; ``UserError`` when
    they are not there."""
    if "mean" in options and "std" in options:
        return {}
    import json
    from pathlib import Path

    from common.errors import UserError

    state = Path(run_dir) / "state.json"
    if state.is_file():
        settings = json.loads(state.read_text()).get("settings", {})
        if "mean" in settings and "std" in settings:
            return {"mean": [float(v) for v in settings["mean"]], "std": [float(v) for v in settings["std"]]}
    raise UserError(f"{state}: no training mean/std in the run folder {run_dir}; pass --stats <list dir>/info.json "
                    f"(gen_image.py's statistics)")


def _flip_mean(fn, chunk):
    """Mean of ``fn`` (returning ``(prob, det)``) on the chunk and its horizontal and vertical flips, the
    probability maps flipped back; the detection (a per-slice presence) is averaged as is."""
    prob, det = fn(chunk)
    for axis in (2, 1):
        p, d = fn(np.ascontiguousarray(np.flip(chunk, axis)))
        prob = prob + np.flip(p, axis)
        det = None if det is None else det + d
    return prob / 3, None if det is None else det / 3


def predict_stacked(networks, x, *, batch_size=INFERENCE["batch_size"], mean=None, std=None, tta="none",
                    probabilities=False):
    """Predict a stacked cube (n, H, W, 3) with one network or the fusion of several (NumPy callables returning
    ``{"seg": log-probabilities, "det": sigmoid}``).

    ``x`` is normalised already, or uint8 with ``mean``/``std`` given (then each chunk of ``batch_size`` slices
    is normalised on the fly, which keeps a real 128 x 1024 x 512 cube at 200 MB instead of 800 MB of float32).
    Several networks: mean softmax (exp of the log-probabilities) and mean detection, equal weights.
    ``tta="flip"``: the softmax maps of each chunk, its left-right and its up-down flip (flipped back) are
    averaged, and so are the three detections.

    Returns ``(classes (n, H, W) uint8, detection (n, 3) float32 or None)``, and the (n, H, W, 4) float32
    softmax as a third item with ``probabilities=True``.
    """
    if tta not in ("none", "flip"):
        raise ValueError(f"tta must be 'none' or 'flip', got {tta!r}")

    def fused(chunk):
        prob, det = 0.0, 0.0
        for network in networks:
            out = network(chunk)
            prob = prob + np.exp(np.asarray(out["seg"], np.float32)) / len(networks)
            det = det + np.asarray(out["det"], np.float32) / len(networks) if "det" in out else None
        return prob, det

    seg_out, det_out, prob_out = [], [], []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size] if mean is None else normalise(x[start:start + batch_size], mean, std)
        chunk = np.asarray(chunk, np.float32)
        prob, det = _flip_mean(fused, chunk) if tta == "flip" else fused(chunk)
        seg_out.append(np.argmax(prob, axis=-1).astype(np.uint8))
        det_out.append(det)
        if probabilities:
            prob_out.append(np.asarray(prob, np.float32))
    detection = None if det_out[0] is None else np.concatenate(det_out).astype(np.float32)
    if probabilities:
        return np.concatenate(seg_out), detection, np.concatenate(prob_out)
    return np.concatenate(seg_out), detection


def segment(slices, network, *, mean, std, batch_size=INFERENCE["batch_size"], tta="none", min_size=0,
            probabilities=False, **context):
    """A cube (n, H, W) uint8 -> ``{"mask": grey label slices (n, H, W) uint8, "classes": (n, H, W) uint8,
    "detection": (n, 3) float32 or None, "prob": (n, H, W, 4) softmax with probabilities=True else None}``.

    Slices whose sides are not multiples of 16 are padded with black at the bottom/right (before the
    normalisation) and the prediction is cropped back."""
    slices = np.asarray(slices)
    if slices.ndim == 2:
        slices = slices[None]
    n, h, w = slices.shape
    hp, wp = -(-h // INPUT["multiple"]) * INPUT["multiple"], -(-w // INPUT["multiple"]) * INPUT["multiple"]
    x = np.pad(stack_slices(slices), ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    out = predict_stacked([network], x, batch_size=batch_size, mean=np.float32(mean), std=np.float32(std), tta=tta,
                          probabilities=probabilities)
    pred = out[0][:, :h, :w]
    prob = out[2][:, :h, :w] if probabilities else None
    if min_size > 0:
        from common.postprocess import remove_small_regions

        pred = np.stack([remove_small_regions(p, min_size) for p in pred]).astype(np.uint8)
    pred = np.ascontiguousarray(pred)
    grey = np.array([GREY_CODES[c] for c in sorted(GREY_CODES)], np.uint8)
    return {"mask": grey[pred], "classes": pred, "detection": out[1], "prob": prob}


def load_keras_network(checkpoint, mixed_precision="off"):
    """A retinal-edema checkpoint as a Keras model (lazy Keras import; ``UserError`` without a 'seg' output)."""
    from common.errors import UserError
    from common.predict import load_checkpoint

    import common.losses  # noqa: F401  (registers the edema losses)
    import common.optimizers  # noqa: F401  (registers AdamL2)

    model = load_checkpoint(checkpoint, mixed_precision)
    if not isinstance(model.output, dict) or "seg" not in model.output:
        raise UserError(f"{checkpoint}: not a retinal-edema network (no 'seg' output); pass a checkpoint of "
                        f"retinal_edema/train.py")
    return model


def colourise(grey, classes):
    """Grey slice (H, W) with the classes 1..3 filled in REA blue, SRF green, PED red -> (H, W, 3) uint8."""
    rgb = np.repeat(np.asarray(grey, np.uint8)[..., None], 3, axis=-1)
    for c in range(1, 4):
        rgb[classes == c] = COLOURS[c - 1]
    return rgb
