"""The tests' way to run a script's ``main`` as its command line does (``common.cli.run``)."""

import contextlib
import io

import pytest

from common import cli


def error_lines(main, argv):
    """Run ``cli.run(main, argv)``, which must end with exit status 2 and a user error on stderr (no
    traceback); returns the stderr lines."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    lines = err.getvalue().strip().splitlines()
    assert exit_info.value.code == 2
    assert lines and not any("Traceback" in line for line in lines)
    return lines


def error_line(main, argv):
    """The last stderr line of :func:`error_lines` (the one-line ``error: ...``)."""
    return error_lines(main, argv)[-1]


#: Python source for ``python -c``: TensorFlow, Keras, JAX and PyTorch made unimportable (any import of them
#: raises ImportError) and the repository root importable; a test appends what the subprocess then runs.
BLOCK_FRAMEWORKS = """
import importlib.abc, json, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'jax', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, '.')
"""

#: :data:`BLOCK_FRAMEWORKS`, then the script named by the first argument run as ``__main__`` with the rest.
RUN_SCRIPT_BLOCKED = BLOCK_FRAMEWORKS + """
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def export_in_child(argv):
    """``python -m common.export *argv`` in a process of its own (as a user runs it), asserting exit status 0.

    tf2onnx's conversion peaks at several GB (about 8 GB for a ConvLSTM network) and the process keeps it; in the
    pytest process a dozen exports took the suite past the machine's 24 GB.
    """
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "common.export", *map(str, argv)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
