"""Segment your own dermoscopy photos with a trained ISIC 2018 network: JPG/PNG of any size -> ISIC masks.

Each photo goes through exactly evaluate.py's path: resized to the network's input size (256x256 for the
original) with prepare_isic2018.py's Pillow bilinear filter, normalised with ``dataset_normalized`` (or
raw 0..255 with ``--raw-input``, as the original's evaluate.py), predicted (``--tta flip``: the mean over the
photo and its flips). The probability map is resized back to the photo's own size (bilinear) and
thresholded at 0.5, as evaluate.py thresholds it, and written in the ISIC ground-truth format:

    <out-dir>/<stem>_segmentation.png     0/255 greyscale PNG, the photo's width x height
    <out-dir>/<stem>_prob.png             --save-probabilities: probability x 255
    <out-dir>/<stem>_overlay.png          --overlay: photo | photo with the lesion in red
    <out-dir>/run.json                    commit, checkpoint and its SHA-256, options, inputs

A corrupt or unreadable photo stops with a one-line error naming it and nothing is written for it
(``--skip-bad``: the bad ones are listed at the end, exit status 1). Existing outputs are never replaced
without ``--overwrite``.

Examples::

    python skin_lesion/predict.py photos/ --out-dir masks/
    python skin_lesion/predict.py ISIC_0000000.jpg "more/*.png" --out-dir masks/ --overlay --tta flip
    python skin_lesion/predict.py photos/ --run-dir weights/skin_lesion/bcdu_net_d3_bidirectional --out-dir m/
    python skin_lesion/predict.py photos/ --model my_model.keras --out-dir masks/ --save-probabilities
    python skin_lesion/predict.py photos/ --init-weights weight_isic18 --out-dir masks/   # the authors' weights
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from skin_lesion.task import DEFAULT_MODEL, INFERENCE, INPUT, MODELS

EXTENSIONS = (".jpg", ".jpeg", ".png")
THRESHOLD = INFERENCE["threshold"]  # evaluate.py's
DEFAULT_RUN = f"weights/skin_lesion/{DEFAULT_MODEL}"  # train_isic18.py's default run folder


def build_parser():
    from common.legacy_weights import add_init_weights_argument
    from common.predict import add_predict_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predict_arguments(parser, default_run_dir=DEFAULT_RUN)
    parser.add_argument("--raw-input", action="store_true",
                        help="predict on the raw 0..255 photo as the original's evaluate.py did (default: the "
                             "normalised input the network was trained on, as evaluate.py)")
    add_init_weights_argument(parser)
    parser.add_argument("--network", choices=MODELS, default=DEFAULT_MODEL,
                        help="with --init-weights: the network the file was saved from (default: %(default)s)")
    parser.add_argument("--bidirectional", action="store_true", help="with --init-weights: a --bidirectional network")
    parser.add_argument("--size", type=int, default=INPUT["size"],
                        help="with --init-weights: the network's input side (default: %(default)s, the original's)")
    return parser


def main(argv=None):
    from common.data.io import read_image
    from common.predict import collect_inputs, mask_outputs, run_inputs, segmenter_from_args

    args = build_parser().parse_args(argv)
    files = collect_inputs(args.inputs, EXTENSIONS)
    model = checkpoint = None
    if args.init_weights:
        from common.devices import set_precision
        from skin_lesion.train_isic18 import legacy_model

        if args.run_dir or args.model or args.onnx:
            raise cli.option_error("--init-weights", "predicts with that file: leave out --run-dir, --model, --onnx")
        if not args.init_weights.is_file():
            raise cli.option_error("--init-weights", f"{args.init_weights}: file not found")
        if args.size <= 0 or args.size % 8:
            raise cli.option_error("--size", f"must be a positive multiple of 8, got {args.size}")
        set_precision(args.mixed_precision)
        model = legacy_model(args.network, (args.size, args.size, 3), args.init_weights, args.bidirectional)
        checkpoint = args.init_weights
    seg, weights = segmenter_from_args(args, "skin_lesion", default_run_dir=cli.repo_path(DEFAULT_RUN), model=model,
                                       checkpoint=checkpoint, raw_input=args.raw_input)


    def names(path):
        return mask_outputs(path.stem, f"{path.stem}_segmentation.png", None, None, args, seg.num_classes)

    def process(path):
        image = read_image(path, "rgb")
        return mask_outputs(path.stem, f"{path.stem}_segmentation.png", image, seg.predict(image), args,
                            seg.num_classes)

    return run_inputs(files, process, args=args, outputs=names, model_name=seg.name, weights=weights)


if __name__ == "__main__":
    sys.exit(cli.run(main))
