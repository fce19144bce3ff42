"""Devices and numerics: what the backend sees, mixed precision and XLA.

Command line (what TensorFlow, or the Keras backend in ``KERAS_BACKEND``, sees on this machine)::

    python -m common.devices                 # GPUs, their memory, CUDA/cuDNN build, mixed-precision support;
                                             # the CPU's bfloat16 / float16 flags, oneDNN, and the
                                             # --mixed-precision value recommended for this machine
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
float32; so does the layer that reads the image (:func:`keep_input_layers_float32`, applied by
``common.models.build_model`` and :func:`apply_precision`), which sees the image at full precision.
Speed-ups need a GPU with tensor cores (compute capability >= 7.0 for float16: V100, T4, A100, H100, ...;
>= 8.0 for bfloat16: A100, H100, ...) or, for bfloat16, a CPU with native bfloat16 arithmetic
(x86 flags ``avx512_bf16`` or ``amx_bf16``: AMD Zen 4 and later, Intel Cooper Lake / Sapphire Rapids and
later) and TensorFlow's oneDNN on (the default of the Linux x86 wheels). Without them mixed precision is
emulated and is usually slower than float32 (:func:`recommend_precision`).

No TensorFlow import at module level: the module also serves the JAX and PyTorch backends
(``bench/gpu.py``).
"""

import argparse
import functools
import os
import sys

PRECISIONS = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}

#: Minimum CUDA compute capability at which each mixed-precision mode runs on tensor cores.
MIN_COMPUTE_CAPABILITY = {"float16": (7, 0), "bfloat16": (8, 0)}

#: Models whose layers XLA (``--jit-compile``) cannot compile on the TensorFlow backend: name -> reason.
#: Empty: every registered model compiles (tests/test_xla.py checks one model of every family on the CPU).
XLA_UNSUPPORTED = {}


#: The ``--mixed-precision`` default of the scripts run in this process: ``off`` (the originals' float32).
#: Only ``demo.py --mixed-precision`` changes it, in the process of each task's demo
#: (:func:`set_default_precision`); a script run from the command line always starts from ``off``.
_DEFAULT_PRECISION = "off"


def set_default_precision(name):
    """Make ``name`` (``off``, ``float16``, ``bfloat16``) the ``--mixed-precision`` default of the scripts run
    in this process from now on (``demo.py --mixed-precision``). Returns the previous default."""
    global _DEFAULT_PRECISION

    policy_name(name)  # an unknown value is a one-line OptionError
    previous, _DEFAULT_PRECISION = _DEFAULT_PRECISION, name
    return previous


