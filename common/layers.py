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
