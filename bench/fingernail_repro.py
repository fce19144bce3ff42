"""Reproduce the fingernail paper's U-Net2D (8-128) cell on the real dataset1, on this CPU.

Runs fingernail/prepare_data.py's loader on ``../shared/data/fingernail/dataset1`` (192 labelled photos,
172 train / 20 test, seed 144), trains ``unet2d_8_128`` with the original's settings (Adam 1e-5 with its
decay, batch 2, no shuffling, the test split as validation data) for ``--epochs`` epochs, and evaluates the
LAST epoch's weights with the original's pooled test Dice at threshold 0.3 (and 0.5). It prints the time
and the Dice beside the paper's 0.82 (BCE-Dice loss, notebook 0.820733) / 0.84 (BCE, notebook 0.835413) and
their ratio. The default epoch count is the paper's full 220, which takes about 30 minutes on 2 idle cores.

    python bench/fingernail_repro.py                      # the paper's protocol, BCE-Dice
    python bench/fingernail_repro.py --loss bce --epochs 100

Outputs (prepared arrays, run folder, tables, figures, ``result.json``) go to ``--out-dir``
(default ``bench/results/fingernail``, ignored by git).
"""

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.data.io import atomic_path
from fingernail import evaluate, prepare_data, train

DEFAULT_RAW = cli.REPO_ROOT.parent / "shared" / "data" / "fingernail"
MODEL = "unet2d_8_128"
PAPER = {"bce_dice": 0.82, "bce": 0.84}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW,
                        help="folder holding dataset1/{image,mask} (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=train.EPOCHS,
                        help="training epochs (default: %(default)s, the paper's; about 30 min on 2 idle cores)")
    parser.add_argument("--loss", choices=train.LOSSES, default="bce_dice",
                        help="bce_dice (paper 0.82) or bce (paper 0.84) (default: %(default)s)")
    parser.add_argument("--per-pixel-dice", action="store_true",
                        help="bce_dice with the original's per-pixel Dice (its exact loss)")
    parser.add_argument("--seed", type=int, default=prepare_data.SEED, help="split and training seed "
                        "(default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=cli.repo_path("bench", "results", "fingernail"),
                        help="work folder (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="Keras progress output (default: %(default)s, one line per epoch)")
    args = parser.parse_args(argv)
    if args.per_pixel_dice and args.loss != "bce_dice":
        parser.error("--per-pixel-dice needs --loss bce_dice")

    start = time.time()
    summary = prepare_data.prepare(args.raw_dir, args.out_dir, ["dataset1"], seed=args.seed,
                                   verbose=bool(args.verbose))
    rid = train.run_id("dataset1", MODEL, args.loss, args.epochs, train.BATCH_SIZE, prepare_data.ROWS,
                       prepare_data.COLS, args.per_pixel_dice)
    run_dir = args.out_dir / "runs" / rid
    t0 = time.time()
    train.train(args.out_dir, run_dir, "dataset1", MODEL, args.loss, args.per_pixel_dice, args.epochs,
                seed=args.seed, verbose=args.verbose)
    train_seconds = time.time() - t0
    row = evaluate.evaluate(run_dir, args.out_dir, args.out_dir / "results" / rid, "dataset1", MODEL, args.loss,
                            "last", verbose=0)
    paper = PAPER[args.loss]
    result = {"model": row["model"], "loss": args.loss + ("_per_pixel" if args.per_pixel_dice else ""),
              "epochs": args.epochs, "train": len(summary["train"]), "test": len(summary["test"]),
              "train_seconds": round(train_seconds, 1), "seconds_per_epoch": round(train_seconds / args.epochs, 2),
              "total_seconds": round(time.time() - start, 1), "dice@0.3": row["Dice@0.3"],
              "dice@0.5": row["Dice@0.5"], "paper": paper, "ratio": row["Dice@0.3"] / paper}
    with atomic_path(args.out_dir / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"\n{row['model']} on dataset1 ({result['train']} train / {result['test']} test), loss {result['loss']}, "
          f"{args.epochs} epochs in {train_seconds / 60:.1f} min ({result['seconds_per_epoch']:.1f} s/epoch)\n"
          f"test Dice (last epoch) @0.3 = {row['Dice@0.3']:.4f}, @0.5 = {row['Dice@0.5']:.4f}; paper {paper:.2f} "
          f"(@0.3) -> ratio {result['ratio']:.3f}\nresults in {args.out_dir}")
    return result


if __name__ == "__main__":
    cli.run(main)
