"""Multi-class training and evaluation for the binary families' task scripts (``--num-classes``).

A prepared mask array holds either a binary mask (0/1, 0/255, or soft values such as bilinear-resized 0..255
masks: the originals' data) or an integer label map 0..K-1 with K > 2 (0 = background). The train scripts take
``--num-classes`` (default: read from the training masks by :func:`infer_num_classes`); K = 1 or 2 is the
original binary task, unchanged (sigmoid head, the task's own loss and targets); K > 2 builds the network with a
K-channel softmax head (``build_model(..., num_classes=K)``) and trains it with :class:`common.losses.MulticlassLoss`
on the label maps as they are. The evaluate scripts score a K-channel model per class with
:func:`common.metrics.multiclass_scores` (:func:`write_multiclass_results`).
"""

import numpy as np

from common import cli
from common.run_options import MULTICLASS_LOSSES

NUM_CLASSES_HELP = ("classes including the background: 1 or 2 = binary (the original), K > 2 = K-channel "
                    "softmax head on label maps 0..K-1 (default: from the training masks: K when they hold "
                    "integer labels 0..K-1 with K - 1 in 2..63, else 2)")


def add_num_classes_arguments(parser, default_loss):
    """``--num-classes`` and ``--multiclass-loss`` (used only when K > 2; ``default_loss`` is the task loss's
    multi-class analogue)."""
    parser.add_argument("--num-classes", type=int, default=None, help=NUM_CLASSES_HELP)
    default = default_loss or "the multi-class form of --loss"
    parser.add_argument("--multiclass-loss", choices=MULTICLASS_LOSSES, default=default_loss,
                        help=f"loss when --num-classes > 2: ce = categorical cross-entropy, dice = soft Dice "
                             f"averaged over the foreground classes, ce_dice = their sum (default: {default})")


def label_values(masks, chunk=64):
    """The set of values in a mask array (read chunk by chunk, so a memory map is never loaded whole), or
    None when it holds values that are no integers in 0..255 (soft masks)."""
    masks = np.asarray(masks) if not hasattr(masks, "shape") else masks
    counts = np.zeros(256, np.int64)
    for start in range(0, max(len(masks), 1), chunk):
        block = np.asarray(masks[start:start + chunk]).ravel()
        if not block.size:
            continue
        if block.dtype.kind == "f" and np.any(block != np.floor(block)):
            return None
        if block.min() < 0 or block.max() > 255:
            return None
        counts += np.bincount(block.astype(np.int64), minlength=256)
    return {int(v) for v in np.flatnonzero(counts)}


MAX_INFERRED_CLASSES = 64


def infer_num_classes(masks):
    """2 (binary) for 0/1 or 0/255 masks and soft masks (non-integer values, or 0..255 values of resized 0/255
    masks); K = max label + 1 for integer label maps whose labels are not only 0/1 and stay below
    ``MAX_INFERRED_CLASSES`` (64; more classes: pass ``--num-classes``)."""
    values = label_values(masks)
    if values is None or values <= {0, 1} or max(values) >= MAX_INFERRED_CLASSES:
        return 2
    return max(values) + 1


def resolve_num_classes(option, masks, option_name="--num-classes"):
    """The number of classes to train with: ``option`` (checked against the labels of ``masks`` when > 2) or,
    when None, :func:`infer_num_classes`. ``OptionError`` (one line) for a bad value."""
    if option is None:
        return infer_num_classes(masks)
    if option < 1:
        raise cli.option_error(option_name, f"must be 1 or more, got {option}")
    if option > 2:
        values = label_values(masks)
        if values is None or max(values, default=0) >= option:
            found = "soft (non-integer) values" if values is None else f"labels up to {max(values)}"
            raise cli.option_error(option_name, f"{option} classes need masks with integer labels 0..{option - 1}, "
                                                f"the training masks hold {found}")
    return option


def is_multiclass(num_classes):
    return num_classes is not None and num_classes > 2


def model_num_classes(model):
    """K of a built model: its output's channel count when > 1, else 2 (binary sigmoid head)."""
    channels = model.output_shape[-1]
    return channels if channels and channels > 1 else 2


def compile_multiclass(model, loss="ce", lr=1e-4, jit_compile=False, optimizer=None):
    """Compile a K-class model: ``optimizer`` (default Adam(lr)), :class:`common.losses.MulticlassLoss` and the
    metrics ``foreground_dice`` and accuracy."""
    import keras

    from common.losses import MulticlassLoss, foreground_dice

    model.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate=lr), loss=MulticlassLoss(loss),
                  metrics=[foreground_dice, "accuracy"], jit_compile=jit_compile)
    return model


def predicted_labels(prob):
    """Softmax probabilities (..., K) -> uint8 label maps (...) (argmax)."""
    return np.argmax(np.asarray(prob), axis=-1).astype(np.uint8)


def multiclass_rows(scores, model_name):
    """Table rows of :func:`common.metrics.multiclass_scores`: one per foreground class and the mean."""
    from common.metrics import MULTICLASS_KEYS

    rows = [dict({"class": str(c), "model": model_name}, **{k: row[k] for k in MULTICLASS_KEYS})
            for c, row in scores["classes"].items()]
    rows.append(dict({"class": "mean (foreground)", "model": model_name}, **scores["mean"]))
    return rows


def write_multiclass_results(out_dir, model_name, truth, prob, title, spacing=None, images=None, verbose=1):
    """Score label maps per class and write ``scores.md``/``.json`` (:func:`multiclass_rows`),
    ``multiclass.json`` (the full dict), ``labels_test.npy`` (predicted labels) and, with ``images``,
    ``overlay.png`` (image | ground truth | prediction, labels in the palette colours).

    Args:
        truth: integer label maps (N, H, W[, 1]); prob: softmax probabilities (N, H, W, K).
    Returns:
        :func:`common.metrics.multiclass_scores`' dict.
    """
    from common.data.io import label_palette, save_npy, write_json
    from common.metrics import multiclass_scores
    from common.report import overlay_grid, write_table

    prob = np.asarray(prob)
    num_classes = prob.shape[-1]
    truth = np.asarray(truth).reshape(prob.shape[:-1]).astype(np.int64)
    labels = predicted_labels(prob)
    scores = multiclass_scores(truth, labels, num_classes, spacing=spacing)
    write_json(out_dir / "multiclass.json", {"num_classes": num_classes, **scores})
    save_npy(out_dir / "labels_test.npy", labels)
    table = write_table(multiclass_rows(scores, model_name), out_dir / "scores", digits=4, title=title)
    if images is not None:
        colors = np.array(label_palette(num_classes), np.uint8)
        overlay_grid(images, colors[truth], colors[labels], out_dir / "overlay.png",
                     titles=("image", "ground truth (labels)", "prediction (argmax)"))
    if verbose:
        print(table)
    return scores


def label_map_result(prob, resize=None):
    """A K-channel softmax output (h, w, K) -> ``{"mask": labels (H, W) uint8 = argmax, "prob": (H, W, K) float32}``
    (the predict path of a K > 2 model): each channel resized by ``resize`` ((h, w) -> (H, W); None: as it is)
    before the argmax, as the binary path resizes its one probability map."""
    prob = np.asarray(prob, np.float32)
    if resize is not None:
        prob = np.stack([np.asarray(resize(prob[..., k]), np.float32) for k in range(prob.shape[-1])], axis=-1)
    return {"mask": np.argmax(prob, axis=-1).astype(np.uint8), "prob": prob}
