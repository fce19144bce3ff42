"""End-to-end demo of the fingernail task on synthetic nail photos: prepare_data -> train -> evaluate.

Synthetic hand photos in the dataset1 layout (blue background, PNG image/mask pairs with the real folder's
quirks: unlabeled images, a mask without image, a mask without foreground) are written to
``<work-dir>/raw``; the three scripts run as a user would run them, and the score is the original's test Dice
(threshold 0.3, pooled) of the last-epoch U-Net2D on the held-out test split. Demo-only settings (a smaller
input, a higher learning rate, batch 4, a few epochs, so it learns in about a minute on 2 CPU cores) are
printed with the result.
"""

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.data.synthetic import write_fingernail_dataset
from fingernail import evaluate, prepare_data, train

DEMO = {"labeled": 60, "unlabeled": 4, "rows": 80, "cols": 96, "test_ratio": 0.2, "model": "unet2d_8_128",
        "loss": "bce_dice", "epochs": 12, "lr": 1e-3, "batch_size": 4, "seed": 1}
PASS_DICE = 0.7


def run(work_dir, epochs=None, verbose=0, seed=None):
    """Run the whole pipeline in ``work_dir``; returns a dict of results (``dice`` = test Dice at 0.3)."""
    work_dir = Path(work_dir)
    cfg = dict(DEMO, epochs=epochs or DEMO["epochs"], seed=DEMO["seed"] if seed is None else seed)
    start = time.time()
    write_fingernail_dataset(work_dir / "raw", cfg["labeled"], cfg["unlabeled"], seed=cfg["seed"])
    quiet = [] if verbose else ["--quiet"]
    prepare_data.main(["--raw-dir", str(work_dir / "raw"), "--work-dir", str(work_dir), "--rows", str(cfg["rows"]),
                       "--cols", str(cfg["cols"]), "--test-ratio", str(cfg["test_ratio"]),
                       "--seed", str(cfg["seed"]), "--overwrite"] + quiet)  # the demo's own synthetic data
    common = ["--work-dir", str(work_dir), "--model", cfg["model"], "--loss", cfg["loss"],
              "--run-dir", str(work_dir / "run")]
    train.main(common + ["--epochs", str(cfg["epochs"]), "--lr", str(cfg["lr"]), "--batch-size",
                         str(cfg["batch_size"]), "--seed", str(cfg["seed"]), "--shuffle", "--verbose", str(verbose),
                         "--overwrite"])  # the demo's own run and results: replaced on every demo
    row = evaluate.main(common + ["--out-dir", str(work_dir / "results"), "--overwrite"] + quiet)
    n_test = json.loads((work_dir / "dataset1" / "split.json").read_text())["test"]
    return {"task": "fingernail", "model": cfg["model"], "metric": "test Dice @0.3 (held-out, pooled)",
            "dice": row["Dice@0.3"], "pass": PASS_DICE, "seconds": time.time() - start,
            "settings": f"{cfg['labeled'] - len(n_test)} train / {len(n_test)} test synthetic photos, "
                        f"{cfg['rows']}x{cfg['cols']} input, {cfg['epochs']} epochs, lr {cfg['lr']}, "
                        f"batch {cfg['batch_size']}, shuffled, {cfg['loss']}, seed {cfg['seed']}"}


def main(argv=None):
    return cli.demo_main(argv, __doc__, "fingernail", run, "dice", DEMO)


if __name__ == "__main__":
    sys.exit(cli.run(main))
