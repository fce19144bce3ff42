"""Custom Keras layers and small block builders shared by the model families.

Layers are real ``keras.layers.Layer`` subclasses registered for serialization (package ``common``), so a
model saved as ``.keras`` reloads without ``custom_objects``. Blocks are small builder functions that take
a tensor (and a ``name`` prefix) and return a tensor; every layer they create is named systematically
(``<prefix>_conv1``, ...) so that summaries read like the paper's figure.
"""

import os
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


# ---------------------------------------------------------------------------------------------------------
# BCDU-Net family blocks (Azad et al., ICCV-W 2019) and squeeze-excitation (Hu et al., CVPR 2018)
# ---------------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="common")
def keras2_hard_sigmoid(x):
    """Keras 2's ``hard_sigmoid``: ``clip(0.2·x + 0.5, 0, 1)``.

    It was the default ``recurrent_activation`` of Keras 2 recurrent layers, so every ConvLSTM2D of the
    original BCDU-Net uses it. Keras 3 defaults to ``sigmoid`` and its own ``'hard_sigmoid'`` is
    ``relu6(x + 3) / 6`` (slope 1/6), hence this function.
    """
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def conv_lstm_fusion(encoder, decoder, filters, bidirectional=False, name="fusion"):
    """The BCDU-Net skip fusion ("BConvLSTM") of an encoder and a decoder feature map.

    ``encoder`` (E) and ``decoder`` (D), both (B, H, W, C), become the 2-step sequence ``[E, D]`` of shape
    (B, 2, H, W, C) (Reshape each to (1, H, W, C), Concatenate on axis 1), which goes through
    ``ConvLSTM2D(filters, 3x3, 'same', go_backwards=True, return_sequences=False, he_normal)`` with the
    Keras-2 hard sigmoid as recurrent activation. As in the original code the layer therefore reads D, then E,
    and returns the last hidden state (B, H, W, filters). H and W must be known (static).

    Args:
        encoder, decoder: tensors of identical shape (B, H, W, C).
        filters: ConvLSTM2D filters.
        bidirectional: if True, add a forward ConvLSTM2D (``<name>_convlstm_fwd``, same settings,
            ``go_backwards=False``) on the same sequence and sum both outputs: the bidirectional fusion the
            paper describes (doubles the fusion's parameters). The default reproduces the original code,
            which only has the backward layer.
        name: prefix of the layer names; the backward layer is ``<name>_convlstm`` in both variants.

    Returns:
        Tensor (B, H, W, filters).
    """
    if tuple(encoder.shape[1:]) != tuple(decoder.shape[1:]):
        raise ValueError(f"{name}: encoder {encoder.shape} and decoder {decoder.shape} shapes differ")
    step_shape = (1,) + tuple(encoder.shape[1:])
    if None in step_shape:
        raise ValueError(f"{name}: ConvLSTM fusion needs a static H, W, C; got {encoder.shape}")
    sequence = layers.Concatenate(axis=1, name=f"{name}_concat")([
        layers.Reshape(step_shape, name=f"{name}_reshape_enc")(encoder),
        layers.Reshape(step_shape, name=f"{name}_reshape_dec")(decoder),
    ])

    def conv_lstm(go_backwards, layer_name):
        return layers.ConvLSTM2D(filters, 3, padding="same", go_backwards=go_backwards,
                                 return_sequences=False, kernel_initializer="he_normal",
                                 recurrent_activation=keras2_hard_sigmoid, name=layer_name)(sequence)

    output = conv_lstm(True, f"{name}_convlstm")
    if bidirectional:
        output = layers.Add(name=f"{name}_add")([conv_lstm(False, f"{name}_convlstm_fwd"), output])
    return output


