"""Custom Keras layers and small block builders shared by the model families.

Layers are real ``keras.layers.Layer`` subclasses registered for serialization (package ``common``), so a
model saved as ``.keras`` reloads without ``custom_objects``. Blocks are small builder functions that take
a tensor (and a ``name`` prefix) and return a tensor; every layer they create is named systematically
(``<prefix>_conv1``, ...) so that summaries read like the paper's figure.
"""

import keras
from keras import layers


def conv_block(x, filters, n_convs=2, kernel_size=3, activation="relu",
               kernel_initializer="glorot_uniform", name="block"):
    """``n_convs`` Conv2D(filters, kernel_size, 'same', activation) in a row: the plain U-Net level."""
    for i in range(1, n_convs + 1):
        x = layers.Conv2D(filters, kernel_size, padding="same", activation=activation,
                          kernel_initializer=kernel_initializer, name=f"{name}_conv{i}")(x)
    return x


# ---------------------------------------------------------------------------------------------------------
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
