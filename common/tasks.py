"""Registry of the per-task descriptors: every ``<repository>/<folder>/task.py``, found by scanning.

A descriptor is a small module (NumPy / OpenCV / Pillow only at import, no TensorFlow or Keras) that states
the facts the common tools need about a task: ``NAME``, ``MODELS``, ``DEFAULT_MODEL``, ``CLASSES``,
``INPUT``, ``RECIPE`` (the train script's defaults, which the script reads from it), ``OWN_DATA``,
``preprocess(image, **context)`` and ``postprocess(prob, **context)``. ``common/`` finds them here, by
folder name, and never imports a task folder otherwise::

    from common.tasks import available_tasks, get_task
    available_tasks()                  # ['fingernail', 'lung', ..., 'ultrasound_nerve']
    task = get_task("skin_lesion")     # the module skin_lesion.task
"""

import importlib
import sys
from pathlib import Path

from common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTOR = "task.py"


def available_tasks(root=ROOT):
    """Sorted names of the folders of ``root`` that hold a ``task.py`` (hidden and ``_`` folders skipped)."""
    return sorted(p.parent.name for p in Path(root).glob(f"*/{DESCRIPTOR}")
                  if not p.parent.name.startswith((".", "_")) and p.parent.name.isidentifier())


def get_task(name):
    """The descriptor module ``<name>.task``; ``UserError`` naming the known tasks for an unknown ``name``."""
    known = available_tasks()
    if name not in known:
        raise UserError(f"{name}: no such task (known: {', '.join(known)})")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"{name}.task")
