"""Random training patches from the prepared DRIVE training set (the original's ``save_patch.py``).

Loads ``DRIVE_dataset_imgs_train.hdf5`` and ``DRIVE_dataset_groundTruth_train.hdf5`` (prepare_datasets_DRIVE.py),
preprocesses the images as the original ``my_PreProc`` (gray, dataset normalisation, CLAHE, gamma 1.2, /255),
divides the annotations by 255, crops images and annotations to rows 9:574 (565 x 565; in general the centred
square ``(H - W) // 2 : (H - W) // 2 + W`` when H > W) and draws ``--n-patches`` (200,000) random
``--patch`` x ``--patch`` (64) patches, the same number (10,000) from every image, centres uniform in
``[patch/2, size - patch/2]`` (common/data/patches.py ``extract_random``).

The original's inside-FOV rule (patch centre closer than 270 - 45 = 225 px to the image centre) is never
applied there, because save_patch.py passes the string ``'True'`` and the code tests ``inside == True``;
the default here is therefore OFF, and ``--inside-fov`` turns the rule on. Sampling is seeded (``--seed``;
the original is unseeded) and streamed image by image into memory-mapped files, so memory stays at one image's
patches.

Written to ``--work-dir``: ``patches_imgs_train.npy`` (N, 64, 64, 1) float32 in [0, 1] and
``patches_masks_train.npy`` (N, 64, 64, 1) uint8 {0, 1} (an own K-class dataset, prepared with ``--keep-labels``:
the labels 0..K-1), in image order (the last 20 % = the last 4 images,
which train_retina.py uses for validation, as the original's ``validation_split``). The original wrote the
same values channels first as float64 (2 x 6.5 GB; here 3.3 GB + 0.8 GB).
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from tqdm import tqdm

from common import cli

PATCH, N_PATCHES, SEED = 64, 200_000, 0
IMGS_FILE, MASKS_FILE = "patches_imgs_train.npy", "patches_masks_train.npy"


def crop_square_rows(images):
    """Rows ``(H - W) // 2 : (H - W) // 2 + W`` when H > W (DRIVE 584 x 565: rows 9:574), else unchanged."""
    h, w = images.shape[1:3]
    if h <= w:
        return images
    top = (h - w) // 2
    return images[:, top:top + w]


def training_arrays(work_dir):
    """Preprocessed, cropped training images (N, S, S, 1) float32 and annotations (N, S, S, 1) uint8 0/1 (the
    labels 0..K-1 of an own dataset prepared with ``--keep-labels``, split.json's ``num_classes`` K > 2)."""
    from common.data.preprocess import my_preproc
    from retina_vessel.prepare_datasets_DRIVE import hdf5_path, load_hdf5, num_classes_of, truth_labels

    imgs = load_hdf5(hdf5_path(work_dir, "imgs", "train")).transpose(0, 2, 3, 1)
    truth = load_hdf5(hdf5_path(work_dir, "groundTruth", "train")).transpose(0, 2, 3, 1)
    if imgs.shape[:3] != truth.shape[:3] or imgs.shape[0] == 0:
        from common.errors import UserError

        raise UserError(f"{hdf5_path(work_dir, 'groundTruth', 'train')}: annotations {truth.shape} do not match the "
                        f"training images {imgs.shape}; run retina_vessel/prepare_datasets_DRIVE.py again")
    return crop_square_rows(my_preproc(imgs)), crop_square_rows(truth_labels(truth, num_classes_of(work_dir)))


def save_patches(work_dir, patch=PATCH, n_patches=N_PATCHES, seed=SEED, inside_fov=False, verbose=True,
                 overwrite=False):
    """Sample and write the patch arrays; returns their paths. Existing patch files are refused (before any
    work) unless ``overwrite``."""
    from common.data.io import open_npy_writer
    from common.data.patches import extract_random
    from common.errors import OptionError, UserError

    existing = [Path(work_dir) / name for name in (IMGS_FILE, MASKS_FILE) if (Path(work_dir) / name).exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: patches are already there; pass --overwrite to replace them, or another "
                        f"--work-dir")
    if patch < 1 or n_patches < 1:
        raise OptionError(f"--patch/--n-patches: must be positive (got {patch}, {n_patches})")
    images, masks = training_arrays(work_dir)
    n = len(images)
    if n_patches % n:
        raise OptionError(f"--n-patches: {n_patches} is not a multiple of the number of training images ({n})")
    if patch > min(images.shape[1:3]):
        raise OptionError(f"--patch: {patch} is larger than the {images.shape[1]}x{images.shape[2]} training crop")
    per_image = n_patches // n
    rng = np.random.default_rng(seed)
    work_dir = Path(work_dir)
    shape = (n_patches, patch, patch, 1)
    with open_npy_writer(work_dir / IMGS_FILE, shape, np.float32) as x_out, \
            open_npy_writer(work_dir / MASKS_FILE, shape, np.uint8) as y_out:
        for i in tqdm(range(n), desc="images", disable=not verbose):
            try:
                x, y = extract_random(images[i:i + 1], masks[i:i + 1], per_image, patch, seed=rng,
                                      inside_fov=inside_fov)
            except ValueError as exc:  # no patch fits inside the FOV circle of these images
                raise OptionError(f"--inside-fov: {exc}") from None
            x_out[i * per_image:(i + 1) * per_image] = x
            y_out[i * per_image:(i + 1) * per_image] = y
    return work_dir / IMGS_FILE, work_dir / MASKS_FILE


def build_parser():
    from retina_vessel.prepare_datasets_DRIVE import DEFAULT_WORK

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help="prepare_datasets_DRIVE.py's --work-dir; the patches are written here too "
                             "(default: %(default)s)")
    parser.add_argument("--patch", type=int, default=PATCH, help="patch height and width (default: %(default)s)")
    parser.add_argument("--n-patches", type=int, default=N_PATCHES,
                        help="total patches, a multiple of the number of images (default: %(default)s)")
    parser.add_argument("--inside-fov", action="store_true",
                        help="only centres whose whole patch lies inside the FOV circle (the original's rule, "
                             "which its own call never applies; default: off)")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace patch files already in --work-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    paths = save_patches(args.work_dir, args.patch, args.n_patches, args.seed, args.inside_fov, not args.quiet,
                         overwrite=args.overwrite)
    for path in paths:
        array = np.load(path, mmap_mode="r")
        print(f"{path}: {array.shape} {array.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
