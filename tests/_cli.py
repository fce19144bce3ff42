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
