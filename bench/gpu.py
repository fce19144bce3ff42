"""Device benchmark: training throughput of every registered model on one GPU, float32 / mixed / mixed + XLA.

For each model at its paper input size and batch (``bench/train_step.py``'s cases, plus the registered models
it does not time), in this order until ``--budget-s`` is spent (default 270 s, so one run fits in 5 minutes):

* training img/s in float32, in mixed precision (``--mixed-precision``, default float16) and in mixed
  precision with XLA (``jit_compile=True``), from ``fit`` on random data (all epochs after the first, which
  compiles);
* the step's TFLOP/s (FLOPs counted from the layers by ``bench/train_step.py``: 3x the forward pass) and its
  share of the device's peak (``--peak-tflops``; defaults by GPU name, see ``PEAK_TFLOPS``);
* peak GPU memory of each configuration (TensorFlow ``tf.config.experimental.get_memory_info``, JAX
  ``device.memory_stats()`` in a fresh process per configuration, torch ``torch.cuda.max_memory_allocated``);
* the projected wall time of the paper's full training on this GPU: epochs x training samples / img/s (the
  task scripts' defaults and the datasets' published split sizes, ``TRAINING``).

The Markdown table is printed last and written to ``--out``. Runs with ``KERAS_BACKEND=jax`` or ``torch`` on
a machine without TensorFlow (nothing here, in ``bench/train_step.py`` or in ``common.models`` imports it
under those backends). Under JAX every step is XLA-compiled, so the XLA column is left out; under
torch ``jit_compile`` would be ``torch.compile``, which is not measured (its compile time alone exceeds the
budget).

Without a GPU it runs one tiny model on the CPU to check itself, prints that no GPU was visible and exits 0.

    python bench/gpu.py                                  # all models, table in bench/results/gpu.md
    python bench/gpu.py --models nerve_unet tdsnet --mixed-precision bfloat16
    python bench/gpu.py --peak-tflops 989 67             # fp16/bf16 dense and fp32 peaks of the device
    KERAS_BACKEND=jax python bench/gpu.py --out gpu_jax.md
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

from bench.train_step import CASES, _loss_for, _targets, forward_flops  # noqa: E402

# The registered models bench/train_step.py does not time, at their task's paper input size and batch.
EXTRA_CASES = {
    "bcdu_net_d3@512": ("bcdu_net_d3", (512, 512, 1), 2, "Lung CT slices"),
    "bcdu_net_d1@256": ("bcdu_net_d1", (256, 256, 3), 8, "ISIC 2018"),
    "sedu_net_d3": ("sedu_net_d3", (256, 256, 3), 8, "ISIC 2018"),
    "bcdu_unet": ("bcdu_unet", (256, 256, 3), 8, "ISIC 2018"),
    "unet2d_res_32_512": ("unet2d_res_32_512", (160, 192, 3), 2, "fingernail U-Net Res"),
    "unet2d_res_srnn_8_128": ("unet2d_res_srnn_8_128", (160, 192, 3), 2, "fingernail CR-UNet LW"),
}
ALL_CASES = {**CASES, **EXTRA_CASES}

# case -> (epochs, training samples per epoch, source) of the paper's full training (task script defaults;
# sample counts from shared/specs); epochs is a (minimum, maximum) pair where the schedule's length varies.
# None where the dataset's size is not known here.
TRAINING = {
    "nerve_unet": (20, 4508, "ultrasound_nerve/train.py: 20 epochs; 5,635 images, 0.2 validation split"),
    "bcdu_net_d3@256": (100, 1815, "skin_lesion: 100 epochs; ISIC 2018 split 1815/259/520"),
    "bcdu_net_d1@256": (100, 1815, "as bcdu_net_d3@256"),
    "sedu_net_d3": (100, 1815, "as bcdu_net_d3@256"),
    "bcdu_unet": (100, 1815, "as bcdu_net_d3@256"),
    "bcdu_net_d3@64": (50, 160000, "retina_vessel: 50 epochs; 200,000 DRIVE patches, 0.2 validation split"),
    "bcdu_net_d3@512": None,  # lung: 50 epochs of 70 % x 0.8 of the kept slices, a count the spec leaves open
    "unet2d_8_128": (220, 172, "fingernail: 220 epochs; dataset1 192 images, 10 % test"),
    "unet2d_res_32_512": (220, 172, "as unet2d_8_128"),
    "unet2d_res_srnn_32_512": (220, 172, "as unet2d_8_128"),
    "unet2d_res_srnn_8_128": (220, 172, "as unet2d_8_128"),
    "edema_unet": (100, 8960, "retinal_edema: 100 epochs; 70 training cubes x 128 slices"),
    "unet_nested": (100, 8960, "as edema_unet"),
    "unet_nested_dilated": (100, 8960, "as edema_unet"),
    # each stage restarts from the previous stage's best epoch (spec 2.1): 10+20+20+20 = 70 epochs when every
    # best epoch is a stage's last, 10+29+48+67 = 154 when every best epoch is a stage's first
    "tdsnet": ((70, 154), 1639, "robotic_scene: 70 to 154 epochs (cumulative 10/30/50/70, each stage restarting "
                                "from the previous stage's best epoch); fold 0 has 1,639 training frames"),
}

#: Dense (no sparsity) peak TFLOP/s as (float16/bfloat16 tensor core, float32 without tensor cores), from
#: NVIDIA's data sheets (H100/H200 SXM: 989.4 / 66.9; H100 PCIe: 756 / 51.2; A100: 312 / 19.5; L40S: 362 /
#: 91.6; A10: 125 / 31.2; L4: 121 / 30.3; V100 SXM2: 125 / 15.7; T4: 65 / 8.1). First match in the device name.
PEAK_TFLOPS = (("H200", 989.4, 66.9), ("H100 PCIe", 756.0, 51.2), ("H100", 989.4, 66.9), ("A100", 312.0, 19.5),
               ("L40S", 362.0, 91.6), ("A10", 125.0, 31.2), ("L4", 121.0, 30.3), ("V100", 125.0, 15.7),
               ("T4", 65.0, 8.1))

CONFIGS = ("float32", "mixed", "mixed_xla")
SELF_CHECK = ("nerve_unet", (32, 32, 1), 2, "CPU self-check (tiny)")


def backend():
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def default_peak(device_name):
    """``(mixed, float32)`` peak TFLOP/s for a device name, or ``(None, None)`` when it is not in the table."""
    for key, half, single in PEAK_TFLOPS:
        if key.lower() in (device_name or "").lower():
            return half, single
    return None, None


def _reset_memory():
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")
    elif name == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def _peak_memory_gb():
    """Peak device memory since the last reset (JAX: since the process started), or None without a GPU."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 30
    elif name == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats and jax.devices()[0].platform == "gpu":
            return stats["peak_bytes_in_use"] / 2 ** 30
    elif name == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2 ** 30
    return None


