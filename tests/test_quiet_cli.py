"""A quiet, quick command line: ``--help`` without TensorFlow, and TensorFlow's C++ start-up log filtered
(common/quiet.py) while its real warnings and errors still show."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.quiet import StartupFilter

REPO = Path(__file__).resolve().parents[1]
TASKS = ("fingernail", "lung", "retina_vessel", "retinal_edema", "robotic_scene", "skin_lesion", "ultrasound_nerve")

# The start-up lines TensorFlow 2.21 wrote on this project's 2-core CPU-only machine (copied from a terminal)
NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
ONEDNN = ("I0000 00:00:1796530461.646020    9987 port.cc:153] oneDNN custom operations are on. You may see "
          "slightly different numerical results due to floating-point round-off errors from different computation "
          "orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.")
NO_DRIVER = ("I0000 00:00:1796530461.646367    9987 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
             "GPU will not be used.")
CUINIT = ("E0000 00:00:1796530471.001046    9987 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
          "Failed call to cuInit: UNKNOWN ERROR (303)")
STARTUP_MARKERS = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers",
                   "failed call to cuInit", "cpu_feature_guard")
# A real warning and a real error in absl's format (not start-up chatter: they must stay)
WARNING = "W0000 00:00:1796531131.449101     682 local_rendezvous.cc:412] Local rendezvous is aborting"
ERROR = "E0000 00:00:1796531131.449101     682 some_kernel.cc:99] a real error"
FATAL = "F0000 00:00:1796531131.449101     682 cpu_feature_guard.cc:50] The TensorFlow library was compiled to use AVX"

HEAVY = ("tensorflow", "keras", "sklearn", "scipy", "matplotlib", "pandas", "torch", "jax")

# Runs the scripts given as arguments with --help in this one process, with the heavy libraries' import made
# to fail; prints {script: [exit code, stdout]} as JSON.
_HELP_RUNNER = textwrap.dedent("""
    import contextlib, io, json, runpy, sys

    HEAVY = set(sys.argv[1].split(","))

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ImportError(f"{name} imported for --help")

    sys.meta_path.insert(0, Block())
    results = {}
    for script in sys.argv[2:]:
        out = io.StringIO()
        sys.argv[:] = [script, "--help"]
        code = None
        try:
            with contextlib.redirect_stdout(out):
                if script.startswith("-m "):
                    runpy.run_module(script[3:], run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(script, run_name="__main__")
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code = f"{type(exc).__name__}: {exc}"
        results[script] = [code, out.getvalue()]
    print(json.dumps(results))
""")


def _env(**extra):
    """The environment of a subprocess: this one's, without the test suite's own TF_CPP_MIN_LOG_LEVEL."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(extra)
    return env


def _help(scripts):
    proc = subprocess.run([sys.executable, "-c", _HELP_RUNNER, ",".join(HEAVY), *scripts], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


@pytest.mark.parametrize("script", ["skin_lesion/train_isic18.py", "lung/train_lung.py",
                                    "ultrasound_nerve/submission.py"])
def test_help_answers_without_tensorflow_and_quietly(script):
    """The issue's three: ``--help`` in a fresh process, TensorFlow / Keras / scikit-learn / SciPy / Matplotlib
    never imported (their import fails there), usage printed, nothing on stderr."""
    results, stderr = _help([script])
    code, out = results[script]
    assert code == 0, code
    assert out.startswith("usage:") and "--help" in out
    assert stderr == ""


def test_every_script_help_answers_without_heavy_imports():
    """Every script of the task folders (the predict.py scripts aside: rewritten separately), demo.py, the bench
    scripts and the ``python -m common.*`` entry points."""
    scripts = sorted(str(p.relative_to(REPO)) for task in TASKS for p in (REPO / task).glob("*.py")
                     if p.name not in ("__init__.py", "predict.py") and "__main__" in p.read_text())
    scripts += ["demo.py", "compare_models.py"] + sorted(str(p.relative_to(REPO)) for p in (REPO / "bench").glob("*.py")
                                                         if "__main__" in p.read_text())
    scripts += [f"-m common.{p.stem}" for p in (REPO / "common").glob("*.py") if "__main__" in p.read_text()]
    assert len(scripts) > 40 and "-m common.devices" in scripts
    results, stderr = _help(scripts)
    failed = {s: code for s, (code, out) in results.items() if code != 0 or not out.startswith("usage:")}
    assert not failed
    assert not any(marker in stderr for marker in STARTUP_MARKERS)


def test_filter_drops_only_the_startup_lines():
    """Level 1 (the default): absl's notice, informational lines and the cuInit failure after "Could not find
    cuda drivers" are dropped; warnings, errors, fatal lines and ordinary text are kept."""
    lines = StartupFilter(1)
    kept = [line for line in [NOTICE, ONEDNN, NO_DRIVER, NOTICE, ONEDNN, NO_DRIVER, WARNING, CUINIT, ERROR,
                              FATAL, "UserWarning: something Python-side", ""] if lines.keep(line + "\n")]
    assert kept == [WARNING, ERROR, FATAL, "UserWarning: something Python-side", ""]


def test_filter_keeps_cuinit_failure_when_a_driver_was_found():
    """A failing cuInit on a machine whose driver was found is a real error."""
    lines = StartupFilter(1)
    assert [line for line in [NOTICE, ONEDNN, CUINIT] if lines.keep(line)] == [CUINIT]


@pytest.mark.parametrize("level, expected", [(0, [NOTICE, ONEDNN, NO_DRIVER, WARNING, CUINIT, ERROR, FATAL]),
                                             (2, [ERROR, FATAL]), (3, [FATAL])])
def test_filter_follows_tf_cpp_min_log_level(level, expected):
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow applies it (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL; fatal lines always
    shown); 0 filters nothing."""
    lines = StartupFilter(level)
    assert [line for line in [NOTICE, ONEDNN, NO_DRIVER, WARNING, CUINIT, ERROR, FATAL] if lines.keep(line)] == expected


def _fake_tensorflow(root, crash=False):
    """A stand-in ``tensorflow`` package that writes the start-up lines to file descriptor 2 as the C++ code
    does (os.write, below Python's sys.stderr), a real warning, a Python warning, and the cuInit failure
    when its devices are listed; with ``crash``, a fatal line and an abort."""
    package = Path(root) / "tensorflow"
    package.mkdir()
    lines = [NOTICE, ONEDNN, NO_DRIVER, WARNING, NOTICE, ONEDNN, NO_DRIVER]
    (package / "__init__.py").write_text(textwrap.dedent(f"""
        import os, warnings
        for line in {lines!r}:
            os.write(2, (line + "\\n").encode())
        warnings.warn("a Python warning during the import")
        if {crash!r}:
            os.write(2, ({FATAL!r} + "\\n").encode())
            os.abort()

        class config:
            @staticmethod
            def list_physical_devices(kind=None):
                os.write(2, ({CUINIT!r} + "\\n").encode())
                return []
    """))


def _import_fake(tmp_path, **env):
    code = "import common, sys; import tensorflow; print('after', file=sys.stderr); print('imported')"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=_env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]), **env))


def test_first_tensorflow_import_goes_through_the_filter(tmp_path):
    """The process's file descriptor 2 is filtered during ``import tensorflow`` (after ``import common``):
    start-up lines gone, the real warning and the Python warning kept, in order; stdout untouched."""
    _fake_tensorflow(tmp_path)
    proc = _import_fake(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "imported\n"
    lines = proc.stderr.splitlines()
    assert not any(marker in proc.stderr for marker in STARTUP_MARKERS)
    assert lines[0] == WARNING
    assert "a Python warning during the import" in proc.stderr
    assert lines[-1] == "after"


def test_tf_cpp_min_log_level_0_brings_the_startup_log_back(tmp_path):
    _fake_tensorflow(tmp_path)
    proc = _import_fake(tmp_path, TF_CPP_MIN_LOG_LEVEL="0")
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if re.match(r"[IWEF]0000 |WARNING: All", line)] == \
        [NOTICE, ONEDNN, NO_DRIVER, WARNING, NOTICE, ONEDNN, NO_DRIVER, CUINIT]


def test_a_crash_inside_the_import_loses_no_output(tmp_path):
    """The filter is a separate process: a fatal message written just before an abort still arrives."""
    _fake_tensorflow(tmp_path, crash=True)
    proc = _import_fake(tmp_path)
    assert proc.returncode != 0
    assert FATAL in proc.stderr.splitlines() and WARNING in proc.stderr.splitlines()
    assert ONEDNN not in proc.stderr


def test_real_tensorflow_run_is_quiet_but_keeps_real_warnings():
    """Real TensorFlow, a tiny normal run (a Keras model trained one step, then a NaN check that makes
    TensorFlow's C++ runtime log a warning): none of the start-up lines, the warning kept."""
    code = textwrap.dedent("""
        import common
        import numpy as np
        import keras
        import tensorflow as tf
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(np.zeros((8, 4)), np.zeros((8, 1)), epochs=1, verbose=0)

        @tf.function
        def check(x):
            return tf.debugging.check_numerics(x, "nan found")

        try:
            check(tf.constant([float("nan")]))
        except tf.errors.InvalidArgumentError:
            print("caught")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "caught\n"
    assert not any(marker in proc.stderr for marker in STARTUP_MARKERS), proc.stderr
    assert re.search(r"(?m)^W\d{4} .*Tensor had NaN values", proc.stderr), proc.stderr
