"""Small learnable synthetic datasets written in each task's real on-disk layout.

The real datasets cannot be downloaded everywhere, so the loaders are tested (and the demo runs) on files
that have exactly the real names, formats, sizes and value ranges, with content a short training run can
learn. Every generator is seeded and returns a summary dict.
"""

from pathlib import Path

import cv2
import numpy as np

from common.data.io import write_image


def ellipse_mask(shape, center, axes, angle=0.0):
    """uint8 0/1 filled ellipse; ``center`` (row, col), ``axes`` (semi-axis rows, semi-axis cols), degrees."""
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.ellipse(mask, (int(round(center[1])), int(round(center[0]))), (int(round(axes[1])), int(round(axes[0]))),
                angle, 0, 360, 1, thickness=-1)
    return mask


def smooth_noise(rng, shape, sigma):
    """Gaussian-blurred white noise scaled to unit standard deviation (a smooth random field)."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-6)


def _nerve_frame(rng, shape, positive):
    """One speckled ultrasound-like frame and its 0/1 nerve mask (empty when not ``positive``)."""
    h, w = shape
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    tissue = 80 + 15 * smooth_noise(rng, shape, 25) + 30 * rows  # depth gain and smooth echogenicity
    band_row = rng.uniform(0.15, 0.35) * h  # a bright fascia-like band in every frame (a distractor)
    tissue += 45 * np.exp(-((np.arange(h)[:, None] - band_row) / 6.0) ** 2)
    mask = np.zeros(shape, dtype=np.uint8)
    if positive:
        center = (rng.uniform(0.45, 0.75) * h, rng.uniform(0.25, 0.75) * w)
        axes = (rng.uniform(35, 50), rng.uniform(50, 75))
        angle = rng.uniform(-25, 25)
        mask = ellipse_mask(shape, center, axes, angle)
        rim = ellipse_mask(shape, center, (axes[0] + 10, axes[1] + 10), angle) - mask
        tissue = np.where(mask == 1, tissue * 0.25, tissue)  # hypoechoic fascicles
        tissue = np.where(rim == 1, tissue + 90, tissue)  # hyperechoic epineurium
    speckle = 0.7 + 0.24 * rng.rayleigh(1.0, shape).astype(np.float32)  # multiplicative speckle, mean 1
    return np.clip(tissue * speckle, 0, 255).astype(np.uint8), mask


def write_nerve_dataset(root, n_subjects=4, images_per_subject=10, n_test=10, shape=(420, 580),
                        positive_fraction=0.5, seed=0):
    """The Kaggle ultrasound nerve layout under ``root``.

    Writes ``train/<subject>_<n>.tif`` with ``train/<subject>_<n>_mask.tif`` (8-bit, 0/255, empty masks
    included), ``test/<id>.tif`` (ids 1..n_test) and, outside the Kaggle layout, ``test_truth/<id>_mask.tif``
    so a demo can score its submission.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_pos = 0
    for subject in range(1, n_subjects + 1):
        for n in range(1, images_per_subject + 1):
            positive = rng.random() < positive_fraction
            image, mask = _nerve_frame(rng, shape, positive)
            n_pos += positive
            write_image(root / "train" / f"{subject}_{n}.tif", image)
            write_image(root / "train" / f"{subject}_{n}_mask.tif", mask * 255)
    for i in range(1, n_test + 1):
        image, mask = _nerve_frame(rng, shape, rng.random() < positive_fraction)
        write_image(root / "test" / f"{i}.tif", image)
        write_image(root / "test_truth" / f"{i}_mask.tif", mask * 255)
    return {"train": n_subjects * images_per_subject, "train_positive": n_pos, "test": n_test}
