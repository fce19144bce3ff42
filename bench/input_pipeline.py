"""Benchmark: batches/s each task's training input pipeline delivers with no model attached, against the step
rate a GPU would ask for.

For each task at its paper input size and batch, on random arrays stored as the task stores them (dtype,
memory map on disk) and with the task's own batch transform (``common.training.array_dataset(...,
transform=...)`` of its train script):

* batches/s of the whole pipeline (shuffled, as in training), with 1 and with ``--parallel`` map calls;
* the parts of one batch timed alone in NumPy: the gather of the shuffled indices from the memory map, the
  cast to float32 and the task's transform (normalisation), so the bound is named;
* the step rate a GPU needs: a stated peak (``--gpu-tflops``, default 400 TFLOP/s float16) divided by the
  step's FLOPs (``bench/train_step.py``'s count, 3x the forward pass), and the goal ratio (3x that rate).

Not covered: retinal_edema and robotic_scene, whose pipelines decode image files (BMP slices, PNG frames)
rather than gather from arrays; their decode rate is not measured here.

    python bench/input_pipeline.py
    python bench/input_pipeline.py --tasks lung fingernail --parallel 4 --seconds 5
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402


def _identity(xb, yb):
    return xb, yb


def _transform(task):
    """The batch transform of the task's train script (imported from it)."""
    if task == "skin_lesion":
        from skin_lesion.train_isic18 import normalise_batch

        return normalise_batch
    if task == "lung":
        from lung.train_lung import scale_images

        return scale_images
    if task == "fingernail":
        from fingernail.train import scale_images

        return scale_images
    return _identity  # nerve: normalised float32 in memory; DRIVE: preprocessed float32 patches


# task -> (model case of bench/train_step.py / bench/gpu.py, image dtype, mask dtype, training samples, note)
TASKS = {
    "ultrasound_nerve": ("nerve_unet", np.float32, np.float32, 4508, "normalised float32 array in memory"),
    "skin_lesion": ("bcdu_net_d3@256", np.uint8, np.uint8, 1815, "uint8 memory maps, dataset_normalized"),
    "retina_vessel": ("bcdu_net_d3@64", np.float32, np.uint8, 160000, "float32 patch memory maps"),
    "lung": ("bcdu_net_d3@512", np.uint8, np.uint8, 2000, "uint8 slices / 255 (2,000 slices assumed)"),
    "fingernail": ("unet2d_8_128", np.uint8, np.uint8, 172, "uint8 photos / 255"),
}


def _arrays(folder, task, shape, n):
    """Random image and mask memory maps of ``n`` samples, as the task stores them."""
    _, x_dtype, y_dtype, _, _ = TASKS[task]
    rng = np.random.default_rng(0)
    arrays = []
    for name, dtype, sample in (("x", x_dtype, shape), ("y", y_dtype, shape[:2] + (1,))):
        path = Path(folder) / f"{task}_{name}.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n,) + tuple(sample))
        for start in range(0, n, 256):
            block = rng.random((min(256, n - start),) + tuple(sample), dtype=np.float32)
            out[start:start + len(block)] = (block * 255).astype(dtype) if dtype == np.uint8 else block
        out.flush()
        del out
        arrays.append(np.load(path, mmap_mode="r" if task != "ultrasound_nerve" else None))
    return arrays


def _rate(fn, seconds):
    """Calls per second of ``fn`` over at least ``seconds`` (after one warm-up call)."""
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def measure(task, parallel, seconds, folder, max_samples):
    import keras

    from bench.gpu import ALL_CASES
    from bench.train_step import forward_flops
    from common.models import build_model
    from common.training import array_dataset

    case = TASKS[task][0]
    model_name, shape, batch, _ = ALL_CASES[case]
    gflop = 3 * forward_flops(build_model(model_name, shape)) * batch / 1e9
    keras.backend.clear_session()
    n = min(TASKS[task][3], max_samples)
    x, y = _arrays(folder, task, shape, n)
    transform = _transform(task)
    result = {"task": task, "case": case, "input": "x".join(map(str, shape)), "batch": batch, "gflop": gflop,
              "samples": n}
    for calls in sorted({1, parallel}):
        ds = array_dataset(x, y, batch_size=batch, shuffle=True, seed=0, transform=transform,
                           num_parallel_calls=calls)
        iterator = iter(ds.repeat())
        result[f"pipeline_{calls}"] = _rate(lambda: next(iterator), seconds)
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(n, batch, replace=False))
    xb, yb = np.asarray(x[idx]), np.asarray(y[idx])
    xf, yf = xb.astype(np.float32), yb.astype(np.float32)
    result["gather"] = _rate(lambda: (np.asarray(x[np.sort(rng.choice(n, batch, replace=False))]),
                                      np.asarray(y[idx])), seconds / 2)
    result["cast"] = _rate(lambda: (xb.astype(np.float32), yb.astype(np.float32)), seconds / 2)
    result["transform"] = _rate(lambda: transform(xf, yf), seconds / 2)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--parallel", type=int, default=4, help="map calls of the parallel pipeline (default 4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement (default 3 s)")
    parser.add_argument("--gpu-tflops", type=float, default=400.0,
                        help="GPU peak the step rate is computed for (default: 400 TFLOP/s float16)")
    parser.add_argument("--max-samples", type=int, default=4096,
                        help="samples in each random memory map (default 4096; fewer when the task has fewer)")
    args = parser.parse_args(argv)
    header = (f"| task | model | input | batch | GFLOP/step | GPU step rate at {args.gpu_tflops:g} TFLOP/s | "
              f"pipeline batches/s 1 / {args.parallel} calls | ratio to the step rate (goal 3) | "
              "gather / cast / transform alone, batches/s | bound |")
    lines = [header, "|" + "---|" * 10]
    print(header + "\n" + lines[1], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for task in args.tasks:
            r = measure(task, args.parallel, args.seconds, folder, args.max_samples)
            need = args.gpu_tflops * 1e3 / r["gflop"]
            best = max(r["pipeline_1"], r[f"pipeline_{args.parallel}"])
            parts = {"gather": r["gather"], "cast": r["cast"], "transform": r["transform"]}
            slowest = min(parts, key=parts.get)
            if best >= 3 * need:
                bound = "meets the goal"
            elif parts[slowest] >= 3 * need:  # every part alone is fast enough: the pipeline's own cost per batch
                bound = f"per-batch cost of the tf.data map ({1e3 / best:.2g} ms a batch; each part alone is faster)"
            else:
                bound = f"{slowest} ({parts[slowest]:.3g}/s alone, {parts[slowest] / (3 * need):.2g}x of the goal)"
            line = (f"| {task} | {r['case']} | {r['input']} | {r['batch']} | {r['gflop']:.1f} | {need:.1f}/s | "
                    f"{r['pipeline_1']:.1f} / {r[f'pipeline_{args.parallel}']:.1f} | {best / need:.2f} | "
                    f"{r['gather']:.3g} / {r['cast']:.3g} / {r['transform']:.3g} | {bound} |")
            lines.append(line)
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
