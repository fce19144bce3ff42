"""The fingernail study's 2-D U-Net family (behroozmrd47/Spatial_RNN_Fingernail), see specs/fingernail.md §2.

Papers:
    - U-Net: O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
      Segmentation", MICCAI 2015.
    - U-Net Residual: A. Khanna, N. D. Londhe, S. Gupta, A. Semwal, "A deep Residual U-Net convolutional
      neural network for automated lung segmentation in computed tomography images", Biocybernetics and
      Biomedical Engineering 40(3), 2020.
    - CR-UNet (spatial-RNN skips): H. Li et al., "CR-Unet: A Composite Network for Ovary and Follicle
      Segmentation in Ultrasound Images", IEEE Journal of Biomedical and Health Informatics 24(4), 2020.

All four networks share one backbone (:func:`unet2d_backbone`), parameterised by the filter list of the
encoder levels (the last entry is the bottleneck). Every conv is 3x3 'same' + ReLU, every pool 2x2, every
up-sampling a linear 2x2 stride-2 Conv2DTranspose with bias, and the head a 1x1 sigmoid conv.

Layer names follow the original's scheme, which is already systematic by stage (level k = 1..2D for depth
D = len(filters); encoder levels 1..D, decoder levels D+1..2D-1, head 2D):

    encoder level k:  conv{k}1, [conc{k}1], conv{k}2, [conc{k}2], pool{k}     ([..] residual only)
    decoder level k:  conv_tr_{k}, conc{k}0 = [conv_tr_{k}, skip], conv{k}1, [conc{k}1], conv{k}2, [conc{k}2]
    CR-UNet skips:    rnn{k}0 (SpatialRNN2D) -> conv{k}0 (1x1)
    head:             conv{2D}  (conv10 for the published depth 5)

Builders take ``input_shape = (H, W, C)`` (H and W divisible by 2**(D-1); the original uses 160x192x3) and
return an uncompiled model named as the original (``Unet_8x128``, ...). ``weights=path`` loads weights,
as the original's ``pretrained_weight_path``.
"""

import keras
from keras import layers

from common.layers import SpatialRNN2D, segmentation_output
from common.models import register


def unet2d_level(x, filters, level, residual=False, kernel_initializer="glorot_uniform"):
    """One level: two Conv3x3(filters) + ReLU. Returns ``(output, second_conv)``.

    Plain: ``output = conv2(conv1(x))``. Residual (the original's E/D block, dense-style):
    ``a = conv1(x); b = conv2(x ⊕ a); output = x ⊕ b`` with ``⊕`` the channel concat, so the output has
    ``channels(x) + filters`` channels.
    """

    def conv(t, i):
        return layers.Conv2D(filters, 3, padding="same", activation="relu",
                             kernel_initializer=kernel_initializer, name=f"conv{level}{i}")(t)

    def cat(a, b, i):
        return layers.Concatenate(name=f"conc{level}{i}")([a, b])

    a = conv(x, 1)
    b = conv(cat(x, a, 1) if residual else a, 2)
    return (cat(x, b, 2) if residual else b), b


