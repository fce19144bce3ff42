"""End-to-end demo of the retinal-edema task on synthetic OCT cubes: gen_image -> train -> eval -> test.

Synthetic cubes in the AI Challenger 2018 layout (layered retina-like bands, dark fluid-like pockets for REA,
SRF and PED, BMP grey-value labels) are written to ``<work-dir>/dataset``; the four scripts run as a user
would run them. Scores are measured on held-out synthetic test cubes (never seen in training or model
selection): the original's final Dice (mean of the NaN-skipping class means over REA, SRF, PED) and the mean
detection ROC-AUC. The pass mark needs both: Dice > 0.5 and AUC > 0.8; the demo's score is
``min(Dice / 0.5, AUC / 0.8)``, which passes when it exceeds 1. Demo-only settings (small slices, fewer and
shorter cubes, batch 8, a few epochs, so it learns in about a minute on 2 CPU cores) are printed with the result.
"""

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.data.synthetic import write_retinal_edema_dataset
from retinal_edema import eval as evaluate
from retinal_edema import gen_image, test, train

DEMO = {"train": 8, "val": 2, "test": 4, "slices": 16, "rows": 64, "cols": 32, "name": "unet", "loss": "mix_3",
        "epochs": 12, "batch_size": 8, "lr": 1e-3, "lr_mode": "poly", "seed": 1}
PASS_DICE, PASS_AUC = 0.5, 0.8


def run(work_dir, epochs=None, verbose=0, seed=None):
    """Run the whole pipeline in ``work_dir``; returns a dict of results (``score``, ``dice``, ``auc``)."""
    work_dir = Path(work_dir)
    cfg = dict(DEMO, epochs=epochs or DEMO["epochs"], seed=DEMO["seed"] if seed is None else seed)
    start = time.time()
    data, lists, run_dir = work_dir / "dataset", work_dir / "lists", work_dir / "run"
    write_retinal_edema_dataset(data, cfg["train"], cfg["val"], cfg["test"], cfg["slices"],
                                (cfg["rows"], cfg["cols"]), seed=cfg["seed"])
    quiet = [] if verbose else ["--quiet"]
    paths = ["-d", str(data), "-l", str(lists)]
    gen_image.main(paths + quiet + ["--overwrite"])  # the demo's own scratch folder is rewritten every run
    train.main(paths + ["--name", cfg["name"], "--loss", cfg["loss"], "--epochs", str(cfg["epochs"]),
                        "--batch-size", str(cfg["batch_size"]), "--lr", str(cfg["lr"]), "--lr-mode",
                        cfg["lr_mode"], "--seed", str(cfg["seed"]), "--run-dir", str(run_dir),
                        "--verbose", str(verbose), "--overwrite"])
    checkpoint = ["--checkpoints", str(run_dir / "best.keras")]
    row = evaluate.main(paths + checkpoint + ["--phase", "test", "--out-dir", str(work_dir / "eval"), "--overwrite"]
                        + quiet)
    test.main(paths + checkpoint + ["--out-dir", str(work_dir / "test"), "--overwrite"] + quiet)
    dice, auc = row["Dice"], row["AUC"]
    state = json.loads((run_dir / "state.json").read_text())
    return {"task": "retinal_edema", "model": cfg["name"],
            "metric": f"min(Dice/{PASS_DICE}, AUC/{PASS_AUC}) on held-out cubes: Dice {dice:.3f}, AUC {auc:.3f}",
            "score": min(dice / PASS_DICE, auc / PASS_AUC), "dice": dice, "auc": auc, "pass": 1.0,
            "seconds": time.time() - start,
            "settings": f"{cfg['train']} train / {cfg['val']} val / {cfg['test']} test synthetic cubes of "
                        f"{cfg['slices']} slices {cfg['rows']}x{cfg['cols']}, {cfg['loss']}, {cfg['epochs']} "
                        f"epochs, lr {cfg['lr']} {cfg['lr_mode']}, batch {cfg['batch_size']}, seed {cfg['seed']}, "
                        f"best epoch by val Dice {state['best']:.3f}"}


def main(argv=None):
    return cli.demo_main(argv, __doc__, "retinal_edema", run, "score", DEMO)


if __name__ == "__main__":
    sys.exit(cli.run(main))
