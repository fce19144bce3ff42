"""Benchmark: inference in float32 and in mixed precision (``--mixed-precision``, default bfloat16) on the CPU.

Two sections, in one run (``--sections``):

* ``timing``: for each task, its model at the task's paper input size and training batch (the cases of
  ``bench/input_pipeline.py``; random weights, seed 0: time does not depend on them), the float32 model and
  the same model under the mixed policy (``common.devices.apply_precision``, the evaluate / predict scripts'
  ``--mixed-precision``: output layers float32, same weights); ``predict_on_batch`` (the call
  ``common.inference`` makes) timed ``--repeats`` times, the two precisions alternating so that both see
  the same machine; seconds per image (median) of each and the ratio.
* ``drive``: the retina_vessel predict path (``retina_vessel.evaluate.segment``: ``my_PreProc``, whole image
  or the original's stride-5 overlap, ``kill_border``) on the real DRIVE training images of ``--drive-dir``
  (default ``../shared/data/drive``; skipped when absent) with a trained checkpoint (``--drive-checkpoint``,
  default the best checkpoint of ``bench/drive_repro.py``'s run; skipped when absent) in both precisions:
  seconds per image, the largest probability difference (inside the FOV and anywhere) and the scores (AUC,
  F1 @0.5, ...) inside the FOV of each, with their differences. A score that moves by more than 0.002 is
  flagged: keep float32 for evaluation then. The images are DRIVE's 20 training images, 16 of which
  drive_repro's checkpoint was trained on: the scores compare the two precisions, they are not a held-out
  result (drive_repro.py's held-out scores are in retina_vessel/README.md).

The table is printed and written to ``--out`` (JSON, default ``bench/results/inference.json``; never
replaced without ``--overwrite``). Run it alone on an idle machine: times of a shared machine mean little.

    python bench/inference.py                                   # both sections, every task
    python bench/inference.py --sections timing --tasks ultrasound_nerve fingernail --repeats 3
    python bench/inference.py --sections drive --drive-checkpoint work/bench/drive_repro/run/best.keras
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DRIVE = ROOT.parent / "shared" / "data" / "drive"
DEFAULT_CHECKPOINT = ROOT / "work" / "bench" / "drive_repro" / "run" / "best.keras"
DEFAULT_OUT = ROOT / "bench" / "results" / "inference.json"
SCORES = ("auc", "f1", "accuracy", "sensitivity", "specificity", "auc_pr")
FLAG = 0.002  # a score difference above this is reported (issue 24: keep float32 for evaluation then)


def _time_pair(models, x, repeats):
    """Median seconds of ``predict_on_batch(x)`` of each model, the models alternating; one warm-up call each."""
    times = {name: [] for name in models}
    for model in models.values():
        model.predict_on_batch(x)
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.predict_on_batch(x)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def timing(tasks, mixed, repeats):
    """Rows ``{"task", "case", "input", "batch", "float32_s_per_image", "<mixed>_s_per_image", "ratio"}``."""
    import keras

    from bench.input_pipeline import TASKS
    from bench.train_step import ALL_CASES
    from common.devices import apply_precision, set_precision
    from common.models import build_model

    rows = []
    for task in tasks:
        case = TASKS[task][0]
        name, shape, batch, _ = ALL_CASES[case]
        set_precision("off")
        keras.utils.set_random_seed(0)
        model = build_model(name, shape)
        x = np.random.default_rng(0).random((batch,) + tuple(shape), dtype=np.float32)
        seconds = _time_pair({"float32": model, mixed: apply_precision(model, mixed)}, x, repeats)
        row = {"task": task, "case": case, "input": "x".join(map(str, shape)), "batch": batch,
               "float32_s_per_image": seconds["float32"] / batch, f"{mixed}_s_per_image": seconds[mixed] / batch,
               "ratio": seconds["float32"] / seconds[mixed]}
        rows.append(row)
        print(f"| {task} | {case} | {row['input']} | {batch} | {row['float32_s_per_image']:.4f} | "
              f"{row[f'{mixed}_s_per_image']:.4f} | {row['ratio']:.2f} |", flush=True)
        del model
        keras.backend.clear_session()
    return rows


def drive(drive_dir, checkpoint, mixed, inference, n_images):
    """The DRIVE comparison as a dict, or ``{"skipped": reason}``."""
    from common.data.preprocess import my_preproc
    from common.devices import set_precision
    from common.metrics import segmentation_scores
    from common.predict import load_checkpoint
    from retina_vessel import evaluate, prepare_datasets_DRIVE

    if not (Path(drive_dir) / "training" / "images").is_dir():
        return {"skipped": f"{drive_dir}/training/images not found (the real DRIVE images)"}
    if not Path(checkpoint).is_file():
        return {"skipped": f"{checkpoint} not found (train one: python bench/drive_repro.py)"}
    imgs, truth, fov = (a.transpose(0, 2, 3, 1) for a in
                        prepare_datasets_DRIVE.read_split(drive_dir, "train", n_images=None, verbose=False))
    imgs, truth, fov = imgs[:n_images], truth[:n_images], fov[:n_images]
    x = my_preproc(imgs)
    result = {"images": len(x), "inference": inference, "checkpoint": str(checkpoint), "precisions": {}}
    probs = {}
    for label, value in (("float32", "off"), (mixed, mixed)):
        # the global policy stays the label's while segmenting: the whole-image pass rebuilds the model at the
        # image's size under it (as evaluate.py does after loading under its --mixed-precision)
        model = load_checkpoint(checkpoint, value)
        evaluate.segment(model, x[:1], inference)  # warm-up (tracing)
        start = time.perf_counter()
        probs[label] = evaluate.kill_border(evaluate.segment(model, x, inference), fov)
        seconds = (time.perf_counter() - start) / len(x)
        set_precision("off")
        scores = segmentation_scores(truth, probs[label], threshold=evaluate.THRESHOLD, fov=fov, curves=True)
        result["precisions"][label] = {"s_per_image": seconds, **{k: float(scores[k]) for k in SCORES}}
    inside = np.asarray(fov) > 0
    diff = np.abs(probs[mixed].astype(np.float64) - probs["float32"])
    result["max_prob_diff_fov"] = float(diff[inside].max())
    result["max_prob_diff"] = float(diff.max())
    result["score_diff"] = {k: result["precisions"][mixed][k] - result["precisions"]["float32"][k] for k in SCORES}
    result["flagged"] = [k for k, d in result["score_diff"].items() if abs(d) > FLAG]
    return result


def main(argv=None):
    from common import cli
    from common.data.io import atomic_path
    from common.devices import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from bench.input_pipeline import TASKS

    parser.add_argument("--sections", nargs="+", choices=("timing", "drive"), default=["timing", "drive"])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS),
                        help="tasks of the timing section (default: all seven)")
    parser.add_argument("--mixed-precision", choices=[p for p in PRECISIONS if p != "off"], default="bfloat16",
                        help="the precision compared with float32 (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model and precision (default 5)")
    parser.add_argument("--drive-dir", type=Path, default=DEFAULT_DRIVE,
                        help="DRIVE folder with training/{images,1st_manual,mask} (default: %(default)s)")
    parser.add_argument("--drive-checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="trained bcdu_net_d3 checkpoint (default: %(default)s, bench/drive_repro.py's)")
    parser.add_argument("--drive-inference", choices=("full", "overlap"), default="full",
                        help="retina_vessel inference mode (default: full; overlap is the original's stride 5, "
                             "~100x more work)")
    parser.add_argument("--drive-images", type=int, default=20, help="DRIVE training images used (default: all 20)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    for option, value in (("--repeats", args.repeats), ("--drive-images", args.drive_images)):
        if value < 1:
            raise cli.option_error(option, f"expected a whole number >= 1, got {value}")
    if args.out.exists() and not args.overwrite:
        raise cli.option_error("--out", f"{args.out} exists; pass --overwrite to replace it, or another --out")
    mixed = args.mixed_precision
    results = {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "precision": mixed}
    if "timing" in args.sections:
        print(f"| task | model | input | batch | float32 s/image | {mixed} s/image | float32 / {mixed} time |\n"
              "|---|---|---|---|---|---|---|", flush=True)
        results["timing"] = timing(args.tasks, mixed, args.repeats)
    if "drive" in args.sections:
        d = drive(args.drive_dir, args.drive_checkpoint, mixed, args.drive_inference, args.drive_images)
        results["drive"] = d
        if "skipped" in d:
            print(f"\ndrive: skipped: {d['skipped']}")
        else:
            print(f"\nDRIVE, {d['images']} real training images, {d['inference']} inference, {d['checkpoint']}:")
            print(f"| precision | s/image | {' | '.join(SCORES)} |\n|---|---|" + "---|" * len(SCORES))
            for label, p in d["precisions"].items():
                print(f"| {label} | {p['s_per_image']:.3f} | " + " | ".join(f"{p[k]:.4f}" for k in SCORES) + " |")
            print(f"| difference | | " + " | ".join(f"{d['score_diff'][k]:+.4f}" for k in SCORES) + " |")
            print(f"largest probability difference: {d['max_prob_diff_fov']:.4f} inside the FOV, "
                  f"{d['max_prob_diff']:.4f} anywhere")
            print(f"scores moved by more than {FLAG}: {', '.join(d['flagged'])} (keep float32 for evaluation)"
                  if d["flagged"] else f"no score moved by more than {FLAG}")
    results["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten to {args.out} (load average {', '.join(f'{v:.1f}' for v in os.getloadavg())})")
    return 0


if __name__ == "__main__":
    from common import cli

    sys.exit(cli.run(main))
