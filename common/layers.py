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
