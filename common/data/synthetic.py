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


#: Grey value of each edema class in the AI Challenger 2018 label BMPs: background, REA, SRF, PED.
EDEMA_GREY_CODES = (0, 255, 191, 128)


def _edema_cube(rng, n_slices, shape, p_lesion):
    """One OCT-like cube: (n_slices, H, W) uint8 B-scans and their class labels 0..3 (uint8).

    Every B-scan shows horizontal retina-like bands between a dark vitreous and a grainy choroid: a bright
    nerve-fibre layer on top, grey inner layers, a dark outer band and a bright RPE line at the bottom, all
    bent by a smooth curvature that drifts from slice to slice. Each lesion class occurs in a cube with
    probability ``p_lesion`` as an ellipsoid spanning part of the slices (so per-slice presence varies):
    REA = a wide, moderately dark swelling inside the retina; SRF = a black dome just above the RPE;
    PED = a grey pocket under a lifted, bright RPE.
    """
    h, w = shape
    z = np.arange(n_slices, dtype=np.float32)[:, None, None]
    rows = np.arange(h, dtype=np.float32)[None, :, None]
    cols = np.arange(w, dtype=np.float32)[None, None, :]
    bend = rng.uniform(0.03, 0.1) * h * ((cols - w / 2) / (w / 2)) ** 2
    top = rng.uniform(0.25, 0.35) * h + bend + 0.03 * h * np.sin(z / n_slices * np.pi * rng.uniform(0.5, 1.5))
    thick = rng.uniform(0.32, 0.40) * h
    rpe = top + thick  # row of the RPE line, (Z, 1, W)
    depth = (rows - top) / thick  # 0 at the retina's top, 1 at the RPE
    image = np.full((n_slices, h, w), 12.0, np.float32)  # vitreous
    inside = (depth >= 0) & (depth < 1)
    layers = 110 + 30 * np.cos(depth * 3 * np.pi) - 35 * (depth > 0.75)  # inner bands, darker outer band
    image = np.where(inside, layers, image)
    image = np.where((depth >= 0) & (depth < 0.08), 190.0, image)  # nerve-fibre layer
    image = np.where(rows > rpe, 80.0 * np.exp(-(rows - rpe) / (0.2 * h)) + 25, image)  # choroid
    labels = np.zeros((n_slices, h, w), np.uint8)

    def ellipsoid(center_row, rz, ry, rx):
        cz, cx = rng.uniform(0.25, 0.75) * n_slices, rng.uniform(0.25, 0.75) * w
        return ((z - cz) / rz) ** 2 + ((rows - center_row) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0

    if rng.random() < p_lesion:  # REA: swollen, darker inner retina
        rea = ellipsoid(top + rng.uniform(0.4, 0.55) * thick, rng.uniform(0.2, 0.35) * n_slices,
                        rng.uniform(0.22, 0.3) * thick, rng.uniform(0.2, 0.32) * w) & inside
        image = np.where(rea, 0.45 * image + 15, image)
        labels[rea] = 1
    if rng.random() < p_lesion:  # SRF: black dome above the RPE
        ry = rng.uniform(0.07, 0.1) * h
        srf = ellipsoid(rpe - 0.2 * ry, rng.uniform(0.2, 0.35) * n_slices, ry, rng.uniform(0.18, 0.28) * w)
        srf &= rows < rpe
        image = np.where(srf, 5.0, image)
        labels[srf] = 2
    if rng.random() < p_lesion:  # PED: grey pocket under a lifted RPE with a bright rim
        ry = rng.uniform(0.07, 0.1) * h
        ped = ellipsoid(rpe + 0.3 * ry, rng.uniform(0.2, 0.35) * n_slices, ry, rng.uniform(0.15, 0.25) * w)
        ped &= rows > rpe + 1
        rim = ped & ~np.roll(ped, 2, axis=1)
        image = np.where(ped, 55.0, image)
        image = np.where(rim, 235.0, image)
        labels[ped] = 3
    image = np.where(np.abs(rows - rpe) < max(1.0, 0.015 * h), 225.0, image)  # RPE line
    speckle = 0.65 + 0.28 * rng.rayleigh(1.0, image.shape).astype(np.float32)
    image = image * speckle + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def write_retinal_edema_dataset(root, n_train=6, n_val=2, n_test=2, n_slices=16, shape=(64, 32), p_lesion=0.8,
                                test_labels=True, seed=0):
    """Synthetic OCT cubes in the AI Challenger 2018 edema layout under ``root``.

    Writes, for each set folder ``Edema_trainingset`` (``n_train`` cubes), ``Edema_validationset``
    (``n_val``) and ``Edema_testset`` (``n_test``)::

        original_images/<cube>.img/1.bmp .. <n_slices>.bmp      8-bit grey B-scans, H x W = ``shape``
        label_images/<cube>_labelMark/1.bmp .. <n_slices>.bmp   grey codes 0 bg, 255 REA, 191 SRF, 128 PED

    with cube names in the challenge's pattern (``P0003_MacularCube512x128_..._cube_z.img``). The real test
    set has no labels; ``test_labels=True`` still writes ``Edema_testset/label_images`` so a demo can score
    held-out cubes. The real cubes are 128 slices of 1024 x 512 (H x W).

    Returns a dict ``{set folder: [cube names]}`` plus ``"slices_with"``: per class (REA, SRF, PED) the
    number of slices containing it over all sets.
    """
    if shape[0] < 16 or shape[1] < 16:
        raise ValueError(f"shape must be at least 16 x 16, got {shape}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    grey = np.asarray(EDEMA_GREY_CODES, np.uint8)
    out, slices_with, patient = {}, np.zeros(3, int), 0
    for folder, n_cubes in (("Edema_trainingset", n_train), ("Edema_validationset", n_val),
                            ("Edema_testset", n_test)):
        out[folder] = []
        for _ in range(n_cubes):
            patient += 1
            eye = "OD" if rng.random() < 0.5 else "OS"
            cube = (f"P{patient:04d}_MacularCube512x128_{rng.integers(1, 13)}-{rng.integers(1, 29)}-2014_"
                    f"{rng.integers(8, 18)}-{rng.integers(10, 60)}-{rng.integers(10, 60)}_{eye}_"
                    f"sn{rng.integers(10000, 99999)}_cube_z.img")
            images, labels = _edema_cube(rng, n_slices, tuple(shape), p_lesion)
            slices_with += [(labels == c).any(axis=(1, 2)).sum() for c in (1, 2, 3)]
            for k in range(n_slices):
                write_image(root / folder / "original_images" / cube / f"{k + 1}.bmp", images[k])
                if folder != "Edema_testset" or test_labels:
                    write_image(root / folder / "label_images" / f"{cube[:-4]}_labelMark" / f"{k + 1}.bmp",
                                grey[labels[k]])
            out[folder].append(cube)
    out["slices_with"] = [int(n) for n in slices_with]
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


def _vessel_tree(rng, mask, start, angle, length, thickness, depth):
    """Draw a branching vessel-like curve into ``mask`` (uint8): a random walk with drifting direction that
    splits into two thinner, shorter branches at its end (down to ``depth`` levels)."""
    points = [np.asarray(start, np.float64)]
    step = max(2.0, length / 25)
    turn = rng.normal(0, 0.03)
    for _ in range(int(length / step)):
        turn = 0.85 * turn + rng.normal(0, 0.035)
        angle += turn
        points.append(points[-1] + step * np.array([np.cos(angle), np.sin(angle)]))
    cv2.polylines(mask, [np.round(np.asarray(points)[:, ::-1]).astype(np.int32)], False, 1,
                  thickness=max(1, int(round(thickness))), lineType=cv2.LINE_8)
    if depth > 0:
        for side in (-1, 1):
            _vessel_tree(rng, mask, points[-1], angle + side * rng.uniform(0.3, 0.8), length * rng.uniform(0.55, 0.8),
                         thickness * 0.72, depth - 1)
    # a side branch from the middle of longer vessels
    if depth > 1 and len(points) > 4:
        mid = points[len(points) // 2]
        _vessel_tree(rng, mask, mid, angle + rng.choice([-1, 1]) * rng.uniform(0.8, 1.3), length * 0.45,
                     thickness * 0.6, depth - 2)


def _fundus(rng, shape):
    """One fundus-like RGB photo (H, W, 3) uint8, its 0/1 vessel annotation and its 0/1 circular FOV."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx, radius = (h - 1) / 2, (w - 1) / 2, 0.48 * min(h, w)
    r = np.hypot(yy - cy, xx - cx)
    fov = (r < radius).astype(np.uint8)
    side = rng.choice([-1, 1])
    disc = np.array([cy + rng.uniform(-0.05, 0.05) * h, cx + side * rng.uniform(0.25, 0.32) * w])
    vessels = np.zeros(shape, np.uint8)
    scale = min(h, w) / 565.0
    for base in np.linspace(0, 2 * np.pi, 5, endpoint=False) + rng.uniform(0, 1.2):
        _vessel_tree(rng, vessels, disc, base, rng.uniform(140, 220) * scale, max(1.0, 7 * scale) + rng.uniform(0, 1.5),
                     depth=3)
    vessels &= fov
    light = 1.0 - 0.45 * (r / radius) ** 2 + 0.06 * smooth_noise(rng, shape, max(h, w) / 8)
    light += 0.55 * np.exp(-(((yy - disc[0]) ** 2 + (xx - disc[1]) ** 2) / (2 * (0.06 * min(h, w)) ** 2)))
    base = np.float32([205, 95, 35]) + rng.uniform(-15, 15, 3).astype(np.float32)
    soft = cv2.GaussianBlur(vessels.astype(np.float32), (0, 0), 0.7)  # anti-aliased vessel edges
    image = base * light[..., None] * (1 - soft[..., None] * np.float32([0.25, 0.5, 0.4]))
    image = image + rng.normal(0, 3, image.shape)
    image = np.where(fov[..., None] == 1, image, rng.uniform(0, 4, image.shape))
    return np.clip(image, 0, 255).astype(np.uint8), vessels, fov


def write_drive_dataset(root, n_train=20, n_test=20, shape=(584, 565), seed=0):
    """The DRIVE layout under ``root`` (the original's ``./DRIVE``), with the real names and formats::

        training/images/<id>_training.tif      RGB TIFF, ids 21..20+n_train
        training/1st_manual/<id>_manual1.gif   vessel annotation, 0/255
        training/mask/<id>_training_mask.gif   field-of-view mask, 0/255
        test/images/<id>_test.tif              ids 01..n_test
        test/1st_manual/<id>_manual1.gif
        test/mask/<id>_test_mask.gif

    Each image is a fundus-like photo: a dark surround, a circular field of view with orange-red retina and
    vignetting, a bright optic disc on one side, and branching vessel trees growing out of it (darker,
    mostly in the green channel, thick to thin) that the annotation marks. ``shape`` is (rows, cols).
    Returns ``{"training": [ids], "test": [ids], "vessel_fraction": mean vessel share inside the FOV}``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    out, fractions = {"training": [], "test": []}, []
    for split, ids in (("training", range(21, 21 + n_train)), ("test", range(1, 1 + n_test))):
        for i in ids:
            key = f"{i:02d}"
            image, vessels, fov = _fundus(rng, tuple(shape))
            write_image(root / split / "images" / f"{key}_{split if split == 'test' else 'training'}.tif", image)
            write_image(root / split / "1st_manual" / f"{key}_manual1.gif", vessels * 255)
            write_image(root / split / "mask" / f"{key}_{split}_mask.gif", fov * 255)
            out[split].append(key)
            fractions.append(vessels[fov == 1].mean())
    out["vessel_fraction"] = float(np.mean(fractions))
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


def multiclass_shapes(n_images=32, size=32, channels=1, seed=0):
    """A tiny multi-class dataset: images with up to three shapes on a noisy background and their label maps.

    Label 1 = a disc, 2 = a square, 3 = a cross (each present with probability 0.8, at random places, so
    they may overlap; the later one wins), 0 = background. Each class has its own mean brightness (0.45,
    0.65, 0.85 on a 0.2 background) under Gaussian noise (sd 0.08), so a small network learns them in a few
    epochs.

    Returns:
        ``(images, labels)``: float32 (N, size, size, channels) in [0, 1] and uint8 (N, size, size) 0..3.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((n_images, size, size), np.uint8)
    for i in range(n_images):
        for cls in (1, 2, 3):
            if rng.random() > 0.8:
                continue
            r = rng.uniform(0.12, 0.2) * size
            cy, cx = rng.uniform(r + 1, size - r - 1, 2)
            if cls == 1:
                shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
            elif cls == 2:
                shape = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
            else:
                arm = max(1.0, r * 0.3)
                shape = (((np.abs(yy - cy) <= arm) & (np.abs(xx - cx) <= r))
                         | ((np.abs(xx - cx) <= arm) & (np.abs(yy - cy) <= r)))
            labels[i][shape] = cls
    images = np.float64([0.2, 0.45, 0.65, 0.85])[labels] + rng.normal(0, 0.08, labels.shape)
    images = np.clip(images, 0, 1).astype(np.float32)[..., None]
    return np.repeat(images, channels, axis=-1), labels