def unet2d_backbone(inputs, filters, residual=False, encoder_initializer="glorot_uniform",
                    block_output_skips=(), srnn_seq_lengths=None):
    """Encoder-decoder feature graph of the family; returns the last decoder tensor (before the head).

    Args:
        inputs: (B, H, W, C) tensor.
        filters: filters per encoder level, bottleneck last, e.g. ``(8, 16, 32, 64, 128)``. Decoder level
            ``2D - k`` mirrors encoder level ``k`` with ``filters[k-1]`` filters (up-conv and both convs).
        residual: use the residual (concat) level of :func:`unet2d_level` instead of the plain one.
        encoder_initializer: kernel initializer of the encoder convs (the decoder always uses Glorot).
        block_output_skips: encoder levels whose skip is the whole block output instead of the second conv
            (``unet2d_res_32_512`` uses ``(4,)``: pool3 ⊕ conv42).
        srnn_seq_lengths: ``{encoder level: L}``; the skip of such a level goes through
            ``SpatialRNN2D(L)`` then a 1x1 conv (he_normal, ReLU) back to ``filters[level-1]`` channels
            (the CR-UNet shortcut).
    """
    depth = len(filters)
    srnn_seq_lengths = srnn_seq_lengths or {}
    x, skips = inputs, {}
    for level, f in enumerate(filters, start=1):
        x, second_conv = unet2d_level(x, f, level, residual, encoder_initializer)
        if level < depth:
            skips[level] = x if level in block_output_skips else second_conv
            x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    for enc_level in range(depth - 1, 0, -1):
        level, f = 2 * depth - enc_level, filters[enc_level - 1]
        skip = skips[enc_level]
        if enc_level in srnn_seq_lengths:
            skip = SpatialRNN2D(srnn_seq_lengths[enc_level], name=f"rnn{level}0")(skip)
            skip = layers.Conv2D(f, 1, padding="same", activation="relu", kernel_initializer="he_normal",
                                 name=f"conv{level}0")(skip)
        up = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"conv_tr_{level}")(x)
        x = layers.Concatenate(name=f"conc{level}0")([up, skip])
        x, _ = unet2d_level(x, f, level, residual)
    return x


def _unet2d_model(input_shape, filters, name, weights=None, num_classes=None, **backbone_options):
    """Backbone + Conv1x1(1, sigmoid) head as a ``keras.Model``; optionally load ``weights``.

    ``num_classes`` K > 2 replaces the head by a K-channel softmax Conv1x1 of the same name (an option for
    multi-class data); None, 1 or 2 keep the original's sigmoid head.
    """
    height, width = input_shape[:2]
    factor = 2 ** (len(filters) - 1)
    if any(s is not None and s % factor for s in (height, width)):
        raise ValueError(f"{name}: input height and width must be divisible by {factor}, got {input_shape}")
    inputs = keras.Input(input_shape, name="input")
    features = unet2d_backbone(inputs, filters, **backbone_options)
    outputs = segmentation_output(features, num_classes, name=f"conv{2 * len(filters)}")  # f32 (mixed precision)
    model = keras.Model(inputs, outputs, name=name)
    if weights:
        model.load_weights(weights)
    return model


_RES = dict(residual=True, encoder_initializer="he_normal")
# CR-UNet: conv-only skips, spatial RNNs on the skips of encoder levels 3 (L=32) and 2 (L=64).
_CR = dict(_RES, srnn_seq_lengths={3: 32, 2: 64})


@register("unet2d_8_128")
def unet2d_8_128(input_shape=(160, 192, 3), **kwargs):
    """Plain U-Net (Ronneberger et al. 2015), filters 8..128, Glorot everywhere: 485,817 parameters."""
    return _unet2d_model(input_shape, (8, 16, 32, 64, 128), "Unet_8x128", **kwargs)


@register("unet2d_res_32_512")
def unet2d_res_32_512(input_shape=(160, 192, 3), **kwargs):
    """Residual U-Net (Khanna et al. 2020), filters 32..512; the deepest skip is the E4 block output.

    15,527,681 parameters.
    """
    return _unet2d_model(input_shape, (32, 64, 128, 256, 512), "Unet_Res_32x512",
                         block_output_skips=(4,), **_RES, **kwargs)


@register("unet2d_res_srnn_32_512")
def unet2d_res_srnn_32_512(input_shape=(160, 192, 3), **kwargs):
    """CR-UNet "HW" (Li et al. 2020 style spatial-RNN skips on the residual U-Net), filters 32..512.

    14,449,857 parameters.
    """
    return _unet2d_model(input_shape, (32, 64, 128, 256, 512), "Unet_Res_SRNN_32x512", **_CR, **kwargs)


@register("unet2d_res_srnn_8_128")
def unet2d_res_srnn_8_128(input_shape=(160, 192, 3), **kwargs):
    """CR-UNet "LW": the HW graph with every filter count divided by 4 (8..128). 914,865 parameters."""
    return _unet2d_model(input_shape, (8, 16, 32, 64, 128), "Unet_Res_SRNN_8x128", **_CR, **kwargs)
