"""Load the authors' Keras-2 HDF5 checkpoints into the project's Keras 3 models.

The BCDU-Net authors distribute ``weight_isic18``, ``weight_lung`` and ``weight_lstm.hdf5`` (full models
saved by Keras 2's ``ModelCheckpoint``), and the ultrasound-nerve tutorial saves ``weights.h5`` the same
way. Keras 3's ``load_weights`` reads that legacy layout only from names ending in ``.h5`` / ``.hdf5``
(``weight_isic18`` and ``weight_lung`` have no extension: "File format not supported"), and the layer names
in the files (``conv2d_1``, ``batch_normalization_3``, ``conv_lst_m2d_1``: Keras 2's auto-generated names)
are not the project's, so name matching is no option. :func:`load_legacy_weights` reads the layout itself:

* ``model.save_weights('x.h5')``: the file's root carries the attributes ``layer_names`` (all layers, in
  ``model.layers`` order), ``backend`` and ``keras_version``; ``model.save('x.h5')`` puts the same
  layout under the group ``model_weights``. Either is accepted, whatever the file's name or extension.
* Each layer group has the attribute ``weight_names`` (e.g. ``conv2d_1/kernel:0``), the arrays in the
  order Keras 2 saved them: the trainable weights, then the non-trainable ones. Long attributes that
  Keras 2 split into ``layer_names0``, ``layer_names1``, ... are joined again.
* Layers without weights are dropped on both sides; the remaining file layers are matched to the model's
  layers with weights *in order*, and every array's shape is checked before anything is assigned, so a
  file that does not fit leaves the model untouched and raises one :class:`common.errors.UserError` line
  naming the file and the first layer/weight that does not fit (or the count that differs).

Weight order. Keras 3 keeps Keras 2's order for the layers the project uses, verified in the Keras 3
source (``keras/src/layers``) and Keras 2.2.4's: Conv2D / Conv2DTranspose / Dense ``kernel, bias``;
BatchNormalization ``gamma, beta, moving_mean, moving_variance``; ConvLSTM2D ``kernel, recurrent_kernel,
bias`` with the four gates in the same i, f, c, o order along the last axis (and the same kernel layouts).
The model side is read as ``layer.trainable_weights + layer.non_trainable_weights``, the order Keras 2
wrote (Keras 3's own legacy loader does the same), so no array needs reordering or transposing.

Only Keras-2 files from the TensorFlow backend are accepted: a Keras-1 or Theano file (flipped,
channels-first kernels) is refused with a message rather than loaded wrongly.
"""

from pathlib import Path

import numpy as np

from common.errors import UserError

SAVED_BY = "the authors' Keras-2 HDF5 checkpoint"


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _attribute_list(group, name):
    """A list-valued HDF5 attribute as strings, joining Keras 2's chunks ``name0``, ``name1``, ..."""
    if name in group.attrs:
        values = list(np.atleast_1d(group.attrs[name]))
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(np.atleast_1d(group.attrs[f"{name}{chunk}"]))
            chunk += 1
        if not chunk:
            return None
    return [_text(v) for v in values]


def _weights_group(f, path):
    if _attribute_list(f, "layer_names") is not None:
        return f
    if "model_weights" in f and _attribute_list(f["model_weights"], "layer_names") is not None:
        return f["model_weights"]
    raise UserError(f"{path}: not a Keras-2 HDF5 weights file (no 'layer_names' attribute at the root or in "
                    f"a 'model_weights' group); pass {SAVED_BY}, or a Keras 3 .keras file with --model")


def _check_origin(group, path):
    version = _text(group.attrs.get("keras_version", "1"))
    backend = _text(group.attrs.get("backend", "tensorflow"))
    if version.startswith("1"):
        raise UserError(f"{path}: saved by Keras {version}; only Keras-2 files are supported (load it in "
                        "Keras 2 and save it again)")
    if backend != "tensorflow":
        raise UserError(f"{path}: saved with the {backend} backend; only TensorFlow-backend Keras-2 files are "
                        "supported (their kernels need no conversion)")


