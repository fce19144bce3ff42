"""Benchmark: the originals' data tools (straightforward loops, written here) vs the project's, side by side.

Each section runs in its own subprocess, so the peak RSS printed is that section's alone:

* ``extract``   overlapping 64x64 patches at stride 5 from 20 DRIVE-sized (584x565) images;
* ``recompose`` averaging those patches back into images;
* ``sample``    200,000 random 64x64 patches from 20 cropped 565x565 images;
* ``drive_eval`` the sliding-window predictor over the 20 images (patches streamed through a model in
  batches; a small stand-in network, since memory, not the model, is what is measured: the real bcdu_net_d3
  needs ~3 h here for the 214,200 patches);
* ``submission`` threshold + resize to 420x580 + RLE of 5,508 predicted 96x96 masks (the nerve test set);
* ``isic``      preparing 2,594 ISIC-sized JPG/PNG pairs (written first; the time is the preparation's).

The loop versions are timed on a sample and extrapolated where a full run would take minutes (``--full``
times them on everything). Goals (issue 9): >= 50x on extract, recompose and sample; submission < 3 s;
DRIVE evaluation peak RSS < 2 GB; ISIC preparation peak RSS < 1 GB.

The ``ceiling`` column bounds what any implementation could reach for recompose and sample: the loop's time
divided by one bare pass over the data the operation must touch (one sum over all the patches; one
allocation and fill of the sampled patch arrays), measured in the same run.

    python bench/data_tools.py                       # every section
    python bench/data_tools.py --sections submission isic
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

SECTIONS = ("extract", "recompose", "sample", "drive_eval", "submission", "isic")
GOALS = {"extract": "ratio >= 50x", "recompose": "ratio >= 50x", "sample": "ratio >= 50x",
         "drive_eval": "peak RSS < 2 GB", "submission": "ours < 3 s", "isic": "peak RSS < 1 GB"}


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- DRIVE patches
def _bench_dir_importable():
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)


def drive_images(n=20, height=584, width=565, seed=0):
    """(n, H, W, 1) float32 in [0, 1], the preprocessed DRIVE test set's shape."""
    return np.random.default_rng(seed).random((n, height, width, 1)).astype(np.float32)


def bench_extract(args):
    _bench_dir_importable()
    from patches import original_extract_ordered_overlap, original_paint_border_overlap

    from common.data.patches import extract_ordered_overlap

    imgs = drive_images(args.images)
    k = args.images if args.full else args.loop_images
    sample = imgs[:k].transpose(0, 3, 1, 2).astype(np.float64)  # the original's channels-first float64
    t0 = time.perf_counter()
    ref = original_extract_ordered_overlap(original_paint_border_overlap(sample, 64, 64, 5, 5), 64, 64, 5, 5)
    t_loop = (time.perf_counter() - t0) * args.images / k
    view, t_view = _timed(extract_ordered_overlap, imgs, 64, 5, materialize=False)
    t_view = min([t_view] + [_timed(extract_ordered_overlap, imgs, 64, 5, materialize=False)[1] for _ in range(4)])
    assert np.array_equal(view[:k].reshape(-1, 64, 64, 1)[..., 0], ref[:, 0]), "extraction differs"
    del ref
    _, t_copy = _timed(np.ascontiguousarray, view)
    return {"items": f"{int(np.prod(view.shape[:3])):,} patches", "loop_s": t_loop, "ours_s": t_view,
            "loop_note": ("measured" if args.full else f"from {k} images") +
                         f"; ours = zero-copy view, a float32 copy of it takes {t_copy:.2f} s"}


