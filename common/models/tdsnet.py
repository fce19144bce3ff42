"""TDSNet (xuhuaren/TDSNet): task decomposition and synchronisation for robotic scene segmentation.

Ren X., Ahmad S., Zhang L., Xiang L., Nie D., Yang F., Wang Q., Shen D., "Task Decomposition and
Synchronization for Semantic Biomedical Image Segmentation", IEEE Transactions on Image Processing 29, 2020
(arXiv:1905.08720).

Graph (channels last, spec ``tdsnet.md`` section 1.1)::

    input (H, W, 3)  H, W multiples of 32
    VGG16 conv blocks 1-5, each followed by 2x2 max-pooling          block1_conv1 ... block5_pool  (H/32)
    context ensemble: ConvT(256, 4, s2) + ReLU = x                    ce_dilate0                    (H/16)
        d1..d5 = chained dilated 3x3 convs (rates 1, 2, 4, 8, 16)     ce_dilate1 ... ce_dilate16
        latent = x + d1 + d2 + d3 + d4 + d5                           ce_sum
    task convs (3x3, 256, ReLU) on the latent map:
        seg&class  task_seg_cls,  seg&scene  task_seg_scene,  class&scene  task_cls_scene
    class head:  [seg_cls, cls_scene]   -> GAP -> Dense 256 -> Dense 12   cls_concat, cls_pool, cls_fc, cls
    scene head:  [seg_scene, cls_scene] -> GAP -> Dense 256 -> Dense 3    scene_concat, ..., scene_fc, scene
    seg head:    [seg_cls, seg_scene] -> bilinear x16 (align_corners=False) -> conv 64 -> conv 32
                 -> conv 32 -> conv1x1 12 -> log_softmax                  seg_concat, seg_upsample,
                                                                          seg_dec1_conv1/2, seg_dec0_conv,
                                                                          seg_logits, seg

No BatchNorm, no Dropout, no encoder skips. The dense heads have no activation between their two layers and
return logits.
"""

import keras
from keras import layers

from common.layers import (bilinear_upsample, context_ensemble, load_vgg16_notop_weights,
                           resolve_vgg16_notop_weights, torch_default_initializers, vgg16_encoder)
from common.models import register

#: ROBOT18 (EndoVis 2018) class and scene counts.
NUM_CLASSES = 12
NUM_SCENES = 3
_CE_FILTERS = 256
_HEAD_UNITS = 256


def _conv(x, filters, kernel_size, fan_in_channels, name, activation="relu", zero_bias=False):
    """Conv2D 'same' with bias and PyTorch's default initialisation."""
    kernel_init, bias_init = torch_default_initializers(kernel_size * kernel_size * fan_in_channels, zero_bias)
    return layers.Conv2D(filters, kernel_size, padding="same", activation=activation,
                         kernel_initializer=kernel_init, bias_initializer=bias_init, name=name)(x)


def _dense(x, units, fan_in, name, dtype=None):
    kernel_init, bias_init = torch_default_initializers(fan_in)
    return layers.Dense(units, kernel_initializer=kernel_init, bias_initializer=bias_init, dtype=dtype,
                        name=name)(x)


def _classification_head(a, b, units, name):
    """concat[a, b] -> global average pool -> Dense(256) -> Dense(units) (logits, no activation in between)."""
    x = layers.Concatenate(axis=-1, name=f"{name}_concat")([a, b])
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    x = _dense(x, _HEAD_UNITS, 2 * _CE_FILTERS, name=f"{name}_fc")
    return _dense(x, units, _HEAD_UNITS, name=name, dtype="float32")  # f32 (mixed precision)


