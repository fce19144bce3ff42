"""Benchmark: training throughput of every registered model, the originals' path vs the project's.

For each model at its paper input size and batch, in one run (each model and each path in a fresh
subprocess, so peak memory is per model and neither path inherits the other's memory):

* this machine's fp32 matmul rate (4096x4096 ``tf.matmul``);
* the FLOPs of one training step, counted from the layers (convolutions, transposed convolutions, dense,
  ConvLSTM, spatial RNN; a training step = 3x the forward pass, the usual forward + backward estimate);
* img/s and GFLOP/s of (a) the naive path — ``compile`` + ``fit`` on float64 NumPy arrays, as the originals —
  and (b) the project's path — ``common.training.array_dataset`` (float32 batches gathered by index,
  prefetched, tf.data autotuning off) into ``fit``; the ratio b/a and b as % of the matmul rate; peak RSS of
  the subprocess. img/s is over whole epochs after the first (which compiles), as a user of ``fit`` sees it;
  the median time of one step of each path is printed beside it (the compiled step alone, without the
  per-epoch costs).

    python bench/train_step.py                     # all models (large ones take minutes per step on a CPU)
    python bench/train_step.py --models nerve_unet bcdu_net_d3@64
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

# name -> (registry model, input shape, batch, note)
CASES = {
    "nerve_unet": ("nerve_unet", (96, 96, 1), 32, "Kaggle nerve tutorial"),
    "bcdu_net_d3@256": ("bcdu_net_d3", (256, 256, 3), 8, "ISIC 2018"),
    "bcdu_net_d3@64": ("bcdu_net_d3", (64, 64, 1), 8, "DRIVE patches"),
    "unet2d_res_srnn_32_512": ("unet2d_res_srnn_32_512", (160, 192, 3), 2, "fingernail CR-UNet HW"),
    "unet2d_8_128": ("unet2d_8_128", (160, 192, 3), 2, "fingernail U-Net"),
    "edema_unet": ("edema_unet", (1024, 512, 3), 8, "AI Challenger OCT; batch per GPU of 32 on 4 GPUs"),
    "unet_nested": ("unet_nested", (1024, 512, 3), 4, "batch per GPU of 16 on 4 GPUs"),
    "unet_nested_dilated": ("unet_nested_dilated", (1024, 512, 3), 4, "batch as unet_nested"),
    "tdsnet": ("tdsnet", (1024, 1280, 3), 1, "ROBOT18"),
}


def matmul_gflops(n=4096, repeats=5):
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        c = tf.matmul(a, b)
    c.numpy()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def _spatial(shape):
    return int(np.prod([d for d in shape[1:-1]]))


def forward_flops(model):
    """Multiply-add FLOPs (2 per MAC) of one forward pass of one sample, counted layer by layer."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2DTranspose):
            cin = layer.input.shape[-1]
            total += 2 * _spatial(layer.input.shape) * np.prod(layer.kernel_size) * cin * layer.filters
        elif isinstance(layer, layers.Conv2D):  # also covers depthwise-free Conv2D subclasses
            cin = layer.input.shape[-1] // layer.groups
            total += 2 * _spatial(layer.output.shape) * np.prod(layer.kernel_size) * cin * layer.filters
        elif isinstance(layer, layers.Dense):
            positions = int(np.prod(layer.input.shape[1:-1])) if len(layer.input.shape) > 2 else 1
            total += 2 * positions * layer.input.shape[-1] * layer.units
        elif isinstance(layer, layers.ConvLSTM2D):
            steps, cin = layer.input.shape[1], layer.input.shape[-1]
            hw = _spatial(layer.output.shape)
            k = np.prod(layer.kernel_size)
            total += steps * 2 * hw * k * (cin + layer.filters) * 4 * layer.filters
        elif type(layer).__name__ == "SpatialRNN2D":
            total += 4 * layer.rnn_seq_length * 3 * int(np.prod(layer.input.shape[1:]))
    return int(total)


def _loss_for(model):
    names = model.output_names if isinstance(model.output, dict) or len(model.outputs) > 1 else None
    if names is None:
        return "binary_crossentropy"
    return {name: "mean_squared_error" for name in names}