def measure(case, config, steps, mixed, spec=None):
    """Train ``case`` (a key of ALL_CASES, or ``spec``) for 2 epochs of ``steps`` steps in ``config``; a dict."""
    import keras

    from common.devices import set_precision
    from common.models import build_model

    name, shape, batch, _ = spec or ALL_CASES[case]
    if backend() == "torch" and config == "mixed_xla":
        return {"skipped": "torch.compile not measured"}
    if backend() == "jax" and config == "mixed_xla":
        return {"skipped": "JAX compiles every step with XLA: see the mixed column"}
    set_precision("off" if config == "float32" else mixed)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = batch * steps
    x = rng.random((n,) + tuple(shape), dtype=np.float32)
    model = build_model(name, shape)
    y = _targets(model, n, rng)
    y = {k: v.astype(np.float32) for k, v in y.items()} if isinstance(y, dict) else y.astype(np.float32)
    jit = config == "mixed_xla"
    # TensorFlow and torch: XLA only in the XLA column (Keras's "auto" would switch it on on a TF GPU);
    # JAX always compiles with XLA.
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=_loss_for(model),
                  jit_compile="auto" if backend() == "jax" else jit)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    _reset_memory()
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=batch, epochs=2, verbose=0, shuffle=False, callbacks=[Timer()])
    result = {"img_s": n / times[1], "compile_s": times[0] - times[1], "seconds": time.perf_counter() - start,
              "gflop_step": 3 * forward_flops(model) * batch / 1e9, "peak_gb": _peak_memory_gb(),
              "loss": float(history.history["loss"][-1])}
    if not np.isfinite(result["loss"]):
        result = {"error": f"non-finite loss {result['loss']}"}
    del model
    keras.backend.clear_session()
    gc.collect()
    return result


def device_name():
    from common.devices import device_info

    gpus = device_info()["gpus"]
    return gpus[0]["name"] if gpus else None


