"""Small helpers shared by the task scripts: repository paths and a uniform error exit."""

import argparse
import sys
from pathlib import Path

from common.data.io import DataLayoutError, ImageReadError

REPO_ROOT = Path(__file__).resolve().parents[1]

# Errors a user can fix (bad or missing input): printed as one line, exit status 2, no traceback.
USER_ERRORS = (DataLayoutError, ImageReadError, FileNotFoundError)


def repo_path(*parts):
    """A path inside the repository (defaults never depend on the current directory)."""
    return REPO_ROOT.joinpath(*parts)


def run(main, argv=None):
    """Call ``main(argv)``; report user errors in one line (``error: <file>: <what>``) and exit 2."""
    try:
        return main(argv)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


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
