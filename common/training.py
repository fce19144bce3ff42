"""One ``fit`` for every train script: checkpoints, resume, logs, seeds, learning-rate schedule.

A run folder ``run_dir`` receives:

* ``best.keras`` – the full model at the best value of ``monitor`` (the originals' ModelCheckpoint with
  ``save_best_only=True``), ``last.keras`` – the model after the last completed epoch, with optimizer state;
* ``state.json`` – last completed epoch, best value and the state of the learning-rate / early-stopping
  callbacks (ReduceLROnPlateau's best value, wait and cooldown counters; the learning rate itself is in
  ``last.keras``'s optimizer), so ``resume=True`` continues a killed run at the next epoch exactly as an
  uninterrupted run would have (shuffled batches included: see :func:`array_dataset`);
* ``history.csv`` (appended on resume), ``tensorboard/`` and ``training_curves.png``.

Every file is written atomically (temporary name + rename); a run or resume first deletes the temporaries of
those files that a killed run left in its folder (``common.data.io.stale_temporaries``: that exact name
pattern, nothing else). A fresh run never replaces an earlier one
silently: :func:`check_run_dir` refuses a run folder that holds a run unless ``resume`` or ``overwrite``.

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

from common.data.io import atomic_path, remove_stale_temporaries, write_json
from common.errors import OptionError, UserError
from common.report import plot_history, read_history
# The command-line options live in common/run_options.py (no TensorFlow there, so that --help is quick).
from common.run_options import (STRATEGIES, add_decode_cache_argument, add_run_arguments,  # noqa: F401
                                add_strategy_argument, decode_cache_dir, positive_int,
                                tagged_name)

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
        raise UserError(f"validation split: {fraction} of {n} samples leaves an empty training or validation "
                        f"part; use more data or another split fraction")
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


class EpochOrder:
    """The sample order of each epoch: ``permutation(seed, epoch)`` when shuffling, else ``0..n-1``.

    The order depends only on ``(seed, epoch)``, never on how many epochs this process has run, so a run
    resumed at epoch k sees the batches the uninterrupted run saw at epoch k. Each new iteration of the
    dataset takes the order of ``epoch`` and advances it; ``fit`` pins ``epoch`` at the start of every epoch.
    Without a seed the orders are random (drawn from fresh entropy once per dataset).
    """

    def __init__(self, n, shuffle=False, seed=None):
        self.n, self.shuffle, self.epoch = int(n), bool(shuffle), 0
        self.seed = int(seed) if seed is not None else int(np.random.SeedSequence().entropy % 2**63)

    def order(self, epoch):
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.n).astype(np.int64)

    def next_order(self):
        order, self.epoch = self.order(self.epoch), self.epoch + 1
        return order


def array_dataset(x, y, batch_size, shuffle=False, seed=None, transform=None, num_parallel_calls=1,
                  in_memory=False):
    """A ``tf.data.Dataset`` of float32 batches gathered from NumPy arrays (or memory maps) without copying.

    Only indices go through tf.data; each batch is gathered from the arrays, passed through
    ``transform(xb, yb) -> (xb, yb)`` if given (normalisation or augmentation; it receives the arrays' own
    dtype, e.g. uint8 storage, so it may use lookup tables) and cast to float32.
    ``shuffle`` reshuffles every epoch like ``Model.fit(shuffle=True)``; the order of epoch ``e`` is a function
    of ``(seed, e)`` (:class:`EpochOrder`, reachable as the dataset's ``epoch_order`` attribute, which ``fit``
    uses to resume with the same batches).
    ``num_parallel_calls`` > 1 gathers and transforms that many batches at once (``bench/input_pipeline.py``);
    the batches and their order stay the same (``deterministic=True``).
    ``in_memory=True`` transforms the whole arrays once and holds them as float32 tensors; each batch is then a
    ``tf.gather`` inside the pipeline (no Python call per batch): the same batches, for small datasets
    (fingernail, lung slices that fit in memory) whose ``transform`` treats each sample alone and is
    deterministic (a scaling, a normalisation with fixed statistics; not a random augmentation).
    """
    n = len(x)
    if len(y) != n:
        raise UserError(f"arrays: x has {n} samples but y has {len(y)}; the images and masks do not match")
    epoch_order = EpochOrder(n, shuffle, seed)

    def gather(idx):
        idx = np.sort(idx)  # sorted reads are faster on memory maps; order inside a batch is irrelevant
        xb, yb = np.asarray(x[idx]), np.asarray(y[idx])
        if transform is not None:
            xb, yb = transform(xb, yb)
        return np.asarray(xb, np.float32), np.asarray(yb, np.float32)

    def load(idx):
        xb, yb = tf.numpy_function(gather, [idx], [tf.float32, tf.float32])
        xb.set_shape((None,) + tuple(x.shape[1:]))
        yb.set_shape((None,) + tuple(y.shape[1:]))
        return xb, yb

    if in_memory:  # the whole arrays, transformed once, as tensors; batches gathered in the graph
        xs, ys = (np.asarray(x), np.asarray(y))
        if transform is not None:
            xs, ys = transform(xs, ys)
        xs, ys = tf.constant(np.asarray(xs, np.float32)), tf.constant(np.asarray(ys, np.float32))

        def load(idx):  # noqa: F811 (the in-memory gather replaces the NumPy one)
            idx = tf.sort(idx)  # the order inside a batch of the NumPy path
            return tf.gather(xs, idx), tf.gather(ys, idx)

    def indices(_):
        order = tf.numpy_function(epoch_order.next_order, [], tf.int64, stateful=True)
        order.set_shape((n,))
        return tf.data.Dataset.from_tensor_slices(order)

    ds = tf.data.Dataset.from_tensors(np.int64(0)).flat_map(indices)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n))  # Keras then knows the steps per epoch
    ds = without_autotune(ds.batch(batch_size).map(load, num_parallel_calls=num_parallel_calls, deterministic=True))
    ds.epoch_order = epoch_order
    return ds


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
            raise OptionError("--strategy multi_worker: needs the TF_CONFIG environment variable describing the "
                              'cluster, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                              '"task": {"type": "worker", "index": 0}}')
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise OptionError(f"--strategy: unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


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


# Attributes that make up a Keras callback's progress (reset by its on_train_begin); saved in state.json.
_CALLBACK_STATE = {
    "ReduceLROnPlateau": ("best", "wait", "cooldown_counter"),
    "EarlyStopping": ("best", "wait", "stopped_epoch", "best_epoch"),
}
RUN_FILES = ("state.json", "history.csv", "last.keras", "best.keras", "training_curves.png")


def _callback_keys(callbacks):
    """``"<class>"``, then ``"<class>#2"``... for further callbacks of the same class (stable when other
    callbacks are added or removed between the killed and the resumed run)."""
    seen, keys = {}, []
    for cb in callbacks:
        name = cb.__class__.__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


def callback_states(callbacks):
    """``{"<class>[#k]": state}`` of the callbacks whose progress can be saved: ReduceLROnPlateau and
    EarlyStopping (their counters and best value), and any callback with ``get_state() -> dict`` (restored
    with ``set_state(dict)``)."""
    states = {}
    for key, cb in zip(_callback_keys(callbacks), callbacks):
        if hasattr(cb, "get_state") and hasattr(cb, "set_state"):
            states[key] = cb.get_state()
            continue
        for cls in type(cb).__mro__:
            if cls.__name__ in _CALLBACK_STATE:
                states[key] = {a: getattr(cb, a, None) for a in _CALLBACK_STATE[cls.__name__]}
                break
    return states


class _RestoreCallbackStates(keras.callbacks.Callback):
    """Puts saved callback states back after the callbacks' own ``on_train_begin`` reset them (it runs last)."""

    def __init__(self, callbacks, states):
        super().__init__()
        self.callbacks, self.states = callbacks, states or {}

    def on_train_begin(self, logs=None):
        for key, cb in zip(_callback_keys(self.callbacks), self.callbacks):
            state = self.states.get(key)
            if state is None:
                continue
            if hasattr(cb, "set_state") and hasattr(cb, "get_state"):
                cb.set_state(state)
            else:
                for name, value in state.items():
                    if value is not None:  # None: JSON's null for a non-finite best; keep the reset value
                        setattr(cb, name, value)


