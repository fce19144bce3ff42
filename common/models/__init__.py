"""Model registry: ``build_model(name, input_shape, **options) -> keras.Model``.

Every family module in this package (``unet.py``, ``bcdu_net.py``, ...) decorates its public builders with
``@register("snake_case_name")``. The registry imports all family modules on first use, so adding a family
is adding a module; nothing here needs editing.

A builder has the signature ``builder(input_shape, **options) -> keras.Model`` where ``input_shape`` is
``(height, width, channels)`` (channels last).

The binary families (BCDU-Net family, ``nerve_unet``, the fingernail ``unet2d_*``) also take
``num_classes=K``: None, 1 or 2 keep the original's 1-channel sigmoid output; K > 2 gives a K-channel softmax
output of the same layer name (``common.layers.segmentation_output``). Example:
``build_model("bcdu_net_d3", (256, 256, 3), num_classes=4)``.

Under a mixed precision policy (``--mixed-precision``) the layers that read the image, up to and including the
first layer with weights on each path (the first convolution), compute in float32
(:func:`common.devices.keep_input_layers_float32`). bfloat16 keeps 8 significant bits, so an image in [0, 1]
cast to it loses about one of its 8 bits of grey level above 0.5. On DRIVE that rounding made 60 % of
bfloat16's probability difference from float32, the float32 first convolution cut the difference 3x, and
training so met float32's AUC and F1 (bench/precision_fidelity.py, retina_vessel/README.md). The first convolution
has 1-3 input channels: a small share of any model's arithmetic.
"""

import importlib
import pkgutil

_REGISTRY = {}
_LOADED = False


def register(name):
    """Class/function decorator adding a builder to the registry under ``name``."""

    def decorator(builder):
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorator


def _load_families():
    global _LOADED
    if _LOADED:
        return
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    _LOADED = True


def available_models():
    """Sorted list of registered model names."""
    _load_families()
    return sorted(_REGISTRY)


def get_builder(name):
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def build_model(name, input_shape, **options):
    """Build the registered model ``name`` for ``input_shape`` (H, W, C).

    Example: ``build_model("nerve_unet", (96, 96, 1))``.

    Built under the global dtype policy; under a mixed one (compute dtype other than float32) the layers that
    read the image compute in float32 (:func:`common.devices.keep_input_layers_float32`).
    """
    import keras

    from common.devices import keep_input_layers_float32

    model = get_builder(name)(tuple(input_shape), **options)
    if keras.mixed_precision.dtype_policy().compute_dtype != "float32":
        keep_input_layers_float32(model)
    return model
