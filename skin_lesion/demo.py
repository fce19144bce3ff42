"""End-to-end demo of the skin lesion task on synthetic dermoscopy photos: prepare -> train -> evaluate.

Synthetic ISIC-sized photos (about 600x450 to 1024x768 JPGs with an irregular darker lesion, 0/255 PNG
masks) are written in the official ISIC 2018 layout to ``<work-dir>/raw``; the three scripts run as a user
would run them, and the score is the pooled test-split F1 (Dice) with the correct definitions of
evaluate.py, on held-out images. Demo-only settings (a 32x32 input, a small split, lr 1e-3, a few epochs, and
the two options that keep the 2-channel ReLU head from collapsing: ``--prior-output-bias`` and ``--restarts``,
see README) are printed with the result.
"""

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from common.data.synthetic import write_isic_dataset
from skin_lesion import evaluate, prepare_isic2018, train_isic18

DEMO = {"train": 48, "val": 8, "test": 16, "size": 32, "model": "bcdu_net_d3", "epochs": 8, "lr": 1e-3,
        "batch_size": 8, "prior_output_bias": True, "restarts": 3, "seed": 2}
PASS_DICE = 0.7


def run(work_dir, epochs=None, verbose=0, seed=None):
    """Run the whole pipeline in ``work_dir``; returns a dict of results (``dice`` = held-out test F1)."""
    work_dir = Path(work_dir)
    cfg = dict(DEMO, epochs=epochs or DEMO["epochs"], seed=DEMO["seed"] if seed is None else seed)
    start = time.time()
    write_isic_dataset(work_dir / "raw", cfg["train"] + cfg["val"] + cfg["test"], seed=cfg["seed"])
    quiet = [] if verbose else ["--quiet"]
    prepare_isic2018.main(["--data-dir", str(work_dir / "raw"), "--work-dir", str(work_dir), "--size",
                           str(cfg["size"]), "--n-train", str(cfg["train"]), "--n-val", str(cfg["val"]),
                           "--n-test", str(cfg["test"]), "--overwrite"] + quiet)  # the demo owns its folder
    run_dir, out_dir = work_dir / "run", work_dir / "results"
    train_isic18.main(["--work-dir", str(work_dir), "--run-dir", str(run_dir), "--model", cfg["model"],
                       "--epochs", str(cfg["epochs"]), "--lr", str(cfg["lr"]), "--batch-size", str(cfg["batch_size"]),
                       "--seed", str(cfg["seed"]), "--verbose", str(verbose), "--overwrite"]
                      + ["--restarts", str(cfg["restarts"])]
                      + (["--prior-output-bias"] if cfg["prior_output_bias"] else []))
    evaluate.main(["--work-dir", str(work_dir), "--run-dir", str(run_dir), "--out-dir", str(out_dir), "--overwrite"]
                  + quiet)
    rows = json.loads((out_dir / "scores.json").read_text())
    correct = rows[2]
    return {"task": "skin_lesion", "model": cfg["model"], "metric": "test F1/Dice (held-out, pooled)",
            "dice": correct["F1"], "jaccard": correct["JS"], "f1_original_definitions": rows[1]["F1"],
            "pass": PASS_DICE, "seconds": time.time() - start,
            "settings": f"{cfg['train']} train / {cfg['val']} val / {cfg['test']} test synthetic photos, "
                        f"{cfg['size']}x{cfg['size']} input, {cfg['epochs']} epochs, lr {cfg['lr']}"
                        f"{' with prior output bias' if cfg['prior_output_bias'] else ''}, up to "
                        f"{cfg['restarts']} restarts of a collapsed head, batch {cfg['batch_size']}, "
                        f"seed {cfg['seed']}"}


def main(argv=None):
    return cli.demo_main(argv, __doc__, "skin_lesion", run, "dice", DEMO)


if __name__ == "__main__":
    sys.exit(cli.run(main))
