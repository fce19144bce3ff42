"""Reproduce cells of the fingernail paper's table (4 models x 2 losses x 2 studies) on real photos.

Each cell is the original's protocol (specs/fingernail.md §3): fingernail/prepare_data.py's loaders on
``--raw-dir`` (sorted names, seed 144, test ratio 0.1: 172 train / 20 test for dataset1, 218 / 26 for
dataset1+dataset2), Adam 1e-5 with its legacy decay, batch 2, no shuffling, the test split as validation
data, 220 epochs, the LAST epoch's weights, the pooled test Dice at threshold 0.3 (and 0.5). ``bce_dice`` is
the original's loss (its per-pixel Dice); ``--dice image`` runs the image-level variant instead, which the
table does not compare with the paper. The table is printed in the paper's layout, the notebook's value
beside ours.

By default the U-Net2D cells (the one network that trains in reasonable time on a CPU: about 5-15 s per epoch
on 2 cores, so 20-55 minutes per cell) of both losses and both studies are run. A study whose data is not
under ``--raw-dir`` (``dataset1/`` and ``dataset2/``, each with ``image/`` and ``mask/``) is reported as
"data absent", never faked. The other models are too slow for a CPU; their time per epoch is measured from a
few training steps (``--time-steps``, on random input of the right shape) so the rest can be planned on a GPU.

    python bench/fingernail_repro.py                                   # U-Net2D: both losses, both studies
    python bench/fingernail_repro.py --losses bce_dice --epochs 50     # a reduced budget (said in the table)
    python bench/fingernail_repro.py --models unet2d_res_srnn_32_512 --studies dataset1 --raw-dir /data/nails
    python bench/fingernail_repro.py --dice image --losses bce_dice    # the image-level Dice variant

Outputs go to ``--out-dir`` (default ``bench/results/fingernail``, ignored by git): the prepared studies
(``<study>/``), one run folder per cell (``runs/<run id>/``, train.py's layout), evaluate.py's outputs and the
cell's ``cell.json`` (``results/<run id>/``), the per-model timing (``timing.json``) and the table
(``table.md``/``.json``, ``table.png``). A cell with a ``cell.json`` is not run again: its earlier result is
shown (``--overwrite`` re-runs it); a killed cell continues with ``--resume``.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data.io import DataLayoutError, atomic_path, write_json
from fingernail import evaluate, prepare_data, train

DEFAULT_RAW = cli.REPO_ROOT.parent / "shared" / "data" / "fingernail"
STUDIES = {"dataset1": ("dataset1",), "dataset1+dataset2": ("dataset1", "dataset2")}
STEPS_PER_EPOCH = {"dataset1": 86, "dataset1+dataset2": 109}  # ceil(172 / 2), ceil(218 / 2): spec §3
MODEL_ORDER = ("unet2d_8_128", "unet2d_res_32_512", "unet2d_res_srnn_32_512", "unet2d_res_srnn_8_128")


def study_absent(raw_dir, study):
    """None when every dataset of ``study`` is under ``raw_dir``, else the first missing folder."""
    for name in STUDIES[study]:
        for sub in ("image", "mask"):
            if not (Path(raw_dir) / name / sub).is_dir():
                return Path(raw_dir) / name / sub
    return None


def prepared(raw_dir, out_dir, study, overwrite=False):
    """Prepare ``study`` into ``out_dir/<study>`` unless an identical preparation is already there."""
    split = Path(out_dir) / study / "split.json"
    wanted = {"datasets": list(STUDIES[study]), "rows": prepare_data.ROWS, "cols": prepare_data.COLS,
              "test_ratio": prepare_data.TEST_RATIO, "seed": prepare_data.SEED}
    if split.is_file():
        old = json.loads(split.read_text())
        if all(old.get(k) == v for k, v in wanted.items()):
            return old
        if not overwrite:
            raise DataLayoutError(f"{split.parent}: holds another preparation ({ {k: old.get(k) for k in wanted} }); "
                                  f"pass --overwrite or another --out-dir")
    return prepare_data.prepare(raw_dir, out_dir, STUDIES[study], overwrite=overwrite, verbose=False)


def cell_id(model, loss, study, epochs, dice, mixed_precision="off"):
    return train.run_id(study, model, loss, epochs, train.BATCH_SIZE, prepare_data.ROWS, prepare_data.COLS,
                        dice=dice, mixed_precision=mixed_precision)


def run_cell(out_dir, model, loss, study, epochs, dice, resume=False, overwrite=False, verbose=2,
             mixed_precision="off"):
    """Train and evaluate one cell; returns its result dict (also written to ``results/<run id>/cell.json``).

    A run folder that already holds all ``epochs`` (a cell whose evaluation was interrupted) is evaluated
    without training again; its training time is then unknown (None).
    """
    rid = cell_id(model, loss, study, epochs, dice, mixed_precision)
    run_dir, res_dir = Path(out_dir) / "runs" / rid, Path(out_dir) / "results" / rid
    state = train_state(run_dir)
    complete = bool(state) and state["epoch"] >= epochs and not overwrite
    if state and not (complete or resume or overwrite):
        raise DataLayoutError(f"{run_dir}: holds an unfinished run of {state['epoch']} epochs; pass --resume to "
                              f"continue it, --overwrite to replace it, or another --out-dir")
    load = os.getloadavg()[0]
    wall = cpu = None
    trained = 0
    if not complete:
        wall, cpu = time.perf_counter(), time.process_time()
        trained = epochs - (state["epoch"] if state and resume else 0)
        train.train(out_dir, run_dir, study=study, model_name=model, loss=loss, dice=dice, epochs=epochs,
                    resume=resume, overwrite=overwrite and not resume, verbose=verbose,
                    mixed_precision=mixed_precision)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # the evaluation outputs of a cell without cell.json are an unfinished cell's: evaluated again
    row = evaluate.evaluate(run_dir, out_dir, res_dir, study, verbose=0, overwrite=True)
    per_epoch = (lambda s: round(s / trained, 2) if trained else None)
    result = {"model": model, "model name": train.MODELS[model], "study": study, "loss": loss,
              "dice": row["dice"], "loss variant": row["loss variant"], "epochs": epochs,
              "reduced budget": epochs < train.EPOCHS, "train": int(train_state(run_dir)["settings"]["train"]),
              "test": row["test images"], "Dice@0.3": row["Dice@0.3"], "Dice@0.5": row["Dice@0.5"],
              "paper (nb)": row["paper (nb, @0.3)"], "paper (README)": row["paper (README)"],
              "paper comparison": row["paper comparison"], "epochs timed": trained,
              "train wall s": None if wall is None else round(wall, 1),
              "train CPU s": None if cpu is None else round(cpu, 1),
              "wall s/epoch": per_epoch(wall or 0), "CPU s/epoch": per_epoch(cpu or 0),
              "load average at start": round(load, 2), "cores": os.cpu_count(),
              "finished": time.strftime("%Y-%m-%d %H:%M")}
    write_json(res_dir / "cell.json", result)
    return result


def train_state(run_dir):
    from common.training import read_state

    return read_state(run_dir)


def time_model(model_name, study, steps=10, warmup=2):
    """Seconds (wall and process CPU) per training step of ``model_name`` with the original's loss, batch and
    optimizer on random 160x192 input, and the projected time of one epoch of ``study``."""
    import keras

    from common.models import build_model

    keras.utils.set_random_seed(0)
    model = train.compile_model(build_model(model_name, (prepare_data.ROWS, prepare_data.COLS, 3)))
    rng = np.random.default_rng(0)
    x = rng.random((train.BATCH_SIZE, prepare_data.ROWS, prepare_data.COLS, 3), dtype=np.float32)
    y = (rng.random((train.BATCH_SIZE, prepare_data.ROWS, prepare_data.COLS, 1)) < 0.04).astype(np.float32)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model.train_on_batch(x, y)
    wall, cpu = (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps
    n = STEPS_PER_EPOCH[study]
    from bench.train_step import forward_flops  # the FLOP count of bench/train_step.py (3x the forward pass)

    return {"model": model_name, "parameters": int(model.count_params()),
            "GFLOP/step": round(3 * forward_flops(model) * train.BATCH_SIZE / 1e9, 1), "steps timed": steps,
            "wall s/step": round(wall, 3), "CPU s/step": round(cpu, 3), "study": study, "steps/epoch": n,
            "wall s/epoch": round(wall * n, 1), "CPU s/epoch": round(cpu * n, 1),
            "wall h for 220 epochs": round(wall * n * train.EPOCHS / 3600, 2),
            "load average": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}


def collect_cells(out_dir, raw_dir, dice):
    """Every cell of the paper's table: its stored result with the largest budget (any ``--epochs``; a
    smaller one is marked as a reduced budget in the table), "data absent", or nothing (not run)."""
    cells = {}
    for path in sorted(Path(out_dir).glob("results/*/cell.json")):
        cell = json.loads(path.read_text())
        if cell.get("loss") == "bce_dice" and cell.get("dice") != dice:
            continue
        key = (cell["model"], cell["loss"], cell["study"])
        if key not in cells or cell["epochs"] > cells[key]["epochs"]:
            cells[key] = cell
    for study in STUDIES:
        if study_absent(raw_dir, study) is not None:
            for model in MODEL_ORDER:
                for loss in train.LOSSES:
                    cells.setdefault((model, loss, study), "data absent")
    return cells


def _cell_text(cell):
    if cell is None:
        return "not run"
    if isinstance(cell, str):
        return cell
    text = f"{cell['Dice@0.3']:.4f}"
    notes = []
    if cell["reduced budget"]:
        notes.append(f"{cell['epochs']} epochs, reduced budget")
    if cell["dice"] == "image":
        notes.append("image-level Dice loss")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def table_rows(cells):
    """The paper's layout: one row per (model, study), the notebook's value beside ours for each loss."""
    rows = []
    for study in STUDIES:
        for model in MODEL_ORDER:
            row = {"Model": evaluate.PAPER_NAMES[model], "Data": "DS1" if study == "dataset1" else "DS1+2"}
            for loss, label in (("bce_dice", "BCE-Dice"), ("bce", "BCE")):
                nb, readme = evaluate.PAPER[(model, study, loss)]
                row[f"{label} paper (nb / README)"] = f"{nb:.6f} / {readme:.2f}"
                row[f"{label} ours"] = _cell_text(cells.get((model, loss, study)))
            rows.append(row)
    return rows


def plot_table(cells, path):
    """Bars: ours vs the notebook's value for every cell that was run."""
    from common.report import pyplot
    plt = pyplot()  # matplotlib on the Agg backend

    done = [(k, c) for k, c in cells.items() if isinstance(c, dict)]
    if not done:
        return
    labels = [f"{train.MODELS[m]}\n{'DS1' if s == 'dataset1' else 'DS1+2'} {l}" for (m, l, s), _ in done]
    ours = [c["Dice@0.3"] for _, c in done]
    paper = [c["paper (nb)"] if isinstance(c["paper (nb)"], float) and c["paper (nb)"] == c["paper (nb)"] else 0.0
             for _, c in done]
    xs = np.arange(len(done))
    fig, ax = plt.subplots(figsize=(max(4, 2.2 * len(done)), 3.6))
    ax.bar(xs - 0.2, paper, 0.4, label="paper (notebook)")
    ax.bar(xs + 0.2, ours, 0.4, label="ours (last epoch)")
    for x, value in zip(xs, ours):
        ax.text(x + 0.2, value + 0.01, f"{value:.3f}", ha="center", fontsize=8)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test Dice @0.3")
    ax.legend(loc="lower right", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODEL_ORDER, default=["unet2d_8_128"],
                        help="networks to train (default: unet2d_8_128, the one that fits a CPU)")
    parser.add_argument("--losses", nargs="+", choices=train.LOSSES, default=list(train.LOSSES),
                        help="losses (default: bce_dice bce)")
    parser.add_argument("--studies", nargs="+", choices=list(STUDIES), default=list(STUDIES),
                        help="studies (default: dataset1 dataset1+dataset2; one whose data is absent is "
                             "reported as such)")
    parser.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW,
                        help="folder holding dataset1/ and dataset2/ (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=train.EPOCHS,
                        help="training epochs per cell (default: %(default)s, the paper's; fewer is shown in the "
                             "table as a reduced budget)")
    parser.add_argument("--dice", choices=train.DICE_VARIANTS, default="pixel",
                        help="Dice of bce_dice: pixel = the original's loss (default), image = the image-level "
                             "variant (not compared with the paper)")
    parser.add_argument("--time-steps", type=int, default=10,
                        help="training steps timed per model for the time-per-epoch table; 0 = no timing "
                             "(default: %(default)s)")
    parser.add_argument("--time-models", nargs="+", choices=MODEL_ORDER, default=list(MODEL_ORDER),
                        help="models timed (default: all four)")
    parser.add_argument("--out-dir", type=Path, default=cli.repo_path("bench", "results", "fingernail"),
                        help="work folder (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue a killed cell")
    parser.add_argument("--mixed-precision", choices=("off", "bfloat16"), default="off",
                        help="train under mixed_bfloat16 (issue 24; evaluation stays float32); default off. Give it "
                             "its own --out-dir (e.g. bench/results/fingernail_bf16) so the tables do not mix")
    parser.add_argument("--overwrite", action="store_true",
                        help="re-run cells (and timings) that already have a result, replacing them")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="Keras progress output (default: %(default)s, one line per epoch)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.epochs < 1 or args.time_steps < 0:
        raise cli.option_error("--epochs/--time-steps", "--epochs must be at least 1 and --time-steps at least 0")
    if args.resume and args.overwrite:
        raise cli.option_error("--resume/--overwrite", "choose one (continue a killed cell, or replace cells)")

    out = args.out_dir
    for study in args.studies:
        missing = study_absent(args.raw_dir, study)
        for model in args.models:
            for loss in args.losses:
                dice = args.dice if loss == "bce_dice" else None
                cell_json = out / "results" / cell_id(model, loss, study, args.epochs, dice,
                                                             args.mixed_precision) / "cell.json"
                if missing is not None:
                    print(f"{study}: data absent ({missing}); {model} {loss} not run")
                elif cell_json.is_file() and not args.overwrite:
                    c = json.loads(cell_json.read_text())
                    print(f"{cell_json.parent.name}: earlier result kept (Dice@0.3 {c['Dice@0.3']:.4f}, "
                          f"{c['finished']}); --overwrite re-runs it")
                else:
                    prepared(args.raw_dir, out, study, args.overwrite)
                    print(f"\n=== {model}, {loss}{f' ({dice} Dice)' if dice else ''}, {study}, {args.epochs} epochs")
                    c = run_cell(out, model, loss, study, args.epochs, dice, args.resume, args.overwrite,
                                 args.verbose, mixed_precision=args.mixed_precision)
                    took = (f"{c['wall s/epoch']:.1f} s/epoch" if c["wall s/epoch"] is not None
                            else "trained earlier (time not known here)")
                    print(f"Dice@0.3 {c['Dice@0.3']:.4f} (paper {c['paper (nb)']:.4f}), {took}")
    cells = collect_cells(out, args.raw_dir, args.dice)

    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    if args.time_steps:
        for model in args.time_models:
            if model in timing and not args.overwrite:
                continue
            print(f"timing {model} ({args.time_steps} steps)...")
            timing[model] = time_model(model, "dataset1", args.time_steps)
            write_json(timing_path, timing)

    from common.report import write_table

    rows = table_rows(cells)
    title = (f"Fingernail test Dice @0.3, last epoch, the paper's 220 epochs unless marked "
             f"({'the original per-pixel' if args.dice == 'pixel' else 'image-level'} Dice in BCE-Dice)")
    print("\n" + write_table(rows, out / "table", title=title))
    if timing:
        trows = []
        for model in MODEL_ORDER:
            if model not in timing:
                continue
            t = timing[model]
            trained = [c for (m, _, s), c in cells.items() if m == model and s == "dataset1" and isinstance(c, dict)]
            trows.append({"model": evaluate.PAPER_NAMES[model], "parameters": t["parameters"],
                          "GFLOP/step": t.get("GFLOP/step"),
                          "wall s/step": t["wall s/step"], "CPU s/step": t["CPU s/step"],
                          "s/epoch DS1 (86 steps)": t["wall s/epoch"], "CPU s/epoch DS1": t["CPU s/epoch"],
                          "s/epoch DS1+2 (109 steps)":
                              round(t["wall s/step"] * STEPS_PER_EPOCH["dataset1+dataset2"], 1),
                          "h for 220 epochs DS1": t["wall h for 220 epochs"],
                          "measured s/epoch (trained cells)": ", ".join(
                              f"{c['wall s/epoch']:.1f}" for c in trained if c["wall s/epoch"] is not None) or "-",
                          "load average": t["load average"]})
        print("\n" + write_table(trows, out / "timing_table",
                                 title=f"Time per epoch on this CPU ({os.cpu_count()} cores; from "
                                       f"{max(timing[m]['steps timed'] for m in timing)} timed steps per model, "
                                       "batch 2, 160x192; wall time depends on the machine's load)"))
    plot_table(cells, out / "table.png")
    print(f"\ntables and figures in {out}")
    return cells


if __name__ == "__main__":
    cli.run(main)
