"""Forward-pass FLOPs of a Keras model, counted layer by layer (convolutions, transposed convolutions, dense,
ConvLSTM2D and the SpatialRNN2D scans); used by compare_models.py's table and the benchmarks."""

import numpy as np


def _spatial(shape):
    return int(np.prod([d for d in shape[1:-1]]))


def forward_flops(model):
    """Multiply-add FLOPs (2 per MAC) of one forward pass of one sample, counted layer by layer."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2DTranspose):
            cin = layer.input.shape[-1]
            total += 2 * _spatial(layer.input.shape) * np.prod(layer.kernel_size) * cin * layer.filters
        elif isinstance(layer, layers.Conv2D):  # also covers depthwise-free Conv2D subclasses
            cin = layer.input.shape[-1] // layer.groups
            total += 2 * _spatial(layer.output.shape) * np.prod(layer.kernel_size) * cin * layer.filters
        elif isinstance(layer, layers.Dense):
            positions = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
            total += 2 * positions * layer.input.shape[-1] * layer.units
        elif isinstance(layer, layers.ConvLSTM2D):
            steps, cin = layer.input.shape[1], layer.input.shape[-1]
            hw = _spatial(layer.output.shape)
            k = np.prod(layer.kernel_size)
            total += steps * 2 * hw * k * (cin + layer.filters) * 4 * layer.filters
        elif type(layer).__name__ == "SpatialRNN2D":
            total += 4 * layer.rnn_seq_length * 3 * int(np.prod(layer.input.shape[1:]))
    return int(total)
