"""Segment the vessels of your own fundus photos with a trained BCDU-Net (any size, optional FOV masks).

Each input image (TIFF, PNG, JPEG, BMP, GIF; RGB or grey) goes through exactly evaluate.py's procedure:
``my_PreProc`` on the one image (gray, normalisation, CLAHE, gamma 1.2, /255), then ``--inference``:

* ``full`` (default here): one pass over the whole image zero-padded to a multiple of 8 (a copy of the
  network built for that size, same weights); fast.
* ``overlap``: the original's 64 x 64 windows at ``--stride`` 5, averaged (about 130x more computation).

With ``--fov-dir`` each image's field-of-view mask is found by name (``<stem>_mask.<ext>`` or ``<stem>.<ext>``:
DRIVE's ``21_training.tif`` <-> ``21_training_mask.gif``) and the probabilities outside it are set to 0 (the
original's ``kill_border``); ``--fov FILE`` gives the mask of a single input. Written to ``--out-dir``, at the
input's own size: ``<stem>_prob.png`` (probability x 255), ``<stem>_mask.png`` (0/255 at ``--threshold``),
with ``--save-probabilities`` also ``<stem>_prob.npy`` (float32), with ``--overlay`` ``<stem>_overlay.png``;
and ``run.json`` (model, weights and their SHA-256, options, inputs). ``--init-weights weight_lstm.hdf5`` uses
the authors' published Keras-2 checkpoint instead of a run of train_retina.py. A K-class run (K > 2, an own
dataset prepared with ``--keep-labels``) writes ``<stem>_mask.png`` as a palette PNG label map 0..K-1 (the argmax
of the softmax, background outside the FOV; no ``_prob.png``, no ``--threshold``), ``--save-probabilities``
``<stem>_prob.npy`` (H, W, K) float16, ``--overlay`` the labels in their palette colours. Nothing is written for
a bad input; existing outputs are kept unless ``--overwrite``.

    python retina_vessel/predict.py data/DRIVE/test/images --fov-dir data/DRIVE/test/mask --out-dir work/pred
    python retina_vessel/predict.py eye.jpg --out-dir out --inference overlap --tta flip
    python retina_vessel/predict.py "photos/*.png" --model my_run/best.keras --out-dir out --overlay
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from retina_vessel.task import INFERENCE, add_variant_arguments

EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif")


def find_fov(image_path, fov_dir):
    """The FOV mask of ``image_path`` in ``fov_dir``: ``<stem>_mask.<ext>`` or ``<stem>.<ext>``; ``UserError``
    naming the image when there is none or more than one."""
    from common.errors import UserError

    stem = Path(image_path).stem
    found = sorted(p for p in Path(fov_dir).iterdir()
                   if p.is_file() and p.suffix.lower() in EXTENSIONS and p.stem in (f"{stem}_mask", stem))
    if len(found) != 1:
        what = "no FOV mask" if not found else f"{len(found)} FOV masks ({', '.join(p.name for p in found)})"
        raise UserError(f"{image_path}: {what} named {stem}_mask.<ext> or {stem}.<ext> in {fov_dir}")
    return found[0]


def build_parser():
    from common.legacy_weights import add_init_weights_argument
    from common.predict import add_predict_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predict_arguments(parser, default_run_dir="weights/retina_vessel/bcdu_net_d3[_bidirectional][_prior_bias]")
    add_variant_arguments(parser, trained=True)
    add_init_weights_argument(parser)
    parser.add_argument("--fov-dir", type=Path, default=None,
                        help="folder with a FOV mask per image (<stem>_mask.<ext> or <stem>.<ext>)")
    parser.add_argument("--fov", type=Path, default=None, help="the FOV mask of a single input image")
    parser.add_argument("--inference", choices=INFERENCE["modes"], default="full",
                        help="full: one pass per whole image; overlap: the original's averaged windows "
                             "(default: %(default)s)")
    parser.add_argument("--stride", type=int, default=INFERENCE["stride"],
                        help="window stride of overlap (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=INFERENCE["batch_size"],
                        help="windows per batch for overlap (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=INFERENCE["threshold"],
                        help="probability threshold of the binary mask (default: %(default)s)")
    return parser


def main(argv=None):
    from common.data.io import read_image
    from common.errors import OptionError
    from common.predict import (collect_inputs, extra_outputs, mask_outputs, overlay_image, probability_png,
                                run_inputs, segmenter_from_args)

    args = build_parser().parse_args(argv)
    if args.fov is not None and args.fov_dir is not None:
        raise OptionError("--fov/--fov-dir: give one (a single mask, or a folder of masks matched by name)")
    if args.stride < 1:
        raise OptionError(f"--stride: {args.stride} must be at least 1")
    if not 0 <= args.threshold <= 1:
        raise OptionError(f"--threshold: {args.threshold} must lie in [0, 1]")
    if args.fov_dir is not None and not args.fov_dir.is_dir():
        raise OptionError(f"--fov-dir: {args.fov_dir} is not a folder")
    files = collect_inputs(args.inputs, EXTENSIONS)
    if args.fov is not None and len(files) != 1:
        raise OptionError(f"--fov: one mask for {len(files)} inputs; use --fov-dir for several images")
    if args.fov is not None and not args.fov.is_file():
        raise FileNotFoundError(2, "FOV mask not found", str(args.fov))
    fovs = {p: args.fov if args.fov is not None else (find_fov(p, args.fov_dir) if args.fov_dir else None)
            for p in files}  # every mask found before anything is predicted
    model = checkpoint = default_run = None
    if args.init_weights is not None:  # the authors' Keras-2 checkpoint (weight_lstm.hdf5) instead of a run
        if args.model is not None or args.run_dir is not None or args.onnx is not None:
            raise OptionError("--init-weights: give it alone, not with --run-dir / --model / --onnx")
        if not args.init_weights.is_file():
            raise FileNotFoundError(2, "checkpoint not found", str(args.init_weights))
        from retina_vessel.task import load_init_weights

        model = load_init_weights(args.init_weights, args.bidirectional, args.mixed_precision)
        checkpoint = args.init_weights
    elif args.model is None and args.run_dir is None and args.onnx is None:
        from retina_vessel.train_retina import default_run_dir

        default_run = default_run_dir(args.bidirectional, args.prior_bias)
    seg, weights = segmenter_from_args(args, "retina_vessel", default_run_dir=default_run, model=model,
                                       checkpoint=checkpoint, inference=args.inference, stride=args.stride,
                                       batch_size=args.batch_size, threshold=args.threshold)

    classes = seg.num_classes  # K > 2: a K-class run writes palette label maps (common.predict.mask_outputs)

    def names(path):
        if classes > 2:
            return mask_outputs(path.stem, f"{path.stem}_mask.png", None, None, args, classes)
        return [f"{path.stem}_prob.png", f"{path.stem}_mask.png", *extra_outputs(path.stem, args, prob_ext=".npy")]

    def process(path):
        rgb = read_image(path, "rgb")
        fov = None if fovs[path] is None else read_image(fovs[path], "gray", size=rgb.shape[:2])
        result = seg.predict(rgb, fov=fov)
        if classes > 2:
            return mask_outputs(path.stem, f"{path.stem}_mask.png", rgb, result, args, classes)
        prob, mask = result["prob"], result["mask"]
        return {f"{path.stem}_prob.png": probability_png(prob), f"{path.stem}_mask.png": mask,
                **extra_outputs(path.stem, args, prob_ext=".npy", overlay=lambda: overlay_image(rgb, mask),
                                prob=lambda: lambda tmp: np.save(tmp, prob.astype(np.float32)))}

    fov_list = {str(p): (None if f is None else str(f)) for p, f in fovs.items()}
    return run_inputs(files, process, args=args, outputs=names, model_name=seg.name, weights=weights,
                      extra={"fov_masks": fov_list})


if __name__ == "__main__":
    sys.exit(cli.run(main))
