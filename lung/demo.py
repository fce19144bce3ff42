"""End-to-end demo of the lung task on synthetic CT volumes: prepare_data -> train_lung -> evaluate_performance.

Synthetic chest-CT volumes in the Kaggle 3-D layout (``3d_images/IMG_<id>.nii.gz`` in HU with
``MASK_<id>.nii.gz``, a few slices without lung at each end) are written to ``<work-dir>/raw``; the three
scripts run as a user would run them, and the score is the pooled Dice (F1) of the estimated lung on the
held-out test slices (the last 30 %, i.e. other volumes than the training ones), with the leak-free FOV
(the body FOV row of evaluate_performance.py's table; the demo folder is replaced on every run). Demo-only settings (32x32 slices instead of 512x512, no body erosion instead of 15x15, a higher learning
rate, a few epochs, so it learns in a few minutes on 2 CPU cores) are printed with the result.

Why no erosion: after the HU clipping, air and lung are both 0, so the eroded band inside the body outline
(not around-lung) and the uneroded tissue next to the lung (around-lung) look alike locally; the network has
to learn which dark region encloses which, and that takes far longer than a demo. Without erosion the
around-lung target is every body pixel, which the network learns in a few epochs.
"""

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.data.synthetic import write_lung_dataset
from lung import evaluate_performance, prepare_data, train_lung

DEMO = {"volumes": 8, "slices": 16, "size": 32, "erosion_size": 1, "model": "bcdu_net_d3", "epochs": 4,
        "lr": 1e-3, "batch_size": 2, "seed": 1}
PASS_DICE = 0.8


def run(work_dir, epochs=None, verbose=0, seed=None):
    """Run the whole pipeline in ``work_dir``; returns a dict of results (``dice`` = test F1 of the lung)."""
    work_dir = Path(work_dir)
    cfg = dict(DEMO, epochs=epochs or DEMO["epochs"], seed=DEMO["seed"] if seed is None else seed)
    start = time.time()
    write_lung_dataset(work_dir / "raw", cfg["volumes"], cfg["slices"], cfg["size"], seed=cfg["seed"])
    quiet = [] if verbose else ["--quiet"]
    summary = prepare_data.main(["--data-dir", str(work_dir / "raw"), "--work-dir", str(work_dir),
                                 "--slice-size", str(cfg["size"]), "--erosion-size", str(cfg["erosion_size"]),
                                 "--overwrite"] + quiet)  # the demo's own folder: a new demo replaces it
    run_dir = work_dir / "run"
    train_lung.main(["--overwrite", "--work-dir", str(work_dir), "--model", cfg["model"], "--run-dir", str(run_dir),
                     "--epochs", str(cfg["epochs"]), "--lr", str(cfg["lr"]), "--batch-size", str(cfg["batch_size"]),
                     "--seed", str(cfg["seed"]), "--verbose", str(verbose)])
    rows = evaluate_performance.main(["--work-dir", str(work_dir), "--run-dir", str(run_dir),
                                      "--out-dir", str(work_dir / "results"), "--overwrite"] + quiet)
    row = rows["body"]
    return {"task": "lung", "model": cfg["model"], "metric": "test lung Dice (F1, pooled, leak-free FOV)",
            "dice": row["F1"], "pass": PASS_DICE, "seconds": time.time() - start,
            "settings": f"{summary['n_train']} train (20 % of them validation) / {summary['n_test']} test slices "
                        f"of {cfg['volumes']} synthetic volumes, {cfg['size']}x{cfg['size']}, body erosion "
                        f"{cfg['erosion_size']}x{cfg['erosion_size']}, {cfg['epochs']} epochs, lr {cfg['lr']}, "
                        f"batch {cfg['batch_size']}, seed {cfg['seed']}"}


def main(argv=None):
    return cli.demo_main(argv, __doc__, "lung", run, "dice", DEMO)


if __name__ == "__main__":
    sys.exit(cli.run(main))
