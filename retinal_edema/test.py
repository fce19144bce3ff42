"""Submission for unlabeled cubes: per-cube predicted label volumes and detections, zipped (the original's test.py).

Every cube of ``test_images.txt`` is normalised with ``info_test.json`` (the original computed it on the test
images), predicted in chunks of 8 slices (one model, or the fusion of several: mean softmax, mean detection)
without post-processing or test-time augmentation, and written to ``<out-dir>/segment/``:

* ``<cube>_labelMark_volumes.npy``: uint8 (n_slices, H, W), classes 0 bg, 1 REA, 2 SRF, 3 PED;
* ``<cube>_labelMark_detections.npy``: float32 (n_slices, 3), presence probabilities of REA, SRF, PED;

(``<cube>`` = the cube folder name without ``.img``), then ``<out-dir>/submission.zip`` holds all of them
flat, as the challenge expected. Every file is written atomically.
"""

import argparse
import sys
import zipfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from tqdm import tqdm

from common import cli
from common.data.io import atomic_path, save_npy
from retinal_edema.dataset import add_path_arguments, cube_name, load_cube, read_list, read_stats
from retinal_edema.eval import EVAL_BATCH, add_model_arguments, load_models, predict_cube, resolve_checkpoints


def write_submission(models, data_dir, images, mean, std, out_dir, batch=EVAL_BATCH, verbose=True):
    """Predict the listed cubes and write the .npy files and submission.zip; returns the zip's path."""
    segment = Path(out_dir) / "segment"
    written = []
    for image_rel in tqdm(images, desc="test cubes", unit="cube", disable=not verbose):
        x, _ = load_cube(data_dir, image_rel)
        pred, det = predict_cube(models, x, batch, mean, std)
        name = cube_name(image_rel)
        save_npy(segment / f"{name}_labelMark_volumes.npy", pred)
        written.append(segment / f"{name}_labelMark_volumes.npy")
        if det is not None:
            save_npy(segment / f"{name}_labelMark_detections.npy", det)
            written.append(segment / f"{name}_labelMark_detections.npy")
    archive = Path(out_dir) / "submission.zip"
    with atomic_path(archive) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in written:
                zf.write(path, arcname=path.name)
    return archive


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument("--train-stats", action="store_true",
                        help="normalise with info.json (training statistics) instead of info_test.json")
    parser.add_argument("--batch", type=int, default=EVAL_BATCH, help="slices per forward pass (default: 8)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="output folder (default: work/retinal_edema/test/<model or fusion>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    checkpoints, label = resolve_checkpoints(args)
    images = read_list(args.list_dir, "test", labels=False)
    mean, std = read_stats(args.list_dir, test=not args.train_stats)
    models = load_models(checkpoints)
    out_dir = args.out_dir or cli.repo_path("work", "retinal_edema", "test", label.replace(" ", "_"))
    archive = write_submission(models, args.data_dir, images, mean, std, out_dir, args.batch, not args.quiet)
    print(f"{label}: predictions of {len(images)} test cubes in {out_dir / 'segment'}; submission {archive}")
    return archive


if __name__ == "__main__":
    cli.run(main)
