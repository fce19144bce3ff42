"""Scaffolding of every ``<task>/predict.py``: the user's own files -> masks in the dataset's own format.

A task's predict script does only what is its own (reading one input, the evaluate script's preprocessing
and inference, the output format); this module does the rest the same way for every task::

    parser = argparse.ArgumentParser(...)
    add_predict_arguments(parser, default_run_dir=..., examples="...")
    args = parser.parse_args(argv)
    files = collect_inputs(args.inputs, extensions=(".png", ".jpg"))
    model, checkpoint = load_model(args, default_run_dir=...)

    def process(path):                     # read, predict; raise UserError for a bad input
        ...
        return {f"{stem}_segmentation.png": mask_uint8, ...}   # names inside --out-dir -> values

    return run_inputs(files, process, args=args, outputs=lambda p: [f"{p.stem}_segmentation.png"],
                      model_name=model.name, weights=[checkpoint])

:func:`run_inputs` checks before any prediction that no output would be written twice and that none exists
already (unless ``--overwrite``), shows a progress bar, writes each input's outputs only once all of them
were computed (each file atomically), so a bad input leaves nothing behind, and ends with ``run.json``
(:mod:`common.provenance`). A bad input (``UserError``: corrupt, truncated, wrong format) stops the run with
the one-line error, or with ``--skip-bad`` is listed at the end (exit status 1 after the good ones).

Output values: a NumPy uint8 array (written as an image in the format of the name's extension), a
:class:`LabelMap` (a palette PNG of a K-class label map), ``str`` (text), ``bytes``, or a callable
``write(tmp_path)`` for any other format (NIfTI, CSV).
"""

import glob
import sys
from pathlib import Path

import numpy as np

from common.data.io import atomic_path, write_image
from common.errors import OptionError, UserError

_GLOB_CHARS = set("*?[")


def add_predict_arguments(parser, *, default_run_dir=None, weights=True):
    """The options every predict script shares.

    ``inputs`` (files, folders or glob patterns), ``--run-dir`` / ``--model FILE.keras`` / ``--onnx FILE.onnx``,
    ``--weights best|last``, ``--out-dir`` (required), ``--tta``, ``--overlay``, ``--save-probabilities``,
    ``--skip-bad``, ``--overwrite``, ``--mixed-precision``, ``--quiet``. ``default_run_dir`` is only shown in
    the help (the script resolves it).
    """
    from common.devices import add_precision_arguments
    from common.inference import add_tta_argument

    parser.add_argument("inputs", nargs="+", type=str,
                        help="input files, folders (their files with a known extension) or quoted glob patterns")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the outputs and run.json")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run-dir", type=Path, default=None,
                        help="training run folder" + (f" (default: {default_run_dir})" if default_run_dir else ""))
    source.add_argument("--model", type=Path, default=None, help="a saved .keras model file instead of a run folder")
    source.add_argument("--onnx", type=Path, default=None, metavar="FILE.onnx",
                        help="an exported ONNX model (python -m common.export ... --format onnx) with its "
                             "preprocessing.json beside it: predicts with onnxruntime, without TensorFlow")
    if weights:
        parser.add_argument("--weights", choices=("best", "last"), default="best",
                            help="checkpoint of the run folder (default: %(default)s)")
    add_tta_argument(parser)
    parser.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png: image | mask overlay")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write the predicted probabilities (binary tasks: <name>_prob.png, "
                                 "0..255 = 0..1; multi-class tasks: see the task's README)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="list unreadable inputs at the end (exit status 1) instead of stopping at the first")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    add_precision_arguments(parser, jit_compile=False)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def collect_inputs(specs, extensions):
    """The input files named by ``specs`` (files, folders, glob patterns), in order, without duplicates.

    A folder contributes its files (not recursively) whose name ends with one of ``extensions`` (any case);
    a pattern its matches with those endings. Raises ``UserError`` for a missing path, a file of another
    type, or a spec that yields no file.
    """
    extensions = tuple(e.lower() for e in extensions)

    def known(path):
        return path.is_file() and path.name.lower().endswith(extensions)

    files, seen = [], set()
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if known(p))
            if not found:
                raise UserError(f"{path}: no input files ({', '.join(extensions)}) in this folder")
        elif _GLOB_CHARS & set(str(spec)) and not path.exists():
            found = sorted(p for p in map(Path, glob.glob(str(spec))) if known(p))
            if not found:
                raise UserError(f"{spec}: the pattern matches no input file ({', '.join(extensions)})")
        elif path.is_file():
            if not path.name.lower().endswith(extensions):
                raise UserError(f"{path}: not a supported input ({', '.join(extensions)})")
            found = [path]
        else:
            raise UserError(f"{path}: no such file or folder")
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                files.append(p)
    return files


