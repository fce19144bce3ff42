"""Multi-task U-Net, UNet++ and dilated UNet++ for retinal edema segmentation + detection in OCT.

Keras translation of the three networks that the AI Challenger 2018 retinal-edema solution (4th place) can
build: ``UNet``, ``UNet_Nested`` and ``UNet_Nested_dilated`` of ShawnBIT/AI-Challenger-Retinal-Edema-
Segmentation (``models/nets/UNet.py``), written from the reproduction spec
``shared/specs/retinal_edema.md`` section 1, not from the original code.

Papers: O. Ronneberger et al., "U-Net", MICCAI 2015; Z. Zhou et al., "UNet++: A Nested U-Net Architecture
for Medical Image Segmentation", DLMIA 2018; L. Zhou et al., "D-LinkNet", CVPR Workshops 2018 (dilated
centre block).

Common to all three (channels last):

* filters ``[64, 128, 256, 512, 1024] / feature_scale`` = [16, 32, 64, 128, 256] for levels 0..4;
* encoder nodes X(i,0) = 2 x [Conv3x3 -> BatchNorm -> ReLU], 2x2 max-pooling between levels;
* decoder nodes = ``Conv2DTranspose(4, 2, 'same')`` up-sampling, concatenation ``[up, skips...]`` and
  2 x [Conv3x3 -> ReLU] (**no BatchNorm in the decoder**);
* output ``"seg"``: 1x1 conv logits over 4 classes (background, REA, SRF, PED) -> **log_softmax** (the
  original's output; ``softmax = exp(seg)``; the losses in ``common.losses`` consume log-probabilities);
* output ``"det"``: per-slice presence probability of [REA, SRF, PED] from the deepest map:
  Dropout(0.5) -> Conv1x1(3) -> global max pooling -> sigmoid, shape (B, 3);
* initialisation as the original's ``init_weights``: Kaiming-normal (fan_in, untruncated) conv kernels,
  torch-default uniform conv biases, BatchNorm gamma ~ N(1, 0.02), beta 0; BatchNorm eps 1e-5 and torch
  momentum 0.1 (= Keras momentum 0.9).

Layer names follow the UNet++ paper's node notation X(i,j): ``x{i}{j}_conv1``, ``x{i}{j}_up``, ...; the plain
U-Net decoder is the outer diagonal X(3,1), X(2,2), X(1,3), X(0,4) with only the encoder skip.

Builders return an uncompiled ``keras.Model`` with dict outputs ``{"seg": ..., "det": ...}`` (``"det"`` only
when ``multi_task``), so losses can be given per output name.
"""

import keras
from keras import layers

from common.layers import double_conv_block, dilated_cascade_block, torch_conv2d, up_concat_block
from common.models import register

BASE_FILTERS = (64, 128, 256, 512, 1024)
DEPTH = len(BASE_FILTERS) - 1  # number of poolings; H and W must be multiples of 2**DEPTH


def level_filters(feature_scale=4, base_filters=BASE_FILTERS):
    """Channels per level: ``base_filters // feature_scale`` ([16, 32, 64, 128, 256] for the default 4)."""
    return [int(f // feature_scale) for f in base_filters]


def _check_input_shape(input_shape, multiple):
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    for size in input_shape[:2]:
        if size is not None and size % multiple:
            raise ValueError(f"input height and width must be multiples of {multiple} "
                             f"({DEPTH} poolings), got {input_shape!r}")


def _bn_options(bn_momentum, bn_epsilon):
    # The original's BatchNorm init: gamma ~ N(1, 0.02), beta = 0 (each layer gets its own draw).
    return dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=0.02))


def edema_encoder(inputs, filters, bn_momentum=0.1, bn_epsilon=1e-5):
    """Encoder column X(0,0) .. X(L,0): ``double_conv_block`` with BatchNorm, max-pooling in between.

    Returns the list of the ``len(filters)`` encoder nodes (full resolution first).
    """
    bn = _bn_options(bn_momentum, bn_epsilon)
    nodes = []
    x = inputs
    for i, f in enumerate(filters):
        if i:
            x = layers.MaxPooling2D(2, strides=2, padding="valid", name=f"x{i - 1}0_pool")(x)
        x = double_conv_block(x, f, batch_norm=True, name=f"x{i}0", **bn)
        nodes.append(x)
    return nodes


