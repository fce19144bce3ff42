"""The BCDU-Net DRIVE recipe on the 20 real DRIVE training images: 16 train / 4 held out, scored inside the FOV.

Runs the task's own code, step by step, as a user would (retina_vessel/prepare_datasets_DRIVE.py ``prepare``,
save_patch.py ``save_patches``, train_retina.py ``train``, evaluate.py ``evaluate``) on
``--drive-dir`` (default ``../shared/data/drive``, the official layout ``training/images/*.tif``,
``training/1st_manual/*.gif``, ``training/mask/*.gif``):

* fixed split: the images 21..36 train (``--held-out`` names the 4 others, default 37 38 39 40); links to the
  real files are laid out as a DRIVE folder with ``training/`` (16) and ``test/`` (the 4 held out, their
  FOV masks linked under the test names the prepare script reads) in ``<out-dir>/DRIVE``;
* the original's settings (spec ``bcdu_net.md``): my_PreProc, random 64x64 patches (centres anywhere in the
  565x565 crop, the original's effective rule), ``bcdu_net_d3``, Adam 1e-4, binary cross-entropy, batch 8,
  the last 20 % of the patches as validation, best ``val_loss`` checkpoint, ReduceLROnPlateau; evaluation of
  the best checkpoint at threshold 0.5 inside the FOV, with the original's overlapping windows (stride 5,
  batch 16) and with the whole-image pass;
* except the budget: ``--patches`` and ``--epochs`` (defaults 6,400 patches x 3 epochs = 1,920 training steps:
  46 minutes on 2 idle CPU cores, 921 s per epoch measured, the smallest budget measured that meets the
  target below; ``--epochs 2``, 30.5 minutes, missed its F1 by 0.004; ``--paper`` = the original's 200,000
  patches and 50 epochs).
  The stride-5 overlap pass over the 4 held-out images (42,840 windows) costs more than the training on a
  CPU; it runs last, after the whole-image result is written (``--inference full`` skips it).

Printed and written to ``--out-dir`` (default ``work/bench/drive_repro``; an existing result is never replaced
without ``--overwrite``): ``results.md`` / ``results.json`` (AUC-ROC, AUC-PR, F1, SE, SP, ACC of both inference
modes beside the paper's BCDU-Net row, the split, the budget, seconds per epoch, the machine's load),
``eval_full/`` and ``eval_overlap/`` (evaluate.py's tables, ``sample_results.png``, ``roc_pr.png``),
``run/`` (checkpoints, ``history.csv``, ``training_curves.png``).

    python bench/drive_repro.py                          # the CPU budget (46 min of training on 2 idle cores)
    python bench/drive_repro.py --prior-output-bias      # the option that keeps the 2-channel head alive
    python bench/drive_repro.py --paper                  # the original's full budget (a GPU job)
    python bench/drive_repro.py --patches 160 --epochs 1 --inference full --out-dir /tmp/drive_smoke
    python bench/drive_repro.py --resume                 # continue an interrupted run, then evaluate
    python bench/drive_repro.py --mixed-precision bfloat16 --out-dir work/bench/drive_repro_bf16   # issue 24
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.data.io import DataLayoutError, atomic_path
from common.errors import OptionError
from retina_vessel import evaluate, prepare_datasets_DRIVE, save_patch, train_retina

DEFAULT_DRIVE = cli.REPO_ROOT.parent / "shared" / "data" / "drive"
DEFAULT_OUT = cli.repo_path("work", "bench", "drive_repro")
HELD_OUT = ("37", "38", "39", "40")
PATCHES, EPOCHS = 6_400, 3  # the CPU budget; the original: save_patch.N_PATCHES, train_retina.EPOCHS
PAPER_ROW = dict(zip(("F1", "SE", "SP", "ACC", "AUC"), evaluate.PAPER[-1][2:]), **{"AUC-PR": "-", "seconds": "-"})
COLUMNS = ("method", "AUC", "AUC-PR", "F1", "SE", "SP", "ACC", "seconds")
TARGET = {"AUC": 0.96, "F1": 0.76}


class UsageError(OptionError):
    """A bad option or an existing result (one line, exit 2 through ``cli.run``)."""


class EpochTimer:
    """Keras callback (built lazily) adding ``epoch_seconds`` to the epoch logs, so history.csv records it."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.time()

            def on_epoch_end(self, epoch, logs=None):
                if logs is not None:
                    logs["epoch_seconds"] = time.time() - self.t0

        return _Timer()