class _PinEpochOrder(keras.callbacks.Callback):
    """Sets the training data's :class:`EpochOrder` to the epoch about to start (its batches then depend
    only on the seed and the epoch number)."""

    def __init__(self, epoch_order):
        super().__init__()
        self.epoch_order = epoch_order

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_order.epoch = epoch


class _RunCheckpoint(keras.callbacks.Callback):
    """Writes last.keras every epoch, best.keras on improvement, then state.json (all atomically).

    It runs after the learning-rate and stopping callbacks, so the saved optimizer and callback states are
    those the next epoch starts from."""

    def __init__(self, run_dir, monitor, mode, best, settings, stateful=()):
        super().__init__()
        self.run_dir, self.monitor, self.mode, self.best = Path(run_dir), monitor, mode, best
        self.settings, self.stateful = settings, list(stateful)

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
                 "callbacks": callback_states(self.stateful), "settings": self.settings}
        write_json(self.run_dir / "state.json", state)


def read_state(run_dir):
    """The run's ``state.json`` as a dict, or None when the run has not completed an epoch."""
    path = Path(run_dir) / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def holds_run(run_dir):
    """True when ``run_dir`` holds (part of) a training run: a state, history or checkpoint file."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in RUN_FILES[:4])


def check_run_dir(run_dir, *, resume=False, overwrite=False):
    """Refuse to start a fresh run in a folder that holds one (nothing is touched).

    Raises:
        OptionError: ``resume`` and ``overwrite`` together.
        UserError: ``"<run dir>: holds a run of N epochs (best <monitor> <value>); pass --resume to continue
            it, --overwrite to replace it, or another --run-dir"`` when neither is given.
    """
    if resume and overwrite:
        raise OptionError("--resume/--overwrite: choose one (continue the run, or replace it)")
    run_dir = Path(run_dir)
    if resume or overwrite or not holds_run(run_dir):
        return
    state = None
    try:
        state = read_state(run_dir)
    except (OSError, ValueError):
        pass
    if state:
        best = state.get("best")
        best = "none" if best is None else f"{best:.6g}"
        what = f"holds a run of {state.get('epoch')} epochs (best {state.get('monitor')} {best})"
    else:
        found = ", ".join(name for name in RUN_FILES if (run_dir / name).exists())
        what = f"holds a run that completed no epoch ({found})"
    raise UserError(f"{run_dir}: {what}; pass --resume to continue it, --overwrite to replace it, or another "
                    f"--run-dir")


def remove_run(run_dir):
    """Delete the files of the run in ``run_dir`` (only those ``fit`` writes)."""
    import shutil

    run_dir = Path(run_dir)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def transform_inputs_on_device(model, transform):
    """Run ``transform(x)`` on every batch's inputs inside ``model``'s compiled train and test steps.

    The input pipeline can then hand over the stored uint8 images and leave their conversion to float32 and
    their normalisation to the device (4x fewer bytes to copy, and no per-pixel arithmetic on the host, which
    bounds the file pipelines of retinal_edema and TDSNet). The steps are replaced on this model object only
    (instance attributes): its saved file, its ``predict`` and its ``__call__`` are unchanged and still take
    normalised float inputs. Calling it again replaces the transform (it wraps the class's own steps).
    """
    for name in ("train_step", "test_step"):
        step = getattr(type(model), name).__get__(model)

        def transformed(*args, _step=step):  # TensorFlow / torch: (data,); JAX: (state, data)
            *state, data = args
            x, *rest = data if isinstance(data, tuple) else (data,)
            return _step(*state, (transform(x), *rest))

        object.__setattr__(model, name, transformed)
    for cached in ("train_function", "test_function"):  # compiled with the former steps, if any
        if getattr(model, cached, None) is not None:
            object.__setattr__(model, cached, None)


def fit(model, train, validation=None, *, run_dir, epochs, batch_size=32, monitor="val_loss", mode="auto",
        resume=False, overwrite=False, seed=None, shuffle=True, reduce_lr=None, early_stopping=None,
        tensorboard=True, verbose=1, callbacks=(), settings=None, data_workers=1, input_transform=None):
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
        resume: continue from ``last.keras``/``state.json`` if they exist (optimizer, callback states and
            the shuffling order of the epochs to come included).
        overwrite: replace a run already in ``run_dir``. Without ``resume`` or ``overwrite`` a folder that
            holds a run raises ``UserError`` before anything is touched (:func:`check_run_dir`).
        seed: seeds Python, NumPy and the backend (``keras.utils.set_random_seed``) and the shuffling.
        shuffle: reshuffle array inputs every epoch.
        reduce_lr: dict of ``keras.callbacks.ReduceLROnPlateau`` options (monitor is added), or None.
        early_stopping: dict of ``keras.callbacks.EarlyStopping`` options, or None.
        tensorboard: also write TensorBoard logs.
        callbacks: extra Keras callbacks. They run before the checkpoint and log callbacks, so one may add
            a value to the epoch logs (e.g. a custom validation score) that ``monitor`` then uses.
        settings: JSON-able dict stored in state.json (the script's arguments).
        data_workers: ``num_parallel_calls`` of the datasets made from array inputs (``--data-workers``).
        input_transform: a function of a batch's inputs run inside the compiled training and evaluation
            steps, i.e. on the device (:func:`transform_inputs_on_device`): e.g. the normalisation of the uint8
            batches of a ``--decode-cache``.

    The model's distribution strategy (the scope it was built in, see ``get_strategy``) is used as is; in a
    multi-worker cluster the batches are sharded between workers and only the chief writes to ``run_dir``.
    Returns:
        ``(model, history)``: the trained model (the object that was trained, i.e. the reloaded one when
        resuming) and the whole run's history as a dict of lists (read back from history.csv).
    """
    run_dir = Path(run_dir)
    strategy = model.distribute_strategy
    chief = is_chief(strategy)
    if chief:
        check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if _multi_worker(strategy) and seed is None:
        seed = 0  # every worker must shuffle identically for the data sharding to partition the samples
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        # temporaries of this folder's own atomic writes that a killed run left (a full model each)
        stale = remove_stale_temporaries(run_dir / name for name in RUN_FILES)
        if stale and verbose:
            print(f"Removed {len(stale)} temporary file(s) an interrupted run left in {run_dir}: "
                  f"{', '.join(p.name for p in stale)}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if validation is None and monitor.startswith("val_"):
        monitor = monitor[len("val_"):]
    mode = monitor_mode(monitor, mode)

    initial_epoch, best, saved_callbacks = 0, None, {}
    state = read_state(run_dir)
    if resume and state is not None and (run_dir / "last.keras").is_file():
        from common.devices import check_saved_precision

        # resuming under another dtype policy would silently drop the optimizer state
        check_saved_precision(run_dir / "last.keras", keras.mixed_precision.dtype_policy().name)
        with strategy.scope():
            model = keras.models.load_model(run_dir / "last.keras")
        initial_epoch, best = int(state["epoch"]), state.get("best")
        saved_callbacks = state.get("callbacks") or {}
        if verbose:
            print(f"Resuming {run_dir} after epoch {initial_epoch} (best {monitor} = {best})")
    elif resume and verbose:
        print(f"Nothing to resume in {run_dir}: starting from epoch 0")
    if chief and initial_epoch == 0:  # a fresh run: the folder holds none (checked) or --overwrite replaces it
        remove_run(run_dir)

    if isinstance(train, tuple):
        train = array_dataset(*train, batch_size=batch_size, shuffle=shuffle, seed=seed,
                              num_parallel_calls=data_workers)
    if isinstance(validation, tuple):
        validation = array_dataset(*validation, batch_size=batch_size, num_parallel_calls=data_workers)

    epoch_order = getattr(train, "epoch_order", None)
    if epoch_order is not None:
        epoch_order.epoch = initial_epoch
    # user callbacks first (they may add values to the epoch logs that the callbacks below read), then the
    # learning-rate and stopping callbacks, then the checkpoint (which saves their states) and the logs
    cbs = ([_PinEpochOrder(epoch_order)] if epoch_order is not None else []) + list(callbacks)
    if reduce_lr:
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, **reduce_lr))
    if early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, **early_stopping))
    stateful = list(cbs)
    if chief:  # only the chief writes checkpoints and logs
        cbs += [_RunCheckpoint(run_dir, monitor, mode, best, settings or {}, stateful),
                keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0)]
        if tensorboard:
            cbs.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False))
    cbs.append(_RestoreCallbackStates(stateful, saved_callbacks))

    if input_transform is not None:
        transform_inputs_on_device(model, input_transform)
    if initial_epoch < epochs and _multi_worker(strategy):
        _fit_multi_worker(model, train, validation, epochs, initial_epoch, cbs, verbose)
    elif initial_epoch < epochs:
        model.fit(train, validation_data=validation, epochs=epochs, initial_epoch=initial_epoch,
                  callbacks=cbs, verbose=verbose, shuffle=False)  # array_dataset shuffles
    history = read_history(run_dir / "history.csv") if chief else {}
    if history:
        plot_history(history, run_dir / "training_curves.png", title=model.name)
    return model, history