def checkpoint_path(args, default_run_dir=None):
    """The ``.keras`` file named by ``--model``, or ``<run dir>/<weights>.keras``; ``UserError`` if missing."""
    if getattr(args, "model", None) is not None:
        path = Path(args.model)
        if not path.is_file():
            raise UserError(f"{path}: model file not found (--model expects a saved .keras file)")
        return path
    run_dir = Path(args.run_dir or default_run_dir) if (args.run_dir or default_run_dir) else None
    if run_dir is None:
        raise OptionError("--run-dir/--model: give the training run folder or a .keras model file")
    path = run_dir / f"{getattr(args, 'weights', 'best')}.keras"
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; train first, or give --run-dir / --model")
    return path


def load_checkpoint(path, mixed_precision="off"):
    """A ``.keras`` checkpoint loaded uncompiled (the project's custom layers registered), computing under
    ``--mixed-precision`` (``common.devices.apply_precision``: a loaded model otherwise keeps the policies it
    was saved with). A missing or unreadable file is a one-line ``UserError``."""
    import keras

    from common.devices import apply_precision, set_precision
    from common.models import available_models

    available_models()  # imports every family module, so every custom layer is registered
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; train first, or give --run-dir / --model")
    set_precision(mixed_precision)
    try:
        model = keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: cannot load the model ({exc.__class__.__name__}: "
                        f"{' '.join(str(exc).split())[:200]})") from None
    return apply_precision(model, mixed_precision)


def load_model(args, default_run_dir=None):
    """``(model, checkpoint)``: the checkpoint of :func:`checkpoint_path` (``--run-dir``/``--weights`` or
    ``--model``) loaded by :func:`load_checkpoint` under ``args.mixed_precision``."""
    path = checkpoint_path(args, default_run_dir)
    return load_checkpoint(path, getattr(args, "mixed_precision", "off")), path


