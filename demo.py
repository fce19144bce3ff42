"""End-to-end demo: every implemented task on built-in synthetic data (no download).

Each task, in its own Python process, writes a small synthetic dataset in its real on-disk layout, then runs
its own prepare / train / evaluate scripts as a user would, and reports a held-out score against a pass mark.
The summary table is printed and written to ``<work-dir>/results.md`` and ``results.json``.

    python demo.py                       # all tasks, bfloat16 where this machine runs it natively
    python demo.py --tasks ultrasound_nerve
    python demo.py --mixed-precision off      # float32, as the scripts' own defaults

``--mixed-precision`` is passed to every train / evaluate / predict script the demos run. Its default ``auto``
takes the value ``python -m common.devices`` recommends for this machine: bfloat16 on a CPU with native
bfloat16 (AVX512-BF16 / AMX) or a GPU with bfloat16 tensor cores, else float32. Every task passed its pass mark
(set in float32) in both precisions (README); the table's title names the precision. The scripts' own defaults
stay the originals' float32.

A task whose process fails is marked FAILED in the table and the others still run; the exit status is 0 only
when every task ran and beat its pass mark.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import cli
from common.report import write_table

# task name -> module with run(work_dir) -> dict(metric, <score key>, pass, seconds, settings)
TASKS = {
    "ultrasound_nerve": ("ultrasound_nerve.demo", "dice"),
    "fingernail": ("fingernail.demo", "dice"),
    "retinal_edema": ("retinal_edema.demo", "score"),
    "skin_lesion": ("skin_lesion.demo", "dice"),
    "lung": ("lung.demo", "dice"),
    "retina_vessel": ("retina_vessel.demo", "auc"),
    "robotic_scene": ("robotic_scene.demo", "iou"),
}


_CHILD = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
from common.devices import set_default_precision
set_default_precision(sys.argv[5])
result = importlib.import_module(sys.argv[2]).run(sys.argv[3])
with open(sys.argv[4], "w") as f:
    json.dump(result, f, default=lambda o: o.item() if hasattr(o, "item") else str(o))
"""


def run_task(module_name, work_dir, result_file, precision="off"):
    """Run ``module_name.run(work_dir)`` in a fresh Python process and return its result dict; the scripts it
    runs take ``precision`` as their ``--mixed-precision`` default.

    Each task then runs as it does alone (``python <task>/demo.py``): it inherits neither TensorFlow's state
    nor the memory of the tasks before it."""
    result_file = Path(result_file)
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(Path(__file__).resolve().parent), module_name,
                           str(work_dir), str(result_file), precision])
    if proc.returncode or not result_file.exists():
        raise RuntimeError(f"{module_name}.run failed (exit code {proc.returncode}); its output is above")
    return json.loads(result_file.read_text())


def resolve_precision(value):
    """``(--mixed-precision value for the scripts, reason)``: ``auto`` becomes the value
    ``common.devices.recommend_precision`` gives for this machine (its reason returned), others stay."""
    if value != "auto":
        return value, ""
    from common.devices import cpu_info, device_info, measured_speedups, recommend_precision

    info = device_info()
    cpu = cpu_info(info["backend"])
    chosen, why = recommend_precision(cpu["flags"], cpu["onednn"]["enabled"], gpus=info["gpus"],
                                      measured=measured_speedups(model=cpu["model"]), system=cpu["system"])
    return chosen, f"auto: {why}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS),
                        help="tasks to run (default: all)")
    parser.add_argument("--work-dir", type=Path, default=cli.repo_path("work", "demo"),
                        help="where the synthetic data and runs go (default: %(default)s)")
    parser.add_argument("--mixed-precision", choices=("off", "auto", "bfloat16"), default="auto",
                        help="precision of the scripts the demos run: auto (the default: what python -m "
                             "common.devices recommends here, bfloat16 where it is native), off (float32) or "
                             "bfloat16")
    args = parser.parse_args(argv)
    precision, why = resolve_precision(args.mixed_precision)
    print(f"--mixed-precision {precision}" + (f" ({why})" if why else ""), flush=True)
    rows, start = [], time.time()
    for task in args.tasks:
        module_name, key = TASKS[task]
        print(f"=== {task} ===", flush=True)
        began = time.time()
        try:
            result = run_task(module_name, args.work_dir / task, args.work_dir / f"{task}_result.json", precision)
        except RuntimeError as exc:  # the task's process failed: mark it and run the others
            print(f"{task}: FAILED ({exc})", flush=True)
            rows.append({"task": task, "model": "", "metric": "", "score": float("nan"), "pass mark": "",
                         "ok": "FAILED", "seconds": round(time.time() - began), "settings": ""})
            continue
        ok, line = cli.demo_line(task, result, key)
        checks = cli.demo_checks(result, key)  # one score, or several (each must beat its mark)
        score = result[key] if len(checks) == 1 else ", ".join(f"{k} {result[k]:.3f}" for k, _ in checks)
        mark = f"> {checks[0][1]}" if len(checks) == 1 else ", ".join(f"{k} > {m}" for k, m in checks)
        rows.append({"task": task, "model": result["model"], "metric": result["metric"],
                     "score": score, "pass mark": mark, "ok": "yes" if ok else "NO",
                     "seconds": round(result["seconds"]), "settings": result["settings"]})
        print(line, flush=True)
    title = "Demo results (synthetic data)" + ("" if precision == "off" else f", --mixed-precision {precision}")
    table = write_table(rows, args.work_dir / "results", title=title, digits=3)
    print("\n" + table + f"\n\nTotal {time.time() - start:.0f} s; results in {args.work_dir / 'results.md'}")
    return 0 if all(r["ok"] == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
