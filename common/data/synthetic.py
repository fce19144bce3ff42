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


# ROBOT18 (EndoVis 2018) class indices the synthetic scenes use (robotic_scene/prepare.py holds the colour table).
_ROBOT_SHAFT, _ROBOT_CLASPER = 1, 2
_ROBOT_ORGAN_BY_SCENE = {0: 4, 1: 5, 2: 10}  # kidney-parenchyma, covered-kidney, intestine
# appearance of each class in the synthetic photos: mean RGB and texture strength
_ROBOT_LOOK = {0: ((165, 60, 55), 18), 4: ((95, 25, 70), 10), 5: ((215, 195, 130), 10), 10: ((240, 150, 175), 25),
               _ROBOT_SHAFT: ((45, 50, 60), 6), _ROBOT_CLASPER: ((205, 210, 220), 6)}


def _robot_frame(rng, shape, scene):
    """One endoscopic-like RGB frame (H, W, 3) uint8 and its class-index mask (H, W) uint8.

    Tissue background (class 0) with a large organ whose kind follows the surgical ``scene`` (kidney,
    covered kidney or intestine) and, in most frames, a dark instrument shaft entering from an edge with a
    bright clasper at its tip. Every class has its own colour and texture, so a short training run learns them.
    """
    h, w = shape
    label = np.zeros(shape, np.uint8)
    organ = ellipse_mask(shape, (rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w),
                         (rng.uniform(0.3, 0.5) * h, rng.uniform(0.3, 0.5) * w), rng.uniform(0, 180))
    label[organ == 1] = _ROBOT_ORGAN_BY_SCENE[scene]
    if rng.random() < 0.85:
        tip = np.array([rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w])
        side = rng.integers(4)  # the shaft enters through one of the four edges
        start = [(0, tip[1] + rng.uniform(-0.2, 0.2) * w), (h - 1, tip[1] + rng.uniform(-0.2, 0.2) * w),
                 (tip[0] + rng.uniform(-0.2, 0.2) * h, 0), (tip[0] + rng.uniform(-0.2, 0.2) * h, w - 1)][side]
        shaft = np.zeros(shape, np.uint8)
        thickness = max(2, int(round(rng.uniform(0.12, 0.18) * min(h, w))))
        cv2.line(shaft, (int(start[1]), int(start[0])), (int(tip[1]), int(tip[0])), 1, thickness)
        label[shaft == 1] = _ROBOT_SHAFT
        clasper = ellipse_mask(shape, tip, (0.9 * thickness, 0.9 * thickness))
        label[clasper == 1] = _ROBOT_CLASPER
    image = np.zeros(shape + (3,), np.float32)
    for cls, (colour, texture) in _ROBOT_LOOK.items():
        inside = label == cls
        if inside.any():
            tint = np.float32(colour) + rng.uniform(-10, 10, 3)
            image[inside] = (tint + texture * smooth_noise(rng, shape, 2.0)[..., None])[inside]
    light = 1.0 + 0.1 * smooth_noise(rng, shape, max(h, w) / 4)[..., None]  # uneven endoscope lighting
    image = image * light + rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_robotic_scene_dataset(root, palette, sequences, frames_per_sequence=8, shape=(64, 96), seed=0):
    """Synthetic ROBOT18-like sequences in the EndoVis 2018 training layout under ``root``.

    Writes ``seq_<N>/left_frames/frame<k:03d>.png`` (RGB) and ``seq_<N>/labels/frame<k:03d>.png`` (the class
    colours of ``palette``, RGB PNG) for every sequence. Classes used: background tissue (0), instrument shaft
    (1) and clasper (2), and one organ per scene: kidney parenchyma (4) in scene 0, covered kidney (5) in
    scene 1, intestine (10) in scene 2.

    Args:
        root: output folder (the original's ``train_path``).
        palette: RGB colour of every class index, e.g. ``robotic_scene.prepare.CLASS_COLOURS`` (the library
            imports no task folder).
        sequences: dict ``{sequence number: scene id (0, 1 or 2)}``.
        frames_per_sequence: frames per sequence (149 in the real data).
        shape: (rows, cols) of the frames (1024 x 1280 in the real data).
        seed: random seed.

    Returns:
        dict ``{"frames": total, "class_pixels": {class index: pixel count}}``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    palette = np.asarray(palette, np.uint8)
    counts = np.zeros(len(palette), np.int64)
    for seq, scene in sorted(sequences.items()):
        for k in range(frames_per_sequence):
            image, label = _robot_frame(rng, tuple(shape), scene)
            counts += np.bincount(label.ravel(), minlength=len(palette))
            write_image(root / f"seq_{seq}" / "left_frames" / f"frame{k:03d}.png", image)
            write_image(root / f"seq_{seq}" / "labels" / f"frame{k:03d}.png", palette[label])
    return {"frames": frames_per_sequence * len(sequences),
            "class_pixels": {c: int(n) for c, n in enumerate(counts) if n}}
