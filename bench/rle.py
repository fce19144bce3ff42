"""Benchmark: Kaggle RLE of 5,508 masks of 420x580 (the nerve test-set size).

Compares ``common.rle.rle_encode`` (vectorised) with a straightforward per-image Python loop over the
foreground pixels, as in the tutorial's ``run_length_enc``, written here. Both see the same masks (about 40 %
with a nerve-sized ellipse, the rest empty, as in the Kaggle data). The loop is timed on a sample and
extrapolated unless ``--full-loop`` is given. Goal: the vectorised encoder under 2 s for all 5,508 masks.

    python bench/rle.py
"""

import argparse
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from common.data.synthetic import ellipse_mask  # noqa: E402
from common.rle import rle_encode  # noqa: E402


def loop_rle(mask):
    """The straightforward encoder: walk the foreground pixel numbers one by one."""
    pixels = np.where(mask.T.flatten() > 0)[0]
    runs, prev = [], -2
    for p in pixels:
        if p > prev + 1:
            runs.extend((p + 1, 0))
        runs[-1] += 1
        prev = p
    return " ".join(str(r) for r in runs)


def make_masks(n, shape=(420, 580), distinct=200, seed=0):
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(distinct):
        if rng.random() < 0.4:
            pool.append(ellipse_mask(shape, (rng.uniform(100, 320), rng.uniform(100, 480)),
                                     (rng.uniform(25, 50), rng.uniform(35, 70)), rng.uniform(-30, 30)))
        else:
            pool.append(np.zeros(shape, np.uint8))
    return [pool[i % distinct] for i in range(n)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=int, default=5508)
    parser.add_argument("--loop-sample", type=int, default=600, help="masks timed with the loop encoder")
    parser.add_argument("--full-loop", action="store_true", help="time the loop encoder on all masks")
    args = parser.parse_args(argv)
    masks = make_masks(args.masks)
    t0 = time.perf_counter()
    ours = [rle_encode(m) for m in masks]
    t_ours = time.perf_counter() - t0
    sample = masks if args.full_loop else masks[: args.loop_sample]
    t0 = time.perf_counter()
    ref = [loop_rle(m) for m in sample]
    t_loop = (time.perf_counter() - t0) * len(masks) / len(sample)
    assert ref == ours[: len(ref)], "encoders disagree"
    print(f"masks: {len(masks)} of 420x580 ({sum(bool(r) for r in ours)} non-empty)")
    print(f"vectorised rle_encode : {t_ours:7.2f} s  (goal < 2 s: {'met' if t_ours < 2 else 'NOT met'})")
    print(f"per-pixel Python loop : {t_loop:7.2f} s  ({'measured' if args.full_loop else f'from {len(sample)} masks'})")
    print(f"ratio                 : {t_loop / t_ours:7.1f}x")


if __name__ == "__main__":
    main()
