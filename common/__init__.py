"""Shared library of the medical-image segmentation reproductions (layers, models, losses, metrics, data)."""

from common import quiet as _quiet

# TensorFlow's C++ start-up chatter (oneDNN notice, "Could not find cuda drivers", cuInit failure on a machine
# without a GPU) hides the scripts' own output: filtered on its first import (common/quiet.py says how and why).
_quiet.install()
