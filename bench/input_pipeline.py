"""Benchmark: batches/s each task's training input pipeline delivers with no model attached, against the step
rate a GPU (or this CPU in bfloat16) would ask for.

For each of the seven tasks at its paper input size and batch, with the task's own training pipeline:

* array tasks (nerve, ISIC, DRIVE, lung, fingernail): ``common.training.array_dataset(..., transform=...)`` of
  the train script on random memory maps stored as the task stores them (dtype, on disk);
* file tasks: retinal_edema's ``training_dataset`` (1024x512 RGB PNG slices and grey BMP labels, read per
  batch, flipped, normalised) and robotic_scene's ``make_dataset`` (1024x1280 RGB PNG frames and index-mask
  PNGs, decoded, flipped, normalised), on synthetic files of that size and format written to a temporary
  folder (smooth images with noise, so that PNG compresses them about as much as photographs);

and reports:

* batches/s of the whole pipeline (shuffled, as in training), with 1 and with ``--parallel`` map calls (the
  train scripts' ``--data-workers``);
* the parts of one batch timed alone, so the bound is named: array tasks: the gather of the shuffled indices
  from the memory map and the task's transform (normalisation and the cast to float32); file tasks: reading
  and decoding the batch's files and the normalisation;
* a realistic device step rate to compare with (goal: the pipeline delivers 3x it), each part stated:
  - GPU: the smaller of the FLOP-bound rate (a stated peak, ``--gpu-tflops``, default 400 TFLOP/s float16,
    divided by the step's FLOPs: ``bench/train_step.py``'s count, 3x the forward pass) and the launch-bound
    rate (``1 / (kernels per step x --launch-us``, default 5 microseconds)), kernels per step counted from the
    model: the operations of one traced training step (forward, gradients, Adam; without XLA), less those
    that launch no kernel (constants, variable reads, reshapes, ...). A small network cannot run faster than
    its kernels can be launched, whatever its FLOPs;
  - CPU: the measured bfloat16 step rate of this machine, from ``bench/train_step.py --mixed-precision
    bfloat16``'s results (``--cpu-results``; "to be measured" when the file or the model's row is missing);
* for the array tasks whose data fit in ``--in-memory-gb`` (default 4 GB of float32), the pipeline with the
  data held in memory as tensors (``array_dataset(in_memory=True)``, the train scripts' ``--in-memory``);
* for the two file tasks, the pipeline of their train scripts' ``--decode-cache`` (the files decoded once
  into uint8 memory maps, batches gathered from them and handed over as uint8; the normalisation runs in
  the training step on the device, so it is not part of the pipeline), the better of 1 and ``--parallel``
  map calls, and its part alone: the gather (with the flips) from the cache.

    python bench/input_pipeline.py
    python bench/input_pipeline.py --tasks lung fingernail --parallel 4 --seconds 5
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402


def _identity(xb, yb):
    return np.asarray(xb, np.float32), np.asarray(yb, np.float32)


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
    "retinal_edema": ("unet_nested", None, None, 8960, "RGB PNG slices + BMP labels, read per batch"),
    "robotic_scene": ("tdsnet", None, None, 1639, "RGB PNG frames + PNG masks, tf.io.decode_png"),
}
FILE_TASKS = ("retinal_edema", "robotic_scene")
FILES = 16  # synthetic files written per file task (the pipeline repeats them)


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


def _photo(rng, shape):
    """A smooth RGB image with noise (compresses in PNG roughly like a photograph)."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    phase = rng.random(3) * 6.3
    base = np.stack([np.sin(xx / (40 + 20 * c) + yy / 55 + phase[c]) for c in range(3)], axis=-1)
    noise = rng.normal(0, 6, (rows, cols, 3))
    return np.clip(120 + 80 * base + noise, 0, 255).astype(np.uint8)