def link_split(drive_dir, layout_dir, held_out):
    """Lay out links to the real training files as a DRIVE folder: ``training/`` = all but ``held_out``,
    ``test/`` = ``held_out`` (FOV masks linked as ``<id>_test_mask.gif``). Returns ``(train_ids, test_ids)``."""
    src = Path(drive_dir) / "training"
    images = sorted((src / "images").glob("*_training.tif"))
    if not images:
        raise DataLayoutError(f"{src / 'images'}: no <id>_training.tif images (the official DRIVE layout)")
    ids = [p.name[:2] for p in images]
    missing = sorted(set(held_out) - set(ids))
    if missing:
        raise UsageError(f"--held-out: {', '.join(missing)} not among the images in {src / 'images'}")
    for key in ids:
        for sub, name in (("1st_manual", f"{key}_manual1.gif"), ("mask", f"{key}_training_mask.gif")):
            if not (src / sub / name).is_file():
                raise DataLayoutError(f"{src / sub / name}: not found (the image {key}_training.tif needs it)")
    for key in ids:
        split = "test" if key in held_out else "training"
        links = {f"images/{key}_training.tif": f"images/{key}_training.tif",
                 f"1st_manual/{key}_manual1.gif": f"1st_manual/{key}_manual1.gif",
                 f"mask/{key}_{split}_mask.gif": f"mask/{key}_training_mask.gif"}
        for dst, real in links.items():
            path = Path(layout_dir) / split / dst
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to((src / real).resolve())
    return [k for k in ids if k not in held_out], [k for k in ids if k in held_out]


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def result_row(method, scores, seconds):
    return {"method": method, "AUC": scores["auc"], "AUC-PR": scores["auc_pr"], "F1": scores["f1"],
            "SE": scores["sensitivity"], "SP": scores["specificity"], "ACC": scores["accuracy"],
            "seconds": int(round(seconds))}


