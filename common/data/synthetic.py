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


def _nail_scene(rng, shape, background):
    """One hand-like photo (H, W, 3) uint8 and its skin / nail 0/1 masks.

    Two to four fingers (long skin-coloured ellipses) reach in from the bottom edge, each with a lighter,
    pinker nail near its tip; smooth illumination changes cover the whole scene.
    """
    h, w = shape
    skin = np.zeros(shape, np.uint8)
    nails = np.zeros(shape, np.uint8)
    n_fingers = int(rng.integers(2, 5))
    xs = (np.arange(n_fingers) + 0.5 + rng.uniform(-0.15, 0.15, n_fingers)) * w / n_fingers
    for x in xs:
        width = rng.uniform(0.07, 0.10) * w  # semi-axis across the finger
        tip = rng.uniform(0.15, 0.45) * h  # row of the finger tip
        angle = rng.uniform(-12, 12)
        length = (h - tip) * 0.75
        t = np.deg2rad(angle)
        axis = np.array([np.cos(t), -np.sin(t)])  # (row, col) direction from the tip down the finger
        skin |= ellipse_mask(shape, np.array([tip, x]) + length * axis, (length, width), angle)
        # the nail: an ellipse just behind the tip, on the finger's axis
        nails |= ellipse_mask(shape, np.array([tip, x]) + 1.05 * width * axis, (0.85 * width, 0.62 * width), angle)
    nails &= skin
    light = 1.0 + 0.08 * smooth_noise(rng, shape, max(h, w) / 6)[..., None]
    image = np.empty(shape + (3,), np.float32)
    image[:] = np.asarray(background, np.float32)
    image = np.where(skin[..., None] == 1, np.float32([190, 135, 110]) + rng.uniform(-15, 15, 3), image)
    image = np.where(nails[..., None] == 1, np.float32([232, 196, 196]) + rng.uniform(-8, 8, 3), image)
    image = image * light + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 235).astype(np.uint8), skin, nails


def write_fingernail_dataset(root, n_labeled=20, n_unlabeled=3, layout="dataset1", sizes=((150, 191), (246, 328)),
                             large_fraction=0.15, n_orphan_masks=1, n_empty_masks=1, portrait_fraction=0.5, seed=0):
    """A fingernail dataset in the seed repository's ``data/raw/<layout>/{image,mask}`` layout under ``root``.

    ``layout="dataset1"`` (Golbstein photos): ``image/<name>.png`` RGB on a blue background; the mask
    ``mask/<name>.png`` (same name, same size, RGB) is the photo with the background black and the nails pure
    white (skin keeps its colours, all below the loader's near-white test). ``sizes`` are (rows, cols) picked
    with probability ``1 - large_fraction`` / ``large_fraction`` (the real 150x191 and 246x328). Also written,
    as in the real folder: ``n_unlabeled`` images ``None_<k>.png`` without a mask, ``n_orphan_masks`` masks
    without an image, and ``n_empty_masks`` pairs whose mask has no near-white pixel (the loader drops them).

    ``layout="dataset2"``: ``image/<name>.jpg`` and ``mask/<name>.jpg`` (white nails on black), varied
    backgrounds, all paired; ``portrait_fraction`` of them are stored rotated by -90 degrees as portrait
    pictures (the loader rotates them back by +90). ``sizes`` are the landscape (rows, cols) to draw from.

    Returns a dict with the written names: ``labeled``, ``unlabeled``, ``orphan_masks``, ``empty_masks``,
    ``portrait``.
    """
    if layout not in ("dataset1", "dataset2"):
        raise ValueError(f"layout must be dataset1 or dataset2, got {layout!r}")
    folder = Path(root) / layout
    rng = np.random.default_rng(seed)
    out = {"labeled": [], "unlabeled": [], "orphan_masks": [], "empty_masks": [], "portrait": []}

    def size():
        return tuple(sizes[-1] if len(sizes) > 1 and rng.random() < large_fraction else sizes[0])

    if layout == "dataset1":
        blue = (40, 75, 170)
        for k in range(n_labeled + n_empty_masks + n_orphan_masks):
            name = f"170517_{k + 1}_{'LR'[k % 2]}_1.png"
            image, skin, nails = _nail_scene(rng, size(), blue + rng.uniform(-15, 15, 3))
            mask = np.where(skin[..., None] == 1, image, 0).astype(np.uint8)
            if k < n_labeled:
                mask[nails == 1] = 255
                out["labeled"].append(name)
            elif k < n_labeled + n_empty_masks:
                # painted, but far from white (bicubic overshoot stays < 250): no foreground after binarising
                mask[nails == 1] = 200
                out["empty_masks"].append(name)
            if k < n_labeled + n_empty_masks:
                write_image(folder / "image" / name, image)
            else:
                out["orphan_masks"].append(name)
            write_image(folder / "mask" / name, mask)
        for k in range(n_unlabeled):
            name = f"None_{k + 1:04d}.png"
            write_image(folder / "image" / name, _nail_scene(rng, size(), blue)[0])
            out["unlabeled"].append(name)
        return out

    for k in range(n_labeled):
        name = f"nail_{k + 1:03d}.jpg"
        image, _, nails = _nail_scene(rng, size(), rng.uniform(60, 200, 3))
        mask = nails * 255
        if rng.random() < portrait_fraction:
            image, mask = np.rot90(image, -1).copy(), np.rot90(mask, -1).copy()
            out["portrait"].append(name)
        write_image(folder / "image" / name, image)
        write_image(folder / "mask" / name, np.repeat(mask[..., None], 3, axis=2))
        out["labeled"].append(name)
    return out