def overlay_image(image, mask, color=(255, 0, 0), alpha=0.4):
    """``image | overlay`` side by side as one uint8 RGB array.

    ``mask``: a binary (H, W) mask, painted in ``color``, or an RGB label image (H, W, 3) whose non-black
    pixels are painted in their own colour.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]
    rgb = rgb.astype(np.float32)
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 3:
        where, paint = mask.any(axis=-1), mask.astype(np.float32)
    else:
        where = (mask[..., 0] if mask.ndim == 3 else mask) != 0
        paint = np.broadcast_to(np.asarray(color, np.float32), rgb.shape)
    blended = rgb.copy()
    blended[where] = (1 - alpha) * rgb[where] + alpha * paint[where]
    return np.concatenate([rgb, blended], axis=1).round().clip(0, 255).astype(np.uint8)


class LabelMap:
    """An (H, W) label map 0..K-1 to be written as a palette PNG (``common.data.io.write_label_map``): the file
    holds the labels (``np.array(PIL.Image.open(path))``), an image viewer shows them in colour."""

    def __init__(self, labels):
        self.labels = np.asarray(labels)


def label_colours(labels, num_classes):
    """An (H, W) label map as an RGB image in the palette colours of ``write_label_map`` (for overlays)."""
    from common.data.io import label_palette

    return np.asarray(label_palette(max(int(num_classes), 1)), np.uint8)[np.asarray(labels)]


def _write(path, value):
    if isinstance(value, LabelMap):
        from common.data.io import write_label_map

        write_label_map(path, value.labels)
        return
    if isinstance(value, np.ndarray):
        write_image(path, value)
        return
    with atomic_path(path) as tmp:
        if isinstance(value, str):
            tmp.write_text(value)
        elif isinstance(value, bytes):
            tmp.write_bytes(value)
        elif callable(value):
            value(tmp)
        else:
            raise TypeError(f"{path}: cannot write a {type(value).__name__}")


def run_inputs(files, process, *, args, outputs, model_name, weights, extra=None):
    """Predict every input and write its outputs; returns the exit status (0, or 1 with skipped bad inputs).

    Args:
        files: input paths (:func:`collect_inputs`).
        process: ``path -> {output name: value}`` (names relative to ``args.out_dir``; values as in the
            module docstring). Raises ``UserError`` for a bad input.
        args: the parsed options (``out_dir``, ``overwrite``, ``skip_bad``, ``quiet``; all are stored in
            run.json).
        outputs: ``path -> [output names]``, the names ``process`` will return for it, checked first for
            clashes between inputs and with existing files.
        model_name, weights, extra: for run.json (:func:`common.provenance.write_run_json`).
    """
    from tqdm import tqdm

    from common.provenance import write_run_json

    out_dir = Path(args.out_dir)
    planned, owner = [], {}
    for path in files:
        for name in outputs(path):
            if name in owner:
                raise UserError(f"{path}: its output {name} would also be written for {owner[name]}; "
                                f"predict inputs with the same name into separate --out-dir folders")
            owner[name] = path
            planned.append(out_dir / name)
    existing = [p for p in planned + [out_dir / "run.json"] if p.exists()]
    if existing and not args.overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UserError(f"{existing[0]}: already exists{more}; pass --overwrite to replace, or another --out-dir")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    bad, done = [], []
    for path in tqdm(files, desc="predict", unit="input", disable=getattr(args, "quiet", False)):
        try:
            results = process(path)
        except UserError as exc:
            if not args.skip_bad:
                if created and not any(out_dir.iterdir()):  # a run that wrote nothing leaves no folder
                    out_dir.rmdir()
                raise
            bad.append((path, " ".join(str(exc).split())))
            continue
        for name, value in results.items():
            _write(out_dir / name, value)
        done.append(path)
    options = {k: v for k, v in vars(args).items() if k != "inputs"}
    write_run_json(out_dir, model_name=model_name, weights=weights, options=options, inputs=done,
                   extra=dict(extra or {}, skipped=[{"input": str(p), "error": e} for p, e in bad]))
    print(f"{len(done)} of {len(files)} inputs predicted into {out_dir}", file=sys.stderr)
    for path, message in bad:
        print(f"error: {message}", file=sys.stderr)
    return 1 if bad else 0


def extra_outputs(stem, args, *, prob=None, overlay=None, prob_ext=".png"):
    """The optional files of one input as ``{name: value}``: ``<stem>_prob<prob_ext>`` with
    ``--save-probabilities`` and ``<stem>_overlay.png`` with ``--overlay`` (:func:`add_predict_arguments`).

    ``prob`` and ``overlay`` are functions returning the values, called only for the files asked for; left
    out, the values are None: the names alone, for ``run_inputs(outputs=...)``.
    """
    out = {}
    if args.save_probabilities:
        out[f"{stem}_prob{prob_ext}"] = prob() if prob else None
    if args.overlay:
        out[f"{stem}_overlay.png"] = overlay() if overlay else None
    return out


def mask_outputs(stem, mask_name, image, result, args, num_classes):
    """``{mask_name: mask, ...optional files}`` of one segmented image (``result`` of ``Segmenter.predict``): a
    binary mask as it is, a K-class model's label map as a palette PNG (:class:`LabelMap`); with
    ``--save-probabilities`` ``<stem>_prob.png`` (binary) or ``<stem>_prob.npy`` (H, W, K); with ``--overlay``
    the image beside the mask (K classes in their palette colours). Called with ``result=None``, it gives
    the names only (for ``run_inputs(outputs=...)``)."""
    multi = num_classes > 2
    prob_ext = ".npy" if multi else ".png"
    if result is None:
        return [mask_name, *extra_outputs(stem, args, prob_ext=prob_ext)]
    mask = result["mask"]
    return {mask_name: LabelMap(mask) if multi else mask,
            **extra_outputs(stem, args, prob_ext=prob_ext,
                            prob=lambda: (probability_file if multi else probability_png)(result["prob"]),
                            overlay=lambda: overlay_image(image, label_colours(mask, num_classes) if multi
                                                          else mask))}


def probability_file(prob):
    """A writer of multi-class probabilities (H, W, K) as a float16 ``.npy`` file (for ``run_inputs``)."""
    return lambda tmp: np.save(tmp, np.asarray(prob, np.float16))


def probability_png(prob):
    """A probability map in [0, 1] as a uint8 PNG image (0..255)."""
    return np.clip(np.rint(np.asarray(prob, np.float64) * 255), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# load_segmenter: one Python call from an image to a mask, with a Keras model or an ONNX file


def _concat(parts):
    """Chunks of a network's outputs (arrays, dicts or lists of arrays) joined along the batch axis."""
    first = parts[0]
    if isinstance(first, dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in first}
    if isinstance(first, (list, tuple)):
        return [np.concatenate([p[i] for p in parts]) for i in range(len(first))]
    return np.concatenate(parts)


