"""What train.py, eval.py, test.py and predict.py share: network names, presets, run folders, loading,
cube prediction and the challenge's scores of a list of cubes.

One module so that no script imports another (train.py scores the validation cubes every epoch exactly as
eval.py does, and eval.py finds train.py's default runs).
"""

from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import cli
from common.errors import UserError
from common.metrics import lesion_dice_per_class, nan_skipping_means, per_class_auc
from retinal_edema.dataset import CLASS_NAMES, cube_name, load_cube, normalise, presence
from retinal_edema.task import INFERENCE, RECIPE, REGISTRY

NAMES = ("unet", "unet_nested", "unet_nested_dilated")
LOSSES = ("mix_3", "mix_33")
COMMON = {key: RECIPE[key] for key in ("epochs", "lr", "weight_decay", "step", "seed")}  # task.py
PRESETS = RECIPE["per_model"]  # the README's commands (main.sh); unet_nested_dilated: assumed as unet_nested
EVAL_BATCH = INFERENCE["batch_size"]  # slices per forward pass in eval.py / test.py (the original's)
VAL_BATCH = 16  # slices per forward pass in the per-epoch validation of train.py
FUSION = ("unet_nested", "unet")  # the original's fusion pair (UNet++ mix_33, UNet mix_3)


def preset(name):
    """The default settings of model ``name`` (README command + common settings)."""
    return {**COMMON, **PRESETS[name]}


def run_name(name, loss, lr, *, batch_size=None, epochs=None, lr_mode=None, step=None, weight_decay=None,
             flip=True, multi_task=True, seed=None):
    """``<name>_nopre_<loss>_<lr>`` (the original's result folder name) plus a suffix for every setting that
    differs from the model's preset (``_b8``, ``_e12``, ``_poly``, ``_step10``, ``_wd0``, ``_noflip``,
    ``_nodet``, ``_seed1``), so two recipes never share a default run folder."""
    from common.training import tagged_name

    s = preset(name)
    return tagged_name(f"{name}_nopre_{loss}_{lr:g}", [
        (batch_size, s["batch_size"], "b{}"), (epochs, s["epochs"], "e{}"), (lr_mode, s["lr_mode"], "{}"),
        (step, s["step"], "step{}"), (weight_decay, s["weight_decay"], "wd{:g}"), (seed, s["seed"], "seed{}"),
        (flip, True, "noflip"), (multi_task, True, "nodet")])


def default_run_dir(name, loss, lr, **options):
    """``weights/retinal_edema/<run_name(...)>`` (see :func:`run_name`)."""
    return cli.repo_path("weights", "retinal_edema", run_name(name, loss, lr, **options))


def default_checkpoints(names, weights="best"):
    """``<weights>.keras`` of train.py's default run (the preset's settings) for each model name."""
    return [default_run_dir(name, preset(name)["loss"], preset(name)["lr"]) / f"{weights}.keras" for name in names]


def load_models(checkpoints, mixed_precision="off"):
    """Load ``.keras`` checkpoints for inference (no optimizer state needed), computing under
    ``--mixed-precision`` (a loaded model otherwise keeps its saved policies); a missing or unreadable file is
    a one-line ``UserError``."""
    import keras

    from common.devices import apply_precision

    import common.losses  # noqa: F401  (registers the edema losses)
    import common.optimizers  # noqa: F401  (registers AdamL2)

    models = []
    for path in checkpoints:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: not found; run retinal_edema/train.py first")
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # noqa: BLE001  (a truncated or foreign file: Keras raises many types)
            raise UserError(f"{path}: not a readable Keras model ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:160]}); pass a best.keras/last.keras of "
                            f"retinal_edema/train.py") from None
        if not isinstance(model.output, dict) or "seg" not in model.output:
            raise UserError(f"{path}: not a retinal-edema network (no 'seg' output); pass a checkpoint of "
                            f"retinal_edema/train.py")
        models.append(apply_precision(model, mixed_precision))
    return models


def _flip_mean(fn, chunk):
    """Mean of ``fn`` (returning ``(prob, det)``) on the chunk and its horizontal and vertical flips, the
    probability maps flipped back; the detection (a per-slice presence) is averaged as is."""
    prob, det = fn(chunk)
    for axis in (2, 1):
        p, d = fn(np.ascontiguousarray(np.flip(chunk, axis)))
        prob = prob + np.flip(p, axis)
        det = None if det is None else det + d
    return prob / 3, None if det is None else det / 3


