"""BCDU-Net family (rezazad68/BCDU-Net): BCDU_net_D3, BCDU_net_D1, SEDU_Net_D3 and the Skin folder's U-Net.

Azad R., Asadi-Aghbolaghi M., Fathy M., Escalera S., "Bi-Directional ConvLSTM U-Net with Densely Connected
Convolutions", ICCV Workshops 2019 (arXiv:1909.00166).

All four share one 3-level encoder (64/128/256 filters, 2x2 max-pooling) and one head
(Conv2D(2, 3x3, relu) -> Conv2D(1, 1x1, sigmoid); ``num_classes=K > 2`` makes the last one a K-channel
softmax, an option for multi-class data); the BCDU variants share the decoder (transposed-conv up
block with BatchNorm, ConvLSTM skip fusion, two convs). Layer names follow the stage: ``enc1_conv1``,
``enc3_drop``, ``dense2_conv1``, ``up6_convT``, ``fuse6_convlstm``, ``dec6_conv1``, ``head_conv``, ``head_output``
(SEDU-Net keeps the VGG16 names ``block1_conv1`` ... in its encoder so ImageNet weights map by name).

Defaults reproduce the original code, including its single backward ConvLSTM (``bidirectional=True`` is the
paper's bidirectional fusion, an option). Models are returned uncompiled; the original compiles with
Adam(1e-4) and binary cross-entropy.
"""

import keras
from keras import layers

from common.layers import (check_num_classes, conv_block, conv_lstm_fusion, dense_conv_block,
                           load_vgg16_notop_weights, resolve_vgg16_notop_weights, segmentation_output,
                           squeeze_excite)
from common.models import register

_DECODER_STAGES = (6, 7, 8)
_DECODER_FILTERS = (256, 128, 64)


def _input(input_shape):
    height, width, _ = input_shape
    if height is None or width is None or height % 8 or width % 8:
        raise ValueError(f"input height and width must be known multiples of 8 (3 poolings); got {input_shape}")
    return keras.Input(shape=input_shape, name="input")


def _encoder(x, convs_per_level=(2, 2, 2), kernel_initializer="he_normal", prefix="enc", skip3_dropout=0.5):
    """Three levels of 64/128/256 convs, each followed by 2x2 max-pooling.

    Returns ``(pooled, skips)``; the level-3 skip is ``Dropout(skip3_dropout)`` of the convs (pooling reads
    the convs, not the dropout, as in the original).
    """
    skips = []
    for level, (filters, n_convs) in enumerate(zip((64, 128, 256), convs_per_level), start=1):
        x = conv_block(x, filters, n_convs, kernel_initializer=kernel_initializer, name=f"{prefix}{level}")
        skip = x
        if level == 3 and skip3_dropout:
            skip = layers.Dropout(skip3_dropout, name=f"{prefix}{level}_drop")(x)
        skips.append(skip)
        x = layers.MaxPooling2D(2, name=f"{prefix}{level}_pool")(x)
    return x, skips


def _bcdu_decoder(x, skips, lstm_filters, bidirectional, se_ratio=None):
    """Up block (ConvT 2x2/2 -> [SE] -> BN -> ReLU), ConvLSTM fusion with the skip, two convs [-> SE]."""
    for stage, filters, skip, n_lstm in zip(_DECODER_STAGES, _DECODER_FILTERS, skips[::-1], lstm_filters):
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", kernel_initializer="he_normal",
                                   name=f"up{stage}_convT")(x)
        if se_ratio:
            x = squeeze_excite(x, se_ratio, name=f"up{stage}_se")
        x = layers.BatchNormalization(axis=-1, name=f"up{stage}_bn")(x)
        x = layers.Activation("relu", name=f"up{stage}_relu")(x)
        x = conv_lstm_fusion(skip, x, n_lstm, bidirectional=bidirectional, name=f"fuse{stage}")
        x = conv_block(x, filters, 2, kernel_initializer="he_normal", name=f"dec{stage}")
        if se_ratio:
            x = squeeze_excite(x, se_ratio, name=f"dec{stage}_se")
    return x


def _head(x, num_classes=None):
    """Conv2D(2, 3x3, ReLU) -> the output conv: 1x1 sigmoid (the original; ``num_classes`` None, 1 or 2) or
    1x1 ``num_classes``-way softmax (:func:`common.layers.segmentation_output`)."""
    x = layers.Conv2D(2, 3, padding="same", activation="relu", kernel_initializer="he_normal",
                      name="head_conv")(x)
    return segmentation_output(x, num_classes, name="head_output")


def _bcdu_net(input_shape, dense_blocks, bidirectional, bottleneck_dropout, name, num_classes=None):
    check_num_classes(num_classes)
    inputs = _input(input_shape)
    x, skips = _encoder(inputs)
    x = dense_conv_block(x, 512, n_blocks=dense_blocks, dropout=bottleneck_dropout, name="dense")
    x = _bcdu_decoder(x, skips, (128, 64, 32), bidirectional)
    return keras.Model(inputs, _head(x, num_classes), name=name)


@register("bcdu_net_d3")
def bcdu_net_d3(input_shape=(256, 256, 1), bidirectional=False, num_classes=None):
    """BCDU-Net with three densely connected bottleneck blocks (``BCDU_net_D3``; Azad et al., ICCV-W 2019).

    Args:
        input_shape: (H, W, C), H and W multiples of 8.
        bidirectional: ConvLSTM fusions with a forward and a backward layer summed (the paper's description)
            instead of the original code's single backward layer.
        num_classes: None, 1 or 2: the original's 1-channel sigmoid output; K > 2: a K-channel softmax output
            (background = channel 0), with 3·(K - 1) more parameters. The same for every model of the family.

    Returns:
        Uncompiled ``keras.Model`` (B, H, W, C) -> (B, H, W, 1) sigmoid (or (B, H, W, K) softmax).
        20,660,869 parameters for C = 3.
    """
    return _bcdu_net(input_shape, 3, bidirectional, 0.5, "bcdu_net_d3", num_classes)


