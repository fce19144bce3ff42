"""Segment your own photos with a trained fingernail network: photos -> nail masks at each photo's own size.

The preprocessing and inference are evaluate.py's (and prepare_data.py's): the photo is read as RGB as stored
(an EXIF orientation tag is not applied, as the original's PIL reader; the mask is in that stored orientation),
a portrait photo (width < height) is rotated by +90 degrees as the original's dataset2
loader does (``--no-rotate`` keeps it as is), resized bicubic to the network's input size (160x192 for the
paper's runs), divided by 255 and predicted (``--tta flip`` averages over flips, not the original's). The
probability map is resized back to the photo's size (bilinear), rotated back, and thresholded at
``--threshold`` (0.3, the threshold of the original's Dice).

Inputs: PNG or JPG files, folders of them, or quoted glob patterns. Written to ``--out-dir``, per photo
``<stem>``:

* ``<stem>.png``: the mask, 8-bit greyscale, nail 255 and background 0, the photo's width and height. As the
  dataset's masks (white nails, same name as the photo), so ``--out-dir <dataset>/mask`` beside its
  ``image/`` folder gives prepare_data.py's dataset1 layout.
* ``<stem>_overlay.png`` with ``--overlay`` (photo | photo with the mask in red) and ``<stem>_prob.png`` with
  ``--save-probabilities`` (0..255 = probability 0..1).
* ``run.json``: git commit, checkpoint and its SHA-256, options, input files.

A corrupt or unreadable photo stops the run with a one-line error naming it (nothing is written for it);
``--skip-bad`` lists such files at the end instead (exit status 1). Existing outputs are replaced only with
``--overwrite``.

Examples::

    python fingernail/predict.py my_photos/ --out-dir my_masks            # the default train.py run
    python fingernail/predict.py "shots/*.jpg" --out-dir out --overlay --tta flip
    python fingernail/predict.py hand.png --out-dir out --model my_run/last.keras
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from common import cli
from fingernail.task import DEFAULT_MODEL, INFERENCE, INPUT, RECIPE

EXTENSIONS = (".png", ".jpg", ".jpeg")


def default_run():
    """train.py's default run folder (the paper's model, loss and recipe on dataset1)."""
    from fingernail.train import default_run_dir

    return default_run_dir(DEFAULT_MODEL, "dataset1", RECIPE["loss"], RECIPE["epochs"], RECIPE["batch_size"],
                           INPUT["rows"], INPUT["cols"])


def build_parser():
    from common.predict import add_predict_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predict_arguments(parser, default_run_dir="weights/fingernail/<train.py's default run>")
    parser.set_defaults(weights=INFERENCE["weights"])  # the original's (and evaluate.py's) final-epoch weights
    parser.add_argument("--threshold", type=float, default=INFERENCE["threshold"],
                        help="probability above which a pixel is nail (default: %(default)s, the original's)")
    parser.add_argument("--no-rotate", action="store_true",
                        help="do not rotate portrait photos to landscape before predicting")
    return parser


def main(argv=None):
    from common.data.io import read_image
    from common.predict import collect_inputs, mask_outputs, run_inputs, segmenter_from_args

    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.threshold < 1:
        raise cli.option_error("--threshold", f"must lie in [0, 1), got {args.threshold}")
    files = collect_inputs(args.inputs, EXTENSIONS)  # before the model: a wrong input fails fast
    seg, weights = segmenter_from_args(args, "fingernail", default_run_dir=None if args.onnx else default_run(),
                                       threshold=args.threshold, rotate_portrait=not args.no_rotate)


    def outputs(path):
        return mask_outputs(path.stem, f"{path.stem}.png", None, None, args, seg.num_classes)

    def process(path):
        image = read_image(path, "rgb")
        return mask_outputs(path.stem, f"{path.stem}.png", image, seg.predict(image), args, seg.num_classes)

    return run_inputs(files, process, args=args, outputs=outputs, model_name=seg.name, weights=weights,
                      extra={"threshold": args.threshold, "input_size": list(seg.network.input_size)})


if __name__ == "__main__":
    sys.exit(cli.run(main))