def squeeze_excite(x, ratio=16, name="se"):
    """Squeeze-and-excitation gate as SEDU-Net applies it (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).

    ``GlobalAveragePooling2D -> Dense(C // ratio, relu) -> Dense(C, sigmoid) -> x * gate`` (the (B, C) gate is
    broadcast over H, W by ``Multiply``). Dense layers keep the Keras defaults: glorot_uniform, with bias.
    """
    channels = x.shape[-1]
    gate = layers.GlobalAveragePooling2D(name=f"{name}_squeeze")(x)
    gate = layers.Dense(channels // ratio, activation="relu", name=f"{name}_reduce")(gate)
    gate = layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(gate)
    return layers.Multiply(name=f"{name}_scale")([x, gate])


def dense_conv_block(x, filters=512, n_blocks=3, n_convs=2, dropout=0.5, include_input=False,
                     kernel_initializer="he_normal", name="dense"):
    """BCDU-Net's densely connected bottleneck.

    Each block is ``n_convs`` Conv2D(filters, 3x3, relu) followed by Dropout(``dropout``; none if falsy).
    Block k reads the concatenation of all earlier block outputs, newest first (a single earlier output is
    read as is); the first block reads ``x``. The block output of the last block is returned. With the
    defaults this is exactly BCDU_net_D3's bottleneck: D1 on ``x``, D2 on D1, D3 on concat([D2, D1]).
    ``n_blocks=1`` is BCDU_net_D1's bottleneck.

    ``include_input=True`` counts ``x`` itself as the first output (SEDU-Net: D1 is the VGG block4 output,
    D2 reads it, D3 reads concat([D2, D1])); blocks are then numbered from 2.

    Layer names: ``<name><k>_conv<i>``, ``<name><k>_drop``, ``<name><k>_concat`` (the input of block k).
    """
    outputs = [x] if include_input else []
    for k in range(len(outputs) + 1, len(outputs) + n_blocks + 1):
        if len(outputs) > 1:
            inputs = layers.Concatenate(axis=-1, name=f"{name}{k}_concat")(outputs[::-1])
        else:
            inputs = outputs[0] if outputs else x
        y = conv_block(inputs, filters, n_convs, kernel_initializer=kernel_initializer, name=f"{name}{k}")
        if dropout:
            y = layers.Dropout(dropout, name=f"{name}{k}_drop")(y)
        outputs.append(y)
    return outputs[-1]


_SRNN_DIRECTIONS = ("right", "left", "down", "up")
# Kernel shape (without the channel axes) and the one active tap of each direction, in weight order.
_SRNN_KERNELS = {"right": ((1, 3), (0, 0)), "left": ((1, 3), (0, 2)),
                 "down": ((3, 1), (0, 0)), "up": ((3, 1), (2, 0))}


# Per direction: the one-pixel zero padding of ``_shift`` and where the original size starts in the padded map.
_SHIFT_PAD = {"right": ([[0, 0], [0, 0], [1, 0], [0, 0]], (0, 0, 0, 0)),
              "left": ([[0, 0], [0, 0], [0, 1], [0, 0]], (0, 0, 1, 0)),
              "down": ([[0, 0], [1, 0], [0, 0], [0, 0]], (0, 0, 0, 0)),
              "up": ([[0, 0], [0, 1], [0, 0], [0, 0]], (0, 1, 0, 0))}


def _shift(h, direction):
    """Move ``h`` (B, H, W, C) by one pixel in ``direction`` with zero fill: ``right`` gives out[i, j] = h[i, j-1].

    Pad by one pixel on the side the map comes from, then ``ops.slice`` the original size back out. A Python
    slice (``[:, :, :-1, :]``) gives the same values, but TensorFlow's gradient of it (``StridedSliceGrad``) took
    59 % of a training step of ``unet2d_res_srnn_32_512`` on the CPU (bench/README.md); ``ops.slice``'s gradient
    is a ``Pad``.
    """
    width, start = _SHIFT_PAD[direction]
    return ops.slice(ops.pad(h, width), start, ops.shape(h))


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
        scan_dtype: the dtype of the scans' element-wise arithmetic. ``'auto'`` (default): the layer's compute
            dtype, except float32 when that is bfloat16 and no GPU is present (:func:`common.devices.gpu_present`):
            a CPU has no bfloat16 element-wise instructions, TensorFlow's kernels convert to float32 and back,
            and the scans ran slower in bfloat16 than in float32 (bench/README.md). ``'compute'``: always the
            compute dtype. Or a dtype name (``'float32'``). The result is cast back to the compute dtype.

    Input (B, H, W, C), channels last, cast to the scans' dtype (float32 by default, as the original's cast).
    Output (B, H, W, 4C) in ``'concat'`` mode, (B, H, W, F) in ``'convolution'`` mode, in the compute dtype.
    """

    def __init__(self, rnn_seq_length, activation="relu", kernel_initializer="random_uniform",
                 merge_mode="concat", output_conv_filter=None, scan_dtype="auto", **kwargs):
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
        if scan_dtype not in ("auto", "compute"):
            scan_dtype = keras.backend.standardize_dtype(scan_dtype)
        self.scan_dtype = scan_dtype
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

    def resolved_scan_dtype(self):
        """The dtype the scans compute in (``scan_dtype`` with ``'auto'`` and ``'compute'`` resolved)."""
        if self.scan_dtype == "compute":
            return self.compute_dtype
        if self.scan_dtype == "auto":
            from common.devices import gpu_present

            return "float32" if self.compute_dtype == "bfloat16" and not gpu_present() else self.compute_dtype
        return self.scan_dtype

    def call(self, inputs):
        dtype = self.resolved_scan_dtype()
        x = ops.cast(inputs, dtype)
        outputs = []
        for direction, kernel in zip(_SRNN_DIRECTIONS, self.direction_kernels):
            row, col = _SRNN_KERNELS[direction][1]
            a = ops.cast(kernel[row, col, :, 0], dtype)  # (C,) active tap
            h, y = x, x
            for _ in range(self.rnn_seq_length):
                h = self.activation(a * _shift(h, direction))
                y = y + h
            outputs.append(y)
        out = ops.cast(ops.concatenate(outputs, axis=-1), self.compute_dtype)
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
            "scan_dtype": self.scan_dtype,
        })
        return config


# PyTorch-faithful building blocks.
#
# Ports of PyTorch networks need three things Keras does not do by default: Kaiming-normal kernels that are
# *not* truncated, torch's default bias initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (Keras: zeros),
# and BatchNorm with torch's epsilon and the opposite momentum convention
# (torch: running = (1 - m)·running + m·batch, Keras: running = m·running + (1 - m)·batch).
# ---------------------------------------------------------------------------------------------------------

def _fresh(initializer):
    """A new instance of ``initializer`` when it is an ``Initializer`` object.

    Keras 3 initializers fix their seed at construction, so one instance shared by several layers would
    give them all the same draw; every layer gets its own copy instead (strings and dicts already do).
    """
    if isinstance(initializer, keras.initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer


def kaiming_normal_fan_in(seed=None):
    """torch ``nn.init.kaiming_normal_(w, mode='fan_in', nonlinearity='relu')``: N(0, 2/fan_in), untruncated.

    Keras ``he_normal`` draws from a *truncated* normal, so it is not the same distribution. For a
    ``Conv2DTranspose`` kernel (kh, kw, out, in) Keras' fan_in is ``out·kh·kw``, which equals torch's fan_in
    of the ConvTranspose weight (in, out, kh, kw).
    """
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal",
                                              seed=seed)


def torch_default_bias(fan_in, seed=None):
    """torch's default conv bias initialiser: U(-1/sqrt(fan_in), +1/sqrt(fan_in)).

    ``fan_in`` is the fan-in of the layer's weight as torch computes it: ``in_channels·kh·kw`` for
    ``Conv2d`` and ``out_channels·kh·kw`` for ``ConvTranspose2d``.
    """
    bound = 1.0 / float(fan_in) ** 0.5
    return keras.initializers.RandomUniform(minval=-bound, maxval=bound, seed=seed)


def torch_batch_norm(torch_momentum=0.1, epsilon=1e-5, gamma_initializer="ones", name=None):
    """``BatchNormalization`` with the semantics of torch ``nn.BatchNorm2d(eps, momentum)``.

    Keras' momentum is the weight of the *old* running statistic, torch's the weight of the *new* batch
    statistic, so ``keras_momentum = 1 - torch_momentum`` (torch 0.1 -> Keras 0.9). torch's eps default is
    1e-5 (Keras 1e-3).
    """
    return layers.BatchNormalization(momentum=1.0 - torch_momentum, epsilon=epsilon,
                                     gamma_initializer=_fresh(gamma_initializer), name=name)


def torch_conv2d(x, filters, kernel_size=3, dilation_rate=1, kernel_initializer=None, name=None):
    """Conv2D with torch padding ``dilation·(k-1)/2`` (== Keras 'same' for odd k, stride 1), bias on.

    Kernel: Kaiming normal fan_in unless ``kernel_initializer`` is given; bias: torch's default uniform,
    computed from the input channels of ``x``.
    """
    fan_in = int(x.shape[-1]) * kernel_size * kernel_size
    return layers.Conv2D(filters, kernel_size, padding="same", dilation_rate=dilation_rate, use_bias=True,
                         kernel_initializer=_fresh(kernel_initializer) or kaiming_normal_fan_in(),
                         bias_initializer=torch_default_bias(fan_in), name=name)(x)


def torch_conv2d_transpose(x, filters, kernel_size=4, strides=2, kernel_initializer=None, name=None):
    """torch ``ConvTranspose2d(k=4, stride=2, padding=1)`` == Keras ``Conv2DTranspose(4, 2, 'same')``.

    Doubles H and W; linear, bias on, Kaiming-normal kernel and torch's default bias (fan_in
    ``filters·k·k``).
    """
    fan_in = filters * kernel_size * kernel_size
    return layers.Conv2DTranspose(filters, kernel_size, strides=strides, padding="same", use_bias=True,
                                  kernel_initializer=_fresh(kernel_initializer) or kaiming_normal_fan_in(),
                                  bias_initializer=torch_default_bias(fan_in), name=name)(x)


def conv_bn_relu(x, filters, kernel_size=3, dilation_rate=1, batch_norm=True, bn_momentum=0.1,
                 bn_epsilon=1e-5, gamma_initializer="ones", name="conv"):
    """One ``Conv2D -> [BatchNorm] -> ReLU`` unit (torch Sequential(Conv2d, BatchNorm2d, ReLU)).

    Layers: ``{name}`` (conv), ``{name}_bn``, ``{name}_relu``. ``bn_momentum`` uses torch's convention.
    ``gamma_initializer`` may be shared between calls: each BatchNorm gets its own copy.
    """
    x = torch_conv2d(x, filters, kernel_size, dilation_rate=dilation_rate, name=name)
    if batch_norm:
        x = torch_batch_norm(bn_momentum, bn_epsilon, gamma_initializer, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def double_conv_block(x, filters, batch_norm=True, bn_momentum=0.1, bn_epsilon=1e-5,
                      gamma_initializer="ones", name="block"):
    """Two 3x3 ``conv_bn_relu`` units (the U-Net ``unetConv2`` level); layers ``{name}_conv1``, ``_conv2``."""
    for i in (1, 2):
        x = conv_bn_relu(x, filters, 3, batch_norm=batch_norm, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                         gamma_initializer=gamma_initializer, name=f"{name}_conv{i}")
    return x


def dilated_cascade_block(x, dilation_rates=(1, 2, 4, 8), batch_norm=True, bn_momentum=0.1, bn_epsilon=1e-5,
                          gamma_initializer="ones", name="dilated"):
    """D-LinkNet-style cascaded dilated centre block with an all-paths sum.

    ``t0 = x``, ``t_k = ReLU(BN(Conv3x3_{d_k}(t_{k-1})))`` with the channel count of ``x``, and the output is
    ``t0 + t1 + ... + t_K`` (the input is part of the sum). Zhou et al., "D-LinkNet", CVPR-W 2018.
    Layers: ``{name}_conv{k}`` (+ ``_bn``, ``_relu``) and ``{name}_sum``.
    """
    filters = int(x.shape[-1])
    paths = [x]
    for k, rate in enumerate(dilation_rates, start=1):
        paths.append(conv_bn_relu(paths[-1], filters, 3, dilation_rate=rate, batch_norm=batch_norm,
                                  bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                                  gamma_initializer=gamma_initializer, name=f"{name}_conv{k}"))
    return layers.Add(name=f"{name}_sum")(paths)


def up_concat_block(x_low, skips, filters, batch_norm=False, bn_momentum=0.1, bn_epsilon=1e-5,
                    gamma_initializer="ones", name="up"):
    """U-Net / UNet++ decoder node: learned 2x up-sampling, concatenation, two 3x3 convs.

    ``Conv2DTranspose(filters, 4, stride 2, 'same')`` (linear, bias) on the deeper ``x_low``, then
    ``Concatenate([upsampled, *skips])`` on channels in that order, then ``double_conv_block(filters)``
    (without BatchNorm by default, as in the UNet++ reference decoder). With one skip this is the U-Net
    ``up_concat``; with ``skips = [X(i,0), ..., X(i,j-1)]`` it is the UNet++ node X(i,j) (Zhou et al., 2018).
    Layers: ``{name}_up``, ``{name}_concat``, ``{name}_conv1``, ``{name}_conv2``.
    """
    x = torch_conv2d_transpose(x_low, filters, 4, 2, name=f"{name}_up")
    x = layers.Concatenate(axis=-1, name=f"{name}_concat")([x, *skips])
    return double_conv_block(x, filters, batch_norm=batch_norm, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                             gamma_initializer=gamma_initializer, name=name)


# --------------------------------------------------------------------------------------------------------------
# PyTorch-default initialisers (for faithful ports of PyTorch models)


def torch_default_initializers(fan_in, zero_bias=False):
    """Initialisers reproducing PyTorch's default ``Conv2d``/``ConvTranspose2d``/``Linear`` initialisation.

    PyTorch draws kernels from ``kaiming_uniform(a=sqrt(5))`` = U(±1/sqrt(fan_in)) and biases from
    U(±1/sqrt(fan_in)). The kernel part is ``VarianceScaling(1/3, 'fan_in', 'uniform')`` (Keras computes the
    same fan-in: kh·kw·in for Conv2D, kh·kw·out for Conv2DTranspose, which is PyTorch's dim-1 fan-in of a
    transposed kernel, and ``in`` for Dense). The bias bound needs ``fan_in`` explicitly because Keras bias
    initialisers do not see the kernel shape.

    Args:
        fan_in: kernel fan-in (kh·kw·in_channels of a conv, kh·kw·out_channels of a transposed conv, in
            features of a dense layer).
        zero_bias: use zeros for the bias (modules whose original code zeroes the biases).

    Returns:
        ``(kernel_initializer, bias_initializer)``.
    """
    kernel = keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")
    if zero_bias:
        return kernel, keras.initializers.Zeros()
    bound = 1.0 / float(fan_in) ** 0.5
    return kernel, keras.initializers.RandomUniform(-bound, bound)


# --------------------------------------------------------------------------------------------------------------
# VGG16 encoder (Simonyan & Zisserman, ICLR 2015) with ImageNet weights from a local Keras file only

VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + VGG16_NOTOP_FILE
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg16_encoder(x, n_blocks=5, pool_last=True):
    """VGG16 convolutional blocks with the Keras layer names (``block1_conv1`` ... ``block5_pool``).

    Each block is ``n`` Conv2D(3x3, 'same', ReLU) followed by MaxPooling2D(2); the names equal those of
    ``keras.applications.VGG16`` so ImageNet weights map by name (:func:`load_vgg16_notop_weights`).
    Random initialisation is torchvision's VGG init: He-normal with fan-out, zero bias.

    Args:
        x: input tensor (B, H, W, C).
        n_blocks: number of blocks (1..5).
        pool_last: apply the last block's max-pooling.

    Returns:
        ``(x, features)``: the output and the list of every block's conv output (before its pooling).
    """
    features = []
    for block, (filters, n_convs) in enumerate(VGG16_BLOCKS[:n_blocks], start=1):
        for i in range(1, n_convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              kernel_initializer=keras.initializers.VarianceScaling(
                                  2.0, mode="fan_out", distribution="untruncated_normal"),
                              name=f"block{block}_conv{i}")(x)
        features.append(x)
        if block < n_blocks or pool_last:
            x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    return x, features


def resolve_vgg16_notop_weights(encoder_weights):
    """Turn an ``encoder_weights`` option into a local VGG16 notop weights file (or None); never downloads.

    Args:
        encoder_weights: None (random init); ``"imagenet"``, which looks for Keras's cached
            ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`` in ``$KERAS_HOME/models`` and
            ``~/.keras/models``; or a path to that file (or to any VGG16 notop weights saved by Keras,
            e.g. ``keras.applications.VGG16(include_top=False).save_weights("x.weights.h5")``).

    Returns:
        The file path, or None.

    Raises:
        FileNotFoundError: ``"imagenet"`` without a cached file, or a path that does not exist.
    """
    if encoder_weights is None:
        return None
    if isinstance(encoder_weights, str) and encoder_weights == "imagenet":
        homes = [os.environ.get("KERAS_HOME"), os.path.join(os.path.expanduser("~"), ".keras")]
        candidates = [os.path.join(home, "models", VGG16_NOTOP_FILE) for home in homes if home]
        for candidate in candidates:
            if os.path.isfile(candidate):
                return candidate
        raise FileNotFoundError(
            f"encoder_weights='imagenet': no local copy of Keras's ImageNet VGG16 file {VGG16_NOTOP_FILE} "
            f"(looked in {', '.join(candidates)}); weights are never downloaded here. Fetch it once from "
            f"{VGG16_NOTOP_URL} and pass encoder_weights='/path/to/{VGG16_NOTOP_FILE}', or put it in one "
            "of those folders.")
    path = os.fspath(encoder_weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: VGG16 notop weights file not found (expected Keras's {VGG16_NOTOP_FILE} "
                                "or weights saved from keras.applications.VGG16(include_top=False))")
    return path


def load_vgg16_notop_weights(model, weights_file, skip_missing=False):
    """Copy the weights of a Keras VGG16 notop file into the ``block*_conv*`` layers of ``model``.

    The file is read by ``keras.applications.VGG16(weights=None, include_top=False)``, so both the legacy
    ``.h5`` file of ``keras.applications`` and Keras 3 ``.weights.h5`` files work. Every conv layer of the
    reference VGG16 must exist in ``model`` with the same name and shapes, unless ``skip_missing`` (for
    encoders that use only the first blocks of VGG16, such as SEDU-Net's).

    Returns:
        The list of layer names that were set.
    """
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
    try:
        vgg.load_weights(weights_file)
    except Exception as error:  # h5py / Keras raise various types for a wrong file
        raise ValueError(f"{weights_file}: not a Keras VGG16 notop weights file ({error})") from error
    names = []
    for layer in vgg.layers:
        if not layer.weights:
            continue
        try:
            target = model.get_layer(layer.name)
        except ValueError:
            if skip_missing:
                continue
            raise ValueError(f"model {model.name!r} has no VGG16 layer {layer.name!r}") from None
        target.set_weights(layer.get_weights())
        names.append(layer.name)
    return names


# --------------------------------------------------------------------------------------------------------------
# Resampling and context blocks


def bilinear_upsample(x, factor, name="upsample"):
    """Bilinear upsampling by an integer ``factor`` with PyTorch's ``align_corners=False`` semantics.

    Output pixel ``i`` samples the input at ``(i + 0.5) / factor - 0.5`` (half-pixel centres), clamped to the
    border, without antialiasing: exactly ``nn.Upsample(scale_factor=factor, mode='bilinear')`` (PyTorch
    >= 0.4). Keras's ``UpSampling2D(interpolation='bilinear')`` resizes with half-pixel centres
    (``tf.image.resize``), which is the same map; ``tests/test_tdsnet.py`` checks it against a NumPy
    reference. Never use an ``align_corners=True`` resize here.
    """
    return layers.UpSampling2D(factor, interpolation="bilinear", name=name)(x)


def context_ensemble(x, filters=256, dilation_rates=(1, 2, 4, 8, 16), initializers=None, name="ce"):
    """Dilated context ensemble (TDSNet, Ren et al. 2020): a chain of dilated 3x3 convs whose outputs are summed.

    ``d_1 = ReLU(conv_{r_1}(x))``, ``d_k = ReLU(conv_{r_k}(d_{k-1}))`` and the result is
    ``x + d_1 + ... + d_K`` (element-wise sum); with rates 1, 2, 4, 8, 16 the summed paths have effective
    dilations 1, 3, 7, 15, 31, 63. ``x`` must already have ``filters`` channels.
    Layers: ``<name>_dilate<r>``, ``<name>_sum``.

    Args:
        x: input tensor (B, H, W, filters).
        filters: channels of every dilated conv.
        dilation_rates: the chain's rates, in order.
        initializers: ``fan_in -> (kernel_initializer, bias_initializer)``, called once per layer so each layer
            gets its own initialiser instances (e.g. :func:`torch_default_initializers`); default Glorot/zeros.
        name: layer-name prefix.

    Returns:
        The summed tensor (B, H, W, filters).
    """
    paths = [x]
    y = x
    for rate in dilation_rates:
        kernel_init, bias_init = initializers(9 * filters) if initializers else ("glorot_uniform", "zeros")
        y = layers.Conv2D(filters, 3, padding="same", dilation_rate=rate, activation="relu",
                          kernel_initializer=kernel_init, bias_initializer=bias_init,
                          name=f"{name}_dilate{rate}")(y)
        paths.append(y)
    return layers.Add(name=f"{name}_sum")(paths)


def check_num_classes(num_classes):
    """``num_classes`` as an int >= 1 (None = 1, the binary default); ``ValueError`` otherwise."""
    if num_classes is None:
        return 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1 (background included), got {num_classes!r}")
    return num_classes


def segmentation_output(x, num_classes=None, kernel_size=1, name="head_output"):
    """The output layer of the binary families: the originals' 1-channel sigmoid conv when ``num_classes``
    is None, 1 or 2 (binary: foreground probability), a ``num_classes``-channel softmax conv for more classes
    (class probabilities, background = channel 0).

    Same layer ``name`` and default (Glorot) initialisers either way, so the binary graph and its weights stay
    the original's. float32 output under mixed precision. A K-channel head has ``(K - 1)·(C_in·kh·kw + 1)``
    more parameters than the 1-channel one.
    """
    num_classes = check_num_classes(num_classes)
    if num_classes <= 2:
        return layers.Conv2D(1, kernel_size, activation="sigmoid", dtype="float32", name=name)(x)
    return layers.Conv2D(num_classes, kernel_size, activation="softmax", dtype="float32", name=name)(x)