@register("bcdu_net_d1")
def bcdu_net_d1(input_shape=(256, 256, 1), bidirectional=False, bottleneck_dropout=0.5, num_classes=None):
    """BCDU-Net with one bottleneck block (``BCDU_net_D1``; Azad et al., ICCV-W 2019).

    Args:
        input_shape, bidirectional, num_classes: as :func:`bcdu_net_d3`.
        bottleneck_dropout: dropout after the bottleneck convs. The Skin and Retina folders use 0.5; the Lung
            folder's code feeds the un-dropped tensor to the decoder, i.e. 0 (no Dropout layer).

    Returns:
        Uncompiled ``keras.Model``; 8,862,341 parameters for C = 3.
    """
    return _bcdu_net(input_shape, 1, bidirectional, bottleneck_dropout, "bcdu_net_d1", num_classes)


@register("bcdu_unet")
def bcdu_unet(input_shape=(256, 256, 1), bidirectional=False, num_classes=None):
    """The Skin folder's plain 3-level U-Net (Ronneberger et al., "U-Net", MICCAI 2015), BCDU-Net repository.

    Same encoder, 512-filter bottleneck with Dropout 0.5 and head as :func:`bcdu_net_d1`; each up step is
    UpSampling2D(2) -> Conv2D(512 / 256 / 64, 2x2, relu) -> concat([skip, up]) -> two convs (256 / 128 / 64).

    ``num_classes`` as :func:`bcdu_net_d3`.

    Returns:
        Uncompiled ``keras.Model``; 9,091,461 parameters for C = 3.
    """
    if bidirectional:
        raise ValueError("bcdu_unet has no ConvLSTM fusion; bidirectional=True does not apply")
    check_num_classes(num_classes)
    inputs = _input(input_shape)
    x, skips = _encoder(inputs)
    x = dense_conv_block(x, 512, n_blocks=1, name="dense")
    for stage, up_filters, filters, skip in zip(_DECODER_STAGES, (512, 256, 64), _DECODER_FILTERS, skips[::-1]):
        x = layers.UpSampling2D(2, name=f"up{stage}_upsample")(x)
        x = layers.Conv2D(up_filters, 2, padding="same", activation="relu", kernel_initializer="he_normal",
                          name=f"up{stage}_conv")(x)
        x = layers.Concatenate(axis=-1, name=f"skip{stage}_concat")([skip, x])
        x = conv_block(x, filters, 2, kernel_initializer="he_normal", name=f"dec{stage}")
    return keras.Model(inputs, _head(x, num_classes), name="bcdu_unet")


@register("sedu_net_d3")
def sedu_net_d3(input_shape=(256, 256, 1), bidirectional=False, encoder_weights=None, num_classes=None):
    """SEDU-Net: BCDU_net_D3 with a VGG16 encoder and squeeze-excitation (``SEDU_Net_D3``, BCDU-Net repository, 2020).

    Encoder = VGG16 blocks 1-4 (Simonyan & Zisserman, ICLR 2015) with the VGG layer names; block4's output is
    the first dense block, followed by two dense blocks (:func:`common.layers.dense_conv_block`). Decoder as
    BCDU-Net with ConvLSTM filters 256/128/64 and squeeze-excitation (ratio 16; Hu et al., CVPR 2018) on each
    transposed-conv output (before BN) and each level's last conv. Related paper: Asadi-Aghbolaghi M., Azad R.,
    Fathy M., Escalera S., "Multi-level Context Gating of Embedded Collective Knowledge for Medical Image
    Segmentation" (MCGU-Net), arXiv:2003.05056, 2020.

    Args:
        input_shape: (H, W, C); ImageNet weights need C = 3.
        bidirectional: as :func:`bcdu_net_d3`.
        encoder_weights: None (random init), "imagenet" (Keras's ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``
            from the Keras cache ``$KERAS_HOME/models`` or ``~/.keras/models``; never downloaded) or the path of
            that file. Loaded into the 10 ``block*`` convs; nothing is frozen; no VGG input preprocessing.
        num_classes: as :func:`bcdu_net_d3`.

    Returns:
        Uncompiled ``keras.Model``; 27,891,901 parameters for C = 3.
    """
    check_num_classes(num_classes)
    weights_file = resolve_vgg16_notop_weights(encoder_weights)
    if weights_file and input_shape[-1] != 3:
        raise ValueError(f"ImageNet VGG16 weights need a 3-channel input; got input_shape={input_shape}")
    inputs = _input(input_shape)
    x, skips = _encoder(inputs, (2, 2, 3), kernel_initializer="glorot_uniform", prefix="block", skip3_dropout=0)
    x = conv_block(x, 512, 3, kernel_initializer="glorot_uniform", name="block4")
    x = dense_conv_block(x, 512, n_blocks=2, include_input=True, name="dense")
    x = _bcdu_decoder(x, skips, (256, 128, 64), bidirectional, se_ratio=16)
    model = keras.Model(inputs, _head(x, num_classes), name="sedu_net_d3")
    if weights_file:
        load_vgg16_notop_weights(model, weights_file, skip_missing=True)
    return model