def _file_pipeline(task, folder, shape, batch, calls, cached=False):
    """(dataset, read_batch, normalise) of a file task over ``FILES`` synthetic files in ``folder``;
    ``cached``: the dataset of ``--decode-cache`` (decoded once into ``folder/<task>/cache``)."""
    from common.data.io import write_image

    rng = np.random.default_rng(0)
    folder = Path(folder) / task
    rows, cols = shape[:2]
    if task == "retinal_edema":
        from retinal_edema import dataset

        images, labels = [], []
        for k in range(FILES):
            image, label = f"cube.img/{k:03d}.png", f"cube_labelMark/{k + 1}.bmp"
            if not (folder / label).is_file():
                write_image(folder / image, _photo(rng, (rows, cols)))
                grey = np.zeros((rows, cols), np.uint8)
                grey[rows // 3:rows // 2, cols // 4:cols // 2] = dataset.GREY_CODES[k % 3]
                write_image(folder / label, grey)
            images.append(image)
            labels.append(label)
        mean, std = (np.float32(dataset.ORIGINAL_STATS[k]) for k in ("mean", "std"))
        cache = dataset.decoded_slices(folder, images, labels, folder / "cache", verbose=False) if cached else None
        ds = dataset.training_dataset(folder, images, labels, batch, mean, std, flip=True, seed=0,
                                      num_parallel_calls=calls, cache=cache)

        def read_batch(start):
            return [dataset.load_pair(folder, images[(start + i) % FILES], labels[(start + i) % FILES])
                    for i in range(batch)]

        first = np.stack([p[0] for p in read_batch(0)])
        return ds, read_batch, lambda: dataset.normalise(first, mean, std)
    import tensorflow as tf

    from robotic_scene import train

    frames = []
    for k in range(FILES):
        image, mask = folder / "images" / f"{k:03d}.png", folder / "masks" / f"{k:03d}.png"
        if not mask.is_file():
            write_image(image, _photo(rng, (rows, cols)))
            index = np.zeros((rows, cols), np.uint8)
            index[rows // 4:rows // 2, cols // 3:cols // 2] = 1 + k % 10
            write_image(mask, index)
        frames.append((image, mask, 1))
    cache = train.decoded_frames(frames, folder / "cache", verbose=False) if cached else None
    ds = train.make_dataset(frames, (rows, cols), batch, augment=True, shuffle=True, seed=0,
                            num_parallel_calls=calls, cache=cache)

    def read_batch(start):
        return [(tf.io.decode_png(tf.io.read_file(str(frames[(start + i) % FILES][0])), channels=3),
                 tf.io.decode_png(tf.io.read_file(str(frames[(start + i) % FILES][1])), channels=1))
                for i in range(batch)]

    first = tf.stack([p[0] for p in read_batch(0)])
    return ds, read_batch, lambda: np.asarray(train.normalise_images(first, "torch"))


def _rate(fn, seconds):
    """Calls per second of ``fn`` over at least ``seconds`` (after one warm-up call)."""
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


#: Graph operations that launch no device kernel (metadata, variable handles, views).
NO_KERNEL = {"Const", "ReadVariableOp", "Placeholder", "Identity", "IdentityN", "NoOp", "Shape", "ShapeN", "Size",
             "Rank", "Reshape", "Squeeze", "ExpandDims", "StopGradient", "VarHandleOp", "BroadcastGradientArgs"}


def kernels_per_step(model):
    """Device kernels of one training step of ``model`` without XLA: the operations of its traced
    ``train_step`` (forward, gradients, Adam update) less the ``NO_KERNEL`` ones. Compiles ``model``."""
    import collections

    import keras
    import tensorflow as tf

    from bench.train_step import _loss_for

    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=_loss_for(model))
    model.optimizer.build(model.trainable_variables)

    def spec(tensor):
        return tf.TensorSpec((1,) + tuple(tensor.shape[1:]), tf.float32)

    if isinstance(model.output, dict):
        y = {k: spec(v) for k, v in model.output.items()}
    elif len(model.outputs) > 1:
        y = {name: spec(t) for name, t in zip(model.output_names, model.outputs)}
    else:
        y = spec(model.output)
    graph = tf.function(model.train_step).get_concrete_function((spec(model.input), y)).graph
    kinds = collections.Counter(op.type for op in graph.get_operations())
    return sum(count for kind, count in kinds.items() if kind not in NO_KERNEL)


def cpu_step_rates(path):
    """``{case: bfloat16 steps/s}`` from ``bench/train_step.py --mixed-precision bfloat16``'s JSON, or ``{}``."""
    import json

    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if results.get("precision") != "bfloat16":
        return {}
    return {row["case"]: row["bfloat16_img_s"] / row["batch"] for row in results.get("rows", [])
            if row.get("bfloat16_img_s")}


def device_rates(gflop, kernels, gpu_tflops, launch_us, cpu_rate=None):
    """``{"flop", "launch", "gpu", "cpu"}`` steps/s: the GPU's FLOP-bound and launch-bound rates, the smaller
    of the two (the realistic GPU rate) and the measured CPU bfloat16 rate (``None``: not measured)."""
    flop = gpu_tflops * 1e3 / gflop
    launch = 1e6 / (kernels * launch_us)
    return {"flop": flop, "launch": launch, "gpu": min(flop, launch), "cpu": cpu_rate}


def measure(task, parallel, seconds, folder, max_samples, in_memory_gb=4.0):
    import keras

    from bench.gpu import ALL_CASES
    from bench.train_step import forward_flops
    from common.models import build_model

    case = TASKS[task][0]
    model_name, shape, batch, _ = ALL_CASES[case]
    model = build_model(model_name, shape)
    gflop = 3 * forward_flops(model) * batch / 1e9
    kernels = kernels_per_step(model)
    del model
    keras.backend.clear_session()
    result = {"task": task, "case": case, "input": "x".join(map(str, shape)), "batch": batch, "gflop": gflop,
              "kernels": kernels}
    if task in FILE_TASKS:
        for calls in sorted({1, parallel}):
            ds, read_batch, normalise = _file_pipeline(task, folder, shape, batch, calls)
            iterator = iter(ds.repeat())
            result[f"pipeline_{calls}"] = _rate(lambda: next(iterator), seconds)
            ds = _file_pipeline(task, folder, shape, batch, calls, cached=True)[0]
            iterator = iter(ds.repeat())
            result[f"cache_{calls}"] = _rate(lambda: next(iterator), seconds)
        result["decode_cache"] = max(result[f"cache_{calls}"] for calls in {1, parallel})
        start = iter(range(10 ** 9))
        result["parts"] = {"read + decode": _rate(lambda: read_batch(next(start)), seconds / 2),
                           "normalise": _rate(normalise, seconds / 2)}
        return result
    from common.training import array_dataset

    n = min(TASKS[task][3], max_samples)
    x, y = _arrays(folder, task, shape, n)
    transform = _transform(task)
    for calls in sorted({1, parallel}):
        ds = array_dataset(x, y, batch_size=batch, shuffle=True, seed=0, transform=transform,
                           num_parallel_calls=calls)
        iterator = iter(ds.repeat())
        result[f"pipeline_{calls}"] = _rate(lambda: next(iterator), seconds)
    full_gb = TASKS[task][3] * 4 * (np.prod(shape) + np.prod(shape[:2])) / 1e9  # the whole set as float32
    if full_gb <= in_memory_gb:  # (timed on the n samples of the memory maps)
        ds = array_dataset(x, y, batch_size=batch, shuffle=True, seed=0, transform=transform, in_memory=True)
        iterator = iter(ds.repeat())
        result["in_memory"] = _rate(lambda: next(iterator), seconds)
    result["full_gb"] = float(full_gb)
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(n, batch, replace=False))
    xb, yb = np.asarray(x[idx]), np.asarray(y[idx])
    result["parts"] = {
        "gather": _rate(lambda: (np.asarray(x[np.sort(rng.choice(n, batch, replace=False))]), np.asarray(y[idx])),
                        seconds / 2),
        "transform": _rate(lambda: transform(xb, yb), seconds / 2)}  # as array_dataset: stored dtype in
    return result


