"""The lung task's inference, in one place for evaluate_performance.py and predict.py.

* :func:`load_network`: a trained run's checkpoint, a ``.keras`` file or the authors' Keras-2 weights
  (``--init-weights``), as a network for a given slice size and ``--mixed-precision`` policy;
* :func:`predict_around_lung`: the original's network input (scaled slices ``/ 255``), batch by batch, with
  optional test-time flips (``--tta flip``); returns the around-lung probabilities;
* :func:`predict_probabilities`: the same for every output channel (the K softmax channels of a K-class run);
* :func:`body_fov`: the leak-free FOV from the scaled slices alone (the eroded body with its holes filled);
* :func:`lung_score` / :func:`estimated_lung`: the original's ``FOV AND NOT (p > 0.5)``.

The network is fully convolutional but BCDU-Net's ConvLSTM fusions reshape with static sizes, so a network
for another slice size (or another dtype policy) is rebuilt with the same weights (:func:`network_for`).
"""

from pathlib import Path

import numpy as np

from common.errors import UserError
from lung.task import INFERENCE, body_fov, check_lung_network, estimated_lung, lung_score, network_side  # noqa: F401
from lung.task import predict_around_lung as task_predict
from lung.task import predict_slices as task_predict_slices
from lung.train_lung import BATCH_SIZE, MODELS, build

THRESHOLD = INFERENCE["threshold"]  # around-lung probability above which a pixel is not lung (p > 0.5)


def is_bidirectional(model):
    """True for a network built with ``bidirectional=True`` (it has forward ConvLSTM layers)."""
    return any(layer.name.endswith("_convlstm_fwd") for layer in model.layers)


def network_for(model, size, mixed_precision="off"):
    """``model`` for ``size x size x 1`` slices under the ``--mixed-precision`` policy: ``model`` itself when it
    fits, else the same architecture (``model.name``, bidirectional or not, its K-class head) rebuilt with its
    weights."""
    from common.devices import set_precision

    policy = set_precision(mixed_precision)
    fits = tuple(model.input_shape[1:]) == (size, size, 1)
    if fits and model.layers[-1].dtype_policy.name == policy:
        return model
    if model.name not in MODELS:
        raise UserError(f"{model.name}: not a lung network ({', '.join(MODELS)}); cannot rebuild it for "
                        f"{size}x{size} slices or --mixed-precision {mixed_precision}")
    channels = model.output_shape[-1]
    net = build(model.name, size, is_bidirectional(model), num_classes=channels if channels > 2 else 2)
    net.set_weights(model.get_weights())
    return net


def load_network(*, checkpoint=None, init_weights=None, model_name="bcdu_net_d3", bidirectional=False, size=None,
                 mixed_precision="off"):
    """The network to segment ``size x size`` slices with (``None``: the checkpoint's own size; 512 for
    ``init_weights``).

    Args:
        checkpoint: a ``.keras`` file (a run's ``best.keras`` / ``last.keras``, or any saved lung network).
        init_weights: instead of ``checkpoint``: the authors' Keras-2 HDF5 file (``weight_lung``), loaded
            into ``model_name`` (``bidirectional``) built for ``size`` (``common.legacy_weights``).
        mixed_precision: ``off``, ``float16`` or ``bfloat16`` (``common.devices.set_precision``).
    Raises:
        UserError: a missing or unreadable file, a network that is not a lung network.
    """
    import keras

    import common.layers  # noqa: F401  (registers the custom ConvLSTM activation for loading)
    from common.devices import set_precision

    set_precision(mixed_precision)
    if init_weights is not None:
        from common.legacy_weights import load_legacy_weights

        if not Path(init_weights).is_file():
            raise UserError(f"{init_weights}: --init-weights file not found")
        model = build(model_name, size or 512, bidirectional)
        load_legacy_weights(model, init_weights)
        return model
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(2, "not found; train a network with lung/train_lung.py first (or give --run-dir / "
                                   "--model FILE.keras)", str(checkpoint))
    try:
        set_precision("off")
        model = keras.models.load_model(checkpoint, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors... for a bad file
        raise UserError(f"{checkpoint}: cannot load the network ({exc.__class__.__name__}: "
                        f"{' '.join(str(exc).split())[:200]})") from None
    check_lung_network(model, checkpoint)
    return network_for(model, size or model.input_shape[1], mixed_precision)


def network_input(images):
    """Scaled slices (N, H, W) 0..255 -> the original's network input ``/ 255`` (N, H, W, 1) float32."""
    return (np.asarray(images, np.float32) / 255.0)[..., None]


def predict_around_lung(model, images, batch_size=BATCH_SIZE, tta="none", verbose=False):
    """Around-lung probabilities (N, H, W) float32 of scaled slices (N, H, W) 0..255, ``batch_size`` at a time
    (``lung.task.predict_around_lung`` with ``model`` compiled once per slice size: slices other than square
    multiples of 8 are zero-padded at the bottom/right and the prediction is cropped back)."""
    from common.predict import KerasNetwork

    return task_predict(KerasNetwork(model, batch_size), images, batch_size=batch_size, tta=tta, verbose=verbose)


def predict_probabilities(model, images, batch_size=BATCH_SIZE, tta="none", verbose=False):
    """The network's outputs (N, H, W, C) float32 of scaled slices (N, H, W) 0..255: C = 1 (around-lung) or the K
    softmax channels of a K-class run (``lung.task.predict_slices``, as :func:`predict_around_lung`)."""
    from common.predict import KerasNetwork

    return task_predict_slices(KerasNetwork(model, batch_size), images, batch_size=batch_size, tta=tta,
                               verbose=verbose)
