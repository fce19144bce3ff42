"""Small helpers shared by the task scripts: repository paths and a uniform error exit."""

import argparse
import contextlib
import re
import sys
from pathlib import Path

from common.errors import OptionError, UserError

REPO_ROOT = Path(__file__).resolve().parents[1]

# Errors a user can fix (bad or missing input, bad options): printed as one line, exit status 2, no traceback.
USER_ERRORS = (UserError, FileNotFoundError)


def repo_path(*parts):
    """A path inside the repository (defaults never depend on the current directory)."""
    return REPO_ROOT.joinpath(*parts)


def error_line(exc):
    """The one line ``error: <file or option>: <what, how to fix>`` of a user error."""
    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        return f"error: {exc.filename}: {exc.strerror or 'not found'}"
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return f"error: {text}"


def _argparse_error(parser, message):
    """argparse's error as one line: ``error: --option: <what> (see <prog> --help)``, exit 2 (argparse's
    own default prints the whole usage first)."""
    match = re.match(r"argument (\S+?)(?:/\S+)?: (.*)", message, re.S)
    text = f"{match.group(1)}: {match.group(2)}" if match else message
    parser.exit(2, f"error: {' '.join(text.split())} (see {parser.prog} --help)\n")


@contextlib.contextmanager
def one_line_argparse_errors():
    """Within the block, every ``argparse`` parser reports a bad option in one line (exit status 2)."""
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _argparse_error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


def run(main, argv=None):
    """Call ``main(argv)``; report user errors (``common.errors.UserError``, a missing file, a bad option)
    in one line (``error: <file or option>: <what, how to fix>``) on stderr and exit 2."""
    try:
        with one_line_argparse_errors():
            return main(argv)
    except USER_ERRORS as exc:
        print(error_line(exc), file=sys.stderr)
        sys.exit(2)


def option_error(option, message):
    """``OptionError("<option>: <message>")`` to raise for a bad option value or combination."""
    return OptionError(f"{option}: {message}")


def demo_line(task, result, key):
    """``(passed, one-line summary)`` of a demo result dict (``metric``, ``key``, ``pass``, ``seconds``)."""
    passed = result[key] > result["pass"]
    return passed, (f"{task}: {result['metric']} = {result[key]:.3f} ({'ok' if passed else 'BELOW'} pass mark "
                    f"{result['pass']}) in {result['seconds']:.0f} s")


def demo_main(argv, description, task, run, key, defaults, options=("epochs", "seed")):
    """Command line of a task's ``demo.py``: ``--work-dir`` and the ``options`` its ``run`` takes (``epochs``,
    ``seed``), then the one-line summary; exit status 0 when the held-out score beats the pass mark."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=repo_path("work", "demo", task),
                        help="where the synthetic data and the run go (default: %(default)s)")
    if "epochs" in options:
        parser.add_argument("--epochs", type=int, default=None, help=f"default: {defaults['epochs']}")
    if "seed" in options:
        parser.add_argument("--seed", type=int, default=None,
                            help=f"data and training seed (default: {defaults['seed']})")
    args = vars(parser.parse_args(argv))
    result = run(args.pop("work_dir"), verbose=1, **args)
    passed, line = demo_line(task, result, key)
    print(line)
    return 0 if passed else 1
