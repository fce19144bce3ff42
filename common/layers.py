"""Custom Keras layers and small block builders shared by the model families.

Layers are real ``keras.layers.Layer`` subclasses registered for serialization (package ``common``), so a
model saved as ``.keras`` reloads without ``custom_objects``. Blocks are small builder functions that take
a tensor (and a ``name`` prefix) and return a tensor; every layer they create is named systematically
(``<prefix>_conv1``, ...) so that summaries read like the paper's figure.
"""

import warnings

import keras
from keras import layers, ops


def conv_block(x, filters, n_convs=2, kernel_size=3, activation="relu",
               kernel_initializer="glorot_uniform", name="block"):
    """``n_convs`` Conv2D(filters, kernel_size, 'same', activation) in a row: the plain U-Net level."""
    for i in range(1, n_convs + 1):
        x = layers.Conv2D(filters, kernel_size, padding="same", activation=activation,
                          kernel_initializer=kernel_initializer, name=f"{name}_conv{i}")(x)
    return x


_SRNN_DIRECTIONS = ("right", "left", "down", "up")
# Kernel shape (without the channel axes) and the one active tap of each direction, in weight order.
_SRNN_KERNELS = {"right": ((1, 3), (0, 0)), "left": ((1, 3), (0, 2)),
                 "down": ((3, 1), (0, 0)), "up": ((3, 1), (2, 0))}


def _shift(h, direction):
    """Move ``h`` (B, H, W, C) by one pixel in ``direction`` with zero fill: ``right`` gives out[i, j] = h[i, j-1]."""
    if direction == "right":
        return ops.pad(h, [[0, 0], [0, 0], [1, 0], [0, 0]])[:, :, :-1, :]
    if direction == "left":
        return ops.pad(h, [[0, 0], [0, 0], [0, 1], [0, 0]])[:, :, 1:, :]
    if direction == "down":
        return ops.pad(h, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1, :, :]
    return ops.pad(h, [[0, 0], [0, 1], [0, 0], [0, 0]])[:, 1:, :, :]


@keras.saving.register_keras_serializable(package="common")
class SpatialRNN2D(layers.Layer):
    """Four-direction spatial RNN of the fingernail CR-UNet (Spatial_RNN_Fingernail, ``SpatialRNN2D``).

    For each direction d in (right, left, down, up) and a per-channel scalar ``a_d`` (no channel mixing,
    no bias, shared over steps and positions)::

        h_0 = x
        h_t = act(a_d * S_d(h_{t-1}))        t = 1 .. L
        y_d = x + h_1 + ... + h_L            (summed in this order)
        out = concat([y_right, y_left, y_down, y_up], axis=-1)        # (B, H, W, 4C)

    ``S_d`` moves the map one pixel in direction d with zero fill (``S_right(h)[i, j] = h[i, j-1]``, so
    information flows left to right). ``L = rnn_seq_length`` is how many pixels a value can travel.

    Weights, in this order (the original's shapes, so the parameter count is 12·C and ``.h5`` weights load
    positionally): right (1, 3, C, 1), left (1, 3, C, 1), down (3, 1, C, 1), up (3, 1, C, 1). The original
    multiplies each kernel by a 0/1 switch and runs a depthwise conv, so only one tap per channel acts:
    right ``[0, 0, c, 0]``, left ``[0, 2, c, 0]``, down ``[0, 0, c, 0]``, up ``[2, 0, c, 0]``. The other two
    taps are trainable but have no effect (zero gradient). Here the active tap is sliced out and applied by
    shift-and-multiply, which gives the same result without a convolution.

    ``merge_mode='convolution'`` (unused by the published networks) adds a bias-free 1x1 kernel
    (1, 1, 4C, F), ``F = output_conv_filter or C``, applied to the concatenation and followed by ``act``.

    Args:
        rnn_seq_length: number of unrolled steps L (>= 1). A warning is emitted when L exceeds the image
            height or width (steps beyond it only add zeros).
        activation: recurrence activation (the original's ReLU by default).
        kernel_initializer: initializer of the four kernels (Keras ``RandomUniform(-0.05, 0.05)``).
        merge_mode: ``'concat'`` or ``'convolution'``.
        output_conv_filter: F of the 1x1 kernel in ``'convolution'`` mode; ``None`` means C.

    Input (B, H, W, C), channels last, cast to the layer's compute dtype (float32 by default, as the
    original's cast). Output (B, H, W, 4C) in ``'concat'`` mode, (B, H, W, F) in ``'convolution'`` mode.
    """

    def __init__(self, rnn_seq_length, activation="relu", kernel_initializer="random_uniform",
                 merge_mode="concat", output_conv_filter=None, **kwargs):
        super().__init__(**kwargs)
        if int(rnn_seq_length) != rnn_seq_length or rnn_seq_length < 1:
            raise ValueError(f"SpatialRNN2D: rnn_seq_length must be a positive integer, got {rnn_seq_length!r}")
        if merge_mode not in ("concat", "convolution"):
            raise ValueError(f"SpatialRNN2D: merge_mode must be 'concat' or 'convolution', got {merge_mode!r}")
        self.rnn_seq_length = int(rnn_seq_length)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.merge_mode = merge_mode
        self.output_conv_filter = output_conv_filter
        self.input_spec = layers.InputSpec(ndim=4)

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if channels is None:
            raise ValueError("SpatialRNN2D: the channel dimension of the input must be known")
        for size, axis in ((height, "height"), (width, "width")):
            if size is not None and self.rnn_seq_length > size:
                warnings.warn(f"SpatialRNN2D {self.name}: rnn_seq_length={self.rnn_seq_length} exceeds the "
                              f"image {axis} {size}")
        self.direction_kernels = [
            self.add_weight(name=f"{d}_kernel", shape=(*_SRNN_KERNELS[d][0], channels, 1),
                            initializer=self.kernel_initializer)
            for d in _SRNN_DIRECTIONS]
        if self.merge_mode == "convolution":
            self.output_kernel = self.add_weight(
                name="output_kernel", shape=(1, 1, 4 * channels, self.output_conv_filter or channels),
                initializer=self.kernel_initializer)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        outputs = []
        for direction, kernel in zip(_SRNN_DIRECTIONS, self.direction_kernels):
            row, col = _SRNN_KERNELS[direction][1]
            a = kernel[row, col, :, 0]  # (C,) active tap
            h, y = x, x
            for _ in range(self.rnn_seq_length):
                h = self.activation(a * _shift(h, direction))
                y = y + h
            outputs.append(y)
        out = ops.concatenate(outputs, axis=-1)
        if self.merge_mode == "convolution":
            out = self.activation(ops.conv(out, self.output_kernel, strides=1, padding="same"))
        return out

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        out = 4 * channels if self.merge_mode == "concat" else (self.output_conv_filter or channels)
        return (*input_shape[:-1], out)

    def get_config(self):
        config = super().get_config()
        config.update({
            "rnn_seq_length": self.rnn_seq_length,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "merge_mode": self.merge_mode,
            "output_conv_filter": self.output_conv_filter,
        })
        return config
