"""Export a trained model as a TensorFlow SavedModel (default) or as ONNX with its preprocessing.json.

    python -m common.export RUN_DIR OUT_DIR [--weights best|last] [--overwrite]
    python -m common.export --model FILE.keras OUT_DIR
    python -m common.export RUN_DIR OUT_DIR --format onnx [--task NAME] [--input-size H W]

``--format onnx`` writes ``OUT_DIR/model.onnx`` (Keras 3's ``model.export(format="onnx")``, tf2onnx; the batch
dimension free, H and W those of the model or ``--input-size``) and ``OUT_DIR/preprocessing.json``: the task,
the input (name, shape, channel order, size rule), the normalisation by name with its parameters (including
the run's own statistics, e.g. the nerve run's norm_stats.json), the output layout, the threshold, the task's
inference options, the model file's SHA-256 and the run's provenance (run.json). ``common.predict.load_segmenter``
and every ``<task>/predict.py --onnx`` read both and run the task's whole path with onnxruntime, without
TensorFlow. The export is checked once: onnxruntime's outputs on a random input must lie within 1e-4 of Keras's.

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
  # ONNX + preprocessing.json, for onnxruntime without TensorFlow
  python -m common.export weights/skin_lesion/bcdu_net_d3 exports/skin_onnx --format onnx
  python skin_lesion/predict.py photos/ --onnx exports/skin_onnx/model.onnx --out-dir masks/

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
    parser.add_argument("--weights", choices=("best", "last"), default=None,
                        help="checkpoint of the run folder (default: best; --format onnx: the task's, i.e. best but "
                             "last for fingernail)")
    parser.add_argument("--format", choices=("savedmodel", "onnx"), default="savedmodel",
                        help="savedmodel (TensorFlow serving) or onnx (+ preprocessing.json, for onnxruntime and "
                             "every predict.py --onnx; default: %(default)s)")
    parser.add_argument("--task", default=None,
                        help="onnx: the task of the model (default: from the path, weights/<task>/...)")
    parser.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="onnx: export the network built for H x W inputs (same weights; fully-convolutional "
                             "networks; default: the model's own input size)")
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


ONNX_FILE = "model.onnx"
ONNX_TOLERANCE = 1e-4


def _onnx_failure(model, exc):
    """The one-line reason of a failed ONNX conversion, naming the first layer of ``model`` its message names."""
    message = " ".join(str(exc).split())
    names = sorted((layer.name for layer in model.layers), key=len, reverse=True)
    layer = next((model.get_layer(n) for n in names if n and n in message), None)
    where = f"layer {layer.name} ({type(layer).__name__})" if layer is not None else "a layer"
    return f"{where} cannot be converted ({type(exc).__name__}: {message[:200]})"


def _output_keys(model, session):
    """How the ONNX outputs map onto the Keras output structure (see ``common.predict.OnnxNetwork``)."""
    output = model.output
    if isinstance(output, dict):
        names = [o.name for o in session.get_outputs()]
        return names if set(names) == set(output) else sorted(output)
    if isinstance(output, (list, tuple)):
        return "list"
    return None


def _flat(output, keys):
    import numpy as np

    if isinstance(output, dict):
        return [np.asarray(output[k], np.float32) for k in keys]
    if isinstance(output, (list, tuple)):
        return [np.asarray(o, np.float32) for o in output]
    return [np.asarray(output, np.float32)]


def preprocessing_record(task, model, *, context, onnx_path, input_name, output_keys, provenance):
    """The ``preprocessing.json`` dict of an ONNX export (see the module docstring)."""
    import keras

    from common.provenance import sha256_file

    shape = [None if d is None else int(d) for d in model.inputs[0].shape]
    stats = {k: context[k] for k in ("mean", "std", "img_size", "normalise_mode") if k in context}
    return {
        "format_version": 1,
        "task": task.NAME,
        "model": model.name,
        "model_file": {"name": onnx_path.name, "sha256": sha256_file(onnx_path)},
        "input": {"name": input_name, "shape": shape, "dtype": "float32", "layout": "NHWC",
                  "raw_image": task.INPUT.get("mode"), "size_rule": task.INPUT.get("size_rule")},
        "normalisation": {"name": task.INPUT.get("normalisation"),
                          "parameters": {**{k: v for k, v in task.INPUT.items()
                                            if k not in ("mode", "size_rule", "normalisation")}, **stats}},
        "output": {"keys": output_keys,
                   "shapes": keras.tree.map_structure(lambda t: [None if d is None else int(d) for d in t.shape],
                                                      model.output)},
        "threshold": context.get("threshold"),
        "classes": {str(k): v for k, v in task.CLASSES.items()},
        "context": context,
        "provenance": provenance,
    }


def _jsonable(value):
    import numpy as np

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def export_onnx(model, out_dir, *, task, context, overwrite=False, weights=None, options=None, seed=0):
    """Write ``model`` as ``out_dir/model.onnx`` + ``preprocessing.json`` + ``run.json`` (all or nothing).

    The export is run once in onnxruntime on a random batch of 2 and compared with Keras (``ONNX_TOLERANCE``).
    A layer tf2onnx cannot convert is a one-line ``UserError`` naming it. Returns the preprocessing record.
    """
    import numpy as np

    from common.data.io import atomic_dir, write_json
    from common.provenance import run_record

    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("--format onnx: onnxruntime / tf2onnx are not installed (pip install -r requirements.txt)") \
            from None
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        onnx_path = Path(tmp) / ONNX_FILE
        shape = [2] + [32 if d is None else int(d) for d in model.inputs[0].shape[1:]]
        x = np.random.default_rng(seed).random(shape, np.float32)
        reference = model(x, training=False)  # also the call Keras's exporter needs on a loaded model
        try:
            model.export(str(onnx_path), format="onnx", verbose=False)
        except Exception as exc:  # noqa: BLE001  (tf2onnx raises many types)
            raise UserError(f"{model.name}: {_onnx_failure(model, exc)}") from None
        try:  # tf2onnx writes unsupported ops as they are: onnxruntime refuses them
            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{model.name}: {_onnx_failure(model, exc)}") from None
        keys = _output_keys(model, session)
        ours = session.run(None, {session.get_inputs()[0].name: x})
        reference = _flat(reference, keys)
        error = max(float(np.max(np.abs(np.asarray(a, np.float32) - b))) for a, b in zip(ours, reference))
        if not error <= ONNX_TOLERANCE:
            raise UserError(f"{model.name}: the ONNX export differs from the Keras model by {error:.2g} "
                            f"(more than {ONNX_TOLERANCE:g}); not written")
        provenance = run_record(model_name=model.name, weights=weights, options=options or {}, inputs=[],
                                extra={"onnx_max_abs_error": error})
        record = preprocessing_record(task, model, context=_jsonable(context), onnx_path=onnx_path,
                                      input_name=session.get_inputs()[0].name, output_keys=keys,
                                      provenance=provenance)
        write_json(Path(tmp) / "preprocessing.json", record)
        write_json(Path(tmp) / "run.json", provenance)
    return record


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
    if args.input_size is not None and (args.format != "onnx" or min(args.input_size) < 1):
        raise OptionError("--input-size: two positive sides H W, with --format onnx")
    if args.format == "onnx":
        return _main_onnx(args)

    from common.predict import load_model

    args.weights = args.weights or "best"
    model, checkpoint = load_model(args)
    record = export_saved_model(model, args.out_dir, overwrite=args.overwrite, weights=[checkpoint],
                                options={"weights": args.weights if args.model is None else None})
    print(f"wrote {args.out_dir}: SavedModel of '{model.name}' from {checkpoint}; serve("
          f"{_describe(record['serving']['inputs'])}, preprocessed) -> {_describe(record['serving']['outputs'])}")
    return 0


def _main_onnx(args):
    from common.predict import load_keras_model, rebuilt_for_shape

    task, model, checkpoint, run_context = load_keras_model(args.model or args.run_dir, task=args.task,
                                                            weights=args.weights)
    if args.input_size is not None:
        model = rebuilt_for_shape(model, (*args.input_size, model.inputs[0].shape[-1]))
    context = {k: v for k, v in {**getattr(task, "INFERENCE", {}), **run_context}.items() if k != "weights"}
    record = export_onnx(model, args.out_dir, task=task, context=context, overwrite=args.overwrite,
                         weights=[checkpoint], options={"weights": args.weights, "input_size": args.input_size})
    print(f"wrote {args.out_dir}: {ONNX_FILE} + preprocessing.json of '{model.name}' ({task.NAME}) from {checkpoint}; "
          f"input {record['input']['shape']}, max |ONNX - Keras| "
          f"{record['provenance']['onnx_max_abs_error']:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
