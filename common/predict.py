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

Output values: a NumPy uint8 array (written as an image in the format of the name's extension), ``str``
(text), ``bytes``, or a callable ``write(tmp_path)`` for any other format (NIfTI, CSV).
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

    ``inputs`` (files, folders or glob patterns), ``--run-dir`` / ``--model FILE.keras``, ``--weights
    best|last``, ``--out-dir`` (required), ``--tta``, ``--overlay``, ``--save-probabilities``, ``--skip-bad``,
    ``--overwrite``, ``--mixed-precision``, ``--quiet``. ``default_run_dir`` is only shown in
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


def _write(path, value):
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
    out_dir.mkdir(parents=True, exist_ok=True)
    bad, done = [], []
    for path in tqdm(files, desc="predict", unit="input", disable=getattr(args, "quiet", False)):
        try:
            results = process(path)
        except UserError as exc:
            if not args.skip_bad:
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


def probability_png(prob):
    """A probability map in [0, 1] as a uint8 PNG image (0..255)."""
    return np.clip(np.rint(np.asarray(prob, np.float64) * 255), 0, 255).astype(np.uint8)
