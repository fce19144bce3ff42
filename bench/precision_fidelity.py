"""Where bfloat16 training departs from float32: gradients and outputs of one network, same weights, same batches.

Reads a ``bench/drive_repro.py`` output folder (``--run-dir``: its ``patches_imgs_train.npy`` /
``patches_masks_train.npy`` and the float32 checkpoint ``run/best.keras``) and computes, for each variant below,
the summed gradient of the binary cross-entropy over ``--batches`` training batches of ``--batch-size`` (the
training step's gradient, BatchNorm in training mode) and the probabilities on ``--val-patches`` validation
patches (the last 20 %, inference mode), against the same in float32:

* ``float32, image rounded to bfloat16``: the float32 network fed the image after a round trip through
  bfloat16 (what the first convolution sees when it computes in bfloat16);
* ``bfloat16, every layer``: ``mixed_bfloat16`` on every layer but the float32 output (the architecture as the
  registered builder makes it, before ``build_model`` sets the image reader to float32);
* ``bfloat16, ConvLSTM fusions float32``: as the previous with the ConvLSTM fusions (and their cells) in
  float32 (the first suspect, for comparison);
* ``bfloat16, image reader float32``: ``build_model`` under ``mixed_bfloat16`` (what the train scripts build:
  ``common.devices.keep_input_layers_float32``).

Dropout is switched off in every variant (rate 0), so that the differences are the arithmetic's, not other
random masks. Reported per variant: the gradient's relative error ``|g - g32| / |g32|`` and cosine over all
weights and per stage (encoder, bottleneck, decoder, head: the layer names' prefixes), and the largest and
mean probability difference and the validation loss. Printed and written to ``--out`` (Markdown, default
``bench/results/precision_fidelity.md``; never replaced without ``--overwrite``). About 5 minutes on 2 cores.

    python bench/precision_fidelity.py --run-dir work/bench/drive_repro_f32_s2
    python bench/precision_fidelity.py --run-dir work/bench/drive_repro --batches 2 --val-patches 64 \
        --out /tmp/f.md
"""

import argparse
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = ROOT / "work" / "bench" / "drive_repro"
DEFAULT_OUT = ROOT / "bench" / "results" / "precision_fidelity.md"
MODEL = "bcdu_net_d3"
STAGES = (("encoder", ("enc",)), ("bottleneck", ("dense",)), ("decoder", ("up", "fuse", "dec")),
          ("head", ("head",)))
VARIANTS = ("float32, image rounded to bfloat16", "bfloat16, every layer", "bfloat16, ConvLSTM fusions float32",
            "bfloat16, image reader float32")


def _network(variant, weights, shape):
    """The network of ``variant`` with ``weights`` and dropout off (the global policy restored to float32)."""
    import keras

    from common.devices import set_precision
    from common.models import build_model, get_builder

    set_precision("bfloat16" if variant.startswith("bfloat16") else "off")
    try:
        model = (build_model(MODEL, shape) if variant in ("float32", "bfloat16, image reader float32")
                 else get_builder(MODEL)(shape))  # the architecture alone, every layer under the policy
    finally:
        set_precision("off")
    if variant == "bfloat16, ConvLSTM fusions float32":
        for layer in model.layers:
            if isinstance(layer, keras.layers.ConvLSTM2D):
                layer.dtype_policy = layer.cell.dtype_policy = "float32"
    model.set_weights(weights)
    for layer in model.layers:
        if hasattr(layer, "rate"):
            layer.rate = 0.0
    return model


def _to_bfloat16_and_back(x):
    import tensorflow as tf

    return tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()


def _gradients(model, batches):
    """Summed float64 gradient per weight path over ``batches`` [(x, y)], training mode."""
    import keras
    import tensorflow as tf

    bce = keras.losses.BinaryCrossentropy()
    total = None
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = bce(tf.cast(y, tf.float32), tf.cast(model(x, training=True), tf.float32))
        grads = [np.asarray(g, np.float64) for g in tape.gradient(loss, model.trainable_variables)]
        total = grads if total is None else [a + b for a, b in zip(total, grads)]
    return {v.path: g for v, g in zip(model.trainable_variables, total)}


def _probabilities(model, x, batch_size=32):
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False), np.float64)
                           for i in range(0, len(x), batch_size)])