def write_results(out_dir, result):
    """results.json (everything) and results.md (the table, the split, the budget and the conditions)."""
    from common.report import markdown_table

    rows = result["rows"] + [dict(PAPER_ROW, method="paper BCDU-Net (DRIVE test set, 20 images)")]
    s = result["settings"]
    lines = [f"## BCDU-Net (bcdu_net_d3) on real DRIVE: {len(s['train_ids'])} train / {len(s['held_out'])} "
             f"held-out images, FOV pixels, threshold {s['threshold']}", "",
             markdown_table(rows, COLUMNS), "",
             f"- train images: {', '.join(s['train_ids'])}; held out: {', '.join(s['held_out'])}",
             f"- budget: {s['patches']:,} random {s['patch']}x{s['patch']} patches x {s['epochs']} epochs "
             f"(the original: 200,000 x 50); batch {s['batch_size']}, Adam {s['lr']:g}, last "
             f"{s['val_split']:.0%} of the patches for validation, seed {s['seed']}"
             + (", --prior-bias" if s["prior_bias"] else "") + (", --bidirectional" if s["bidirectional"] else ""),
             f"- training: {result['train_seconds']:.0f} s in this process, "
             f"{result['seconds_per_epoch'] or 'not recorded'} s per epoch; "
             f"best val_loss {result['best_val_loss']:.4f} (epoch {result['best_epoch']})",
             f"- machine: {s['machine']}; load average at start {s['load_start']}, at the end "
             f"{result.get('load_end')}",
             f"- target on this budget: AUC >= {TARGET['AUC']} and F1 >= {TARGET['F1']} -> "
             + "; ".join(f"{r['method']}: " + ("met" if r["AUC"] >= TARGET["AUC"] and r["F1"] >= TARGET["F1"]
                                               else "MISSED") for r in result["rows"])]
    text = "\n".join(lines) + "\n"
    with atomic_path(Path(out_dir) / "results.md") as tmp:
        tmp.write_text(text)
    with atomic_path(Path(out_dir) / "results.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=float))
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drive-dir", type=Path, default=DEFAULT_DRIVE,
                        help="folder holding training/{images,1st_manual,mask} (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="work folder (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out-dir")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out-dir (same options): reuse its prepared files "
                             "and patches, train only the missing epochs, then evaluate")
    parser.add_argument("--held-out", nargs="+", default=list(HELD_OUT),
                        help="ids of the held-out images (default: %(default)s)")
    parser.add_argument("--patches", type=int, default=None,
                        help=f"random training patches, a multiple of the training images (default: {PATCHES:,}; "
                             f"the original {save_patch.N_PATCHES:,})")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs (default: {EPOCHS}; the original {train_retina.EPOCHS})")
    parser.add_argument("--paper", action="store_true",
                        help=f"the original's budget: {save_patch.N_PATCHES:,} patches, {train_retina.EPOCHS} epochs")
    parser.add_argument("--lr", type=float, default=train_retina.LR, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--prior-output-bias", "--prior-bias", dest="prior_bias", action="store_true",
                        help="start the sigmoid output at the vessel share (train_retina.py --prior-output-bias)")
    parser.add_argument("--bidirectional", action="store_true", help="train_retina.py --bidirectional")
    parser.add_argument("--inference", nargs="+", choices=evaluate.INFERENCE, default=["full", "overlap"],
                        help="inference modes, in this order (default: full overlap)")
    parser.add_argument("--stride", type=int, default=evaluate.STRIDE,
                        help="overlap stride (default: %(default)s, the original's)")
    parser.add_argument("--seed", type=int, default=0, help="patch sampling and training seed (default: 0)")
    parser.add_argument("--mixed-precision", choices=("off", "bfloat16"), default="off",
                        help="train under mixed_bfloat16 (bfloat16: the CPU's fast path, issue 24); evaluation stays "
                             "float32. Default: off (float32, the original's). Give it its own --out-dir, e.g. "
                             "work/bench/drive_repro_bf16, to keep the float32 result beside it")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="Keras progress output (default: %(default)s, one line per epoch)")
    args = parser.parse_args(argv)
    if args.paper and (args.patches is not None or args.epochs is not None):
        raise UsageError("--paper: sets --patches and --epochs itself; give either --paper or those two")
    patches = save_patch.N_PATCHES if args.paper else (args.patches or PATCHES)
    epochs = train_retina.EPOCHS if args.paper else (args.epochs or EPOCHS)
    out_dir = args.out_dir
    if args.resume and args.overwrite:
        raise UsageError("--resume/--overwrite: choose one")
    if out_dir.exists() and any(out_dir.iterdir()) and not args.resume:
        if not args.overwrite:
            raise UsageError(f"{out_dir}: holds a previous result; pass --overwrite to replace it, --resume to "
                             f"continue it, or another --out-dir")
        if not (out_dir / "DRIVE").is_dir():  # --overwrite only ever removes a folder this bench made
            raise UsageError(f"{out_dir}: not a drive_repro.py folder (no DRIVE/ inside); --overwrite refuses to "
                             f"delete it, give another --out-dir")
        shutil.rmtree(out_dir)
    n_train = 20 - len(set(args.held_out))
    if patches % n_train:
        raise UsageError(f"--patches: {patches} is not a multiple of the {n_train} training images")

    start = time.time()
    settings = {"patches": patches, "epochs": epochs, "patch": save_patch.PATCH, "batch_size": train_retina.BATCH_SIZE,
                "lr": args.lr, "val_split": train_retina.VAL_SPLIT, "seed": args.seed, "prior_bias": args.prior_bias,
                "bidirectional": args.bidirectional, "threshold": evaluate.THRESHOLD, "stride": args.stride,
                "mixed_precision": args.mixed_precision,
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
                "load_start": load_average()}
    reuse = args.resume and (out_dir / save_patch.MASKS_FILE).is_file()
    if reuse:  # the split and the patches of the interrupted run
        ids = {split: sorted(p.name[:2] for p in (out_dir / "DRIVE" / split / "images").glob("*.tif"))
               for split in ("training", "test")}
        n_found = len(np.load(out_dir / save_patch.MASKS_FILE, mmap_mode="r"))
        if ids["test"] != sorted(set(args.held_out)) or n_found != patches:
            raise UsageError(f"--resume: {out_dir} holds held-out images {' '.join(ids['test'])} and {n_found} "
                             f"patches; give the same --held-out and --patches, or another --out-dir")
        train_ids, held_out = ids["training"], ids["test"]
    else:
        train_ids, held_out = link_split(args.drive_dir, out_dir / "DRIVE", set(args.held_out))
    settings.update(train_ids=train_ids, held_out=held_out)
    print(f"DRIVE split: train {' '.join(train_ids)}; held out {' '.join(held_out)}", flush=True)
    if not reuse:
        # inside this bench's own --out-dir (an existing one was refused or explicitly resumed/overwritten)
        prepare_datasets_DRIVE.prepare(out_dir / "DRIVE", out_dir, n_train=len(train_ids), n_test=len(held_out),
                                       verbose=bool(args.verbose), overwrite=True)
        save_patch.save_patches(out_dir, save_patch.PATCH, patches, args.seed, verbose=bool(args.verbose),
                                overwrite=True)
    t0 = time.time()
    _, history = train_retina.train(out_dir, out_dir / "run", epochs, train_retina.BATCH_SIZE, args.lr,
                                    train_retina.VAL_SPLIT, args.seed, args.bidirectional, args.prior_bias,
                                    resume=args.resume, verbose=args.verbose, callbacks=[EpochTimer()],
                                    mixed_precision=args.mixed_precision)
    train_seconds = time.time() - t0
    val = history["val_loss"]
    timed = [t for t in history.get("epoch_seconds", []) if t == t]  # NaN: an epoch run without the timer
    per_epoch = sum(timed) / len(timed) if timed else None
    result = {"settings": settings, "rows": [], "train_seconds": round(train_seconds, 1),
              "seconds_per_epoch": per_epoch and round(per_epoch, 1), "best_val_loss": min(val),
              "best_epoch": val.index(min(val)) + 1, "history": history}
    for mode in args.inference:
        t1 = time.time()
        ev = evaluate.evaluate(out_dir, out_dir / "run", out_dir / f"eval_{mode}", "best", mode, args.stride,
                               evaluate.BATCH_SIZE, evaluate.THRESHOLD, verbose=bool(args.verbose),
                               overwrite=True)  # inside this bench's own --out-dir (refused at the start)
        label = f"ours, {mode}" + (f" (stride {args.stride})" if mode == "overlap" else " (whole image)")
        result["rows"].append(result_row(label, ev["scores"], time.time() - t1))
        result["load_end"], result["total_seconds"] = load_average(), round(time.time() - start, 1)
        text = write_results(out_dir, result)  # after each mode, so a long overlap pass keeps the first row
    print("\n" + text + f"\nresults in {out_dir}")
    return result


if __name__ == "__main__":
    cli.run(main)
