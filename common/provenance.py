"""``run.json``: what made a folder of predictions or results, so every mask or table can be traced.

Written by every evaluate and predict script into its output folder: the project's git commit (and whether
the working tree had local changes), the command line, the model name, each weights file with its SHA-256,
the options, the input files and the library versions.
"""

import datetime
import hashlib
import platform
import subprocess
import sys
from pathlib import Path

from common.data.io import write_json

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(root=REPO_ROOT):
    """``(commit, dirty)`` of the repository at ``root``, or ``(None, None)`` outside a git checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode:
            return None, None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def sha256_file(path, chunk=1 << 20):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions():
    versions = {"python": platform.python_version()}
    for name in ("keras", "tensorflow", "jax", "torch", "numpy"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "__version__"):
            versions[name] = module.__version__
    return versions


def run_record(*, model_name, weights, options, inputs, extra=None):
    """The ``run.json`` dict (see the module docstring). ``weights``: a path, a list of paths, or None."""
    commit, dirty = git_commit()
    if weights is None:
        weights = []
    elif isinstance(weights, (str, Path)):
        weights = [weights]
    record = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name] + sys.argv[1:] if sys.argv and sys.argv[0] else [],
        "git_commit": commit,
        "git_dirty": dirty,
        "model": model_name,
        "weights": [{"path": str(Path(w).resolve()), "sha256": sha256_file(w)} for w in weights],
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in dict(options or {}).items()},
        "inputs": [str(p) for p in inputs],
        "versions": _versions(),
    }
    if extra:
        record.update(extra)
    return record


def write_run_json(out_dir, *, model_name, weights, options, inputs, extra=None):
    """Write ``<out_dir>/run.json`` (standard JSON, atomically); returns the record."""
    record = run_record(model_name=model_name, weights=weights, options=options, inputs=inputs, extra=extra)
    write_json(Path(out_dir) / "run.json", record)
    return record
