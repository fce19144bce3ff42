"""Custom Keras layers and small block builders shared by the model families.

Layers are real ``keras.layers.Layer`` subclasses registered for serialization (package ``common``), so a
model saved as ``.keras`` reloads without ``custom_objects``. Blocks are small builder functions that take
a tensor (and a ``name`` prefix) and return a tensor; every layer they create is named systematically
(``<prefix>_conv1``, ...) so that summaries read like the paper's figure.
"""

import os

import keras
from keras import layers


def conv_block(x, filters, n_convs=2, kernel_size=3, activation="relu",
               kernel_initializer="glorot_uniform", name="block"):
    """``n_convs`` Conv2D(filters, kernel_size, 'same', activation) in a row: the plain U-Net level."""
    for i in range(1, n_convs + 1):
        x = layers.Conv2D(filters, kernel_size, padding="same", activation=activation,
                          kernel_initializer=kernel_initializer, name=f"{name}_conv{i}")(x)
    return x


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


def load_vgg16_notop_weights(model, weights_file):
    """Copy the weights of a Keras VGG16 notop file into the ``block*_conv*`` layers of ``model``.

    The file is read by ``keras.applications.VGG16(weights=None, include_top=False)``, so both the legacy
    ``.h5`` file of ``keras.applications`` and Keras 3 ``.weights.h5`` files work. Every conv layer of the
    reference VGG16 must exist in ``model`` with the same name and shapes.

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
