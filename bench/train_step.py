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

Mixed precision on a CPU (``--mixed-precision bfloat16``, or float16): the project's path in float32 and in
that precision side by side, for all registered models (the cases above and bench/gpu.py's extra ones) unless
``--models`` names some: img/s of each, the ratio, and each step's GFLOP/s as a share of this machine's matmul
rate in the same precision (4096x4096 ``tf.matmul`` in float32 and in bfloat16 / float16). The table is
printed and written as JSON to ``--out`` (default ``bench/results/train_step_precision.json``, which
``python -m common.devices`` quotes for its recommendation on a CPU of the same model name). ``--profile N``
adds, per model and precision, the N op types and the N ops that took the most time in 3 profiled steps
(TensorFlow profiler, times summed over the threads that ran them)::

    python bench/train_step.py --mixed-precision bfloat16                       # every model (hours on 2 cores)
    python bench/train_step.py --mixed-precision bfloat16 --models nerve_unet bcdu_net_d3@64 --profile 15
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

from common.flops import forward_flops  # noqa: E402,F401  (one place: common/flops.py)

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


# The registered models the default (float32) table does not time, at their task's paper input size and batch
# (bench/gpu.py and the mixed-precision table time them too).
EXTRA_CASES = {
    "bcdu_net_d3@512": ("bcdu_net_d3", (512, 512, 1), 2, "Lung CT slices"),
    "bcdu_net_d1@256": ("bcdu_net_d1", (256, 256, 3), 8, "ISIC 2018"),
    "sedu_net_d3": ("sedu_net_d3", (256, 256, 3), 8, "ISIC 2018"),
    "bcdu_unet": ("bcdu_unet", (256, 256, 3), 8, "ISIC 2018"),
    "unet2d_res_32_512": ("unet2d_res_32_512", (160, 192, 3), 2, "fingernail U-Net Res"),
    "unet2d_res_srnn_8_128": ("unet2d_res_srnn_8_128", (160, 192, 3), 2, "fingernail CR-UNet LW"),
}
ALL_CASES = {**CASES, **EXTRA_CASES}
PRECISION_RESULTS = Path(__file__).resolve().parent / "results" / "train_step_precision.json"


def matmul_gflops(n=4096, repeats=5, dtype="float32"):
    import tensorflow as tf

    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    tf.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        c = tf.matmul(a, b)
    c.numpy()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


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


def profile_ops(model, data, steps=3, top=15):
    """Run ``steps`` training steps of the compiled ``model`` on batches of ``data`` under the TensorFlow
    profiler; returns ``{"types": [(op type, ms, share)], "ops": [(op name, type, ms, share)]}``, the ``top``
    of each by time summed over the threads that ran them (shares of the sum over all ops)."""
    import collections
    import glob
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    batches = iter(data.repeat())
    model.train_on_batch(*next(batches))  # compiled outside the trace
    with tempfile.TemporaryDirectory() as folder:
        tf.profiler.experimental.start(folder)
        for _ in range(steps):
            model.train_on_batch(*next(batches))
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    by_op, by_type = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU" and not plane.name.startswith("/device:"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "::" in name or name.startswith(("EagerLocalExecute", "__inference")):
                    continue  # framework events (executor, eager dispatch, tf.data iterators), not ops
                op, kind = name.rsplit(":", 1)
                by_op[(op, kind)] += event.duration_ps / 1e9
                by_type[kind] += event.duration_ps / 1e9
    total = sum(by_type.values()) or 1.0
    return {"types": [(k, ms, ms / total) for k, ms in by_type.most_common(top)],
            "ops": [(op, k, ms, ms / total) for (op, k), ms in by_op.most_common(top)]}


def run_one(case, steps, path, epochs=4, precision="off", profile=0):
    """Measure one path of one case in this process; returns a dict (printed as JSON by --one).

    ``path`` naive or ours; ``precision`` the ``--mixed-precision`` value the model is built under (the
    ours path); ``profile`` > 0 adds that many top op types and ops of 3 profiled steps (``profile_ops``).
    Each path runs in a fresh process: in one process the second path measured ran up to 2x faster or about
    5 % slower, depending on the model, than in a process of its own, which would bias the ratio."""
    import keras

    from common.devices import set_precision
    from common.models import build_model
    from common.training import array_dataset, without_autotune

    name, shape, batch, _ = ALL_CASES[case]
    set_precision(precision)
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
    if profile and path == "ours":
        results["profile"] = profile_ops(model, data, top=profile)
    results["gflop_step"] = 3 * forward_flops(model) * batch / 1e9
    results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return results


def _run_isolated(case, path, args, precision="off"):
    """``run_one`` in a fresh process; (result dict, None) or (None, the error's last line)."""
    command = [sys.executable, __file__, "--one", case, "--path", path, "--steps", str(args.steps),
               "--epochs", str(args.epochs), "--precision", precision, "--profile", str(args.profile)]
    proc = subprocess.run(command, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        return None, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
    return json.loads(line[0][len("RESULT "):]), None


def main(argv=None):
    from common.devices import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(ALL_CASES),
                        help="cases to time (default: the nine of the float32 table; with --mixed-precision, "
                             "all registered models)")
    parser.add_argument("--steps", type=int, default=4, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per path; all but the first are timed")
    parser.add_argument("--mixed-precision", choices=[p for p in PRECISIONS if p != "off"],
                        help="time the project's path in float32 and in this precision side by side (instead of "
                             "naive vs ours), with each step's share of the matmul rate in its own precision")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print the N op types and N ops that took the most time in 3 profiled steps "
                             "(project path; default 0: no profile)")
    parser.add_argument("--out", type=Path, default=PRECISION_RESULTS,
                        help="with --mixed-precision: JSON file for the table (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--one", choices=sorted(ALL_CASES), help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=("naive", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for option, value, minimum in (("--steps", args.steps, 1), ("--epochs", args.epochs, 2),
                                   ("--profile", args.profile, 0)):
        if value < minimum:
            parser.error(f"{option}: expected a whole number >= {minimum}, got {value}")
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.steps, args.path, args.epochs,
                                             precision=args.precision, profile=args.profile)))
        return 0
    if args.mixed_precision:
        return precision_table(args)
    rate = matmul_gflops()
    print(f"fp32 matmul rate: {rate:.0f} GFLOP/s\n")
    header = ("| model | input | batch | GFLOP/step | naive img/s | ours img/s | ours/naive | ours GFLOP/s "
              "| % of matmul | median step s naive / ours | peak RSS GB |")
    print(header + "\n|" + "---|" * 11, flush=True)
    profiles = {}
    for case in args.models or list(CASES):
        r = {}
        for path in ("naive", "ours"):
            part, error = _run_isolated(case, path, args)
            if error:
                print(f"| {case} | {path} failed: {error} |", flush=True)
                break
            r.update(part, peak_rss_gb=max(part["peak_rss_gb"], r.get("peak_rss_gb", 0.0)))
        else:
            _print_row(r, rate)
            if "profile" in r:
                profiles[(case, "float32")] = r["profile"]
    _print_profiles(profiles)
    return 0