def _numpy(output):
    if isinstance(output, dict):
        return {key: np.asarray(value, np.float32) for key, value in output.items()}
    if isinstance(output, (list, tuple)):
        return [np.asarray(value, np.float32) for value in output]
    return np.asarray(output, np.float32)


def rebuilt_for_shape(model, input_shape):
    """The architecture of ``model`` built for ``input_shape`` (H, W, C) with its weights.

    A registered network (``common.models``, by ``model.name``; ``bidirectional`` recognised from its layer
    names, a K-class head from its output channels) is built again by its builder (BCDU-Net's ConvLSTM fusions
    reshape with static sizes, so a clone would not do); any other model is cloned on a new input. The weights
    of a fully-convolutional network do not depend on H and W.
    """
    import keras

    from common.models import available_models, build_model

    if model.name in available_models():
        options = {"bidirectional": True} if any(l.name.endswith("_convlstm_fwd") for l in model.layers) else {}
        channels = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
        heads = [{}] + ([{"num_classes": channels}] if channels and channels > 2 else [])  # a K-class softmax head
        for head in heads:
            try:
                copy = build_model(model.name, tuple(input_shape), **options, **head)
                copy.set_weights(model.get_weights())
                return copy
            except (ValueError, TypeError):  # e.g. other options than the builder's defaults: clone instead
                pass
    copy = keras.models.clone_model(model, input_tensors=keras.Input(shape=tuple(input_shape)))
    copy.set_weights(model.get_weights())
    return copy


class KerasNetwork:
    """A Keras model as a NumPy callable ``(N, H, W, C) float32 -> outputs`` for inputs of any size.

    One compiled function per input size serves every batch of that size (TensorFlow: a ``tf.function``
    with a fixed signature, traced once; the network rebuilt for a size other than its own, once), so
    predicting many files of the same size never retraces. Batches are run ``batch_size`` at a time.
    """

    def __init__(self, model, batch_size=1):
        self.model, self.name, self.batch_size = model, model.name, int(batch_size)
        shape = model.inputs[0].shape
        self.input_size = tuple(shape[1:3])
        self.channels = shape[-1]
        self.output_channels = model.outputs[0].shape[-1]  # the first output's (K of a K-class softmax head)
        self.any_size = True
        self._functions, self.traced = {}, {}  # input shape -> NumPy forward pass / its tf.function

    def function(self, input_shape):
        """The compiled forward pass for inputs (any N, *input_shape)."""
        input_shape = tuple(int(d) for d in input_shape)
        if input_shape not in self._functions:
            import keras

            own = tuple(self.model.inputs[0].shape[1:])
            fits = all(e is None or e == s for e, s in zip(own, input_shape))
            model = self.model if fits else rebuilt_for_shape(self.model, input_shape)
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                spec = tf.TensorSpec((None,) + input_shape, tf.float32)
                forward = tf.function(lambda x: model(x, training=False), input_signature=[spec],
                                      reduce_retracing=True)
                self.traced[input_shape] = forward
                self._functions[input_shape] = lambda x: _numpy(forward(x))
            else:
                self._functions[input_shape] = lambda x: _numpy(model.predict_on_batch(x))
        return self._functions[input_shape]

    def __call__(self, x):
        x = np.asarray(x, np.float32)
        forward = self.function(x.shape[1:])
        return _concat([forward(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)])