def add_precision_arguments(parser, jit_compile=True):
    """Add ``--mixed-precision {off,float16,bfloat16}`` (default off) and, if ``jit_compile``, ``--jit-compile``."""
    parser.add_argument("--mixed-precision", choices=tuple(PRECISIONS), default=_DEFAULT_PRECISION,
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
    model from its config with every layer under the policy except the output layers, which stay float32, and
    (under a mixed policy) the layers that read the image (:func:`input_layers`, as ``build_model`` builds
    them), and copies the weights. Returns ``model`` itself when nothing changes.
    """
    import keras

    policy = policy_name(name)
    float32 = {t._keras_history.operation.name for t in keras.tree.flatten(model.outputs)}  # the outputs
    if policy != "float32":
        float32 |= {layer.name for layer in input_layers(model)}
    wanted = {layer.name: "float32" if layer.name in float32 else policy for layer in model.layers
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


def input_layers(model):
    """The layers of a functional ``model`` that read its inputs, up to and including the first layer with
    weights on each path from an input: weightless one-input layers on the way (padding, reshape) are included
    and followed, merge layers (a concatenation of the image with features) are not; a nested functional model
    is searched inside. Returns the layers in the order found."""
    import keras

    found, seen = [], set()

    def consumers(tensor, owner):
        for layer in owner.layers:
            for node in layer._inbound_nodes:
                if any(t is tensor for t in node.input_tensors):
                    yield layer, node

    def walk(owner, tensors):
        while tensors:
            tensor = tensors.pop()
            for layer, node in consumers(tensor, owner):
                if id(layer) in seen:
                    continue
                seen.add(id(layer))
                if isinstance(layer, keras.Model) and hasattr(layer, "inputs"):
                    walk(layer, list(layer.inputs))
                    continue
                if layer.weights:
                    found.append(layer)
                elif len(node.input_tensors) == 1:  # padding, reshape, ...: on to the next layer
                    found.append(layer)
                    tensors.extend(node.output_tensors)

    walk(model, list(model.inputs))
    return found


def keep_input_layers_float32(model):
    """Set the float32 dtype policy on :func:`input_layers` of ``model`` (in place; returns their names).

    Their outputs are float32 and the next layer casts them to its own compute dtype, so only these layers'
    arithmetic and their view of the image change; a saved ``.keras`` file keeps the per-layer policies."""
    layers = input_layers(model)
    for layer in layers:
        layer.dtype_policy = "float32"
    return [layer.name for layer in layers]


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


#: x86 CPU flags (Linux ``/proc/cpuinfo`` names) of native arithmetic in each reduced precision.
CPU_PRECISION_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}

#: Where ``bench/train_step.py --mixed-precision bfloat16`` writes its float32 / bfloat16 table (JSON).
PRECISION_RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "bench", "results", "train_step_precision.json")

#: The speed-ups measured on this project's machine (reported in issue 24, December 2026): 2-core AMD EPYC
#: with ``avx512_bf16``, ``mixed_bfloat16`` against float32, same model and batch, ``fit`` on random data.
PROJECT_CPU_MEASUREMENT = ("this project's 2-core AMD EPYC with avx512_bf16 (issue 24, December 2026) "
                           "measured 1.86x on nerve_unet 96x96 batch 32 and 1.99x on bcdu_net_d3 64x64 batch 8")


def read_cpuinfo(path="/proc/cpuinfo"):
    """The text of ``/proc/cpuinfo`` on Linux; ``None`` on other systems or when it cannot be read."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cpu_flags(cpuinfo):
    """The set of flags of the first processor in ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``);
    ``None`` when ``cpuinfo`` is ``None`` or has no such line (flags unknown)."""
    if cpuinfo is None:
        return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def cpu_model(cpuinfo):
    """The ``model name`` of the first processor in ``/proc/cpuinfo`` text, or ``None``."""
    for line in (cpuinfo or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return None


def cpu_precision_support(flags):
    """``{"bfloat16": [flags present], "float16": [flags present]}`` for a set of CPU flags (``None``: unknown,
    every list ``None``)."""
    return {mode: None if flags is None else [f for f in names if f in flags]
            for mode, names in CPU_PRECISION_FLAGS.items()}


def onednn_state(backend=None):
    """oneDNN (formerly MKL-DNN) for the CPU kernels: ``{"env": TF_ENABLE_ONEDNN_OPTS or None, "enabled":
    True/False/None (unknown)}``. TensorFlow: whether this build uses it now (built with it and not switched
    off by ``TF_ENABLE_ONEDNN_OPTS=0``); torch: ``torch.backends.mkldnn.is_available()``; JAX: unknown."""
    backend = backend or backend_name()
    enabled = None
    try:
        if backend == "tensorflow":
            from tensorflow.python.util import _pywrap_util_port  # private: None when it moves

            enabled = bool(_pywrap_util_port.IsMklEnabled())
        elif backend == "torch":
            import torch

            enabled = bool(torch.backends.mkldnn.is_available())
    except Exception:
        enabled = None
    return {"env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "enabled": enabled}


def measured_speedups(path=PRECISION_RESULTS, model=None):
    """``{case: bfloat16 img/s / float32 img/s}`` from the table ``bench/train_step.py --mixed-precision
    bfloat16`` wrote at ``path``, when it was measured on a CPU of this ``model`` name; else ``{}``."""
    import json

    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError):
        return {}
    if results.get("precision") != "bfloat16" or (model is not None and results.get("cpu") != model):
        return {}
    return {row["case"]: row["ratio"] for row in results.get("rows", []) if row.get("ratio")}


def recommend_precision(flags, onednn_enabled, gpus=(), measured=None, system=None):
    """``(value, reason)``: the ``--mixed-precision`` value recommended for this machine, and why, in words.

    A visible GPU decides by its compute capability (:func:`mixed_precision_support`). On a CPU: bfloat16
    when a native bfloat16 flag (``avx512_bf16``, ``amx_bf16``) is present and oneDNN is not off, else off.
    ``measured`` (``{case: speed-up}``) is quoted when given (from :func:`measured_speedups`: a bench run on
    this CPU model); otherwise the reason says it was not measured on this machine.
    """
    if gpus:
        modes = mixed_precision_support(gpus[0].get("compute_capability"))
        if "bfloat16" in modes:
            return "bfloat16", f"GPU 0 ({gpus[0]['name']}) runs bfloat16 on tensor cores (no loss scaling needed)"
        if "float16" in modes:
            return "float16", f"GPU 0 ({gpus[0]['name']}) runs float16 on tensor cores (loss-scaled)"
        return "off", f"GPU 0 ({gpus[0]['name']}) has no tensor cores for float16 or bfloat16"
    if flags is None:
        where = f" on {system}" if system else ""
        return "off", (f"the CPU's flags are unknown{where} (read from /proc/cpuinfo on Linux only); "
                       "try: python bench/train_step.py --mixed-precision bfloat16 --models nerve_unet")
    present = cpu_precision_support(flags)["bfloat16"]
    if not present:
        return "off", ("no native bfloat16 on this CPU (no avx512_bf16 or amx_bf16 flag): bfloat16 would be "
                       "emulated, which is usually slower than float32")
    if onednn_enabled is False:
        return "off", (f"{' and '.join(present)} present, but TensorFlow's oneDNN is off "
                       "(TF_ENABLE_ONEDNN_OPTS=0 or a build without it): unset TF_ENABLE_ONEDNN_OPTS for bfloat16")
    if measured:
        if len(measured) > 3:  # many models: the range, the median and the slowest, not a list of fifteen
            import statistics

            ratios = sorted(measured.values())
            slowest = min(measured, key=measured.get)
            speed = (f"{ratios[0]:.2f}x-{ratios[-1]:.2f}x over {len(ratios)} models (median "
                     f"{statistics.median(ratios):.2f}x; least on {slowest})")
            if "nerve_unet" in measured:
                speed += f", {measured['nerve_unet']:.2f}x on nerve_unet"
        else:
            speed = ", ".join(f"{ratio:.2f}x on {case}" for case, ratio in measured.items())
        how = f"measured on this machine: {speed} (bench/train_step.py --mixed-precision bfloat16)"
    else:
        how = (f"not measured on this machine (no {os.path.relpath(PRECISION_RESULTS)} for this CPU); "
               f"{PROJECT_CPU_MEASUREMENT}")
    return "bfloat16", f"{' and '.join(present)} present (native bfloat16), oneDNN on; {how}"


def cpu_info(backend=None, cpuinfo=None):
    """The CPU's numerics: ``{"system", "model", "flags", "precision": cpu_precision_support(flags),
    "onednn": onednn_state()}``; ``cpuinfo`` (the ``/proc/cpuinfo`` text) is read when not given."""
    import platform

    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    flags = cpu_flags(text)
    return {"system": platform.system() or sys.platform, "model": cpu_model(text) or platform.processor() or None,
            "flags": flags, "precision": cpu_precision_support(flags), "onednn": onednn_state(backend)}


def format_cpu(cpu, gpus=(), measured=None):
    """The CPU lines printed by ``python -m common.devices`` and the recommendation (a list of lines)."""
    lines = [f"CPU: {cpu['model'] or 'model unknown'} ({os.cpu_count()} logical cores, {cpu['system']})"]
    if cpu["flags"] is None:
        lines.append(f"CPU native bfloat16 / float16: unknown (flags are read from /proc/cpuinfo on Linux; "
                     f"this is {cpu['system']})")
    else:
        for mode, names in CPU_PRECISION_FLAGS.items():
            present = cpu["precision"][mode]
            lines.append(f"CPU native {mode}: {'yes (' + ', '.join(present) + ')' if present else 'no'} "
                         f"(flags looked for: {', '.join(names)})")
    onednn = cpu["onednn"]
    state = {True: "on", False: "off", None: "unknown"}[onednn["enabled"]]
    env = onednn["env"]
    lines.append(f"oneDNN: {state} (TF_ENABLE_ONEDNN_OPTS={env if env is not None else 'unset, the default'})")
    value, reason = recommend_precision(cpu["flags"], onednn["enabled"], gpus=gpus, measured=measured,
                                        system=cpu["system"])
    lines.append(f"recommended: --mixed-precision {value}: {reason}")
    return lines


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


@functools.lru_cache(maxsize=None)
def gpu_present(backend=None):
    """Whether the Keras backend (``KERAS_BACKEND``) sees a GPU (:func:`device_info`, asked once per process):
    decides ``SpatialRNN2D(scan_dtype='auto')``."""
    return bool(device_info(backend)["gpus"])


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
    cpu = cpu_info(info["backend"])
    print("\n".join(format_info(info) + format_cpu(cpu, gpus=info["gpus"],
                                                    measured=measured_speedups(model=cpu["model"]))))
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