def precision_table(args):
    """``--mixed-precision``: float32 and mixed precision of the project's path side by side; prints the table
    and writes it as JSON to ``args.out`` (rows with ``ratio`` = mixed img/s / float32 img/s)."""
    import os
    import platform
    import time as clock

    from common.data.io import atomic_path
    from common.devices import cpu_flags, cpu_model, read_cpuinfo

    if args.out.exists() and not args.overwrite:
        from common import cli

        raise cli.option_error("--out", f"{args.out} exists; pass --overwrite to replace it, or another --out")
    mixed = args.mixed_precision
    rates = {"float32": matmul_gflops(), mixed: matmul_gflops(dtype=mixed)}
    print(f"matmul rate: float32 {rates['float32']:.0f} GFLOP/s, {mixed} {rates[mixed]:.0f} GFLOP/s "
          f"({rates[mixed] / rates['float32']:.2f}x)\n")
    header = (f"| model | input | batch | GFLOP/step | float32 img/s | {mixed} img/s | {mixed}/float32 | "
              f"float32 GFLOP/s, % of float32 matmul | {mixed} GFLOP/s, % of {mixed} matmul | "
              f"median step s float32 / {mixed} | peak RSS GB |")
    print(header + "\n|" + "---|" * 11, flush=True)
    text = read_cpuinfo()
    results = {"date": clock.strftime("%Y-%m-%d"), "cpu": cpu_model(text) or platform.processor() or None,
               "cores": os.cpu_count(), "native_bf16_flags": sorted((cpu_flags(text) or set()) &
                                                                    {"avx512_bf16", "amx_bf16"}),
               "precision": mixed, "matmul_gflops": rates, "steps": args.steps, "epochs": args.epochs,
               "load_average": None, "rows": []}
    profiles = {}
    for case in args.models or list(ALL_CASES):
        parts = {}
        for precision in ("off", mixed):
            part, error = _run_isolated(case, "ours", args, precision=precision)
            label = "float32" if precision == "off" else mixed
            if error:
                print(f"| {case} | {label} failed: {error} |", flush=True)
                results["rows"].append({"case": case, "error": f"{label}: {error}", "ratio": None})
                break
            parts[label] = part
            if "profile" in part:
                profiles[(case, label)] = part["profile"]
        else:
            row = _precision_row(case, parts, rates, mixed)
            results["rows"].append(row)
            print(row["line"], flush=True)
    results["load_average"] = os.getloadavg()
    _print_profiles(profiles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten to {args.out} (load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())})")
    return 0


