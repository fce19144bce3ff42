"""TensorFlow's C++ start-up log, filtered: the one place that keeps it out of the scripts' output.

Measured with TensorFlow 2.21 on a CPU-only machine (2 cores, no NVIDIA driver), ``import tensorflow``
writes, whatever ``TF_CPP_MIN_LOG_LEVEL`` says (0, 1, 2 and 3 tried)::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. You may see slightly different numerical ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.

twice (two libraries carry that code: the messages are in ``libtensorflow_framework.so.2`` and in the
profiler plugin ``_pywrap_profiler_plugin.so``; each logs them through absl while it loads, before TensorFlow
has read ``TF_CPP_MIN_LOG_LEVEL``), and the first device listing or operation writes
``E0000 ... cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)`` (an error-level line that
``TF_CPP_MIN_LOG_LEVEL=2`` keeps, as it keeps every real error). Setting ``CUDA_VISIBLE_DEVICES`` to ``""`` or
``-1`` changes none of them; ``TF_ENABLE_ONEDNN_OPTS=0`` removes the oneDNN notice only by switching oneDNN
off, which changes numerics and speed, so it is not used. The lines that come after ``import tensorflow``
(``cpu_feature_guard.cc``'s note, device creation, ...) do honour ``TF_CPP_MIN_LOG_LEVEL``.

So, once ``common`` is imported (every script imports it first), the first ``import tensorflow`` of the
process -- direct or through Keras -- runs with file descriptor 2 going through a filter
(:func:`install`), together with one ``tf.config.list_physical_devices("GPU")`` (the call that tries
``cuInit``; it does not initialise the runtime, so ``tf.config`` settings stay possible afterwards). The filter
applies ``TF_CPP_MIN_LOG_LEVEL`` to the absl-format lines (``I``/``W``/``E``/``F`` + date) that TensorFlow wrote
before honouring it, drops absl's "All log messages before absl::InitializeLog()" notice, and drops the
``cuInit`` failure only when the same start-up said "Could not find cuda drivers" (on a machine whose driver
is found, a failing ``cuInit`` is a real error and is kept). Everything else written during the import
(Python warnings, real warnings and errors, a fatal message before an abort) passes through unchanged; the
filter is a separate small process, so even a crash inside the import loses nothing.

``TF_CPP_MIN_LOG_LEVEL`` defaults to 1 here (TensorFlow's informational lines hidden, its warnings and errors
shown). ``TF_CPP_MIN_LOG_LEVEL=0`` switches the filter off and brings the whole start-up log back;
``python -m common.devices`` says which GPUs TensorFlow sees.
"""

import importlib.abc
import importlib.util
import os
import re
import subprocess
import sys

#: Severities of absl's log line prefix, in TF_CPP_MIN_LOG_LEVEL's order (0 INFO ... 3 FATAL).
SEVERITIES = "IWEF"
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+\s+\S+:\d+\] ")
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_NO_DRIVER = "Could not find cuda drivers"
_CUINIT = "failed call to cuInit"


def min_log_level():
    """``TF_CPP_MIN_LOG_LEVEL`` as an int (0 when unset or not a number, as TensorFlow reads it)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


class StartupFilter:
    """Decides, line by line, what of TensorFlow's start-up output is shown (see the module's docstring)."""

    def __init__(self, level):
        self.level = level
        self.no_driver = False

    def keep(self, line):
        """True when ``line`` (text, with or without its newline) is to be shown."""
        if self.level <= 0:
            return True
        text = line.rstrip("\r\n")
        if text == _ABSL_NOTICE:
            return False
        match = _ABSL_LINE.match(text)
        if not match:
            return True
        if _NO_DRIVER in text:
            self.no_driver = True
        if _CUINIT in text and self.no_driver:
            return False
        severity = SEVERITIES.index(match.group(1))
        return severity == len(SEVERITIES) - 1 or severity >= self.level


def filter_stream(level, source, sink):
    """Copy the lines of binary stream ``source`` to ``sink`` (binary), dropping what :class:`StartupFilter`
    drops; each kept line is flushed at once."""
    lines = StartupFilter(level)
    for raw in iter(source.readline, b""):
        if lines.keep(raw.decode("utf-8", "replace")):
            sink.write(raw)
            sink.flush()


# The filter process: reads the pipe that fd 2 points at during the import, writes to the real stderr.
_FILTER_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); from common.quiet import filter_stream; "
                 "filter_stream(int(sys.argv[2]), sys.stdin.buffer, sys.stdout.buffer)")


class filtered_stderr:  # noqa: N801 (used as a context manager, as contextlib's)
    """Within the block, everything written to file descriptor 2 (C++ and Python alike) goes through
    :func:`filter_stream` at log level ``level`` (default ``TF_CPP_MIN_LOG_LEVEL``); level 0 filters
    nothing."""

    def __init__(self, level=None):
        self.level = min_log_level() if level is None else level
        self.child = None

    def __enter__(self):
        if self.level <= 0:
            return self
        try:
            read_end, write_end = os.pipe()
            saved = os.dup(2)
        except OSError:  # no fd 2 at all (a detached process): nothing to filter
            return self
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        try:
            self.child = subprocess.Popen([sys.executable, "-S", "-c", _FILTER_CHILD, root, str(self.level)],
                                          stdin=read_end, stdout=saved, stderr=saved)
        except OSError:
            os.close(write_end)
            os.close(saved)
            return self
        finally:
            os.close(read_end)
        self._flush()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.saved = saved
        return self

    def __exit__(self, *exc):
        if self.child is None:
            return False
        self._flush()
        os.dup2(self.saved, 2)  # closes the parent's last write end of the pipe: the filter sees its end
        os.close(self.saved)
        try:
            self.child.wait(timeout=10)
        except subprocess.TimeoutExpired:  # something inherited the pipe and keeps it open: stop waiting
            self.child.kill()
        self.child = None
        return False

    @staticmethod
    def _flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run inside :class:`filtered_stderr` and followed by the device listing."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self.loader.exec_module(module)
            try:
                module.config.list_physical_devices("GPU")  # tries cuInit now, inside the filter
            except Exception:  # noqa: BLE001 (a broken GPU setup reports itself again on first use)
                pass

    def __getattr__(self, name):  # get_resource_reader, get_source, is_package, ...
        return getattr(self.loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the top-level ``tensorflow`` package, once."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install():
    """Filter TensorFlow's start-up log in this process (idempotent; nothing to do when TensorFlow is already
    imported). ``TF_CPP_MIN_LOG_LEVEL`` defaults to 1 (informational lines hidden, warnings and errors shown)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietFinder())


def uninstall():
    """Stop filtering (TensorFlow's next first import, if any, logs as it does by itself)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietFinder)]