def unet_decoder(encoder_nodes, filters):
    """Plain U-Net decoder: X(i, L-i) = Up(X(i+1, L-i-1), [X(i,0)]) for i = L-1 .. 0. Returns X(0,L)."""
    depth = len(encoder_nodes) - 1
    x = encoder_nodes[-1]
    for i in reversed(range(depth)):
        x = up_concat_block(x, [encoder_nodes[i]], filters[i], name=f"x{i}{depth - i}")
    return x


def unet_nested_decoder(encoder_nodes, filters):
    """UNet++ nested dense skip pathways.

    X(i,j) = Up(X(i+1,j-1), [X(i,0), ..., X(i,j-1)]) for j >= 1, i <= L-j, built column by column.
    Returns the top-row nodes [X(0,1), ..., X(0,L)] (the deep-supervision branches).
    """
    depth = len(encoder_nodes) - 1
    grid = [[node] for node in encoder_nodes]  # grid[i][j] = X(i,j)
    for j in range(1, depth + 1):
        for i in range(depth + 1 - j):
            grid[i].append(up_concat_block(grid[i + 1][j - 1], grid[i][:j], filters[i], name=f"x{i}{j}"))
    return grid[0][1:]


def segmentation_output(branches, n_classes, name="seg"):
    """1x1 conv logits per branch, averaged over branches (deep supervision), then log_softmax.

    One branch: ``{name}_head`` -> ``{name}``. Several: ``{name}_head1..K`` -> ``{name}_logits`` (Average) ->
    ``{name}``. The loss is applied to the averaged output only, as in the original.
    """
    if len(branches) == 1:
        logits = torch_conv2d(branches[0], n_classes, 1, name=f"{name}_head")
    else:
        heads = [torch_conv2d(b, n_classes, 1, name=f"{name}_head{k}") for k, b in enumerate(branches, 1)]
        logits = layers.Average(name=f"{name}_logits")(heads)
    return layers.Activation("log_softmax", dtype="float32", name=name)(logits)  # f32 (mixed precision)


def detection_output(x, n_detect=3, dropout=0.5, name="det"):
    """Slice-level lesion presence: Dropout -> Conv1x1(n_detect) -> global max -> sigmoid, shape (B, n)."""
    x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = torch_conv2d(x, n_detect, 1, name=f"{name}_conv")
    x = layers.GlobalMaxPooling2D(name=f"{name}_pool")(x)
    return layers.Activation("sigmoid", dtype="float32", name=name)(x)  # f32 (mixed precision)


def _build(input_shape, variant, n_classes, feature_scale, multi_task, n_detect, dropout, bn_momentum,
           bn_epsilon, deep_supervision, name):
    _check_input_shape(input_shape, 2 ** DEPTH)
    filters = level_filters(feature_scale)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    enc = edema_encoder(inputs, filters, bn_momentum, bn_epsilon)
    if variant == "dilated":
        # The dilated sum replaces X(4,0) as deep input of X(3,1) and for the detection head.
        enc[-1] = dilated_cascade_block(enc[-1], (1, 2, 4, 8), batch_norm=True, name="dilated",
                                        **_bn_options(bn_momentum, bn_epsilon))
    if variant == "unet":
        branches = [unet_decoder(enc, filters)]
    else:
        branches = unet_nested_decoder(enc, filters)
        if not deep_supervision:
            branches = branches[-1:]
    outputs = {"seg": segmentation_output(branches, n_classes, name="seg")}
    if multi_task:
        outputs["det"] = detection_output(enc[-1], n_detect, dropout, name="det")
    return keras.Model(inputs, outputs, name=name)