def _bce(p, y):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _compare(g, ref, keys):
    a = np.concatenate([ref[k].ravel() for k in keys])
    b = np.concatenate([g[k].ravel() for k in keys])
    return float(np.linalg.norm(b - a) / np.linalg.norm(a)), float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def fidelity(run_dir, batches=8, batch_size=8, val_patches=800, seed=0, verbose=True):
    """The comparison of the module docstring; returns ``{"rows": [...], ...}`` (float32 first); ``verbose``: a
    progress bar over the variants (about a minute each on 2 cores)."""
    import keras
    from tqdm import tqdm

    import common.layers  # noqa: F401  (registers the layers a saved BCDU-Net needs)
    from common.errors import OptionError
    from retina_vessel.train_retina import load_patches

    checkpoint = Path(run_dir) / "run" / "best.keras"
    if not checkpoint.is_file():
        raise FileNotFoundError(2, "no checkpoint; run bench/drive_repro.py (float32) first", str(checkpoint))
    x, y = load_patches(run_dir)
    n_val = int(len(x) * 0.2)
    if len(x) - n_val < batches * batch_size or n_val < 1:
        raise OptionError(f"--run-dir: {run_dir} holds {len(x)} patches, too few for {batches} batches of "
                          f"{batch_size} and a validation part; pass smaller --batches / --batch-size")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(x) - n_val, batches * batch_size, replace=False))
    xb, yb = np.asarray(x[picked], np.float32), np.asarray(y[picked], np.float32)
    xv, yv = np.asarray(x[-n_val:][:val_patches], np.float32), np.asarray(y[-n_val:][:val_patches], np.float64)
    weights = keras.models.load_model(checkpoint, compile=False).get_weights()

    def run(variant):
        model = _network(variant, weights, x.shape[1:])
        rounded = variant == "float32, image rounded to bfloat16"
        train_x, val_x = (_to_bfloat16_and_back(xb), _to_bfloat16_and_back(xv)) if rounded else (xb, xv)
        pairs = [(train_x[i:i + batch_size], yb[i:i + batch_size]) for i in range(0, len(xb), batch_size)]
        return _gradients(model, pairs), _probabilities(model, val_x)

    progress = tqdm(total=1 + len(VARIANTS), desc="variants", disable=not verbose)
    ref_g, ref_p = run("float32")
    progress.update()
    keys = list(ref_g)
    rows = [{"variant": "float32", "val_loss": _bce(ref_p, yv)}]
    for variant in VARIANTS:
        g, p = run(variant)
        progress.update()
        row = {"variant": variant, "val_loss": _bce(p, yv), "max_dp": float(np.abs(p - ref_p).max()),
               "mean_dp": float(np.abs(p - ref_p).mean())}
        row["relerr"], row["cos"] = _compare(g, ref_g, keys)
        for stage, prefixes in STAGES:
            stage_keys = [k for k in keys if k.split("/")[0].startswith(prefixes)]
            row[stage] = _compare(g, ref_g, stage_keys)[0]
        rows.append(row)
    progress.close()
    return {"run_dir": str(run_dir), "batches": batches, "batch_size": batch_size, "val_patches": len(xv),
            "rows": rows}


def markdown(result):
    stages = [s for s, _ in STAGES]
    lines = [f"{MODEL}, weights of {result['run_dir']}/run/best.keras; gradient summed over {result['batches']} "
             f"training batches of {result['batch_size']}, probabilities on {result['val_patches']} validation "
             f"patches; dropout off; against float32", "",
             "| variant | gradient rel. error, all | " + " | ".join(stages) + " | cosine | max / mean |dp| | "
             "val loss |", "|---|---:|" + "---:|" * len(stages) + "---:|---|---:|"]
    for row in result["rows"]:
        if row["variant"] == "float32":
            lines.append(f"| float32 | | " + " | " * len(stages) + f" | | {row['val_loss']:.5f} |")
            continue
        lines.append(f"| {row['variant']} | {row['relerr']:.3f} | " + " | ".join(f"{row[s]:.3f}" for s in stages)
                     + f" | {row['cos']:.4f} | {row['max_dp']:.3f} / {row['mean_dp']:.5f} "
                     f"| {row['val_loss']:.5f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    from common import cli
    from common.data.io import atomic_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN,
                        help="a float32 bench/drive_repro.py output folder (default: %(default)s)")
    parser.add_argument("--batches", type=int, default=8, help="training batches summed (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="default: %(default)s (drive_repro's)")
    parser.add_argument("--val-patches", type=int, default=800, help="validation patches (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown table (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    for option, value in (("--batches", args.batches), ("--batch-size", args.batch_size),
                          ("--val-patches", args.val_patches)):
        if value < 1:
            raise cli.option_error(option, f"expected a whole number >= 1, got {value}")
    if args.out.exists() and not args.overwrite:
        raise cli.option_error("--out", f"{args.out} exists; pass --overwrite to replace it, or another --out")
    table = markdown(fidelity(args.run_dir, args.batches, args.batch_size, args.val_patches))
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(f"{time.strftime('%Y-%m-%d')}\n\n{table}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    from common import cli

    sys.exit(cli.run(main))
