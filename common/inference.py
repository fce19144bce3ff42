"""Whole-image prediction for every task: sliding window with overlap and averaging, or one padded pass.

* :func:`predict_sliding_window` cuts overlapping ``patch`` windows at ``stride`` (zero padding at the bottom
  and right, as the BCDU-Net / retina-unet ``paint_border_overlap``), STREAMS them through the model in chunks
  and accumulates the predictions into per-pixel means (``recompone_overlap``). Only one chunk of patches
  exists at a time, so memory is the images plus a chunk, whatever the number of patches (DRIVE at stride 5:
  214,200 patches that would take 3.5 GB as float32 are never materialised).
* :func:`predict_whole` pads each image to a multiple of ``multiple`` and runs a fully-convolutional model
  once per image (a copy of the model built for that size when its input shape is fixed).

``predict`` arguments are a ``keras.Model`` or any callable ``(B, h, w, C) float32 -> (B, h, w, C')``.

Test-time flips (``tta="flip"``, nnU-Net's mirroring): :func:`with_flips` averages the predictions on the
input, its horizontal flip and its vertical flip, each flipped back. In :func:`predict_whole` the flips are
of the whole image; in :func:`predict_sliding_window` of each patch.
"""

import numpy as np
from tqdm import tqdm

from common.data.patches import OverlapAccumulator, pad_to_stride, sliding_windows


def _as_predict(predict, batch_size):
    """A NumPy-in / NumPy-out function of a Keras model (run batch by batch) or a plain callable.

    ``predict_on_batch`` rather than ``predict``: ``predict`` builds a tf.data pipeline per call, which cost
    about 0.27 s per call here (nerve_unet, 64 images: 1.30 s against 1.03 s), and this is called per chunk
    or per image.
    """
    if hasattr(predict, "predict_on_batch") and hasattr(predict, "layers"):
        model = predict

        def run(x):
            batches = range(0, len(x), batch_size)
            return np.concatenate([np.asarray(model.predict_on_batch(x[i:i + batch_size])) for i in batches])

        return run
    return lambda x: np.asarray(predict(x))


TTA_CHOICES = ("none", "flip")


def with_flips(predict):
    """``x -> mean(predict(x), hflip(predict(hflip(x))), vflip(predict(vflip(x))))`` for ``(N, H, W, C)``
    batches: the predictions on the input and on its horizontal (axis 2) and vertical (axis 1) flips, each
    flipped back before averaging."""

    def run(x):
        x = np.asarray(x)
        total = np.asarray(predict(x), dtype=np.float64)
        for axis in (2, 1):
            total += np.flip(np.asarray(predict(np.ascontiguousarray(np.flip(x, axis)))), axis)
        return (total / 3).astype(np.float32)

    return run


def _with_tta(run, tta):
    if tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {tta!r}")
    return with_flips(run) if tta == "flip" else run


def add_tta_argument(parser):
    """``--tta none|flip`` (default none, as the originals)."""
    parser.add_argument("--tta", choices=TTA_CHOICES, default="none",
                        help="test-time augmentation: 'flip' averages the predictions on the image and its "
                             "horizontal and vertical flips, flipped back (default: %(default)s, as the original)")


def _as_images(images):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"expected images (N, H, W[, C]), got shape {images.shape}")
    return images


def predict_sliding_window(predict, images, patch, stride, batch_size=16, chunk_size=2048, verbose=False,
                           dtype=np.float32, tta="none"):
    """Average of overlapping patch predictions over whole images.

    Args:
        predict: ``keras.Model`` or callable on ``(B, ph, pw, C)`` float32 patches.
        images: ``(N, H, W[, C])``, any size (padded internally, cropped back).
        patch, stride: int or ``(rows, cols)``.
        batch_size: model batch size (the original's 16 for DRIVE).
        chunk_size: patches cut and predicted per step (bounds the memory).
        verbose: tqdm progress bar over the patches.
        tta: ``"flip"`` averages each patch's predictions over its flips (:func:`with_flips`).
    Returns:
        ``(N, H, W, C')`` ``dtype``: for each pixel the mean of the predictions of all windows covering it.
    """
    images = _as_images(images)
    n, h, w, _ = images.shape
    windows = sliding_windows(pad_to_stride(images, patch, stride), patch, stride)  # zero-copy view
    rows, cols = windows.shape[1:3]
    total = n * rows * cols
    run = _with_tta(_as_predict(predict, batch_size), tta)
    chunk_size = max(int(chunk_size), 1)
    acc = None
    with tqdm(total=total, desc="patches", unit="patch", disable=not verbose) as bar:
        for start in range(0, total, chunk_size):
            k = np.arange(start, min(start + chunk_size, total))
            img, rest = np.divmod(k, rows * cols)
            r, c = np.divmod(rest, cols)
            pred = run(windows[img, r, c].astype(np.float32))
            if pred.ndim == 3:
                pred = pred[..., None]
            if acc is None:
                acc = OverlapAccumulator((n, h, w, pred.shape[-1]), patch, stride, dtype)
            acc.add(pred, start)
            bar.update(len(k))
    return acc.result()


def padded_shape(height, width, multiple=8):
    """``(H', W')``: the next multiples of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def model_for_shape(model, input_shape, builder=None):
    """``model`` itself if it accepts ``input_shape`` (H, W, C), else a copy built for it with the same weights.

    ``builder(input_shape) -> keras.Model`` rebuilds the architecture (needed for models with static shapes
    inside, such as BCDU-Net's ConvLSTM reshapes); without it ``keras.models.clone_model`` on a new input is
    tried. The weights do not depend on H and W in a fully-convolutional network.
    """
    import keras

    expected = tuple(model.input_shape[1:])
    if all(e is None or e == s for e, s in zip(expected, input_shape)):
        return model
    if builder is not None:
        copy = builder(tuple(input_shape))
    else:
        copy = keras.models.clone_model(model, input_tensors=keras.Input(shape=tuple(input_shape)))
    copy.set_weights(model.get_weights())
    return copy


def predict_whole(model, images, multiple=8, builder=None, verbose=False, dtype=np.float32, tta="none"):
    """Run a fully-convolutional model once on each whole image, zero-padded at the bottom/right to a
    multiple of ``multiple`` (8 for three 2x2 poolings), and crop the prediction back.

    Args:
        model: ``keras.Model`` (or, with ``builder=None`` and a callable, anything taking the padded batch).
        images: ``(N, H, W[, C])``.
        builder: see :func:`model_for_shape`.
        tta: ``"flip"`` averages over the whole image's flips (:func:`with_flips`; each flip is padded at
            the bottom/right like the image, so the padding never moves into the image).
    Returns:
        ``(N, H, W, C')`` ``dtype``.
    """
    images = _as_images(images)
    n, h, w, c = images.shape
    hp, wp = padded_shape(h, w, multiple)
    if hasattr(model, "layers"):
        model = model_for_shape(model, (hp, wp, c), builder)
    padded_run = _as_predict(model, 1)

    def run(x):  # pad at the bottom/right, predict, crop back
        x = np.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0))).astype(np.float32)
        return np.asarray(padded_run(x))[:, :h, :w]

    run = _with_tta(run, tta)
    out = [run(images[i:i + 1]) for i in tqdm(range(n), desc="images", disable=not verbose)]
    out = np.concatenate(out)
    return (out[..., None] if out.ndim == 3 else out).astype(dtype)

