"""Segment your own OCT cubes with a trained retinal-edema network: label slices + detection probabilities.

Input: cube folders in the challenge's slice layout (``<cube>.img/1.bmp .. n.bmp``, 8-bit grey B-scans, as
``Edema_testset/original_images/<cube>.img``), or folders holding such cube folders, or glob patterns. Each
cube is processed exactly as eval.py / test.py process a stacked cube: slice i becomes the RGB input
[slice i+1, slice i, slice i-1] (gen_image.py's stacking, edges replicated), pixels/255 normalised with the
run's training mean/std (``state.json`` of the run; ``--stats info.json`` to use another file, e.g.
gen_image.py's ``info_test.json`` as the original's test.py), predicted in chunks of ``--batch-size``
slices, argmax over the 4 classes. Slices whose sides are not multiples of 16 are padded with black at the
bottom/right and the prediction is cropped back, so every output has the input's size.

Output in ``--out-dir``, per cube (``<cube>`` = the folder name without ``.img``):

* ``<cube>_labelMark/1.bmp .. n.bmp``: the challenge's label format (8-bit grey BMP, 0 background, 255 REA,
  191 SRF, 128 PED), one per input slice, same name and size, so it compares with ``label_images`` as is;
* ``<cube>_labelMark_detections.csv``: per slice the detection probabilities of REA, SRF and PED;
* with ``--overlay``: ``<cube>_overlay.png`` (middle slice | prediction, REA blue, SRF green, PED red);
* with ``--save-probabilities``: ``<cube>_prob.npy`` (float16 (n, H, W, 4) softmax).

plus ``run.json``. ``--min-size N`` (ours, off by default as the original) removes per slice the lesion
regions smaller than N pixels; ``--tta flip`` (ours) averages the softmax over left-right and up-down flips.
"""

import argparse
import csv
import glob
import io
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data.io import read_image
from common.errors import UserError
from common.predict import add_predict_arguments, checkpoint_path, extra_outputs, overlay_image, run_inputs
from retinal_edema.dataset import CLASS_NAMES, sorted_slices
from retinal_edema.task import DEFAULT_MODEL, INFERENCE, colourise, read_stats_file

EVAL_BATCH = INFERENCE["batch_size"]
DEFAULT_RUN = f"weights/retinal_edema/{DEFAULT_MODEL}_nopre_mix_33_0.001"  # train.py's default run folder
EXAMPLES = """examples:
  python retinal_edema/predict.py data/retinal_edema/Edema_testset/original_images --out-dir work/edema_pred
  python retinal_edema/predict.py my_scans/P0001_cube_z.img --model run/best.keras --overlay --out-dir out
  python retinal_edema/predict.py "scans/*.img" --run-dir weights/retinal_edema/unet_nopre_mix_3_0.001 \\
      --tta flip --min-size 50 --out-dir out
"""


def _is_cube(folder):
    return folder.is_dir() and any(p.suffix.lower() == ".bmp" for p in folder.iterdir() if p.is_file())


def collect_cubes(specs):
    """Cube folders named by ``specs``: a cube folder (holds .bmp slices), a folder of cube folders, or a glob
    pattern of either; ``UserError`` for a missing path, a folder without cubes or a plain file."""
    cubes, seen = [], set()
    for spec in specs:
        paths = [Path(p) for p in sorted(glob.glob(spec))] if set("*?[") & set(spec) and not Path(spec).exists() \
            else [Path(spec)]
        if not paths:
            raise UserError(f"{spec}: the pattern matches no cube folder")
        for path in paths:
            if not path.exists():
                raise UserError(f"{path}: no such folder (give cube folders <cube>.img holding 1.bmp .. n.bmp)")
            if not path.is_dir():
                raise UserError(f"{path}: not a cube folder (give the folder <cube>.img holding 1.bmp .. n.bmp)")
            found = [path] if _is_cube(path) else sorted(p for p in path.iterdir() if _is_cube(p))
            if not found:
                raise UserError(f"{path}: no .bmp slices and no cube folders with .bmp slices in it")
            for cube in found:
                if cube.resolve() not in seen:
                    seen.add(cube.resolve())
                    cubes.append(cube)
    return cubes