def _targets(model, n, rng):
    outputs = model.output if isinstance(model.output, dict) else dict(zip(model.output_names, model.outputs))
    if len(model.outputs) == 1 and not isinstance(model.output, dict):
        return (rng.random((n,) + tuple(model.output.shape[1:])) > 0.5).astype(np.float64)
    return {k: rng.random((n,) + tuple(v.shape[1:])) for k, v in outputs.items()}


class _EpochTimer:
    def __init__(self):
        import keras

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):
                cb.start = time.perf_counter()

            def on_train_batch_begin(cb, batch, logs=None):
                cb.step_start = time.perf_counter()

            def on_train_batch_end(cb, batch, logs=None):
                cb.steps[-1].append(time.perf_counter() - cb.step_start)

            def on_epoch_end(cb, epoch, logs=None):
                cb.times.append(time.perf_counter() - cb.start)
                cb.steps.append([])

        self.callback = Timer()
        self.callback.times = []
        self.callback.steps = [[]]

    def warm(self):
        """(seconds of the epochs after the first, median seconds of one of their steps)."""
        cb = self.callback
        return sum(cb.times[1:]), float(np.median([t for epoch in cb.steps[1:] for t in epoch]))


def run_one(case, steps, path, epochs=4):
    """Measure one path of one case in this process; returns a dict (printed as JSON by --one).

    Each path runs in a fresh process: in one process the second path measured ran up to 2x faster or about
    5 % slower, depending on the model, than in a process of its own, which would bias the ratio."""
    import keras

    from common.models import build_model
    from common.training import array_dataset, without_autotune

    name, shape, batch, _ = CASES[case]
    rng = np.random.default_rng(0)
    n = batch * steps
    x = rng.random((n,) + shape)  # float64, as the originals' arrays
    results = {"case": case, "model": name, "input": "x".join(map(str, shape)), "batch": batch}
    keras.utils.set_random_seed(0)
    model = build_model(name, shape)
    y = _targets(model, n, rng)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=_loss_for(model))
    timer = _EpochTimer()
    if path == "naive":
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer.callback])
    else:
        if isinstance(y, dict):
            import tensorflow as tf

            data = tf.data.Dataset.from_tensor_slices((x.astype(np.float32),
                                                       {k: v.astype(np.float32) for k, v in y.items()}))
            data = without_autotune(data.batch(batch))
        else:
            data = array_dataset(x.astype(np.float32), y.astype(np.float32), batch_size=batch)
        model.fit(data, epochs=epochs, verbose=0, callbacks=[timer.callback], shuffle=False)
    seconds, step = timer.warm()
    results[f"{path}_img_s"] = n * (epochs - 1) / seconds
    results[f"{path}_step_s"] = step
    results["gflop_step"] = 3 * forward_flops(model) * batch / 1e9
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--steps", type=int, default=4, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per path; all but the first are timed")
    parser.add_argument("--one", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=("naive", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.steps, args.path, args.epochs)))
        return
    rate = matmul_gflops()
    print(f"fp32 matmul rate: {rate:.0f} GFLOP/s\n")
    header = ("| model | input | batch | GFLOP/step | naive img/s | ours img/s | ours/naive | ours GFLOP/s "
              "| % of matmul | median step s naive / ours | peak RSS GB |")
    print(header + "\n|" + "---|" * 11, flush=True)
    for case in args.models:
        r = {}
        for path in ("naive", "ours"):
            command = [sys.executable, __file__, "--one", case, "--path", path, "--steps", str(args.steps),
                       "--epochs", str(args.epochs)]
            proc = subprocess.run(command, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"| {case} | {path} failed: "
                      f"{proc.stderr.strip().splitlines()[-1] if proc.stderr else '?'} |", flush=True)
                break
            part = json.loads(line[0][len("RESULT "):])
            r.update(part, peak_rss_gb=max(part["peak_rss_gb"], r.get("peak_rss_gb", 0.0)))
        else:
            _print_row(r, rate)


def _print_row(r, rate):
    gflops = r["gflop_step"] / r["batch"] * r["ours_img_s"]
    print(f"| {r['case']} | {r['input']} | {r['batch']} | {r['gflop_step']:.1f} | {r['naive_img_s']:.2f} | "
          f"{r['ours_img_s']:.2f} | {r['ours_img_s'] / r['naive_img_s']:.2f} | {gflops:.0f} | "
          f"{100 * gflops / rate:.0f} % | {r['naive_step_s']:.2f} / {r['ours_step_s']:.2f} | "
          f"{r['peak_rss_gb']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
