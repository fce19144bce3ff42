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

import numpy as np
from PIL import Image

from common import cli
from skin_lesion.evaluate import predict
from skin_lesion.prepare_isic2018 import SIZE, resize
from skin_lesion.train_isic18 import MODELS, default_run_dir, legacy_model

EXTENSIONS = (".jpg", ".jpeg", ".png")
THRESHOLD = 0.5  # evaluate.py's


def resize_back(prob, shape):
    """(S, S) probabilities -> (H, W) float32 at the photo's size ``shape`` (Pillow bilinear on floats)."""
    return np.asarray(Image.fromarray(np.asarray(prob, np.float32)).resize((shape[1], shape[0]), Image.BILINEAR))


def segment(model, image, raw_input=False, tta="none"):
    """One uint8 RGB photo (H, W, 3) of any size -> ``(mask, prob)`` at (H, W): mask 0/255 uint8, prob float32."""
    size = model.input_shape[1] or SIZE
    x = resize(np.asarray(image), size)[None]
    prob = predict(model, x, batch_size=1, raw_input=raw_input, verbose=0, tta=tta)[0, :, :, 0]
    prob = np.clip(resize_back(prob, image.shape[:2]), 0, 1)
    return np.where(prob > THRESHOLD, 255, 0).astype(np.uint8), prob


def build_parser():
    from common.legacy_weights import add_init_weights_argument
    from common.predict import add_predict_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predict_arguments(parser, default_run_dir=default_run_dir("bcdu_net_d3"))
    parser.add_argument("--raw-input", action="store_true",
                        help="predict on the raw 0..255 photo as the original's evaluate.py did (default: the "
                             "normalised input the network was trained on, as evaluate.py)")
    add_init_weights_argument(parser)
    parser.add_argument("--network", choices=MODELS, default="bcdu_net_d3",
                        help="with --init-weights: the network the file was saved from (default: %(default)s)")
    parser.add_argument("--bidirectional", action="store_true", help="with --init-weights: a --bidirectional network")
    parser.add_argument("--size", type=int, default=SIZE,
                        help="with --init-weights: the network's input side (default: %(default)s, the original's)")
    return parser


def main(argv=None):
    from common.data.io import read_image
    from common.predict import collect_inputs, extra_outputs, load_model, overlay_image, probability_png, run_inputs

    args = build_parser().parse_args(argv)
    files = collect_inputs(args.inputs, EXTENSIONS)
    if args.init_weights:
        from common.devices import set_precision

        if args.run_dir or args.model:
            raise cli.option_error("--init-weights", "predicts with that file: leave out --run-dir and --model")
        if not args.init_weights.is_file():
            raise cli.option_error("--init-weights", f"{args.init_weights}: file not found")
        if args.size <= 0 or args.size % 8:
            raise cli.option_error("--size", f"must be a positive multiple of 8, got {args.size}")
        set_precision(args.mixed_precision)
        model = legacy_model(args.network, (args.size, args.size, 3), args.init_weights, args.bidirectional)
        checkpoint = args.init_weights
    else:
        model, checkpoint = load_model(args, default_run_dir=default_run_dir("bcdu_net_d3"))

    def names(path):
        return [f"{path.stem}_segmentation.png", *extra_outputs(path.stem, args)]

    def process(path):
        image = read_image(path, "rgb")
        mask, prob = segment(model, image, args.raw_input, args.tta)
        return {f"{path.stem}_segmentation.png": mask,
                **extra_outputs(path.stem, args, prob=lambda: probability_png(prob),
                                overlay=lambda: overlay_image(image, mask))}

    return run_inputs(files, process, args=args, outputs=names, model_name=model.name, weights=[checkpoint])


if __name__ == "__main__":
    sys.exit(cli.run(main))
