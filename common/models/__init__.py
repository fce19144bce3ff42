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
    """
    return get_builder(name)(tuple(input_shape), **options)
