"""U-Net of the Kaggle ultrasound nerve segmentation tutorial.

Marko Jocić, "Deep Learning Tutorial for Kaggle Ultrasound Nerve Segmentation competition, using Keras"
(github.com/jocicmarko/ultrasound-nerve-segmentation, 2016-2017), after Ronneberger et al., "U-Net:
Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015.
"""

import keras
from keras import layers

from common.layers import conv_block, segmentation_output
from common.models import register


def unet_backbone(inputs, filters, name_prefix=""):
    """Encoder-decoder of a plain U-Net with ``len(filters) - 1`` poolings.

    Each level is ``conv_block`` (two 3x3 ReLU convs); the decoder upsamples with a 2x2 stride-2
    Conv2DTranspose and concatenates ``[upsampled, skip]``. Returns the last decoder tensor.
    """
    skips = []
    x = inputs
    for level, f in enumerate(filters[:-1], start=1):
        x = conv_block(x, f, name=f"{name_prefix}enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"{name_prefix}enc{level}_pool")(x)
    x = conv_block(x, filters[-1], name=f"{name_prefix}bottleneck")
    for level in range(len(filters) - 1, 0, -1):
        f = filters[level - 1]
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"{name_prefix}dec{level}_up")(x)
        x = layers.Concatenate(axis=-1, name=f"{name_prefix}dec{level}_concat")([x, skips[level - 1]])
        x = conv_block(x, f, name=f"{name_prefix}dec{level}")
    return x


@register("nerve_unet")
def nerve_unet(input_shape=(96, 96, 1), filters=(32, 64, 128, 256, 512), num_classes=None):
    """The tutorial's ``get_unet()``: 4 poolings, 32..512 filters, sigmoid 1x1 head.

    7,759,521 parameters for one input channel (any size divisible by 16); Keras default initialisers.
    ``num_classes``: None, 1 or 2 = the tutorial's 1-channel sigmoid head; K > 2 = a K-channel softmax head
    (an option for multi-class data, 33·(K - 1) more parameters).
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = unet_backbone(inputs, filters)
    outputs = segmentation_output(x, num_classes, name="head_conv")  # float32 (mixed precision)
    return keras.Model(inputs, outputs, name="nerve_unet")