def _measure_isolated(case, config, steps, mixed):
    """``measure`` in a fresh process (JAX's peak memory statistic cannot be reset)."""
    command = [sys.executable, __file__, "--one", case, config, "--steps", str(steps), "--mixed-precision", mixed]
    proc = subprocess.run(command, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        return {"error": tail[:200]}
    return json.loads(line[0][len("RESULT "):])


def _fmt(values, pattern):
    return " / ".join("-" if v is None else pattern.format(v) for v in values)


def table(rows, peaks, mixed, title):
    """Markdown table of the measured rows (dicts of case -> config -> result)."""
    half, single = peaks
    head = (f"| model | input | batch | GFLOP/step | img/s f32 / {mixed} / {mixed}+XLA | TFLOP/s (best) "
            f"| % of peak (best) | peak GPU GB f32 / mp / mp+XLA | full training h f32 / mp / mp+XLA "
            f"| epochs x samples |")
    lines = [title, "", head, "|" + "---|" * 10]
    for case, results in rows.items():
        name, shape, batch, _ = results["spec"]
        measured = {c: results[c] for c in CONFIGS if c in results and "img_s" in results[c]}
        notes = [f"{c}: {results[c].get('error') or results[c].get('skipped')}" for c in CONFIGS
                 if c in results and "img_s" not in results[c]]
        img_s = [measured[c]["img_s"] if c in measured else None for c in CONFIGS]
        gflop = next((m["gflop_step"] for m in measured.values()), None)
        best = max(measured, key=lambda c: measured[c]["img_s"]) if measured else None
        tflops = measured[best]["img_s"] / batch * gflop / 1e3 if best else None
        peak = (single if best == "float32" else half) if best else None
        share = f"{100 * tflops / peak:.0f} %" if tflops and peak else "-"
        training = TRAINING.get(case)
        epochs = (training[0] if isinstance(training[0], tuple) else (training[0],)) if training else ()
        samples = (f"{'-'.join(map(str, epochs))} x {training[1]}" if training
                   else "dataset size unknown" if case in TRAINING else "-")
        hours = ["-".join(f"{e * training[1] / v / 3600:.2f}" for e in epochs) if training and v else None
                 for v in img_s]
        lines.append(f"| {case} | {'x'.join(map(str, shape))} | {batch} | "
                     f"{'-' if gflop is None else f'{gflop:.1f}'} | {_fmt(img_s, '{:.1f}')} | "
                     f"{'-' if tflops is None else f'{tflops:.3g}'} ({best or '-'}) | {share} | "
                     f"{_fmt([measured[c]['peak_gb'] if c in measured else None for c in CONFIGS], '{:.2f}')} | "
                     f"{_fmt(hours, '{}')} | "
                     f"{samples}"
                     f"{' (' + '; '.join(notes) + ')' if notes else ''} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(ALL_CASES), default=list(ALL_CASES),
                        help="cases to measure, in this order (default: all)")
    parser.add_argument("--mixed-precision", choices=("float16", "bfloat16"), default="float16",
                        help="policy of the mixed columns (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=5, help="steps per epoch; 2 epochs, the second timed "
                                                             "(default: %(default)s)")
    parser.add_argument("--peak-tflops", type=float, nargs="+", metavar=("MIXED", "FLOAT32"),
                        help="the device's dense peak TFLOP/s in float16/bfloat16 and (optional) float32; "
                             "default: by GPU name from PEAK_TFLOPS (e.g. H100/H200: 989.4 67)")
    parser.add_argument("--budget-s", type=float, default=270.0,
                        help="stop starting new measurements after this many seconds (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu.md",
                        help="Markdown file for the table (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # JAX would reserve 75 % of the GPU in this process, leaving nothing to the per-configuration processes
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.one:
        case, config = args.one
        spec = SELF_CHECK if case == "self_check" else None
        print("RESULT " + json.dumps(measure(case, config, args.steps, args.mixed_precision, spec)))
        return 0
    if args.out.exists() and not args.overwrite:
        print(f"error: --out {args.out}: exists; pass --overwrite to replace it, or another --out",
              file=sys.stderr)
        return 2

    start = time.perf_counter()
    gpu = device_name()
    isolate = backend() == "jax"
    if gpu is None:
        cases = {"self_check": SELF_CHECK}
        steps, peaks = 2, (None, None)
        title = (f"CPU self-check, KERAS_BACKEND={backend()}: no GPU was visible, so no GPU numbers "
                 f"(tiny nerve_unet 32x32, batch 2)")
    else:
        cases = {c: ALL_CASES[c] for c in args.models}
        steps = args.steps
        peaks = default_peak(gpu)
        if args.peak_tflops:
            peaks = (args.peak_tflops[0], args.peak_tflops[1] if len(args.peak_tflops) > 1 else peaks[1])
        title = (f"{gpu}, KERAS_BACKEND={backend()}, {steps} timed steps per configuration; peaks "
                 f"{peaks[0] or '?'} ({args.mixed_precision}) / {peaks[1] or '?'} (float32) TFLOP/s")
    print(title, flush=True)
    rows = {}
    for case, spec in cases.items():
        rows[case] = {"spec": spec}
        for config in CONFIGS:
            if gpu is not None and time.perf_counter() - start > args.budget_s:
                rows[case][config] = {"skipped": "time budget"}
                continue
            if isolate and config != "mixed_xla":
                result = _measure_isolated(case, config, steps, args.mixed_precision)
            else:
                try:
                    result = measure(case, config, steps, args.mixed_precision,
                                     spec if case == "self_check" else None)
                except Exception as error:  # out of memory, an op without a kernel, ...: report and go on
                    result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:150]}"}
            rows[case][config] = result
            shown = f"{result['img_s']:.1f} img/s" if "img_s" in result else result.get("error", result.get("skipped"))
            print(f"{case} {config}: {shown}", flush=True)
    text = table(rows, peaks, args.mixed_precision, title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(args.out)
    print("\n" + text)
    if gpu is None:
        failed = [c for c in CONFIGS if "img_s" not in rows["self_check"][c]
                  and "skipped" not in rows["self_check"][c]]
        if failed:
            print(f"self-check FAILED: {', '.join(failed)}", file=sys.stderr)
            return 1
        print(f"\nno GPU was visible to {backend()}: ran the CPU self-check only ({args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
