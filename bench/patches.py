"""Patch tools of the DRIVE pipeline: the original's Python loops vs common/data/patches.py, on DRIVE-sized data.

The ``original_*`` functions restate the algorithms of the BCDU-Net / retina-unet ``extract_patches.py`` as
straightforward loops (channels first, float64, Python ``random``), importable for comparisons. The bench
times each (CPU seconds of the process) against the vectorised version on 20 random images of 584 x 565
(64 x 64 patches, stride 5: 214,200 overlapping patches; random sampling from the 565 x 565 crops), checks that
both give the same arrays, and prints the times and ratios (goal >= 50x) and, for recomposition and sampling,
the ceiling: the loop's time over one bare pass over the data any implementation must touch.

    python bench/patches.py                         # 20 images, 40,000 random patches
    python bench/patches.py --random-patches 200000 # the original's full count (needs ~17 GB)

The original's overlapping patches alone take 7 GB (float64); the run needs about 11 GB of memory at its
peak (``--images 10`` halves it; times scale linearly with the images). Times are CPU seconds of the process
(user + system), so other jobs on the machine inflate them less than wall time, but memory-bound steps still
slow down when the memory bus is shared.
"""

import argparse
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli


def original_paint_border_overlap(imgs, patch_h, patch_w, stride_h, stride_w):
    """Zero padding at the bottom/right so that whole patches at the stride cover the image (channels first)."""
    n, c, h, w = imgs.shape
    leftover_h, leftover_w = (h - patch_h) % stride_h, (w - patch_w) % stride_w
    if leftover_h:
        tmp = np.zeros((n, c, h + stride_h - leftover_h, w))
        tmp[:, :, :h, :] = imgs
        imgs = tmp
    if leftover_w:
        tmp = np.zeros((n, c, imgs.shape[2], w + stride_w - leftover_w))
        tmp[:, :, :, :w] = imgs
        imgs = tmp
    return imgs


def original_extract_ordered_overlap(imgs, patch_h, patch_w, stride_h, stride_w):
    """One patch at a time, image -> row -> column, into a float64 (N, C, ph, pw) array."""
    n, c, h, w = imgs.shape
    rows, cols = (h - patch_h) // stride_h + 1, (w - patch_w) // stride_w + 1
    patches = np.empty((n * rows * cols, c, patch_h, patch_w))
    k = 0
    for i in range(n):
        for r in range(rows):
            for col in range(cols):
                patches[k] = imgs[i, :, r * stride_h:r * stride_h + patch_h, col * stride_w:col * stride_w + patch_w]
                k += 1
    return patches


def original_recompone_overlap(preds, img_h, img_w, stride_h, stride_w):
    """Sum of the patches and of their coverage, one patch at a time, then the per-pixel average."""
    _, c, patch_h, patch_w = preds.shape
    rows, cols = (img_h - patch_h) // stride_h + 1, (img_w - patch_w) // stride_w + 1
    n = preds.shape[0] // (rows * cols)
    full_prob = np.zeros((n, c, img_h, img_w))
    full_sum = np.zeros((n, c, img_h, img_w))
    k = 0
    for i in range(n):
        for r in range(rows):
            for col in range(cols):
                rows_ = slice(r * stride_h, r * stride_h + patch_h)
                cols_ = slice(col * stride_w, col * stride_w + patch_w)
                full_prob[i, :, rows_, cols_] += preds[k]
                full_sum[i, :, rows_, cols_] += 1
                k += 1
    return full_prob / full_sum