def best_rate(result, parallel):
    """The fastest of the measured pipelines (files or memory maps, 1 or ``parallel`` calls, in memory, or
    the decode cache)."""
    return max(result["pipeline_1"], result[f"pipeline_{parallel}"], result.get("in_memory", 0.0),
               result.get("decode_cache", 0.0))


def bound(result, need, parallel):
    """What bounds the pipeline: the goal met, the slowest part alone, or the pipeline's own cost per batch."""
    best = best_rate(result, parallel)
    parts = result["parts"]
    slowest = min(parts, key=parts.get)
    cached = result.get("decode_cache", 0.0) == best
    if best >= 3 * need:
        return "meets the goal" + (" with --decode-cache (normalised on the device)" if cached else "")
    if cached:
        return f"the decode cache's gather, flips and tf.data per-batch cost ({1e3 / best:.2g} ms a batch)"
    serial = 1.0 / sum(1.0 / rate for rate in parts.values())  # one batch's parts one after the other
    if serial >= 3 * need:  # the parts together are fast enough: the pipeline's own cost per batch
        return (f"per-batch cost of the tf.data map ({1e3 / best:.2g} ms a batch; its parts take "
                f"{1e3 / serial:.2g} ms)")
    return (f"{slowest} ({parts[slowest]:.3g}/s alone; all parts one after the other {serial:.3g}/s, "
            f"{serial / (3 * need):.2g}x of the goal)")


