"""Segment your own ultrasound frames with a trained nerve U-Net: TIFF frames -> Kaggle-format masks.

Each frame goes through exactly the path of train.py's test prediction and submission.py: read as 8-bit
grey (16-bit frames scaled as OpenCV's reader would), resized to the network's input (96x96, the original's
resize), normalised with the TRAINING mean/std of the run (``norm_stats.json`` in the run folder), predicted
(``--tta flip``: the mean over the frame and its flips), thresholded at ``--threshold``, resized back to the
frame's own size (bilinear) and binarised again, then post-processed (``--min-size``, ``--keep-largest``,
off by default) and emptied when fewer than ``--min-pixels`` remain (10, submission.py's rule). Written in
the dataset's own mask format, so they compare with Kaggle's ``*_mask.tif`` as they are:

    <out-dir>/<stem>_mask.tif       0/255 8-bit greyscale TIFF, the frame's size (420x580 for Kaggle frames)
    <out-dir>/<stem>_prob.png       --save-probabilities: probability x 255 at the network's size
    <out-dir>/<stem>_overlay.png    --overlay: frame | frame with the nerve in red
    <out-dir>/run.json              commit, checkpoint and its SHA-256, the normalisation, options, inputs

submission.py still writes the Kaggle CSV from train.py's test predictions. A corrupt frame stops with a
one-line error naming it (``--skip-bad``: listed at the end, exit status 1); existing outputs are never
replaced without ``--overwrite``.

Examples::

    python ultrasound_nerve/predict.py frames/ --out-dir masks/
    python ultrasound_nerve/predict.py 1.tif 2.tif --out-dir masks/ --keep-largest 1 --overlay
    python ultrasound_nerve/predict.py "scans/*.tif" --run-dir weights/ultrasound_nerve/nerve_unet --out-dir m/
    # the tutorial's own Keras-2 weights.h5, normalised with the mean/std of data.py's training array:
    python ultrasound_nerve/predict.py frames/ --init-weights weights.h5 --norm-from work/ultrasound_nerve --out-dir m/
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from ultrasound_nerve.task import INPUT, add_mask_options, check_mask_options

EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")  # own data may come as JPEG (nerve_jpeg)
DEFAULT_RUN = "weights/ultrasound_nerve/nerve_unet"  # train.py's default run folder


def _legacy(args):
    """``(model, file, stats)`` for ``--init-weights`` (the tutorial's weights.h5) and ``--norm-from``."""
    from common.devices import set_precision
    from common.legacy_weights import load_legacy_weights
    from common.models import build_model
    from ultrasound_nerve.data import load_train_data
    from ultrasound_nerve.train import norm_stats

    if args.run_dir or args.model or args.onnx:
        raise cli.option_error("--init-weights", "predicts with that file: leave out --run-dir, --model and --onnx")
    if args.norm_from is None:
        raise cli.option_error("--init-weights", "needs --norm-from WORK_DIR (data.py's arrays): the network "
                                                 "expects frames normalised with its training mean/std")
    if args.img_size <= 0 or args.img_size % 16:
        raise cli.option_error("--img-size", f"must be a positive multiple of 16, got {args.img_size}")
    if not args.init_weights.is_file():
        raise cli.option_error("--init-weights", f"{args.init_weights}: file not found")
    stats = norm_stats(load_train_data(args.norm_from)[0], args.img_size)
    set_precision(args.mixed_precision)
    model = build_model("nerve_unet", (args.img_size, args.img_size, 1))
    load_legacy_weights(model, args.init_weights)
    return model, args.init_weights, stats


def build_parser():
    from common.legacy_weights import add_init_weights_argument
    from common.predict import add_predict_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predict_arguments(parser, default_run_dir=DEFAULT_RUN)
    add_mask_options(parser, threshold_help="default: %(default)s, as submission.py",
                     min_pixels_help="masks with fewer pixels are written empty (default: %(default)s, the "
                                     "original submission's rule; 0 disables)")
    add_init_weights_argument(parser)
    parser.add_argument("--norm-from", type=Path, default=None, metavar="WORK_DIR",
                        help="with --init-weights: compute the training mean/std as the tutorial did, from "
                             "WORK_DIR/imgs_train.npy of data.py")
    parser.add_argument("--img-size", type=int, default=INPUT["size"],
                        help="with --init-weights: the network's input side (default: %(default)s, the original's)")
    return parser


def main(argv=None):
    from common.data.io import read_image
    from common.predict import collect_inputs, mask_outputs, run_inputs, segmenter_from_args

    args = build_parser().parse_args(argv)
    check_mask_options(args)
    files = collect_inputs(args.inputs, EXTENSIONS)
    model = checkpoint = None
    stats = {}
    if args.init_weights:
        model, checkpoint, stats = _legacy(args)
    seg, weights = segmenter_from_args(args, "ultrasound_nerve", default_run_dir=cli.repo_path(DEFAULT_RUN),
                                       model=model, checkpoint=checkpoint, threshold=args.threshold,
                                       min_pixels=args.min_pixels, min_size=args.min_size,
                                       keep_largest=args.keep_largest, **stats)

    def mask_name(path):  # a K-class model: <name>_labels.png palette label maps
        return f"{path.stem}_labels.png" if seg.num_classes > 2 else f"{path.stem}_mask.tif"

    def names(path):
        return mask_outputs(path.stem, mask_name(path), None, None, args, seg.num_classes)

    def process(path):
        frame = read_image(path, "gray")
        return mask_outputs(path.stem, mask_name(path), frame, seg.predict(frame), args, seg.num_classes)

    norm = {k: seg.options[k] for k in ("mean", "std", "img_size")}
    return run_inputs(files, process, args=args, outputs=names, model_name=seg.name, weights=weights,
                      extra={"norm_stats": norm})


if __name__ == "__main__":
    sys.exit(cli.run(main))