def _lung_volume(rng, n_slices, size, n_empty):
    """One chest-CT-like volume (n_slices, size, size) int16 in HU and its 0/255 uint8 lung mask.

    Air outside the body (-1000 HU), an elliptic body of soft tissue (about 40 HU, smooth texture) with a
    bright spine, and two dark lungs (about -850 HU) whose size follows a sine profile along the slice
    axis; the first and last ``n_empty`` slices have no lung. The chest wall is about a fifth of the slice
    wide, so the original's 15x15 body erosion keeps the lungs enclosed at 512x512 (at 32x32 the wall is only
    3-5 px: use no erosion there).
    """
    shape = (size, size)
    centre = np.array([0.5 * size + rng.normal(0, 0.01 * size), 0.5 * size])
    body_axes = np.array([0.38, 0.45]) * size * rng.uniform(0.95, 1.05, 2)
    spine = ellipse_mask(shape, centre + [0.25 * size, 0], (0.05 * size, 0.05 * size))
    lung_rows = 0.48 * size + rng.normal(0, 0.01 * size)
    texture = 15 * smooth_noise(rng, shape, max(1.0, size / 40))
    image = np.empty((n_slices, size, size), np.int16)
    mask = np.zeros((n_slices, size, size), np.uint8)
    for z in range(n_slices):
        u = (z - n_empty + 1) / (n_slices - 2 * n_empty + 1)  # in (0, 1) on the slices with lungs
        hu = np.full(shape, -1000.0, np.float32)
        body = ellipse_mask(shape, centre, body_axes)
        hu[body == 1] = 40 + texture[body == 1]
        hu[spine == 1] = 500
        if 0 < u < 1:
            f = 0.45 + 0.55 * np.sin(np.pi * u)
            for side in (-1, 1):
                c = (lung_rows, 0.5 * size + side * 0.16 * size)
                lung = ellipse_mask(shape, c, (0.18 * size * f, 0.085 * size * f), angle=side * rng.uniform(3, 10))
                mask[z][lung == 1] = 255
        hu[mask[z] == 255] = -850
        hu += rng.normal(0, 20, shape)
        image[z] = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return image, mask


def write_lung_dataset(root, n_volumes=4, n_slices=16, size=512, n_empty=2, seed=0, first_id=1):
    """The Kaggle "Finding and Measuring Lungs in CT Data" 3-D layout under ``root``.

    Writes ``3d_images/IMG_<id>.nii.gz`` (int16 HU, shape (n_slices, size, size): axis 0 is the slice axis
    the original reads) and ``3d_images/MASK_<id>.nii.gz`` (uint8, lung 255, else 0) for ids
    ``first_id, first_id + 1, ...`` written as 4 digits (``0001``). Returns ``{"ids": [...], "lung_slices":
    {id: [slice indices whose mask is not empty]}}``.
    """
    import gzip

    import nibabel as nib

    from common.data.io import atomic_path

    if n_slices <= 2 * n_empty:
        raise ValueError(f"n_slices ({n_slices}) must exceed 2 * n_empty ({2 * n_empty})")
    folder = Path(root) / "3d_images"
    rng = np.random.default_rng(seed)
    out = {"ids": [], "lung_slices": {}}
    for k in range(n_volumes):
        vol_id = f"{first_id + k:04d}"
        image, mask = _lung_volume(rng, n_slices, size, n_empty)
        for prefix, array in (("IMG", image), ("MASK", mask)):
            with atomic_path(folder / f"{prefix}_{vol_id}.nii.gz") as tmp:
                tmp.write_bytes(gzip.compress(nib.Nifti1Image(array, np.eye(4)).to_bytes(), mtime=0))
        out["ids"].append(vol_id)
        out["lung_slices"][vol_id] = [int(z) for z in np.flatnonzero(mask.reshape(n_slices, -1).any(axis=1))]
    return out
