"""Segment your own endoscopic frames with a trained TDSNet: colour-coded label PNGs in the ROBOT18 palette.

Input: frames (PNG or JPG, RGB, any size), folders of frames or glob patterns. Each frame goes through
exactly test.py's inference: the run's normalisation (from ``stages.json``: ``caffe`` for Keras's ImageNet
VGG16 file, ``torch`` for random encoder weights; ``--normalise`` to override), one forward pass, argmax
over the 12 classes. Frame sides that are not multiples of 32 (five poolings) are padded at the
bottom/right with zeros after normalisation (the mean colour) and the prediction is cropped back; the
network is rebuilt for each new frame size with the same weights (the real ROBOT18 frames, 1280x1024, need
no padding).

Output in ``--out-dir``, per frame ``<stem>``:

* ``<stem>.png``: the label in the EndoVis 2018 colours (robotic_scene/prepare.py's table, e.g. shaft
  (0,255,0), clasper (0,255,255), kidney parenchyma (255,55,0)), at the frame's size, the format of the
  challenge's ``labels/`` PNGs, so prepare.py reads it back into class indices as is;
* with ``--overlay``: ``<stem>_overlay.png`` (frame | frame with the label colours blended in);
* with ``--save-probabilities``: ``<stem>_prob.npy`` (float16 (H, W, 12) softmax);

plus ``run.json``. ``--tta flip`` (ours) averages the softmax over left-right and up-down flips, which keep
the classes' meaning (instrument parts, organs, needle and thread have no left/right or up/down variant).
``--min-size N`` (ours) relabels per class the connected regions smaller than N pixels as background; the
paper's "removing small regions" step gives no size and the code has none, so the default is 0 (off).
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data.io import read_image
from common.predict import add_predict_arguments, collect_inputs, extra_outputs, overlay_image, run_inputs
from robotic_scene.task import INFERENCE

DEFAULT_RUN = "weights/robotic_scene/tdsnet_fold0"  # train.py's default run folder
EXTENSIONS = (".png", ".jpg", ".jpeg")
EXAMPLES = """examples:
  python robotic_scene/predict.py my_frames/ --out-dir work/robot_pred        # the default run's final model
  python robotic_scene/predict.py "seq_*/left_frames/*.png" --run-dir weights/robotic_scene/tdsnet_fold0 \\
      --overlay --tta flip --out-dir out
  python robotic_scene/predict.py frame000.png --model run/stage4_scene/best.keras --normalise caffe --out-dir out
"""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    add_predict_arguments(parser, default_run_dir=DEFAULT_RUN)
    parser.add_argument("--normalise", choices=("torch", "caffe"), default=None,
                        help="input preprocessing (default: the one train.py used, from the run's stages.json)")
    parser.add_argument("--min-size", type=int, default=INFERENCE["min_size"],
                        help="ours: per class, connected regions (8-neighbour) smaller than this many pixels become "
                             "background (default: %(default)s = off; the paper names the step, not a size)")
    return parser


def main(argv=None):
    from common.predict import segmenter_from_args

    args = build_parser().parse_args(argv)
    if args.min_size < 0:
        raise cli.option_error("--min-size", f"must be >= 0, got {args.min_size}")
    files = collect_inputs(args.inputs, EXTENSIONS)
    options = {"min_size": args.min_size}
    if args.normalise is not None:
        options["normalise_mode"] = args.normalise
    seg, weights = segmenter_from_args(args, "robotic_scene", default_run_dir=cli.repo_path(DEFAULT_RUN), **options)
    if "normalise_mode" not in seg.options:
        raise cli.option_error("--normalise", "the model's run folder (stages.json) is not beside it; say which "
                                              "preprocessing it was trained with: caffe or torch")
    normalise = seg.options["normalise_mode"]

    def outputs(path):
        return [f"{path.stem}.png", *extra_outputs(path.stem, args, prob_ext=".npy")]

    def process(path):
        image = read_image(path, "rgb", exif=True)  # as prepare.py (the original's cv2.imread)
        result = seg.predict(image)
        colour, prob = result["mask"], result["prob"]
        return {f"{path.stem}.png": colour,
                **extra_outputs(path.stem, args, prob_ext=".npy",
                                overlay=lambda: overlay_image(image, colour, alpha=0.5),
                                prob=lambda: lambda tmp: np.save(tmp, prob.astype(np.float16)))}

    return run_inputs(files, process, args=args, outputs=outputs, model_name="tdsnet", weights=weights,
                      extra={"normalise": normalise})


if __name__ == "__main__":
    sys.exit(cli.run(main))
