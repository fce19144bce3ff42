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


ISIC_IMAGE_DIR = "ISIC2018_Task1-2_Training_Input"
ISIC_MASK_DIR = "ISIC2018_Task1_Training_GroundTruth"


def lesion_mask(rng, shape, center, radius, irregularity=0.25, n_harmonics=5):
    """uint8 0/1 blob with a wavy border: ``radius (1 + sum_k a_k cos(k theta + phi_k))`` in polar form.

    ``center`` (row, col), ``radius`` in pixels; ``irregularity`` scales the harmonics' amplitudes.
    """
    theta = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    k = np.arange(2, 2 + n_harmonics)[:, None]
    amplitude = rng.uniform(0, irregularity, (n_harmonics, 1)) / k ** 0.5
    r = radius * (1 + np.sum(amplitude * np.cos(k * theta + rng.uniform(0, 2 * np.pi, (n_harmonics, 1))), axis=0))
    points = np.stack([center[1] + r * np.cos(theta), center[0] + r * np.sin(theta)], axis=1)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask


def _coarse_noise(rng, shape, scale):
    """A smooth random field of feature size ~``scale`` pixels, unit std: low-resolution noise upsampled
    (much faster than ``smooth_noise`` for large scales on photo-sized images)."""
    small = rng.standard_normal((max(2, int(shape[0] / scale) + 2), max(2, int(shape[1] / scale) + 2)))
    field = cv2.resize(small.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _dermoscopy(rng, shape):
    """One skin-like dermoscopy photo (H, W, 3) uint8 with a darker irregular lesion, and its 0/1 mask."""
    h, w = shape
    mask = lesion_mask(rng, shape, (rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w),
                       rng.uniform(0.2, 0.38) * min(h, w))
    skin = (np.float32([225, 170, 150]) + rng.uniform(-20, 20, 3)).astype(np.float32)  # pinkish skin tone
    lesion = skin * np.float32(rng.uniform(0.35, 0.6) * np.array([1.0, 0.85, 0.8]))  # brown, darker
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), min(h, w) / 150)  # blurred border
    blotches = 1 + 0.25 * _coarse_noise(rng, shape, min(h, w) / 12)  # pigment network
    yy = ((np.arange(h, dtype=np.float32) - h / 2) / (h / 2))[:, None] ** 2
    xx = ((np.arange(w, dtype=np.float32) - w / 2) / (w / 2))[None, :] ** 2
    gain = (1 + 0.06 * _coarse_noise(rng, shape, min(h, w) / 2)) * np.clip(1 - 0.35 * (yy + xx) ** 2, 0.3, 1)
    texture = 6 * smooth_noise(rng, shape, 1.5)  # skin grain
    # per pixel: (skin + soft * (lesion * blotches - skin)) * gain + texture, one channel at a time
    image = np.stack([(skin[c] + soft * (lesion[c] * blotches - skin[c])) * gain + texture for c in range(3)],
                     axis=-1)
    for _ in range(int(rng.integers(0, 4))):  # a few dark hairs across the picture (distractors)
        p0, p1 = rng.uniform(0, 1, 2) * (w, h), rng.uniform(0, 1, 2) * (w, h)
        cv2.line(image, tuple(int(v) for v in p0), tuple(int(v) for v in p1), (60, 45, 40),
                 max(1, int(min(h, w) / 300)), cv2.LINE_AA)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_isic_dataset(root, n_images=20, sizes=((450, 600), (768, 1024)), seed=0, first_id=0,
                       orphan_images=0, orphan_masks=0):
    """ISIC 2018 Task 1 training data in the official layout under ``root``.

    Writes ``ISIC2018_Task1-2_Training_Input/ISIC_<7 digits>.jpg`` (RGB dermoscopy-like photos, sizes drawn
    uniformly between the (rows, cols) pairs ``sizes[0]`` and ``sizes[1]``, aspect kept near 4:3) and
    ``ISIC2018_Task1_Training_GroundTruth/ISIC_<7 digits>_segmentation.png`` (8-bit 0/255 lesion masks).
    ``orphan_images`` images without a mask and ``orphan_masks`` masks without an image are added after the
    pairs. Ids start at ``first_id`` and skip numbers as the real ids do.

    Returns ``{"pairs": [ids], "orphan_images": [ids], "orphan_masks": [ids]}``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    (low_h, low_w), (high_h, high_w) = sizes
    out = {"pairs": [], "orphan_images": [], "orphan_masks": []}
    image_id = first_id
    for k in range(n_images + orphan_images + orphan_masks):
        image_id += int(rng.integers(1, 4))
        name = f"ISIC_{image_id:07d}"
        t = rng.uniform()
        shape = (int(round(low_h + t * (high_h - low_h) + rng.uniform(-0.03, 0.03) * low_h)),
                 int(round(low_w + t * (high_w - low_w))))
        image, mask = _dermoscopy(rng, shape)
        kind = "pairs" if k < n_images else "orphan_images" if k < n_images + orphan_images else "orphan_masks"
        if kind != "orphan_masks":
            write_image(root / ISIC_IMAGE_DIR / f"{name}.jpg", image)
        if kind != "orphan_images":
            write_image(root / ISIC_MASK_DIR / f"{name}_segmentation.png", mask * 255)
        out[kind].append(name)
    return out
