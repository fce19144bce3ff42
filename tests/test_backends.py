"""The networks on Keras's other backends: no TensorFlow needed, and the same outputs under JAX.

* no module that ``bench/gpu.py`` and the networks need imports TensorFlow at module level (read from the
  source, always runs);
* every family (tests/_families.py) built under ``KERAS_BACKEND=jax`` with TensorFlow's weights, in a
  process where TensorFlow cannot be imported (``sys.modules['tensorflow'] = None``), gives TensorFlow's
  outputs within 1e-4 (skipped when JAX is not installed: ``pip install jax``; Keras's NumPy backend would
  need JAX too);
* ``bench/gpu.py``'s CPU self-check passes under JAX (same condition).
"""

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import _families as F

ROOT = Path(__file__).resolve().parents[1]
HAS_JAX = importlib.util.find_spec("jax") is not None
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed (pip install jax)")

def _env(backend):
    return dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2",
                JAX_PLATFORMS="cpu")


# What bench/gpu.py and the networks import (at module level, transitively), and so must not import TensorFlow.
NO_TF_MODULES = ["bench/gpu.py", "bench/train_step.py", "common/cli.py", "common/devices.py", "common/errors.py", "common/flops.py", "common/layers.py",
                 "common/losses.py", "common/multiclass.py", "common/optimizers.py", "common/quiet.py", "common/run_options.py", *sorted(
                     str(p.relative_to(ROOT)) for p in (ROOT / "common" / "models").glob("*.py"))]


def _module_level_imports(path):
    """Names imported by the statements of ``path`` that run on import (not those inside functions)."""
    names, todo = [], list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            todo += [n for h in getattr(node, "handlers", []) for n in h.body]
    return names


def test_no_tensorflow_import_at_module_level():
    project = {m[:-3].replace("/", ".") for m in NO_TF_MODULES} | {"common", "common.models"}  # common: __init__ + quiet
    for module in NO_TF_MODULES:
        for name in _module_level_imports(ROOT / module):
            assert name.split(".")[0] != "tensorflow", f"{module} imports {name} at module level"
            if name.split(".")[0] in ("common", "bench"):  # imports of the project stay inside the list
                assert name in project or name.rsplit(".", 1)[0] in project, f"{module} imports {name}"


JAX_JOB = """
import sys
sys.modules["tensorflow"] = None  # any import of TensorFlow now raises ImportError
sys.path[:0] = [{root!r}, {tests!r}]
import numpy as np
import keras
assert keras.config.backend() == "jax"
import common.devices, common.layers, common.losses, common.models
import bench.gpu
import _families as F
out = {{}}
for family in F.CASES:
    weights = np.load({weights!r}.format(family))
    model = F.build(family)
    model.set_weights([weights[f"arr_{{i}}"] for i in range(len(weights.files))])
    x, _ = F.batch(family)
    for i, p in enumerate(F.probabilities(family, model(x, training=False))):
        out[f"{{family}}_{{i}}"] = p
np.savez({outputs!r}, **out)
"""


@needs_jax
def test_jax_outputs_equal_tensorflow_without_tensorflow_installed(tmp_path):
    """Every family under JAX, with TensorFlow unimportable in that process, gives TensorFlow's outputs.

    Slow on a CPU (minutes): Keras's JAX backend compiles each weight initialiser and each eager op for its
    shape, so building and calling the seven models costs far more than under TensorFlow."""
    import keras

    reference = {}
    for family in F.CASES:
        keras.utils.set_random_seed(0)
        model = F.build(family)
        np.savez(tmp_path / f"{family}.npz", *model.get_weights())
        x, _ = F.batch(family)
        for i, p in enumerate(F.probabilities(family, model(x, training=False))):
            reference[f"{family}_{i}"] = p
    code = JAX_JOB.format(root=str(ROOT), tests=str(ROOT / "tests"), weights=str(tmp_path / "{}.npz"),
                          outputs=str(tmp_path / "jax.npz"))
    proc = subprocess.run([sys.executable, "-c", code], env=_env("jax"), capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jax_out = np.load(tmp_path / "jax.npz")
    assert sorted(jax_out.files) == sorted(reference)
    worst = {key: float(np.abs(jax_out[key] - ref).max()) for key, ref in reference.items()}
    print("largest difference JAX - TensorFlow:", max(worst.values()))
    assert max(worst.values()) < 1e-4, worst


def _self_check(backend, tmp_path):
    out = tmp_path / f"gpu_{backend}.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--out", str(out)],
                          env=_env(backend), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"no GPU was visible to {backend}" in proc.stdout
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| self_check"))
    img_s = [float(v) for v in row.split("|")[5].split("/") if v.strip() != "-"]
    assert img_s and all(v > 0 for v in img_s), row
    return text


def test_gpu_bench_self_check_on_cpu(tmp_path):
    text = _self_check("tensorflow", tmp_path)
    assert "no GPU numbers" in text


@needs_jax
def test_gpu_bench_self_check_under_jax(tmp_path):
    _self_check("jax", tmp_path)


def test_gpu_bench_peak_table():
    sys.path.insert(0, str(ROOT))
    from bench.gpu import ALL_CASES, TRAINING, default_peak
    from common.models import available_models

    assert default_peak("NVIDIA H200") == (989.4, 66.9) and default_peak("NVIDIA H100 PCIe")[0] == 756.0
    assert default_peak("NVIDIA A100-SXM4-80GB") == (312.0, 19.5) and default_peak("Some GPU") == (None, None)
    assert {spec[0] for spec in ALL_CASES.values()} == set(available_models())  # every registered model
    assert set(TRAINING) == set(ALL_CASES)
    json.dumps(TRAINING)
