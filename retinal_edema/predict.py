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
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data.io import read_image
from common.errors import UserError
from common.predict import add_predict_arguments, checkpoint_path, extra_outputs, overlay_image, run_inputs
from retinal_edema.dataset import CLASS_NAMES, GREY_CODES, sorted_slices
from retinal_edema.eval import colourise
from retinal_edema.gen_image import stack_slices
from retinal_edema.model_io import EVAL_BATCH, default_run_dir, load_models, postprocess_cube, predict_cube, preset

DEFAULT_RUN = default_run_dir("unet_nested", preset("unet_nested")["loss"], preset("unet_nested")["lr"])
#: class index -> grey code of the challenge's label BMPs (0 bg, 255 REA, 191 SRF, 128 PED)
CLASS_TO_GREY = np.array((0,) + GREY_CODES, np.uint8)
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
    if args.stats is not None:
        return _stats_file(args.stats)
    state = Path(checkpoint).parent / "state.json"
    if state.is_file():
        settings = json.loads(state.read_text()).get("settings", {})
        if "mean" in settings and "std" in settings:
            return np.float32(settings["mean"]), np.float32(settings["std"])
    raise UserError(f"{state}: no training mean/std beside {checkpoint}; pass --stats <list dir>/info.json "
                    f"(gen_image.py's statistics)")


def _stats_file(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: --stats file not found (gen_image.py's info.json)")
    try:
        info = json.loads(path.read_text())
        mean, std = np.float32(info["mean"]), np.float32(info["std"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not an info.json with 'mean' and 'std' of 3 channels") from None
    if mean.shape != (3,) or std.shape != (3,):
        raise UserError(f"{path}: 'mean' and 'std' must hold 3 values (R, G, B)")
    return mean, std


def predict_slices(models, slices, mean, std, batch=EVAL_BATCH, tta="none", min_size=0, probabilities=False):
    """(n, H, W) uint8 B-scans -> ``(classes (n, H, W) uint8, detection (n, 3) or None, softmax or None)``."""
    from common.inference import model_for_shape, padded_shape

    n, h, w = slices.shape
    hp, wp = padded_shape(h, w, 16)
    x = stack_slices(slices)
    if (hp, wp) != (h, w):
        x = np.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
    models = [model_for_shape(m, (hp, wp, 3)) for m in models]
    out = predict_cube(models, x, batch, mean, std, tta=tta, probabilities=probabilities)
    pred, det = out[0][:, :h, :w], out[1]
    prob = out[2][:, :h, :w] if probabilities else None
    if min_size > 0:
        pred = postprocess_cube(pred, min_size)
    return np.ascontiguousarray(pred), det, prob


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        raise cli.option_error("--batch-size", f"must be positive, got {args.batch_size}")
    if args.min_size < 0:
        raise cli.option_error("--min-size", f"must be >= 0, got {args.min_size}")
    cubes = collect_cubes(args.inputs)
    from common.devices import set_precision

    checkpoint = checkpoint_path(args, DEFAULT_RUN)
    mean, std = resolve_stats(args, checkpoint)
    set_precision(args.mixed_precision)  # before the model is loaded
    models = load_models([checkpoint], args.mixed_precision)

    def outputs(cube):
        stem = cube_stem(cube)
        names = [f"{stem}_labelMark/{p.name}" for p in sorted_slices(cube, (".bmp",), 1)]
        return names + [f"{stem}_labelMark_detections.csv", *extra_outputs(stem, args, prob_ext=".npy")]

    def process(cube):
        slices, names = read_cube(cube)
        pred, det, prob = predict_slices(models, slices, mean, std, args.batch_size, args.tta, args.min_size,
                                         args.save_probabilities)
        stem = cube_stem(cube)
        results = {f"{stem}_labelMark/{name}": CLASS_TO_GREY[p] for name, p in zip(names, pred)}
        if det is None:
            det = np.full((len(pred), 3), np.nan, np.float32)
        results[f"{stem}_labelMark_detections.csv"] = detections_csv(names, det)
        k = len(slices) // 2
        return {**results, **extra_outputs(
            stem, args, prob_ext=".npy", prob=lambda: lambda tmp: np.save(tmp, prob.astype(np.float16)),
            overlay=lambda: overlay_image(slices[k], colourise(np.zeros_like(slices[k]), pred[k]), alpha=0.6))}

    return run_inputs(cubes, process, args=args, outputs=outputs, model_name=models[0].name, weights=[checkpoint],
                      extra={"normalisation": {"mean": mean.tolist(), "std": std.tolist()}})


if __name__ == "__main__":
    sys.exit(cli.run(main))
