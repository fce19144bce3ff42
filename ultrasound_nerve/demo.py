"""End-to-end demo of the nerve task on synthetic data: data.py -> train.py -> submission.py -> score.

Synthetic frames in the Kaggle layout are written to ``<work-dir>/raw``; the three scripts run as a user
would run them; the submission CSV is decoded and scored against the hidden test masks with the Kaggle
metric (mean per-image Dice, empty on empty = 1). Demo-only settings (a higher learning rate and a few
epochs, so it learns in about a minute on 2 CPU cores) are printed with the result.
"""

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data.io import read_image
from common.data.synthetic import write_nerve_dataset
from common.metrics import mean_dice
from common.rle import rle_decode
from ultrasound_nerve import data, submission, train
from ultrasound_nerve.data import IMAGE_COLS, IMAGE_ROWS

DEMO = {"subjects": 8, "per_subject": 12, "test": 24, "epochs": 30, "lr": 5e-5, "batch_size": 16, "img_size": 64,
        "seed": 1}
PASS_DICE = 0.7


def run(work_dir, epochs=None, verbose=0):
    """Run the whole pipeline in ``work_dir``; returns a dict of results (``dice`` is the Kaggle score)."""
    work_dir = Path(work_dir)
    cfg = dict(DEMO, epochs=epochs or DEMO["epochs"])
    start = time.time()
    write_nerve_dataset(work_dir / "raw", cfg["subjects"], cfg["per_subject"], cfg["test"], seed=cfg["seed"])
    quiet = [] if verbose else ["--quiet"]
    # the demo owns its folder: each run replaces the previous demo's arrays, run and CSV
    data.main(["--raw-dir", str(work_dir / "raw"), "--work-dir", str(work_dir), "--overwrite"] + quiet)
    train.main(["--work-dir", str(work_dir), "--run-dir", str(work_dir / "run"), "--epochs", str(cfg["epochs"]),
                "--lr", str(cfg["lr"]), "--batch-size", str(cfg["batch_size"]), "--img-size", str(cfg["img_size"]),
                "--seed", str(cfg["seed"]),
                "--verbose", str(verbose), "--no-png", "--overwrite"])
    csv_path = submission.main(["--work-dir", str(work_dir), "--overwrite"] + quiet)
    rles = submission.read_submission(csv_path)
    truth = np.stack([read_image(work_dir / "raw" / "test_truth" / f"{i}_mask.tif", "gray") for i in sorted(rles)])
    pred = np.stack([rle_decode(rles[i], (IMAGE_ROWS, IMAGE_COLS)) for i in sorted(rles)])
    return {"task": "ultrasound_nerve", "model": "nerve_unet", "metric": "Kaggle mean Dice (held-out)",
            "dice": mean_dice(truth, pred), "pass": PASS_DICE, "seconds": time.time() - start,
            "settings": f"{cfg['subjects'] * cfg['per_subject']} train / {cfg['test']} test frames, "
                        f"{cfg['img_size']}x{cfg['img_size']} input, {cfg['epochs']} epochs, lr {cfg['lr']}, "
                        f"batch {cfg['batch_size']}"}


def main(argv=None):
    return cli.demo_main(argv, __doc__, "ultrasound_nerve", run, "dice", DEMO, options=("epochs",))


if __name__ == "__main__":
    sys.exit(cli.run(main))