class OnnxNetwork:
    """An exported ``.onnx`` network in onnxruntime as a NumPy callable (no TensorFlow, no Keras).

    ``output_keys`` (from preprocessing.json) restores the Keras output structure: None for one output, a
    list of names for a dict (``{"seg": ..., "det": ...}``), or ``"list"`` for a list of outputs.
    """

    def __init__(self, path, *, output_keys=None, batch_size=1, name=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(f"{path}: onnxruntime is not installed (pip install -r requirements-predict.txt)") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types for a corrupt file)
            raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:160]})") from None
        self.path, self.name, self.batch_size, self.output_keys = Path(path), name, int(batch_size), output_keys
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        dims = [d if isinstance(d, int) else None for d in inp.shape[1:]]
        self.input_size, self.channels = tuple(dims[:2]), dims[2]
        self.any_size = None in self.input_size
        first = self.session.get_outputs()[0].shape[-1]
        self.output_channels = first if isinstance(first, int) else None

    def _run(self, x):
        outputs = [np.asarray(o, np.float32) for o in self.session.run(None, {self.input_name: x})]
        if self.output_keys is None:
            return outputs[0]
        if self.output_keys == "list":
            return outputs
        return dict(zip(self.output_keys, outputs))

    def __call__(self, x):
        x = np.asarray(x, np.float32)
        expected = tuple(self.input_size) + (self.channels,)
        if any(e is not None and e != s for e, s in zip(expected, x.shape[1:])):
            raise UserError(f"{self.path}: this ONNX model takes {'x'.join(str(e) for e in expected)} inputs, the "
                            f"task's preprocessing gives {'x'.join(map(str, x.shape[1:]))}; export it for that size "
                            f"(python -m common.export ... --format onnx --input-size H W) or choose an inference "
                            f"mode at the model's size")
        return _concat([self._run(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)])


class Segmenter:
    """A trained network with its task's preprocessing, inference mode and post-processing.

    ``seg(image)`` -> the mask, ``seg.probabilities(image)`` -> the probabilities, ``seg.predict(image)`` ->
    both (and the task's extras) as a dict; keyword arguments override the options for one call (e.g.
    ``fov=`` for retina_vessel). ``image`` is one NumPy image of any size in the task's input format
    (``seg.task.INPUT``): uint8 RGB or grey photos, a cube of B-scans, a CT volume in HU.
    """

    def __init__(self, task, network, options=None, source=None):
        self.task, self.network, self.options, self.source = task, network, dict(options or {}), source

    @property
    def name(self):
        return self.network.name

    @property
    def num_classes(self):
        """K of a K-channel softmax head (K > 2: ``seg(image)`` is a label map 0..K-1), else 2 (binary)."""
        channels = getattr(self.network, "output_channels", None) or 1
        return channels if channels > 2 else 2

    def predict(self, image, **options):
        return self.task.segment(np.asarray(image), self.network, **{**self.options, **options})

    def __call__(self, image, **options):
        return self.predict(image, **options)["mask"]

    def probabilities(self, image, **options):
        return self.predict(image, probabilities=True, **options)["prob"]


def task_of_path(path):
    """The task a model path belongs to: the nearest folder of the path named as a task (``weights/<task>/...``)."""
    from common.tasks import available_tasks

    known = set(available_tasks())
    for part in reversed(Path(path).resolve().parts):
        if part in known:
            return part
    return None


PREPROCESSING_JSON = "preprocessing.json"


