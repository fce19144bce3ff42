"""One ``fit`` for every train script: checkpoints, resume, logs, seeds, learning-rate schedule.

A run folder ``run_dir`` receives:

* ``best.keras`` – the full model at the best value of ``monitor`` (the originals' ModelCheckpoint with
  ``save_best_only=True``), ``last.keras`` – the model after the last completed epoch, with optimizer state;
* ``state.json`` – last completed epoch and best value, so ``resume=True`` continues a killed run at the
  next epoch with the optimizer state and the best value it had;
* ``history.csv`` (appended on resume), ``tensorboard/`` and ``training_curves.png``.

Every file is written atomically (temporary name + rename).
"""

import json
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from common.data.io import atomic_path
from common.report import plot_history, read_history

_MAX_WORDS = ("acc", "dice", "auc", "f1", "iou", "jaccard", "precision", "recall")


def monitor_mode(monitor, mode="auto"):
    """'min' or 'max' for ``monitor``; ``auto`` maximises accuracy/Dice/AUC-like names, minimises the rest."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode must be auto, min or max, got {mode!r}")
    name = monitor.lower().replace("val_", "")
    return "max" if any(w in name for w in _MAX_WORDS) and "loss" not in name else "min"


def split_last(fraction, *arrays):
    """Keras's ``validation_split``: the LAST ``fraction`` of each array (before any shuffling) is validation.

    Returns ``(train_arrays, val_arrays)`` as tuples.
    """
    n = len(arrays[0])
    split_at = int(math.floor(n * (1.0 - fraction)))
    if not 0 < split_at < n:
        raise ValueError(f"validation split {fraction} of {n} samples leaves an empty part")
    return tuple(a[:split_at] for a in arrays), tuple(a[split_at:] for a in arrays)


def array_dataset(x, y, batch_size, shuffle=False, seed=None, transform=None):
    """A ``tf.data.Dataset`` of float32 batches gathered from NumPy arrays (or memory maps) without copying.

    Only indices go through tf.data; each batch is gathered from the arrays, cast to float32 and passed
    through ``transform(xb, yb) -> (xb, yb)`` if given (normalisation or augmentation on uint8 storage).
    ``shuffle`` reshuffles every epoch like ``Model.fit(shuffle=True)``.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")

    def gather(idx):
        idx = np.sort(idx)  # sorted reads are faster on memory maps; order inside a batch is irrelevant
        xb, yb = np.asarray(x[idx], dtype=np.float32), np.asarray(y[idx], dtype=np.float32)
        if transform is not None:
            xb, yb = transform(xb, yb)
        return np.asarray(xb, np.float32), np.asarray(yb, np.float32)

    def load(idx):
        xb, yb = tf.numpy_function(gather, [idx], [tf.float32, tf.float32])
        xb.set_shape((None,) + tuple(x.shape[1:]))
        yb.set_shape((None,) + tuple(y.shape[1:]))
        return xb, yb

    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(load, num_parallel_calls=1).prefetch(tf.data.AUTOTUNE)


class _RunCheckpoint(keras.callbacks.Callback):
    """Writes last.keras every epoch, best.keras on improvement, then state.json (all atomically)."""

    def __init__(self, run_dir, monitor, mode, best, settings):
        super().__init__()
        self.run_dir, self.monitor, self.mode, self.best = Path(run_dir), monitor, mode, best
        self.settings = settings

    def _improved(self, value):
        if self.best is None or not np.isfinite(self.best):
            return np.isfinite(value)
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            raise KeyError(f"monitored value {self.monitor!r} not in the logs ({', '.join(sorted(logs))})")
        value = float(value)
        with atomic_path(self.run_dir / "last.keras") as tmp:
            self.model.save(tmp)
        if self._improved(value):
            self.best = value
            with atomic_path(self.run_dir / "best.keras") as tmp:
                self.model.save(tmp)
        state = {"epoch": epoch + 1, "monitor": self.monitor, "mode": self.mode, "best": self.best,
                 "settings": self.settings}
        with atomic_path(self.run_dir / "state.json") as tmp:
            tmp.write_text(json.dumps(state, indent=2))


def read_state(run_dir):
    """The run's ``state.json`` as a dict, or None when the run has not completed an epoch."""
    path = Path(run_dir) / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def fit(model, train, validation=None, *, run_dir, epochs, batch_size=32, monitor="val_loss", mode="auto",
        resume=False, seed=None, shuffle=True, reduce_lr=None, early_stopping=None, tensorboard=True,
        verbose=1, callbacks=(), settings=None):
    """Train a compiled ``model`` with the project's checkpointing and logging.

    Args:
        model: a compiled ``keras.Model``. With ``resume=True`` and a ``last.keras`` in ``run_dir``, that
            checkpoint (weights and optimizer state) replaces it.
        train: ``(x, y)`` NumPy arrays (batched with ``array_dataset``) or a ``tf.data.Dataset``.
        validation: same kinds, or None (then ``monitor`` falls back to ``loss``).
        run_dir: folder for checkpoints and logs (created).
        epochs: total number of epochs (a resumed run stops at the same total).
        batch_size: for array inputs.
        monitor, mode: value and direction deciding the best checkpoint (and the LR/stop callbacks).
        resume: continue from ``last.keras``/``state.json`` if they exist.
        seed: seeds Python, NumPy and the backend (``keras.utils.set_random_seed``) and the shuffling.
        shuffle: reshuffle array inputs every epoch.
        reduce_lr: dict of ``keras.callbacks.ReduceLROnPlateau`` options (monitor is added), or None.
        early_stopping: dict of ``keras.callbacks.EarlyStopping`` options, or None.
        tensorboard: also write TensorBoard logs.
        callbacks: extra Keras callbacks.
        settings: JSON-able dict stored in state.json (the script's arguments).
    Returns:
        ``(model, history)``: the trained model (the object that was trained, i.e. the reloaded one when
        resuming) and the whole run's history as a dict of lists (read back from history.csv).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if validation is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
    mode = monitor_mode(monitor, mode)

    initial_epoch, best = 0, None
    state = read_state(run_dir)
    if resume and state is not None and (run_dir / "last.keras").is_file():
        model = keras.models.load_model(run_dir / "last.keras")
        initial_epoch, best = int(state["epoch"]), state.get("best")
        if verbose:
            print(f"Resuming {run_dir} after epoch {initial_epoch} (best {monitor} = {best})")
    elif resume and verbose:
        print(f"Nothing to resume in {run_dir}: starting from epoch 0")
    if not resume or initial_epoch == 0:
        for stale in ("state.json", "history.csv", "last.keras", "best.keras"):
            (run_dir / stale).unlink(missing_ok=True)

    if isinstance(train, tuple):
        train = array_dataset(*train, batch_size=batch_size, shuffle=shuffle, seed=seed)
    if isinstance(validation, tuple):
        validation = array_dataset(*validation, batch_size=batch_size)

    cbs = [_RunCheckpoint(run_dir, monitor, mode, best, settings or {}),
           keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0)]
    if reduce_lr:
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, **reduce_lr))
    if early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, **early_stopping))
    if tensorboard:
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False))
    cbs.extend(callbacks)

    if initial_epoch < epochs:
        model.fit(train, validation_data=validation, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=cbs, verbose=verbose, shuffle=False)  # array_dataset shuffles
    history = read_history(run_dir / "history.csv")
    if history:
        plot_history(history, run_dir / "training_curves.png", title=model.name)
    return model, history