def cube_stem(cube):
    """``P0001_..._cube_z.img`` -> ``P0001_..._cube_z`` (the challenge's label folder prefix)."""
    name = Path(cube).name
    return name[:-4] if name.endswith(".img") else name


def read_cube(cube):
    """The cube's slices (numeric order, 1.bmp ..) as (n, H, W) uint8 and their file names."""
    files = sorted_slices(cube, (".bmp",), 1)
    first = read_image(files[0], "gray")
    return np.stack([first] + [read_image(p, "gray", first.shape) for p in files[1:]]), [p.name for p in files]


def resolve_stats(args, checkpoint):
    """(mean, std): ``--stats`` (an info.json) or the training statistics stored in the run's state.json."""
    from retinal_edema.task import run_context

    if args.stats is not None:
        return read_stats_file(args.stats)
    stats = run_context(Path(checkpoint).parent)
    return np.float32(stats["mean"]), np.float32(stats["std"])


def detections_csv(names, det):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["slice"] + list(CLASS_NAMES))
    for name, row in zip(names, det):
        writer.writerow([name] + [f"{v:.6f}" for v in row])
    return buffer.getvalue()


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    add_predict_arguments(parser, default_run_dir=DEFAULT_RUN)
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH,
                        help="slices per forward pass (default: %(default)s, as eval.py)")
    parser.add_argument("--stats", type=Path, default=None,
                        help="info.json with the normalisation mean/std (default: the run's training statistics "
                             "from state.json)")
    parser.add_argument("--min-size", type=int, default=0,
                        help="ours: per slice, lesion regions smaller than this many pixels become background "
                             "(default: %(default)s = off, as the original)")
    return parser


def main(argv=None):
    from common.predict import segmenter_from_args

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        raise cli.option_error("--batch-size", f"must be positive, got {args.batch_size}")
    if args.min_size < 0:
        raise cli.option_error("--min-size", f"must be >= 0, got {args.min_size}")
    cubes = collect_cubes(args.inputs)
    options = {"batch_size": args.batch_size, "min_size": args.min_size}
    if args.stats is not None:
        mean, std = read_stats_file(args.stats)
        options.update(mean=mean.tolist(), std=std.tolist())
    default_run = None
    if args.onnx is None:
        from retinal_edema.model_io import default_run_dir, preset

        default_run = default_run_dir(DEFAULT_MODEL, preset(DEFAULT_MODEL)["loss"], preset(DEFAULT_MODEL)["lr"])
        checkpoint_path(args, default_run)  # a missing checkpoint named before anything else
    seg, weights = segmenter_from_args(args, "retinal_edema", default_run_dir=default_run, **options)
    mean, std = np.float32(seg.options["mean"]), np.float32(seg.options["std"])

    def outputs(cube):
        stem = cube_stem(cube)
        names = [f"{stem}_labelMark/{p.name}" for p in sorted_slices(cube, (".bmp",), 1)]
        return names + [f"{stem}_labelMark_detections.csv", *extra_outputs(stem, args, prob_ext=".npy")]

    def process(cube):
        slices, names = read_cube(cube)
        result = seg.predict(slices, probabilities=args.save_probabilities)
        labels, pred, det, prob = result["mask"], result["classes"], result["detection"], result["prob"]
        stem = cube_stem(cube)
        results = {f"{stem}_labelMark/{name}": label for name, label in zip(names, labels)}
        if det is None:
            det = np.full((len(pred), 3), np.nan, np.float32)
        results[f"{stem}_labelMark_detections.csv"] = detections_csv(names, det)
        k = len(slices) // 2
        return {**results, **extra_outputs(
            stem, args, prob_ext=".npy", prob=lambda: lambda tmp: np.save(tmp, prob.astype(np.float16)),
            overlay=lambda: overlay_image(slices[k], colourise(np.zeros_like(slices[k]), pred[k]), alpha=0.6))}

    return run_inputs(cubes, process, args=args, outputs=outputs, model_name=seg.name, weights=weights,
                      extra={"normalisation": {"mean": mean.tolist(), "std": std.tolist()}})


if __name__ == "__main__":
    sys.exit(cli.run(main))