def main(argv=None):
    from common.data.io import atomic_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--parallel", type=int, default=4, help="map calls of the parallel pipeline (default 4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement (default 3 s)")
    parser.add_argument("--gpu-tflops", type=float, default=400.0,
                        help="GPU peak of the FLOP-bound step rate (default: 400 TFLOP/s float16)")
    parser.add_argument("--launch-us", type=float, default=5.0,
                        help="microseconds per kernel launch of the launch-bound GPU step rate (default: 5)")
    parser.add_argument("--cpu-results", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "train_step_precision.json",
                        help="bench/train_step.py --mixed-precision bfloat16's JSON, for the CPU bfloat16 step "
                             "rate (default: %(default)s)")
    parser.add_argument("--in-memory-gb", type=float, default=4.0,
                        help="also time the in-memory pipeline of array tasks whose whole set fits in this many "
                             "GB as float32 (default: 4)")
    parser.add_argument("--max-samples", type=int, default=4096,
                        help="samples in each random memory map (default 4096; fewer when the task has fewer)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "input_pipeline.md",
                        help="Markdown file for the table (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error(f"--parallel: expected a whole number >= 1, got {args.parallel}")
    if args.launch_us <= 0 or args.gpu_tflops <= 0:
        parser.error("--launch-us/--gpu-tflops: expected numbers > 0")
    cpu_rates = cpu_step_rates(args.cpu_results)
    if args.out.exists() and not args.overwrite:
        print(f"error: --out {args.out}: exists; pass --overwrite to replace it, or another --out", file=sys.stderr)
        return 2
    header = (f"| task | model | input | batch | GFLOP/step | kernels/step | GPU steps/s: FLOP-bound at "
              f"{args.gpu_tflops:g} TFLOP/s / launch-bound at {args.launch_us:g} us / the smaller | CPU bfloat16 "
              f"steps/s (measured) | pipeline batches/s 1 / {args.parallel} calls / in memory (file tasks: decode cache, the better of 1 / {args.parallel} calls) | ratio to the GPU "
              "rate (goal 3) | ratio to the CPU rate | parts alone, batches/s | bound (vs the GPU rate) |")
    lines = [header, "|" + "---|" * 12]
    print(header + "\n" + lines[1], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for task in args.tasks:
            r = measure(task, args.parallel, args.seconds, folder, args.max_samples, args.in_memory_gb)
            rates = device_rates(r["gflop"], r["kernels"], args.gpu_tflops, args.launch_us, cpu_rates.get(r["case"]))
            best = best_rate(r, args.parallel)
            parts = " / ".join(f"{name} {rate:.3g}" for name, rate in r["parts"].items())
            memory = f"{r['in_memory']:.1f}" if "in_memory" in r else \
                (f"decode cache {r['decode_cache']:.1f}" if task in FILE_TASKS else f"- ({r['full_gb']:.1f} GB)")
            cpu = f"{rates['cpu']:.2f}" if rates["cpu"] else "to be measured"
            cpu_ratio = f"{best / rates['cpu']:.1f}" if rates["cpu"] else "-"
            line = (f"| {task} | {r['case']} | {r['input']} | {r['batch']} | {r['gflop']:.1f} | {r['kernels']} | "
                    f"{rates['flop']:.1f} / {rates['launch']:.1f} / {rates['gpu']:.1f} | {cpu} | "
                    f"{r['pipeline_1']:.1f} / {r[f'pipeline_{args.parallel}']:.1f} / {memory} | "
                    f"{best / rates['gpu']:.2f} | {cpu_ratio} | "
                    f"{parts} | {bound(r, rates['gpu'], args.parallel)} |")
            lines.append(line)
            print(line, flush=True)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines.append(f"\n{os.cpu_count()} CPU cores, load average at the end {load}; --seconds {args.seconds:g} "
                 f"--max-samples {args.max_samples}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    from common import cli

    sys.exit(cli.run(main))