def bench_recompose(args):
    _bench_dir_importable()
    from patches import original_recompone_overlap

    from common.data.patches import extract_ordered_overlap, grid_shape, recompose_overlap

    imgs = drive_images(args.images)
    patches = extract_ordered_overlap(imgs, 64, 5)
    ours, t_ours = _timed(recompose_overlap, patches, imgs.shape, 5)
    assert np.array_equal(ours, imgs), "recomposition is not exact"
    k = args.images if args.full else args.loop_images
    rows, cols = grid_shape(imgs.shape[1:3], 64, 5)
    sample = patches[: k * rows * cols].transpose(0, 3, 1, 2).astype(np.float64)
    ref, t_loop = _timed(original_recompone_overlap, sample, rows * 5 + 59, cols * 5 + 59, 5, 5)
    assert np.allclose(ref[:, 0, :imgs.shape[1], :imgs.shape[2]], imgs[:k, ..., 0])
    nbytes = patches.nbytes
    _, t_floor = _timed(np.add.reduce, patches, axis=0)  # reads every patch value once, writes nothing
    return {"items": f"{len(patches):,} patches", "loop_s": t_loop * args.images / k, "ours_s": t_ours,
            "floor_s": t_floor,
            "loop_note": ("measured" if args.full else f"from {k} images") +
                         f"; any recomposition reads the {nbytes / 1e9:.1f} GB of patches: one plain sum over "
                         f"them takes {t_floor:.2f} s"}


def bench_sample(args):
    _bench_dir_importable()
    from patches import fill_sample_outputs, original_extract_random

    from common.data.patches import extract_random

    crops = drive_images(args.images, 565, 565)
    masks = (crops > 0.5).astype(np.uint8)
    n = args.random_patches - args.random_patches % args.images
    (x, y), t_ours = _timed(extract_random, crops, masks, n, 64, seed=0)
    assert x.shape == (n, 64, 64, 1) and y.shape == (n, 64, 64, 1)
    nbytes = x.nbytes + y.nbytes
    del x, y
    _, t_floor = _timed(fill_sample_outputs, n, 64, 64)
    k = n if args.full else max(args.images, args.loop_patches - args.loop_patches % args.images)
    _, t_loop = _timed(original_extract_random, crops.transpose(0, 3, 1, 2).astype(np.float64),
                       masks.transpose(0, 3, 1, 2).astype(np.float64), 64, 64, k)
    return {"items": f"{n:,} patches", "loop_s": t_loop * n / k, "ours_s": t_ours, "floor_s": t_floor,
            "loop_note": ("measured" if args.full else f"from {k:,} patches") +
                         f"; any sampler writes the {nbytes / 1e9:.1f} GB of patches: allocating and filling "
                         f"them once takes {t_floor:.2f} s"}


def bench_drive_eval(args):
    import keras

    from common.inference import predict_sliding_window

    imgs = drive_images(args.images)
    inputs = keras.Input((64, 64, 1))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(hidden))
    prob, t_ours = _timed(predict_sliding_window, model, imgs, 64, 5, batch_size=16)
    assert prob.shape == imgs.shape
    patches = len(imgs) * 105 * 102
    return {"items": f"{patches:,} patches", "loop_s": None, "ours_s": t_ours,
            "loop_note": f"stand-in 2-layer network; the original holds {patches * 4096 * 8 * 2 / 1e9:.0f} GB "
                         "of float64 patches and predictions"}


# ---------------------------------------------------------------------------------------------- submission
def nerve_predictions(n=5508, size=96, seed=0):
    """(n, 96, 96, 1) float32 probabilities: about 40 % with a nerve-sized blob, the rest near zero."""
    from common.data.synthetic import ellipse_mask, smooth_noise

    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(200):
        prob = 0.1 * np.abs(smooth_noise(rng, (size, size), 3)) / 4
        if rng.random() < 0.4:
            prob = np.maximum(prob, 0.9 * ellipse_mask((size, size), rng.uniform(25, 70, 2), rng.uniform(6, 14, 2),
                                                       rng.uniform(-30, 30)))
        pool.append(prob.astype(np.float32))
    return np.stack([pool[i % len(pool)] for i in range(n)])[..., None]


def original_submission(preds, threshold=0.5, min_pixels=10):
    """The tutorial's loop (with its resize bugs fixed so both give the same strings): per mask, threshold,
    bilinear resize to 420x580, threshold, then a Python loop over the foreground pixels."""
    import cv2

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rle import loop_rle

    out = []
    for pred in preds:
        binary = (pred[:, :, 0] > threshold).astype(np.float32)
        mask = cv2.resize(binary, (580, 420), interpolation=cv2.INTER_LINEAR) > 0.5
        out.append(loop_rle(mask) if mask.sum() >= min_pixels else "")
    return out