def _precision_row(case, parts, rates, mixed):
    f32, mp = parts["float32"], parts[mixed]
    gflop, batch = f32["gflop_step"], f32["batch"]
    speed = {label: gflop / batch * parts[label]["ours_img_s"] for label in parts}
    ratio = mp["ours_img_s"] / f32["ours_img_s"]
    line = (f"| {case} | {f32['input']} | {batch} | {gflop:.1f} | {f32['ours_img_s']:.2f} | {mp['ours_img_s']:.2f} | "
            f"{ratio:.2f} | {speed['float32']:.0f}, {100 * speed['float32'] / rates['float32']:.0f} % | "
            f"{speed[mixed]:.0f}, {100 * speed[mixed] / rates[mixed]:.0f} % | "
            f"{f32['ours_step_s']:.2f} / {mp['ours_step_s']:.2f} | "
            f"{max(f32['peak_rss_gb'], mp['peak_rss_gb']):.1f} |")
    return {"case": case, "input": f32["input"], "batch": batch, "gflop_step": gflop,
            "float32_img_s": f32["ours_img_s"], f"{mixed}_img_s": mp["ours_img_s"], "ratio": ratio,
            "float32_matmul_share": speed["float32"] / rates["float32"],
            f"{mixed}_matmul_share": speed[mixed] / rates[mixed],
            "float32_step_s": f32["ours_step_s"], f"{mixed}_step_s": mp["ours_step_s"], "line": line}


def _print_profiles(profiles):
    for (case, label), prof in profiles.items():
        print(f"\n{case}, {label}: top op types (ms summed over threads, 3 steps, share of all ops)")
        for kind, ms, share in prof["types"]:
            print(f"  {kind:<45} {ms:10.1f} ms {100 * share:5.1f} %")
        print("  top ops:")
        for op, kind, ms, share in prof["ops"]:
            print(f"  {op[:80]:<80} {kind:<32} {ms:9.1f} ms {100 * share:5.1f} %")


def _print_row(r, rate):
    gflops = r["gflop_step"] / r["batch"] * r["ours_img_s"]
    print(f"| {r['case']} | {r['input']} | {r['batch']} | {r['gflop_step']:.1f} | {r['naive_img_s']:.2f} | "
          f"{r['ours_img_s']:.2f} | {r['ours_img_s'] / r['naive_img_s']:.2f} | {gflops:.0f} | "
          f"{100 * gflops / rate:.0f} % | {r['naive_step_s']:.2f} / {r['ours_step_s']:.2f} | "
          f"{r['peak_rss_gb']:.1f} |", flush=True)


def _run_cli():
    from common import cli  # inside a function: bench/gpu.py imports this module without the CLI's modules

    return cli.run(main)


if __name__ == "__main__":
    sys.exit(_run_cli())