_DOC_ARGS = """
    Args:
        input_shape: (height, width, channels); height and width multiples of 16 (or None). The original
            trains on full 1024 x 512 B-scans with 3 stacked neighbouring slices as channels.
        n_classes: segmentation classes (4: background, REA, SRF, PED).
        feature_scale: divides the base filters [64, ..., 1024] (4 -> [16, ..., 256]).
        multi_task: add the ``"det"`` presence head (the README's "Multi-task: Yes" rows).
        n_detect: detection classes (3: REA, SRF, PED).
        dropout: dropout rate before the detection conv.
        bn_momentum: BatchNorm momentum in **torch** convention (0.1 == Keras 0.9).
        bn_epsilon: BatchNorm epsilon (torch default 1e-5).
        name: model name.

    Returns:
        Uncompiled ``keras.Model`` with outputs ``{"seg": (B, H, W, n_classes) log-probabilities,
        "det": (B, n_detect) probabilities}``.
"""


@register("edema_unet")
def edema_unet(input_shape=(1024, 512, 3), n_classes=4, feature_scale=4, multi_task=True, n_detect=3,
               dropout=0.5, bn_momentum=0.1, bn_epsilon=1e-5, name="edema_unet"):
    """Multi-task U-Net of the retinal-edema solution (original name ``unet``; 2,466,151 parameters).

    Source: ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation, ``models/nets/UNet.py`` class ``UNet``
    (Ronneberger et al., MICCAI 2015, with a transposed-conv decoder without BatchNorm).
    """
    return _build(input_shape, "unet", n_classes, feature_scale, multi_task, n_detect, dropout, bn_momentum,
                  bn_epsilon, True, name)


@register("unet_nested")
def unet_nested(input_shape=(1024, 512, 3), n_classes=4, feature_scale=4, multi_task=True, n_detect=3,
                dropout=0.5, bn_momentum=0.1, bn_epsilon=1e-5, deep_supervision=True, name="unet_nested"):
    """Multi-task UNet++ with deep supervision (2,953,027 parameters).

    The four top-row nodes X(0,1..4) each get a 1x1 conv head; their logits are averaged before the
    log_softmax. Source: ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation, ``models/nets/UNet.py`` class
    ``UNet_Nested`` (Zhou et al., UNet++, DLMIA 2018).
    ``deep_supervision=False`` (the original's ``is_ds=False``) uses the X(0,4) head only; the other three
    heads are then not built (torch still counts their 3 x 68 parameters).
    """
    return _build(input_shape, "nested", n_classes, feature_scale, multi_task, n_detect, dropout, bn_momentum,
                  bn_epsilon, deep_supervision, name)


@register("unet_nested_dilated")
def unet_nested_dilated(input_shape=(1024, 512, 3), n_classes=4, feature_scale=4, multi_task=True, n_detect=3,
                        dropout=0.5, bn_momentum=0.1, bn_epsilon=1e-5, deep_supervision=True,
                        name="unet_nested_dilated"):
    """Multi-task dilated UNet++ (5,315,395 parameters).

    ``unet_nested`` plus a cascaded dilated block (dilations 1, 2, 4, 8, Conv-BN-ReLU, 256 channels) on
    X(4,0) whose output is the sum of its input and all four stages; that sum replaces X(4,0) as the deep
    input of X(3,1) and for the detection head (the encoder skips are unchanged). Source:
    ShawnBIT/AI-Challenger-Retinal-Edema-Segmentation, ``models/nets/UNet.py`` class ``UNet_Nested_dilated``
    (UNet++ with a D-LinkNet-style centre, Zhou et al., CVPR-W 2018).
    """
    return _build(input_shape, "dilated", n_classes, feature_scale, multi_task, n_detect, dropout,
                  bn_momentum, bn_epsilon, deep_supervision, name)


for _builder in (edema_unet, unet_nested, unet_nested_dilated):
    if _builder.__doc__:  # None under python -OO
        _builder.__doc__ += _DOC_ARGS
