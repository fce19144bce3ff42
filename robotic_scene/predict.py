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
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data.io import read_image
from common.errors import UserError
from common.predict import add_predict_arguments, collect_inputs, extra_outputs, overlay_image, run_inputs
from robotic_scene.prepare import index_to_colour
from robotic_scene.test import MIN_SIZE, remove_small_regions
from robotic_scene.train import DEFAULT_RUN, load_trainer, normalise_images

EXTENSIONS = (".png", ".jpg", ".jpeg")
EXAMPLES = """examples:
  python robotic_scene/predict.py my_frames/ --out-dir work/robot_pred        # the default run's final model
  python robotic_scene/predict.py "seq_*/left_frames/*.png" --run-dir weights/robotic_scene/tdsnet_fold0 \\
      --overlay --tta flip --out-dir out
  python robotic_scene/predict.py frame000.png --model run/stage4_scene/best.keras --normalise caffe --out-dir out
"""


def resolve_checkpoint(args):
    """``(checkpoint, run folder or None)``: ``--model``, else the run's final checkpoint (``--weights best``,
    from ``stages.json``) or the last stage's ``last.keras`` (``--weights last``)."""
    if args.model is not None:
        path = Path(args.model)
        if not path.is_file():
            raise UserError(f"{path}: model file not found (--model expects a .keras checkpoint of train.py)")
        run = path.parent.parent
        return path, run if (run / "stages.json").is_file() else None
    run = Path(args.run_dir or DEFAULT_RUN)
    record = run / "stages.json"
    if not record.is_file():
        raise UserError(f"{record}: not found; give the --run-dir of a finished robotic_scene/train.py run, or "
                        f"--model FILE.keras")
    final = Path(json.loads(record.read_text())["final_checkpoint"])
    path = final if args.weights == "best" else final.with_name("last.keras")
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (named by {record})")
    return path, run


def resolve_normalise(args, run):
    if args.normalise is not None:
        return args.normalise
    if run is None:
        raise cli.option_error("--normalise", "the model's run folder (stages.json) is not beside it; say which "
                                              "preprocessing it was trained with: caffe or torch")
    return json.loads((run / "stages.json").read_text())["settings"]["normalise"]


class FramePredictor:
    """Softmax of any frame size: padded to multiples of 32, the network rebuilt per size, cropped back."""

    def __init__(self, network, normalise, tta="none"):
        self.network, self.normalise, self.tta = network, normalise, tta
        self._nets = {tuple(network.inputs[0].shape[1:3]): network}

    def _net(self, size):
        from common.models.tdsnet import tdsnet

        if size not in self._nets:
            net = tdsnet((*size, 3), num_classes=self.network.outputs[0].shape[-1],
                         num_scenes=self.network.outputs[2].shape[-1])
            net.set_weights(self.network.get_weights())
            self._nets[size] = net
        return self._nets[size]

    def __call__(self, image):
        """(H, W, 3) uint8 RGB -> (H, W, 12) float32 softmax."""
        from common.inference import padded_shape, predict_whole

        h, w = image.shape[:2]
        net = self._net(padded_shape(h, w, 32))
        x = np.asarray(normalise_images(image[None], self.normalise), np.float32)

        def softmax(batch):
            return np.exp(np.asarray(net(batch, training=False)[0], np.float32))

        return predict_whole(softmax, x, multiple=32, tta=self.tta)[0]


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    add_predict_arguments(parser, default_run_dir=DEFAULT_RUN)
    parser.add_argument("--normalise", choices=("torch", "caffe"), default=None,
                        help="input preprocessing (default: the one train.py used, from the run's stages.json)")
    parser.add_argument("--min-size", type=int, default=MIN_SIZE,
                        help="ours: per class, connected regions (8-neighbour) smaller than this many pixels become "
                             "background (default: %(default)s = off; the paper names the step, not a size)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.min_size < 0:
        raise cli.option_error("--min-size", f"must be >= 0, got {args.min_size}")
    files = collect_inputs(args.inputs, EXTENSIONS)
    checkpoint, run = resolve_checkpoint(args)
    normalise = resolve_normalise(args, run)
    from common.devices import apply_precision, set_precision

    set_precision(args.mixed_precision)  # before the model is loaded
    try:
        network = apply_precision(load_trainer(checkpoint).network, args.mixed_precision)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{checkpoint}: cannot load the model ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:160]})") from None
    predictor = FramePredictor(network, normalise, args.tta)

    def outputs(path):
        return [f"{path.stem}.png", *extra_outputs(path.stem, args, prob_ext=".npy")]

    def process(path):
        image = read_image(path, "rgb", exif=True)  # as prepare.py (the original's cv2.imread)
        prob = predictor(image)
        pred = np.argmax(prob, axis=-1).astype(np.uint8)
        if args.min_size > 0:
            pred = remove_small_regions(pred, args.min_size)
        colour = index_to_colour(pred)
        return {f"{path.stem}.png": colour,
                **extra_outputs(path.stem, args, prob_ext=".npy",
                                overlay=lambda: overlay_image(image, colour, alpha=0.5),
                                prob=lambda: lambda tmp: np.save(tmp, prob.astype(np.float16)))}

    return run_inputs(files, process, args=args, outputs=outputs, model_name="tdsnet", weights=[checkpoint],
                      extra={"normalise": normalise})


if __name__ == "__main__":
    sys.exit(cli.run(main))
