"""One ``fit`` for every train script: checkpoints, resume, logs, seeds, learning-rate schedule.

A run folder ``run_dir`` receives:

* ``best.keras`` – the full model at the best value of ``monitor`` (the originals' ModelCheckpoint with
  ``save_best_only=True``), ``last.keras`` – the model after the last completed epoch, with optimizer state;
* ``state.json`` – last completed epoch and best value, so ``resume=True`` continues a killed run at the
  next epoch with the optimizer state and the best value it had;
* ``history.csv`` (appended on resume), ``tensorboard/`` and ``training_curves.png``.

Every file is written atomically (temporary name + rename).

Distribution (``--strategy``): ``get_strategy("mirrored")`` trains on all local devices,
``get_strategy("multi_worker")`` on several machines described by the ``TF_CONFIG`` environment variable
(``tf.distribute.MultiWorkerMirroredStrategy``; every worker runs the same command). Build and compile the
model inside ``strategy.scope()``; ``fit`` then shards the data between workers and only the chief writes files.
"""

import json
import math
import os
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


def without_autotune(ds, prefetch=2):
    """``ds`` prefetching ``prefetch`` batches, with tf.data's autotuning switched off.

    With autotuning on, each new iterator starts a background "model" thread, and destroying the iterator
    (every epoch of ``fit``: train and validation) waits for it: a stall of about 3.5 s per epoch measured
    on 2 busy cores (nerve_unet 96x96 b32: 4-step epochs of 10 s instead of 6.6 s). The pipelines here run
    one fixed map each, so there is nothing for autotuning to tune.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(prefetch).with_options(options)


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
    return without_autotune(ds.batch(batch_size).map(load, num_parallel_calls=1))


STRATEGIES = ("default", "mirrored", "multi_worker")


def foreground_fraction(masks, scale=1.0, chunk=4096):
    """Mean of ``masks / scale`` over a (possibly memory-mapped) array, read ``chunk`` items at a time."""
    total = sum(float(np.asarray(masks[i:i + chunk], np.float64).sum()) for i in range(0, len(masks), chunk))
    return total / (scale * float(np.prod(masks.shape)))


def set_output_prior(model, fraction, layer="head_output"):
    """Set the bias of the sigmoid output ``layer`` to ``logit(fraction)``; returns the fraction used.

    The untrained network then predicts the training set's foreground share everywhere instead of 0.5 (the
    prior initialisation of Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017). An option of the
    BCDU-Net scripts: the originals' head, Conv2D(2, ReLU) -> Conv2D(1, sigmoid), otherwise dies in some
    initialisations on imbalanced masks (both ReLU channels pushed below zero by the first updates).
    """
    fraction = float(np.clip(fraction, 1e-4, 1 - 1e-4))
    bias = model.get_layer(layer).bias
    bias.assign(np.full(bias.shape, np.log(fraction / (1 - fraction)), dtype=bias.dtype))
    return fraction


def get_strategy(name="default"):
    """A ``tf.distribute`` strategy by name: ``default`` (no distribution), ``mirrored`` (all local devices,
    ``MirroredStrategy``) or ``multi_worker`` (``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``).

    Create it at the start of the program, before other TensorFlow work.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy multi_worker needs the TF_CONFIG environment variable describing the "
                             'cluster, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                             '"task": {"type": "worker", "index": 0}}')
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def add_strategy_argument(parser):
    """The ``--strategy`` option every train script offers."""
    parser.add_argument("--strategy", choices=STRATEGIES, default="default",
                        help="tf.distribute strategy: default (one device), mirrored (all local devices) or "
                             "multi_worker (several machines, cluster given by TF_CONFIG; run the same command "
                             "on every worker). Default: %(default)s")


