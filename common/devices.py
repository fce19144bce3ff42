"""Devices and numerics: what the backend sees, mixed precision and XLA.

Command line (what TensorFlow, or the Keras backend in ``KERAS_BACKEND``, sees on this machine)::

    python -m common.devices                 # GPUs, their memory, CUDA/cuDNN build, mixed-precision support
    python -m common.devices --require-gpu   # same, and exit 1 with one line when no GPU is visible

Script options (train, evaluate and predict scripts)::

    add_precision_arguments(parser)                     # --mixed-precision {off,float16,bfloat16} --jit-compile
    add_precision_arguments(parser, jit_compile=False)  # --mixed-precision only (evaluate / predict)
    set_precision(args.mixed_precision)                 # BEFORE building or loading the model
    model.compile(..., jit_compile=args.jit_compile)

``--mixed-precision float16`` is Keras's ``mixed_float16`` policy (float16 compute, float32 variables; Keras
wraps the optimizer in a ``LossScaleOptimizer`` when the model is compiled), ``bfloat16`` is
``mixed_bfloat16`` (no loss scaling needed). The models' output layers (sigmoid / softmax / log_softmax /
logits) compute in float32 under either policy and the losses cast to float32, so losses and scores are
float32. Speed-ups need a GPU with tensor cores: compute capability >= 7.0 for float16 (V100, T4, A100,
H100, ...), >= 8.0 for bfloat16 (A100, H100, ...); on a CPU both are slower than float32.

No TensorFlow import at module level: the module also serves the JAX and PyTorch backends
(``bench/gpu.py``).
"""

import argparse
import os
import sys

PRECISIONS = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}

#: Minimum CUDA compute capability at which each mixed-precision mode runs on tensor cores.
MIN_COMPUTE_CAPABILITY = {"float16": (7, 0), "bfloat16": (8, 0)}

#: Models whose layers XLA (``--jit-compile``) cannot compile on the TensorFlow backend: name -> reason.
#: Empty: every registered model compiles (tests/test_xla.py checks one model of every family on the CPU).
XLA_UNSUPPORTED = {}


def add_precision_arguments(parser, jit_compile=True):
    """Add ``--mixed-precision {off,float16,bfloat16}`` (default off) and, if ``jit_compile``, ``--jit-compile``."""
    parser.add_argument("--mixed-precision", choices=tuple(PRECISIONS), default="off",
                        help="Keras mixed-precision policy: off (float32, the original's), float16 "
                             "(mixed_float16, loss-scaled; GPUs of compute capability >= 7.0) or bfloat16 "
                             "(mixed_bfloat16; >= 8.0). Outputs and losses stay float32. Default: %(default)s")
    if jit_compile:
        parser.add_argument("--jit-compile", action="store_true",
                            help="compile the training step with XLA (model.compile(jit_compile=True)); "
                                 "default off, as the originals")
    return parser


def policy_name(name):
    """Keras dtype-policy name of a ``--mixed-precision`` value (``off`` -> ``float32``); a policy name is
    returned as is."""
    from common.errors import OptionError

    if name in PRECISIONS.values():
        return name
    if name not in PRECISIONS:
        raise OptionError(f"--mixed-precision: unknown value {name!r}; choose one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def set_precision(name="off"):
    """Set Keras's global dtype policy for ``--mixed-precision name`` (``off``, ``float16``, ``bfloat16``).

    Call it before building or loading a model: layers take the policy that is global when they are
    created (a ``.keras`` file keeps each layer's own policy). Returns the policy name.
    """
    import keras

    policy = policy_name(name)
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def saved_policy(path):
    """The dtype policy a ``.keras`` file was trained under: the policy most of its layers carry.

    Keras restores each layer's own policy on loading, but not the model's: a model saved under
    ``mixed_float16`` and loaded under the float32 global policy is recompiled without the
    ``LossScaleOptimizer`` and its optimizer state is skipped (Keras warns "Skipping variable loading for
    optimizer"). Hence: ``set_precision`` to the value this returns before ``load_model`` of a checkpoint
    to train on (:func:`check_saved_precision`).
    """
    import collections
    import json
    import zipfile

    counts = collections.Counter()

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and "name" in node.get("config", {}):
                counts[node["config"]["name"]] += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    with zipfile.ZipFile(path) as archive:
        walk(json.loads(archive.read("config.json")))
    return counts.most_common(1)[0][0] if counts else "float32"


def apply_precision(model, name):
    """``model`` (a functional ``keras.Model``) with its layers computing under ``--mixed-precision name``.

    A loaded ``.keras`` model keeps the policy each layer was saved with, whatever the global policy, so
    ``set_precision`` before ``load_model`` does not change how a checkpoint computes. This rebuilds the
    model from its config with every layer under the policy except the output layers, which stay float32,
    and copies the weights. Returns ``model`` itself when nothing changes.
    """
    import keras

    policy = policy_name(name)
    outputs = {t._keras_history.operation.name for t in keras.tree.flatten(model.outputs)}
    wanted = {layer.name: "float32" if layer.name in outputs else policy for layer in model.layers
              if not isinstance(layer, keras.layers.InputLayer)}
    if all(model.get_layer(n).dtype_policy.name == p for n, p in wanted.items()):
        return model
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] in wanted:
            layer["config"]["dtype"] = wanted[layer["config"]["name"]]
    rebuilt = model.__class__.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def check_saved_precision(path, name):
    """Raise ``OptionError`` (one line) when the checkpoint ``path`` was trained under another policy than
    ``--mixed-precision name``: resuming it so would lose its optimizer state (see :func:`saved_policy`)."""
    from common.errors import OptionError

    saved, wanted = saved_policy(path), policy_name(name)
    if saved != wanted:
        option = {v: k for k, v in PRECISIONS.items()}.get(saved, saved)
        raise OptionError(f"--mixed-precision: {path} was trained under {saved}; resume it with "
                         f"--mixed-precision {option} (or start a new run)")