def bench_submission(args):
    from ultrasound_nerve.submission import encode_predictions

    preds = nerve_predictions(args.masks)
    ours, t_ours = _timed(encode_predictions, preds, verbose=False)
    sample = preds if args.full else preds[: args.loop_sample]
    ref, t_loop = _timed(original_submission, sample)
    assert ref == ours[: len(ref)], "submission strings differ"
    t_loop *= len(preds) / len(sample)
    return {"items": f"{len(preds)} masks", "loop_s": t_loop, "ours_s": t_ours, "met": t_ours < 3.0,
            "loop_note": "measured" if args.full else f"from {len(sample)}"}


# ---------------------------------------------------------------------------------------------- ISIC
def bench_isic(args):
    from common.data.synthetic import write_isic_dataset
    from skin_lesion.prepare_isic2018 import prepare

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        write_isic_dataset(raw, n_images=args.isic_images, seed=0)
        n = args.isic_images
        n_val, n_test = round(n * 259 / 2594), round(n * 520 / 2594)
        splits = (("train", n - n_val - n_test), ("val", n_val), ("test", n_test))
        _, t_ours = _timed(prepare, raw, Path(tmp) / "out", splits=splits, verbose=False)
    float64_gb = args.isic_images * 256 * 256 * 4 * 8 / 1e9  # images + masks as the original's float64
    return {"items": f"{args.isic_images} images", "loop_s": None, "ours_s": t_ours,
            "loop_note": f"original holds {float64_gb:.1f} GB of float64 arrays"}


RUNNERS = {"extract": bench_extract, "recompose": bench_recompose, "sample": bench_sample,
           "drive_eval": bench_drive_eval, "submission": bench_submission, "isic": bench_isic}


def _run_section(name, args):
    """In a subprocess: run one section and print its result (with this process's peak RSS) as JSON."""
    result = RUNNERS[name](args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--full", action="store_true", help="time the loop versions on everything")
    parser.add_argument("--images", type=int, default=20, help="DRIVE sections: number of images")
    parser.add_argument("--loop-images", type=int, default=2, help="extract/recompose: images timed with loops")
    parser.add_argument("--random-patches", type=int, default=200_000, help="sample: patches drawn")
    parser.add_argument("--loop-patches", type=int, default=20_000, help="sample: patches timed with the loop")
    parser.add_argument("--masks", type=int, default=5508, help="submission: number of masks")
    parser.add_argument("--loop-sample", type=int, default=600, help="submission: masks timed with the loop")
    parser.add_argument("--isic-images", type=int, default=2594, help="isic: number of image/mask pairs")
    parser.add_argument("--_section", choices=SECTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._section:
        return _run_section(args._section, args)

    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    rows = []
    for name in args.sections:
        if name not in RUNNERS:
            print(f"{name}: not available", flush=True)
            continue
        print(f"running {name} ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, *forwarded, "--_section", name], capture_output=True,
                              text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(proc.stdout[-2000:] + proc.stderr[-4000:])
            print(f"section {name} failed", flush=True)
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        ratio = r["loop_s"] / r["ours_s"] if r.get("loop_s") else None
        ceiling = r["loop_s"] / r["floor_s"] if r.get("loop_s") and r.get("floor_s") else None
        rows.append((name, r["items"], r.get("loop_s"), r["ours_s"], ratio, ceiling, r["peak_rss_mb"],
                     GOALS[name], r.get("loop_note", "")))
    print("\n| section | data | originals' loops (s) | ours (s) | ratio | ceiling | peak RSS (MB) | goal | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|---|")
    for name, items, t_loop, t_ours, ratio, ceiling, rss, goal, note in rows:
        loop = f"{t_loop:.2f}" if t_loop else "-"
        rat = f"{ratio:.0f}x" if ratio else "-"
        ceil = f"{ceiling:.0f}x" if ceiling else "-"
        print(f"| {name} | {items} | {loop} | {t_ours:.2f} | {rat} | {ceil} | {rss:.0f} | {goal} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
