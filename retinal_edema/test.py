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
from common.data.io import atomic_dir, atomic_path, save_npy
from retinal_edema.dataset import add_path_arguments, cube_name, load_cube, read_list, read_stats
from retinal_edema.eval import add_inference_arguments, add_model_arguments, check_common_options, check_out_dir, \
    default_out_dir, resolve_checkpoints, write_provenance
from retinal_edema.model_io import EVAL_BATCH, load_models, postprocess_cube, predict_cube


def write_submission(models, data_dir, images, mean, std, out_dir, batch=EVAL_BATCH, verbose=True, tta="none",
                     min_size=0, overwrite=False):
    """Predict the listed cubes and write the .npy files and submission.zip; returns the zip's path.

    ``segment/`` is filled in a temporary folder renamed into place when every cube is done, so a bad cube
    leaves no partial submission behind.
    """
    out_dir = Path(out_dir)
    written = []
    with atomic_dir(out_dir / "segment", overwrite=overwrite) as segment:
        for image_rel in tqdm(images, desc="test cubes", unit="cube", disable=not verbose):
            x, _ = load_cube(data_dir, image_rel)
            pred, det = predict_cube(models, x, batch, mean, std, tta=tta)
            if min_size > 0:
                pred = postprocess_cube(pred, min_size)
            name = cube_name(image_rel)
            save_npy(segment / f"{name}_labelMark_volumes.npy", pred)
            written.append(f"{name}_labelMark_volumes.npy")
            if det is not None:
                save_npy(segment / f"{name}_labelMark_detections.npy", det)
                written.append(f"{name}_labelMark_detections.npy")
    archive = out_dir / "submission.zip"
    with atomic_path(archive) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in written:
                zf.write(out_dir / "segment" / name, arcname=name)
    return archive


EXAMPLES = """examples:
  python retinal_edema/test.py --fusion                           # the original's submission
  python retinal_edema/test.py --name unet_nested --out-dir work/retinal_edema/test/mine
"""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    add_path_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument("--train-stats", action="store_true",
                        help="normalise with info.json (training statistics) instead of info_test.json")
    add_inference_arguments(parser, "test", "_tta-flip, _min<N>", "a submission")
    return parser


def main(argv=None):
    from common.devices import set_precision

    parser = build_parser()
    args = parser.parse_args(argv)
    check_common_options(args)
    checkpoints, label = resolve_checkpoints(args)
    out_dir = args.out_dir or default_out_dir("test", checkpoints, None, args.tta, args.min_size)
    check_out_dir(out_dir, ("segment", "submission.zip"), args.overwrite)
    images = read_list(args.list_dir, "test", labels=False)
    mean, std = read_stats(args.list_dir, test=not args.train_stats)
    set_precision(args.mixed_precision)  # before the models are loaded
    models = load_models(checkpoints, args.mixed_precision)
    archive = write_submission(models, args.data_dir, images, mean, std, out_dir, args.batch, not args.quiet,
                               tta=args.tta, min_size=args.min_size, overwrite=args.overwrite)
    write_provenance(out_dir, label, checkpoints, vars(args), [str(Path(args.data_dir) / p) for p in images])
    print(f"{label}: predictions of {len(images)} test cubes in {out_dir / 'segment'}; submission {archive}")
    return archive


if __name__ == "__main__":
    cli.run(main)