def check_jit_compile(model_name, jit_compile):
    """Raise ``OptionError`` (one line) when ``jit_compile`` is asked for a model XLA cannot compile."""
    from common.errors import OptionError

    if jit_compile and model_name in XLA_UNSUPPORTED:
        raise OptionError(f"--jit-compile: XLA cannot compile {model_name}: {XLA_UNSUPPORTED[model_name]}; "
                         "run without --jit-compile")


def mixed_precision_support(compute_capability):
    """The ``--mixed-precision`` modes that run on tensor cores for a CUDA ``(major, minor)`` capability."""
    if compute_capability is None:
        return []
    cc = tuple(int(v) for v in compute_capability)
    return [mode for mode, minimum in MIN_COMPUTE_CAPABILITY.items() if cc >= minimum]


def _tensorflow_gpus():
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    info = {"backend": "tensorflow", "version": tf.__version__,
            "built_with_cuda": bool(build.get("is_cuda_build")),
            "cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"), "gpus": []}
    gpus = tf.config.list_physical_devices("GPU")
    limits = {}
    if gpus:
        try:  # memory TensorFlow can allocate per GPU (initialises the devices)
            from tensorflow.python.client import device_lib

            for d in device_lib.list_local_devices():
                if d.device_type == "GPU":
                    limits[int(d.name.rsplit(":", 1)[-1])] = int(d.memory_limit)
        except Exception:  # private API: memory is then reported as unknown
            limits = {}
    for index, gpu in enumerate(gpus):
        details = tf.config.experimental.get_device_details(gpu)
        info["gpus"].append({"name": details.get("device_name", gpu.name),
                             "compute_capability": details.get("compute_capability"),
                             "memory_bytes": limits.get(index)})
    return info


def _jax_gpus():
    import jax

    info = {"backend": "jax", "version": jax.__version__, "gpus": []}
    try:
        devices = jax.devices("gpu")
    except RuntimeError:  # no GPU platform
        devices = []
    for d in devices:
        stats = d.memory_stats() or {}
        cc = getattr(d, "compute_capability", None)
        info["gpus"].append({"name": d.device_kind,
                             "compute_capability": tuple(int(v) for v in str(cc).split(".")) if cc else None,
                             "memory_bytes": stats.get("bytes_limit")})
    return info


def _torch_gpus():
    import torch

    info = {"backend": "torch", "version": torch.__version__, "built_with_cuda": torch.version.cuda is not None,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "gpus": []}
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        info["gpus"].append({"name": p.name, "compute_capability": (p.major, p.minor),
                             "memory_bytes": int(p.total_memory)})
    return info


def backend_name():
    """The Keras backend that will be used (``KERAS_BACKEND``, default tensorflow), without importing Keras."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def device_info(backend=None):
    """What the backend sees: ``{"backend", "version", "gpus": [{"name", "compute_capability",
    "memory_bytes"}], ...}`` plus, for TensorFlow and torch, the CUDA/cuDNN versions they were built with."""
    backend = backend or backend_name()
    probes = {"tensorflow": _tensorflow_gpus, "jax": _jax_gpus, "torch": _torch_gpus}
    if backend not in probes:
        raise ValueError(f"KERAS_BACKEND={backend!r}: this project runs on tensorflow, jax or torch")
    return probes[backend]()


def format_info(info):
    """The report printed by ``python -m common.devices`` (a list of lines)."""
    lines = [f"backend: {info['backend']} {info['version']}"]
    if "cuda" in info:
        built = "CUDA build" if info.get("built_with_cuda") else "CPU-only build"
        lines.append(f"built with: CUDA {info['cuda'] or '-'}, cuDNN {info['cudnn'] or '-'} ({built})")
    if not info["gpus"]:
        lines.append("GPUs: none visible (training runs on the CPU)")
    for i, gpu in enumerate(info["gpus"]):
        cc = gpu["compute_capability"]
        memory = f"{gpu['memory_bytes'] / 2 ** 30:.1f} GiB" if gpu["memory_bytes"] else "memory unknown"
        modes = mixed_precision_support(cc)
        lines.append(f"GPU {i}: {gpu['name']}, {memory}, compute capability "
                     f"{'.'.join(map(str, cc)) if cc else 'unknown'}; --mixed-precision on tensor cores: "
                     f"{', '.join(modes) if modes else 'none (float32 only)'}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        lines.append(f"CUDA_VISIBLE_DEVICES={visible}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m common.devices", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m common.devices\n  python -m common.devices --require-gpu\n"
               "  CUDA_VISIBLE_DEVICES=0,1 python -m common.devices")
    parser.add_argument("--require-gpu", action="store_true",
                        help="exit with status 1 and one line of explanation when no GPU is visible")
    args = parser.parse_args(argv)
    info = device_info()
    print("\n".join(format_info(info)))
    if args.require_gpu and not info["gpus"]:
        why = ""
        if info.get("built_with_cuda") is False:
            why = f" ({info['backend']} {info['version']} is a CPU-only build: pip install -r requirements-gpu.txt)"
        elif os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            why = f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} hides the others)"
        else:
            why = " (check the NVIDIA driver with nvidia-smi, and pip install -r requirements-gpu.txt)"
        print(f"error: --require-gpu: {info['backend']} sees no GPU{why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
