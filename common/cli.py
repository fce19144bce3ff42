"""Small helpers shared by the task scripts: repository paths and a uniform error exit."""

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