def is_chief(strategy=None):
    """True unless this process is a non-chief worker of a multi-worker cluster (only the chief writes files)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type in (None, "worker") and (resolver.task_id or 0) == 0


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _fit_multi_worker(model, train, validation, epochs, initial_epoch, callbacks, verbose):
    """Epoch loop for ``MultiWorkerMirroredStrategy``: Keras's own ``train_step``/``test_step`` run in every
    replica (``strategy.run``), the logs are averaged over all replicas of all workers.

    Keras 3's ``Model.fit`` cannot be used here: it reduces distributed values with calls that fail under
    this strategy (keras-team/keras#20585), so the loop around the steps is ours; the step itself (loss,
    gradients, all-reduce in the optimizer) is Keras's.
    """
    strategy = model.distribute_strategy
    options = tf.data.Options()
    # the index pipeline has no files to shard: every worker takes every k-th batch of the same order
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = train.with_options(options)
    with strategy.scope():  # build weights, optimizer and metric state from one local batch
        model._symbolic_build(data_batch=next(iter(train)))
    dist_train = strategy.experimental_distribute_dataset(train)
    dist_val = None
    if validation is not None:
        dist_val = strategy.experimental_distribute_dataset(validation.with_options(options))

    def reduced(logs):
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

    train_step = tf.function(lambda batch: reduced(strategy.run(model.train_step, args=(batch,))))
    test_step = tf.function(lambda batch: reduced(strategy.run(model.test_step, args=(batch,))))
    callbacks = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                             model=model, verbose=verbose, epochs=epochs)
    callbacks.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for step, batch in enumerate(dist_train):
            callbacks.on_train_batch_begin(step)
            logs = train_step(batch)
            callbacks.on_train_batch_end(step, logs)
        logs = {k: float(v) for k, v in logs.items()}
        if dist_val is not None:
            model.reset_metrics()
            for batch in dist_val:
                val_logs = test_step(batch)
            logs.update({f"val_{k}": float(v) for k, v in val_logs.items()})
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end()


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
        callbacks: extra Keras callbacks. They run before the checkpoint and log callbacks, so one may add
            a value to the epoch logs (e.g. a custom validation score) that ``monitor`` then uses.
        settings: JSON-able dict stored in state.json (the script's arguments).

    The model's distribution strategy (the scope it was built in, see ``get_strategy``) is used as is; in a
    multi-worker cluster the batches are sharded between workers and only the chief writes to ``run_dir``.
    Returns:
        ``(model, history)``: the trained model (the object that was trained, i.e. the reloaded one when
        resuming) and the whole run's history as a dict of lists (read back from history.csv).
    """
    run_dir = Path(run_dir)
    strategy = model.distribute_strategy
    chief = is_chief(strategy)
    if _multi_worker(strategy) and seed is None:
        seed = 0  # every worker must shuffle identically for the data sharding to partition the samples
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if validation is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
    mode = monitor_mode(monitor, mode)

    initial_epoch, best = 0, None
    state = read_state(run_dir)
    if resume and state is not None and (run_dir / "last.keras").is_file():
        with strategy.scope():
            model = keras.models.load_model(run_dir / "last.keras")
        initial_epoch, best = int(state["epoch"]), state.get("best")
        if verbose:
            print(f"Resuming {run_dir} after epoch {initial_epoch} (best {monitor} = {best})")
    elif resume and verbose:
        print(f"Nothing to resume in {run_dir}: starting from epoch 0")
    if chief and (not resume or initial_epoch == 0):
        for stale in ("state.json", "history.csv", "last.keras", "best.keras"):
            (run_dir / stale).unlink(missing_ok=True)

    if isinstance(train, tuple):
        train = array_dataset(*train, batch_size=batch_size, shuffle=shuffle, seed=seed)
    if isinstance(validation, tuple):
        validation = array_dataset(*validation, batch_size=batch_size)

    cbs = list(callbacks)  # first: they may add values to the epoch logs that the callbacks below read
    if chief:  # only the chief writes checkpoints and logs
        cbs += [_RunCheckpoint(run_dir, monitor, mode, best, settings or {}),
                keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0)]
        if tensorboard:
            cbs.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False))
    if reduce_lr:
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, **reduce_lr))
    if early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, **early_stopping))

    if initial_epoch < epochs and _multi_worker(strategy):
        _fit_multi_worker(model, train, validation, epochs, initial_epoch, cbs, verbose)
    elif initial_epoch < epochs:
        model.fit(train, validation_data=validation, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=cbs, verbose=verbose, shuffle=False)  # array_dataset shuffles
    history = read_history(run_dir / "history.csv") if chief else {}
    if history:
        plot_history(history, run_dir / "training_curves.png", title=model.name)
    return model, history