def original_extract_random(imgs, masks, patch_h, patch_w, n_patches, seed=0):
    """Python ``random.randint`` centres, one patch at a time (the FOV rule off, as the original's call)."""
    rng = random.Random(seed)
    n, c, h, w = imgs.shape
    per_img = n_patches // n
    patches = np.empty((n_patches, c, patch_h, patch_w))
    patches_masks = np.empty((n_patches, masks.shape[1], patch_h, patch_w))
    k = 0
    for i in range(n):
        for _ in range(per_img):
            x = rng.randint(patch_w // 2, w - patch_w // 2)
            y = rng.randint(patch_h // 2, h - patch_h // 2)
            patches[k] = imgs[i, :, y - patch_h // 2:y + patch_h // 2, x - patch_w // 2:x + patch_w // 2]
            patches_masks[k] = masks[i, :, y - patch_h // 2:y + patch_h // 2, x - patch_w // 2:x + patch_w // 2]
            k += 1
    return patches, patches_masks


def fill_sample_outputs(n, patch_h, patch_w):
    """Allocate the float32 image and uint8 mask patch arrays of ``n`` patches and write every byte once: the
    memory traffic any random sampler must do (the floor behind the benches' sampling ceiling)."""
    for dtype in (np.float32, np.uint8):
        np.empty((n, patch_h, patch_w, 1), dtype).fill(1)


def _timed(fn, *args, **kw):
    """``(result, seconds)``: CPU seconds of this process (user + system; NumPy here is single-threaded, so
    this equals the wall time on an idle machine and is not inflated by other jobs sharing the cores)."""
    start = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - start


def main(argv=None):
    from common.data.patches import extract_ordered_overlap, extract_random, recompose_overlap

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20, help="number of images (default: %(default)s)")
    parser.add_argument("--height", type=int, default=584, help="default: %(default)s")
    parser.add_argument("--width", type=int, default=565, help="default: %(default)s")
    parser.add_argument("--patch", type=int, default=64, help="default: %(default)s")
    parser.add_argument("--stride", type=int, default=5, help="default: %(default)s")
    parser.add_argument("--random-patches", type=int, default=40_000,
                        help="random patches in total (default: %(default)s; the original draws 200,000)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    imgs = rng.random((args.images, args.height, args.width, 1)).astype(np.float32)  # channels last, ours
    imgs_cf = imgs.transpose(0, 3, 1, 2).astype(np.float64)  # channels first float64, the original's
    p, s = args.patch, args.stride
    rows = []

    def report(name, t_orig, t_ours, note=""):
        rows.append((name, t_orig, t_ours))
        print(f"{name:<34s} original {t_orig:8.2f} s   ours {t_ours:7.3f} s   ratio {t_orig / t_ours:7.1f}x {note}",
              flush=True)

    # overlapping extraction (padding included)
    padded_cf, t_pad = _timed(original_paint_border_overlap, imgs_cf, p, p, s, s)
    orig_patches, t_ext = _timed(original_extract_ordered_overlap, padded_cf, p, p, s, s)
    # the view costs milliseconds: best of 5, so one page fault or scheduler tick does not decide the ratio
    t_view = min(_timed(extract_ordered_overlap, imgs, p, s, materialize=False)[1] for _ in range(5))
    ours, t_ours = _timed(extract_ordered_overlap, imgs, p, s)
    assert np.array_equal(ours[..., 0], orig_patches[:, 0]), "extraction differs"
    print(f"{len(ours):,} overlapping {p}x{p} patches of {args.images} images {args.height}x{args.width}, "
          f"stride {s}")
    report("overlap extraction (copy)", t_pad + t_ext, t_ours, "(float64 vs float32 copy)")
    report("overlap extraction (zero-copy view)", t_pad + t_ext, t_view, "(read-only view, nothing copied)")

    # recomposition of the same patches
    orig_back, t_orig = _timed(original_recompone_overlap, orig_patches, padded_cf.shape[2], padded_cf.shape[3], s, s)
    del orig_patches
    ours_back, t_ours = _timed(recompose_overlap, ours, imgs.shape, s)
    assert np.array_equal(ours_back, imgs), "recomposition is not exact"
    assert np.allclose(orig_back[:, 0, :args.height, :args.width], imgs[..., 0]), "original recomposition"
    touch = ours.nbytes
    _, t_floor = _timed(np.add.reduce, ours, axis=0)  # one bare read of every patch value: a bandwidth floor
    del ours, orig_back
    report("overlap recomposition", t_orig, t_ours,
           f"(reads {touch / 1e9:.1f} GB of patches; one bare sum over them takes {t_floor:.2f} s, so no "
           f"implementation can exceed {t_orig / t_floor:.0f}x here)")

    # random sampling from the 565 x 565 crops
    top = max(0, (args.height - args.width) // 2)
    crop = imgs[:, top:top + min(args.height, args.width)]
    masks = (crop > 0.5).astype(np.uint8)
    n = args.random_patches - args.random_patches % args.images
    (o_x, _), t_orig = _timed(original_extract_random, crop.transpose(0, 3, 1, 2).astype(np.float64),
                              masks.transpose(0, 3, 1, 2).astype(np.float64), p, p, n)
    del o_x
    (r_x, r_y), t_ours = _timed(extract_random, crop, masks, n, p, seed=0)
    assert r_x.shape == (n, p, p, 1) and r_y.dtype == np.uint8
    del r_x, r_y
    _, t_floor = _timed(fill_sample_outputs, n, p, p)
    report(f"random sampling ({n:,} patches)", t_orig, t_ours,
           f"(image + mask patches; writing the outputs once takes {t_floor:.2f} s, so no implementation can "
           f"exceed {t_orig / t_floor:.0f}x here)")
    return rows


if __name__ == "__main__":
    sys.exit(cli.run(main) and 0)
