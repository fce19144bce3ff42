"""Shared library of the medical-image segmentation reproductions (layers, models, losses, metrics, data)."""

import os

# TensorFlow's C++ start-up chatter (CPU feature notes, oneDNN banners) hides the scripts' own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