def predict_cube(models, x, batch=EVAL_BATCH, mean=None, std=None, tta="none", probabilities=False):
    """Predict a cube (n, H, W, 3) with one model or the fusion of several.

    ``x`` is normalised already, or uint8 with ``mean``/``std`` given (then each chunk is normalised on the
    fly, which keeps a real 128 x 1024 x 512 cube at 200 MB instead of 800 MB of float32). Several models:
    mean softmax (exp of the log-probabilities) and mean detection, equal weights. ``tta="flip"`` (ours, off
    as the original): the softmax maps of each chunk, its left-right and its up-down flip (flipped back) are
    averaged, and so are the three detections (a slice's lesion presence does not change under a flip).

    Returns ``(prediction, detection)``: (n, H, W) uint8 classes and (n, 3) float32 probabilities (or None for
    a model without detection head); with ``probabilities=True`` also the (n, H, W, 4) float32 softmax.
    """
    if tta not in ("none", "flip"):
        raise ValueError(f"tta must be 'none' or 'flip', got {tta!r}")

    def fused(chunk):
        prob, det = 0.0, 0.0
        for model in models:
            out = model(chunk, training=False)
            prob = prob + np.exp(np.asarray(out["seg"], np.float32)) / len(models)
            det = det + np.asarray(out["det"], np.float32) / len(models) if "det" in out else None
        return prob, det

    seg_out, det_out, prob_out = [], [], []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch] if mean is None else normalise(x[start:start + batch], mean, std)
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


def surface_columns(truth, pred):
    """``HD95 <class>`` and ``ASSD <class>`` of one cube: each lesion class as a binary volume (slices x rows x
    cols, distances in voxel units; the challenge gives no voxel spacing), ``common.metrics.surface_distances``
    (MONAI's definitions: NaN when the class is in neither volume, inf when in only one)."""
    from common.metrics import surface_distances

    out = {}
    for c, name in enumerate(CLASS_NAMES, 1):
        d = surface_distances(truth == c, pred == c)
        out[f"HD95 {name}"], out[f"ASSD {name}"] = float(d["hd95"]), float(d["assd"])
    return out


def evaluate_cubes(models, data_dir, images, labels, mean, std, batch=EVAL_BATCH, verbose=True, keep=0, tta="none",
                   min_size=0, surface=False):
    """Per-cube Dice, final Dice and detection AUC of ``models`` on the listed cubes.

    ``min_size`` > 0 (ours, off as the original): per slice, connected regions of a lesion class smaller than
    that many pixels become background before scoring (``common.postprocess.remove_small_regions``).
    ``surface=True`` adds the columns of :func:`surface_columns` to every cube's row (beside, not instead of,
    the challenge's Dice).

    Returns a dict: ``rows`` (per cube: name, Dice per class, the cube's mean of non-NaN classes), ``dice``
    (final), ``dice_per_class``, ``auc`` (mean of the three), ``auc_per_class``, ``targets``/``scores``
    (per-slice presence and detection) and, with ``keep`` > 0, ``examples`` = [(green channel, prediction,
    label)] of the middle slice of the first ``keep`` cubes.
    """
    rows, targets, scores, examples = [], [], [], []
    for image_rel, label_rel in tqdm(list(zip(images, labels)), desc="cubes", unit="cube", disable=not verbose):
        x, y = load_cube(data_dir, image_rel, label_rel)
        pred, det = predict_cube(models, x, batch, mean, std, tta=tta)
        if min_size > 0:
            pred = postprocess_cube(pred, min_size)
        dice = lesion_dice_per_class(y, pred)
        valid = [d for d in dice if not np.isnan(d)]
        rows.append({"cube": cube_name(image_rel), **{f"Dice {n}": d for n, d in zip(CLASS_NAMES, dice)},
                     "Dice (cube)": float(np.mean(valid)) if valid else float("nan"),
                     **(surface_columns(y, pred) if surface else {})})
        targets.append(presence(y))
        if det is not None:
            scores.append(det)
        if len(examples) < keep:
            k = len(x) // 2
            examples.append((x[k, :, :, 1], pred[k], y[k]))
    final, class_means = nan_skipping_means([[r[f"Dice {n}"] for n in CLASS_NAMES] for r in rows])
    result = {"rows": rows, "dice": final, "dice_per_class": class_means, "examples": examples,
              "targets": np.concatenate(targets), "scores": np.concatenate(scores) if scores else None}
    aucs = per_class_auc(result["targets"], result["scores"]) if scores else [float("nan")] * 3
    result["auc_per_class"] = aucs
    result["auc"] = float(np.mean(aucs))
    return result


def postprocess_cube(pred, min_size):
    """Per slice (the original's unit of prediction), lesion regions below ``min_size`` pixels -> background."""
    from common.postprocess import remove_small_regions

    return np.stack([remove_small_regions(p, min_size) for p in pred]).astype(np.uint8)
