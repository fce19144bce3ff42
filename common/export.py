"""Export a trained model as a TensorFlow SavedModel for serving (TF Serving, ``tf.saved_model.load``).

    python -m common.export RUN_DIR OUT_DIR [--weights best|last] [--overwrite]
    python -m common.export --model FILE.keras OUT_DIR

The SavedModel is Keras 3's ``model.export(OUT_DIR, format="tf_saved_model")``: endpoint ``serve`` (also the
signature ``serving_default``) taking one float32 batch ``(N, H, W, C)`` at the model's input size and
returning the network's raw output in the Keras model's structure (e.g. sigmoid probabilities (N, H, W, 1);
a dict ``{"seg": ..., "det": ...}`` for the multi-task edema networks; the signature names list outputs
``output_0``, ``output_1``, ...). The batch must be
**preprocessed** exactly as the task's ``predict.py`` / ``evaluate.py`` prepares it before calling the
network (resizing, normalisation, patches: see the task README); the export contains the network only,
no pre- or post-processing (thresholds, resizing back, flips). ``OUT_DIR/run.json`` records the source
checkpoint (with its SHA-256), the git commit and the serving signature.

``OUT_DIR`` must not exist (``--overwrite`` replaces it); the export is written into a temporary folder
beside it and renamed at the end, so a failed export leaves nothing behind.
"""

import argparse
import sys
from pathlib import Path

from common.cli import run
from common.errors import OptionError, UserError

EXAMPLES = """examples:
  # the best checkpoint of a skin-lesion run -> SavedModel
  python -m common.export weights/skin_lesion/bcdu_net_d3 exports/skin_lesion
  # the last checkpoint, replacing an earlier export
  python -m common.export weights/skin_lesion/bcdu_net_d3 exports/skin_lesion --weights last --overwrite
  # any saved .keras model
  python -m common.export --model my_model.keras exports/my_model

serving (Python):
  import tensorflow as tf
  served = tf.saved_model.load("exports/skin_lesion")
  probabilities = served.serve(batch)   # batch: float32 (N, H, W, C), preprocessed as the task's predict.py
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m common.export",
        description="Export a trained model (a run folder's best/last.keras, or --model FILE.keras) as a\n"
                    "TensorFlow SavedModel. Its serving function 'serve' takes a batch of PREPROCESSED images\n"
                    "(float32, N x H x W x C at the model's input size, prepared as the task's predict.py does)\n"
                    "and returns the network's raw output (no thresholding, no resizing back).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, default=None, metavar="RUN_DIR",
                        help="training run folder holding best.keras / last.keras (omit with --model)")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="SavedModel folder to create")
    parser.add_argument("--model", type=Path, default=None, metavar="FILE.keras",
                        help="export this saved .keras model instead of a run folder's checkpoint")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="checkpoint of the run folder (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    return parser


def _spec(tensor):
    return {"shape": [None if d is None else int(d) for d in tensor.shape], "dtype": str(tensor.dtype)}


def _describe(structure):
    """``float32 (None, 16, 16, 1)`` for one tensor spec, ``{seg: ..., det: ...}`` / ``[...]`` for several."""
    if isinstance(structure, dict) and set(structure) == {"shape", "dtype"}:
        return f"{structure['dtype']} {tuple(structure['shape'])}"
    if isinstance(structure, dict):
        return "{" + ", ".join(f"{key}: {_describe(value)}" for key, value in structure.items()) + "}"
    return "[" + ", ".join(_describe(value) for value in structure) + "]"


def serving_signature(model):
    """The input and output shapes/dtypes of the exported ``serve`` endpoint (for run.json)."""
    import keras

    return {"endpoint": "serve", "signature": "serving_default",
            "inputs": keras.tree.map_structure(_spec, model.input),
            "outputs": keras.tree.map_structure(_spec, model.output),
            "preprocessed_inputs": True}


def export_saved_model(model, out_dir, *, overwrite=False, weights=None, options=None):
    """Write ``model`` as a SavedModel into ``out_dir`` (all or nothing) with a ``run.json``.

    Raises ``UserError`` if ``out_dir`` exists and not ``overwrite``. Returns the ``run.json`` record.
    """
    from common.data.io import atomic_dir
    from common.provenance import write_run_json

    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
        return write_run_json(tmp, model_name=model.name, weights=weights, options=options or {}, inputs=[],
                              extra={"serving": serving_signature(model)})


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.model is not None and args.run_dir is not None:
        raise OptionError("--model: give either RUN_DIR or --model FILE.keras, not both")
    if args.model is None and args.run_dir is None:
        raise OptionError("RUN_DIR: give the training run folder (or --model FILE.keras) and OUT_DIR")
    if args.run_dir is not None and not args.run_dir.is_dir():
        raise UserError(f"{args.run_dir}: no such run folder; give a training run folder or --model FILE.keras")
    if args.out_dir.exists() and not args.overwrite:  # before the (slow) model load
        raise UserError(f"{args.out_dir}: already exists; pass --overwrite to replace it, or choose another folder")

    from common.predict import load_model

    model, checkpoint = load_model(args)
    record = export_saved_model(model, args.out_dir, overwrite=args.overwrite, weights=[checkpoint],
                                options={"weights": args.weights if args.model is None else None})
    print(f"wrote {args.out_dir}: SavedModel of '{model.name}' from {checkpoint}; serve("
          f"{_describe(record['serving']['inputs'])}, preprocessed) -> {_describe(record['serving']['outputs'])}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
