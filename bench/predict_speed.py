"""Benchmark: images/s of each task's whole predict path with Keras against onnxruntime, in one run.

For each task, the default network at the paper's input size (random weights: the speed does not depend on
them) is saved as a run folder with the files its preprocessing reads (norm_stats.json, state.json,
stages.json), exported with ``python -m common.export``'s ONNX code, and both are loaded with
``common.predict.load_segmenter``; then ``seg.predict`` runs on synthetic inputs of the dataset's size
(``--repeats`` times after one warm-up call): the same preprocessing, inference mode and post-processing,
only the network call differs. retina_vessel runs its ``full`` mode with the ONNX export built for the padded
DRIVE image size (``--input-size``); lung counts volumes of ``--slices`` slices, retinal_edema cubes of
``--slices`` B-scans.

    python bench/predict_speed.py                         # all seven tasks (slow: full-size networks)
    python bench/predict_speed.py --tasks ultrasound_nerve skin_lesion --repeats 5
    python bench/predict_speed.py --tiny --repeats 1      # smoke run: tiny shapes, not a measurement

Each task runs in a fresh process (its peak RSS is in the table): in one process TensorFlow keeps what every
earlier task allocated, and the ONNX export of TDSNet after four other tasks was killed by the out-of-memory
killer at 24 GB. The table is written to ``--out`` (Markdown + JSON, never replaced without ``--overwrite``) with
a bar chart beside it (PNG). Measure on an idle machine: other processes change the numbers.
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

# task -> (model, input shape of the network, raw input shape, options of build_model); tiny: for smoke runs
FULL = {
    "ultrasound_nerve": ("nerve_unet", (96, 96, 1), (420, 580), {}),
    "skin_lesion": ("bcdu_net_d3", (256, 256, 3), (767, 1022, 3), {}),
    "fingernail": ("unet2d_8_128", (160, 192, 3), (480, 640, 3), {}),
    "retina_vessel": ("bcdu_net_d3", (584, 568, 1), (584, 565, 3), {}),
    "lung": ("bcdu_net_d3", (512, 512, 1), (8, 512, 512), {}),
    "retinal_edema": ("unet_nested", (1024, 512, 3), (8, 1024, 512), {}),
    "robotic_scene": ("tdsnet", (1024, 1280, 3), (1024, 1280, 3), {}),
}
TINY = {
    "ultrasound_nerve": ("nerve_unet", (32, 32, 1), (42, 58), {"filters": (4, 8, 16, 32, 64)}),
    "skin_lesion": ("bcdu_net_d3", (16, 16, 3), (30, 40, 3), {}),
    "fingernail": ("unet2d_8_128", (16, 16, 3), (30, 40, 3), {}),
    "retina_vessel": ("bcdu_net_d3", (24, 24, 1), (24, 21, 3), {}),
    "lung": ("bcdu_net_d3", (16, 16, 1), (2, 16, 16), {}),
    "retinal_edema": ("unet_nested", (32, 32, 3), (3, 32, 32), {"feature_scale": 16}),
    "robotic_scene": ("tdsnet", (32, 32, 3), (32, 32, 3), {}),
}


def _run_folder(root, task, model):
    """A run folder under ``root/<task>/`` holding ``best.keras`` and the files the task's preprocessing reads."""
    run = Path(root) / task / "run"
    run.mkdir(parents=True)
    if task == "robotic_scene":
        stage = run / "stage4_scene"
        stage.mkdir()
        model.save(stage / "best.keras")
        (run / "stages.json").write_text(json.dumps({"final_checkpoint": str(stage / "best.keras"),
                                                     "settings": {"normalise": "torch"}}))
        return run
    model.save(run / "best.keras")
    model.save(run / "last.keras")  # fingernail predicts with its last epoch, as the original
    if task == "ultrasound_nerve":
        stats = {"mean": 100.0, "std": 50.0, "img_size": model.input_shape[1]}
        (run / "norm_stats.json").write_text(json.dumps(stats))
    if task == "retinal_edema":
        (run / "state.json").write_text(json.dumps({"settings": {"mean": [0.14] * 3, "std": [0.1] * 3}}))
    return run