def read_preprocessing(onnx_path):
    """The ``preprocessing.json`` beside ``onnx_path``, checked against the file; ``UserError`` otherwise."""
    import json

    from common.provenance import sha256_file

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: ONNX model file not found")
    path = onnx_path.parent / PREPROCESSING_JSON
    if not path.is_file():
        raise UserError(f"{path}: not found beside {onnx_path.name}; export the model with python -m common.export "
                        f"RUN_DIR OUT_DIR --format onnx, which writes both")
    try:
        record = json.loads(path.read_text())
        model = record["model_file"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: not a preprocessing.json of common.export (no model_file)") from None
    if model.get("name") != onnx_path.name or model.get("sha256") != sha256_file(onnx_path):
        raise UserError(f"{path}: describes {model.get('name')} (SHA-256 {str(model.get('sha256'))[:12]}...), not "
                        f"this {onnx_path.name}; keep each .onnx in its export folder with its own json")
    return record


def _check_task(expected, found, source):
    if expected is not None and found is not None and expected != found:
        raise UserError(f"{source}: a model of the task {found}, not {expected}")


def segmenter_from_model(model, task, *, batch_size=None, source=None, **options):
    """A :class:`Segmenter` of an already loaded Keras ``model`` (e.g. the authors' weights) for ``task``."""
    from common.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    options = {**getattr(task, "INFERENCE", {}), **options}
    batch = batch_size or options.get("batch_size") or 1
    return Segmenter(task, KerasNetwork(model, batch), options, source)


def load_segmenter(path, *, task=None, weights=None, mixed_precision="off", **options):
    """A :class:`Segmenter` from a run folder, a ``.keras`` file or an ``.onnx`` file (+ its preprocessing.json).

    Args:
        path: training run folder (its ``<weights>.keras``), a ``.keras`` checkpoint, or an exported ``.onnx``.
        task: the task name; found from preprocessing.json (ONNX) or the path (``weights/<task>/...``) if left
            out. A model of another task than ``task`` is a ``UserError``.
        weights: ``best`` or ``last`` checkpoint of a run folder (default: the task's, ``best`` but for
            fingernail, whose original reports its last epoch).
        mixed_precision: ``off``, ``float16``, ``bfloat16`` (Keras models only).
        options: the task's inference options (``tta="flip"``, ``threshold=``, ``inference="overlap"``, ...);
            the run's own preprocessing statistics (e.g. the nerve run's norm_stats.json) are read from the run.

    Example::

        from common.data.io import read_image
        from common.predict import load_segmenter
        seg = load_segmenter("weights/skin_lesion/bcdu_net_d3")
        mask = seg(read_image("photo.jpg", "rgb"))        # uint8 0/255 at the photo's size
        prob = seg.probabilities(read_image("photo.jpg", "rgb"))
    """
    from common.tasks import get_task

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        record = read_preprocessing(path)
        _check_task(task, record.get("task"), path)
        module = get_task(record["task"])
        context = {**getattr(module, "INFERENCE", {}), **record.get("context", {}), **options}
        network = OnnxNetwork(path, output_keys=record.get("output", {}).get("keys"), name=record.get("model"),
                              batch_size=context.get("batch_size") or 1)
        return Segmenter(module, network, context, source=path)
    module, model, checkpoint, run_context = load_keras_model(path, task=task, weights=weights,
                                                              mixed_precision=mixed_precision, **options)
    return segmenter_from_model(model, module, source=checkpoint, **{**run_context, **options})


def load_keras_model(path, *, task=None, weights=None, mixed_precision="off", **options):
    """``(task module, keras model, checkpoint, run context)`` of a run folder or ``.keras`` file: the task from
    ``task`` or the path, the checkpoint by the task's rule (``<weights>.keras``, or its ``checkpoint_of``),
    the model by the task's loader, the run's own preprocessing (``run_context``: e.g. norm_stats.json)."""
    from common.tasks import get_task

    path = Path(path)
    name = task or task_of_path(path)
    if name is None:
        raise UserError(f"{path}: cannot tell the task of this model from its path; pass task=<name> (--task)")
    module = get_task(name)
    weights = weights or getattr(module, "INFERENCE", {}).get("weights", "best")
    if path.is_dir():
        checkpoint = (module.checkpoint_of(path, weights) if hasattr(module, "checkpoint_of")
                      else path / f"{weights}.keras")
    else:
        checkpoint = path
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: checkpoint not found; train first, or give a run folder / .keras file")
    run_context = module.run_context(checkpoint.parent, **options) if hasattr(module, "run_context") else {}
    model = (module.load_keras_network(checkpoint, mixed_precision) if hasattr(module, "load_keras_network")
             else load_checkpoint(checkpoint, mixed_precision))
    return module, model, checkpoint, run_context


def segmenter_from_args(args, task, *, default_run_dir=None, model=None, checkpoint=None, **options):
    """``(segmenter, weights files)`` of a predict script's options: ``--onnx`` (onnxruntime, no TensorFlow),
    an already built Keras ``model`` (e.g. ``--init-weights``; ``checkpoint`` names its file), or
    ``--model`` / ``--run-dir`` / ``default_run_dir`` with ``--weights`` and ``--mixed-precision``.
    ``options``: the task's inference options (see the task's ``segment``)."""
    options = {"tta": getattr(args, "tta", "none"), **options}
    if getattr(args, "onnx", None) is not None:
        if getattr(args, "mixed_precision", "off") != "off":
            raise OptionError("--mixed-precision: applies to Keras models, not to --onnx")
        seg = load_segmenter(args.onnx, task=task, **options)
        return seg, [args.onnx]
    if model is not None:
        return segmenter_from_model(model, task, source=checkpoint, **options), [checkpoint]
    path = checkpoint_path(args, default_run_dir) if getattr(args, "model", None) is not None or not \
        _has_own_checkpoints(task) else Path(args.run_dir or default_run_dir)
    seg = load_segmenter(path, task=task, weights=getattr(args, "weights", "best"),
                         mixed_precision=getattr(args, "mixed_precision", "off"), **options)
    return seg, [seg.source]


def _has_own_checkpoints(task):
    from common.tasks import get_task

    return hasattr(get_task(task), "checkpoint_of")