def read_legacy_weights(path):
    """The layers with weights of a Keras-2 HDF5 file, in file order.

    Returns:
        list of ``(layer_name, [(weight_name, numpy array), ...])``.
    Raises:
        UserError: missing, unreadable or not a Keras-2 weights file.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass {SAVED_BY} (any name or extension)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({exc}); pass {SAVED_BY}") from None
    with f:
        group = _weights_group(f, path)
        _check_origin(group, path)
        layers = []
        for layer_name in _attribute_list(group, "layer_names"):
            if layer_name not in group:
                raise UserError(f"{path}: layer '{layer_name}' is listed in 'layer_names' but has no group; "
                                "the file is truncated or corrupt")
            weight_names = _attribute_list(group[layer_name], "weight_names") or []
            if not weight_names:
                continue
            try:
                arrays = [(name, np.asarray(group[layer_name][name])) for name in weight_names]
            except (KeyError, OSError) as exc:
                raise UserError(f"{path}: layer '{layer_name}': cannot read its weights ({exc}); the file is "
                                "truncated or corrupt") from None
            layers.append((layer_name, arrays))
    return layers


def _model_weights(layer):
    """A layer's variables in the order Keras 2 saved them."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def load_legacy_weights(model, path):
    """Load a Keras-2 HDF5 checkpoint (``save_weights`` or full-model ``save`` layout) into ``model``.

    File layers with weights are matched to ``model``'s layers with weights by order; all shapes are
    checked first, so on any mismatch nothing is assigned.

    Args:
        model: a built Keras 3 model of the same architecture (and input channels) as the saved one.
        path: the file, any name or extension (``weight_isic18``, ``weight_lstm.hdf5``, ``weights.h5``).
    Returns:
        list of ``(file layer name, model layer name)`` pairs, in order, one per loaded layer.
    Raises:
        UserError: one line naming the file and the first layer/weight that does not fit (expected vs found
            shape), a layer or weight count that differs, or a file that is not a Keras-2 weights file.
    """
    path = Path(path)
    saved = read_legacy_weights(path)
    targets = [layer for layer in model.layers if _model_weights(layer)]
    if len(saved) != len(targets):
        raise UserError(f"{path}: holds weights for {len(saved)} layers but model '{model.name}' has "
                        f"{len(targets)} layers with weights; it was saved from a different architecture")
    plan, pairs = [], []
    for index, ((file_layer, arrays), layer) in enumerate(zip(saved, targets), start=1):
        variables = _model_weights(layer)
        where = f"{path}: layer {index} of {len(saved)} with weights ('{file_layer}' in the file, " \
                f"'{layer.name}' in the model)"
        if len(arrays) != len(variables):
            raise UserError(f"{where}: {len(arrays)} weights in the file, the model expects {len(variables)}; "
                            "it was saved from a different architecture")
        for (weight_name, array), variable in zip(arrays, variables):
            expected = tuple(variable.shape)
            if tuple(array.shape) != expected:
                raise UserError(f"{where}: weight '{weight_name}' has shape {tuple(array.shape)} but the model "
                                f"expects {expected}; it was saved from a different architecture or number "
                                "of input channels")
            plan.append((variable, array))
        pairs.append((file_layer, layer.name))
    for variable, array in plan:
        variable.assign(array.astype(variable.dtype))
    return pairs


def add_init_weights_argument(parser):
    """Add ``--init-weights FILE`` (a Keras-2 HDF5 checkpoint for :func:`load_legacy_weights`)."""
    parser.add_argument(
        "--init-weights", type=Path, default=None, metavar="FILE",
        help="start from the authors' Keras-2 HDF5 checkpoint, any name or extension (e.g. BCDU-Net's "
             "weight_isic18, weight_lung, weight_lstm.hdf5, the nerve tutorial's weights.h5): weights are "
             "matched to the model's layers by order and checked shape by shape")
    return parser