@register("tdsnet")
def tdsnet(input_shape=(1024, 1280, 3), num_classes=NUM_CLASSES, num_scenes=NUM_SCENES, encoder_weights=None,
           **kwargs):
    """TDSNet for joint segmentation, class-presence and scene (surgical phase) recognition.

    Reproduces the ``TDSNet`` class of the original ``util/models.py``: 22,122,331 parameters for any input
    size (12 classes, 3 scenes). Initialisation follows PyTorch: VGG16 convs as torchvision (He-normal fan-out,
    zero bias) unless ImageNet weights are loaded; every other layer PyTorch's default
    (U(±1/sqrt(fan_in)) kernels and biases), with zero biases in the context-ensemble block and the task convs.
    The model is returned uncompiled; its losses are in :mod:`common.losses` (``tdsnet_*``).

    Preprocessing goes with the encoder weights: the original used torchvision's ImageNet VGG16 with RGB
    ``(x/255 - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)``; Keras's ImageNet file was converted from Caffe
    and expects BGR ``0..255`` minus ``(103.939, 116.779, 123.68)``
    (``keras.applications.vgg16.preprocess_input``). This builder applies no preprocessing.

    Args:
        input_shape: (H, W, C) with H and W multiples of 32 (five 2x2 poolings); the original trains on full
            1024x1280 RGB frames.
        num_classes: segmentation / class-presence classes (background included).
        num_scenes: scene classes.
        encoder_weights: None (random), ``"imagenet"`` (Keras's
            ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`` found in ``$KERAS_HOME/models`` or
            ``~/.keras/models``; never downloaded, a clear error otherwise) or a path to a VGG16 notop weights
            file (that file, or weights saved from ``keras.applications.VGG16(include_top=False)``).
        **kwargs: ``name`` of the model (default ``"tdsnet"``).

    Returns:
        ``keras.Model`` with three outputs, in this order: ``seg`` (B, H, W, num_classes) log-probabilities
        (log_softmax), ``cls`` (B, num_classes) logits, ``scene`` (B, num_scenes) logits.
    """
    name = kwargs.pop("name", "tdsnet")
    if kwargs:
        raise TypeError(f"tdsnet() got unexpected options {sorted(kwargs)}")
    height, width, channels = tuple(input_shape)
    if height is None or width is None or height % 32 or width % 32:
        raise ValueError(f"TDSNet needs input height and width that are known multiples of 32 (five poolings); "
                         f"got input_shape={tuple(input_shape)}")
    weights_file = resolve_vgg16_notop_weights(encoder_weights)
    if weights_file and channels != 3:
        raise ValueError(f"ImageNet VGG16 encoder weights need a 3-channel input; got input_shape={input_shape}")

    inputs = keras.Input(shape=(height, width, channels), name="input")
    x, _ = vgg16_encoder(inputs, n_blocks=5, pool_last=True)

    # Context ensemble (CE): transposed conv back to stride 16, then the summed dilated chain (zero biases).
    kernel_init, bias_init = torch_default_initializers(4 * 4 * _CE_FILTERS, zero_bias=True)
    x = layers.Conv2DTranspose(_CE_FILTERS, 4, strides=2, padding="same", activation="relu",
                               kernel_initializer=kernel_init, bias_initializer=bias_init, name="ce_dilate0")(x)
    latent = context_ensemble(x, _CE_FILTERS, (1, 2, 4, 8, 16),
                              initializers=lambda fan_in: torch_default_initializers(fan_in, zero_bias=True),
                              name="ce")

    # Task-task convs shared by pairs of tasks (also zero biases: part of the CE module in the original).
    seg_cls = _conv(latent, _CE_FILTERS, 3, _CE_FILTERS, "task_seg_cls", zero_bias=True)
    seg_scene = _conv(latent, _CE_FILTERS, 3, _CE_FILTERS, "task_seg_scene", zero_bias=True)
    cls_scene = _conv(latent, _CE_FILTERS, 3, _CE_FILTERS, "task_cls_scene", zero_bias=True)

    cls = _classification_head(seg_cls, cls_scene, num_classes, "cls")
    scene = _classification_head(seg_scene, cls_scene, num_scenes, "scene")

    # Segmentation: one x16 bilinear step from stride 16, then three convs and the 1x1 classifier.
    y = layers.Concatenate(axis=-1, name="seg_concat")([seg_cls, seg_scene])
    y = bilinear_upsample(y, 16, name="seg_upsample")
    y = _conv(y, 64, 3, 2 * _CE_FILTERS, "seg_dec1_conv1")
    y = _conv(y, 32, 3, 64, "seg_dec1_conv2")
    y = _conv(y, 32, 3, 32, "seg_dec0_conv")
    y = _conv(y, num_classes, 1, 32, "seg_logits", activation=None)
    seg = layers.Activation("log_softmax", dtype="float32", name="seg")(y)  # f32 (mixed precision)

    model = keras.Model(inputs, [seg, cls, scene], name=name)
    if weights_file:
        load_vgg16_notop_weights(model, weights_file)
    return model
