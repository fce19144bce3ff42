"""End-to-end demo of the DRIVE task on synthetic fundus photos: prepare -> patches -> train -> evaluate.

A small synthetic DRIVE (``write_drive_dataset``: RGB TIFF fundus photos with branching vessels, GIF
annotations and FOV masks, the real folder layout and names) is written to ``<work-dir>/DRIVE``; the four
scripts run as a user would run them, and the scores are the AUC-ROC and the F1 of the binary maps at 0.5 inside
the FOV on the held-out synthetic test images; the demo passes when both beat their marks (``CHECKS``).
Demo-only settings: small images and 32x32 patches, 300 patches, 7 epochs at the original's lr 1e-4 and
without the prior bias, the whole-image inference (predict.py's default; the averaged windows of the original
lower the probabilities of thin vessels after so short a training, see the README).
"""

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.data.synthetic import write_drive_dataset
from retina_vessel import evaluate, prepare_datasets_DRIVE, save_patch, train_retina

DEMO = {"n_train": 6, "n_test": 2, "height": 104, "width": 96, "patch": 32, "n_patches": 300, "epochs": 7,
        "batch_size": 8, "lr": 1e-4, "stride": 8, "seed": 0, "prior_bias": False, "inference": "full"}
PASS_AUC, PASS_F1 = 0.85, 0.6
CHECKS = [("auc", PASS_AUC), ("f1", PASS_F1)]  # the ranking AND the thresholded mask a user looks at


def run(work_dir, epochs=None, verbose=0, seed=None):
    """Run the whole pipeline in ``work_dir``; returns a dict of results (``auc`` = FOV AUC-ROC on the test set)."""
    work_dir = Path(work_dir)
    cfg = dict(DEMO, epochs=epochs or DEMO["epochs"], seed=DEMO["seed"] if seed is None else seed)
    start = time.time()
    write_drive_dataset(work_dir / "DRIVE", cfg["n_train"], cfg["n_test"], (cfg["height"], cfg["width"]),
                        seed=cfg["seed"])
    quiet = [] if verbose else ["--quiet"]
    work = ["--work-dir", str(work_dir)]
    prepare_datasets_DRIVE.main(work + ["--drive-dir", str(work_dir / "DRIVE"), "--n-train", str(cfg["n_train"]),
                                        "--n-test", str(cfg["n_test"]), "--height", str(cfg["height"]),
                                        "--width", str(cfg["width"]), "--overwrite"] + quiet)
    save_patch.main(work + ["--patch", str(cfg["patch"]), "--n-patches", str(cfg["n_patches"]),
                            "--seed", str(cfg["seed"]), "--overwrite"] + quiet)
    run_dir = ["--run-dir", str(work_dir / "run")]
    train_retina.main(work + run_dir + ["--epochs", str(cfg["epochs"]), "--batch-size", str(cfg["batch_size"]),
                                        "--lr", str(cfg["lr"]), "--seed", str(cfg["seed"]),
                                        "--overwrite", "--verbose", str(2 if verbose else 0)]
                      + (["--prior-output-bias"] if cfg["prior_bias"] else []))
    evaluate.main(work + run_dir + ["--stride", str(cfg["stride"]), "--inference", cfg["inference"],
                                    "--out-dir", str(work_dir / "test"), "--overwrite"] + quiet)
    row = json.loads((work_dir / "test" / "performances.json").read_text())[0]
    return {"task": "retina_vessel", "model": "bcdu_net_d3",
            "metric": f"AUC-ROC and F1 @0.5 in FOV (held-out, {cfg['inference']})",
            "auc": row["AUC"], "f1": row["F1"], "pass": PASS_AUC, "checks": CHECKS, "seconds": time.time() - start,
            "settings": f"{cfg['n_train']} train / {cfg['n_test']} test synthetic {cfg['height']}x{cfg['width']} "
                        f"fundus images, {cfg['n_patches']} patches {cfg['patch']}x{cfg['patch']}, "
                        f"{cfg['epochs']} epochs, lr {cfg['lr']}, "
                        + ("--prior-output-bias, " if cfg["prior_bias"] else "")
                        + f"batch {cfg['batch_size']}, {cfg['inference']} inference, stride {cfg['stride']}, "
                          f"seed {cfg['seed']}"}


def main(argv=None):
    return cli.demo_main(argv, __doc__, "retina_vessel", run, "auc", DEMO)


if __name__ == "__main__":
    sys.exit(cli.run(main))