def _model(task, name, shape, options):
    from common.models import build_model

    if task == "robotic_scene":
        from robotic_scene.train import build_trainer

        return build_trainer(shape)
    return build_model(name, shape, **options)


def _input(task, shape, rng):
    if task == "lung":
        return rng.integers(-1000, 1000, shape).astype(np.int16)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def measure(task, config, root, repeats, rng):
    """``{task, keras images/s, onnx images/s, speed-up}`` of one task."""
    from common.export import export_onnx
    from common.predict import load_keras_model, load_segmenter, rebuilt_for_shape

    name, shape, raw, options = config
    built = _model(task, name, shape, options)
    (built.network if task == "robotic_scene" else built)(np.zeros((1, *shape), np.float32))
    run = _run_folder(root, task, built)
    module, model, checkpoint, context = load_keras_model(run, task=task)
    if task == "retina_vessel":  # the export is built for the padded image; the Keras run keeps its own size
        model = rebuilt_for_shape(model, shape)
    export_onnx(model, Path(root) / task / "onnx", task=module, context={**module.INFERENCE, **context})
    image = _input(task, raw, rng)
    rows = {"task": task, "input": "x".join(map(str, raw))}
    for label, seg in (("keras", load_segmenter(run, task=task)),
                       ("onnxruntime", load_segmenter(Path(root) / task / "onnx" / "model.onnx"))):
        seg.predict(image)  # warm-up: builds / traces / allocates once
        start = time.perf_counter()
        for _ in range(repeats):
            seg.predict(image)
        rows[f"{label} images/s"] = repeats / (time.perf_counter() - start)
    rows["onnx / keras"] = rows["onnxruntime images/s"] / rows["keras images/s"]
    rows["peak RSS GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return rows


def _measure_isolated(task, args):
    """:func:`measure` of one task in a fresh process; its row, or ``{task, "error": last line}``."""
    command = [sys.executable, __file__, "--one", task, "--repeats", str(args.repeats)] + (["--tiny"] if args.tiny
                                                                                         else [])
    proc = subprocess.run(command, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        return {"task": task, "error": last}
    return json.loads(line[0][len("RESULT "):])


def plot(rows, path):
    import common.report  # noqa: F401  (Agg backend)
    import matplotlib.pyplot as plt

    from common.data.io import atomic_path

    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["keras images/s"] for r in rows], 0.4, label="Keras (TensorFlow)")
    ax.bar(x + 0.2, [r["onnxruntime images/s"] for r in rows], 0.4, label="onnxruntime")
    ax.set_xticks(x, [r["task"] for r in rows], rotation=20)
    ax.set_ylabel("images (volumes, cubes) / s")
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def main(argv=None):
    from common.cli import option_error
    from common.report import write_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(FULL), default=sorted(FULL))
    parser.add_argument("--repeats", type=int, default=10, help="timed predictions per task (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a smoke run, not a measurement")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "predict_speed.md",
                        help="table (.md/.json) and figure (.png) path (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out table")
    parser.add_argument("--one", choices=sorted(FULL), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise option_error("--repeats", f"must be at least 1, got {args.repeats}")
    configs = TINY if args.tiny else FULL
    if args.one:
        with tempfile.TemporaryDirectory() as root:
            row = measure(args.one, configs[args.one], root, args.repeats, np.random.default_rng(0))
        print("RESULT " + json.dumps(row))
        return 0
    if args.out.exists() and not args.overwrite:
        raise option_error("--out", f"{args.out} exists; pass --overwrite to replace it, or another --out")
    rows = []
    for task in args.tasks:
        rows.append(_measure_isolated(task, args))
        print(json.dumps(rows[-1]), flush=True)
    failed = [r for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    title = "predict speed, Keras vs onnxruntime" + (" (TINY smoke run, not a measurement)" if args.tiny else "")
    print(write_table(rows, args.out, title=title, digits=3))
    plot(rows, args.out.with_suffix(".png"))
    for row in failed:
        print(f"{row['task']}: failed: {row['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    from common import cli

    sys.exit(cli.run(main))
