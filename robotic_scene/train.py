"""Train TDSNet on the prepared ROBOT18 frames with the original's staged schedule (train.sh).

Four runs ("stages") share one model; each starts from the BEST checkpoint (validation mean IoU) of the
previous one, continues the epoch counter from that checkpoint's epoch up to the stage's cumulative epoch
count, and uses a fresh Adam (betas 0.9/0.999, eps 1e-8, constant lr, no weight decay)::

    stage  name          alpha (class)  beta (sync)  gamma (scene)  lr     epochs (cumulative)
    1      segmentation  0              0            0              1e-4   10
    2      class         0.2            0            0              1e-4   30
    3      sync          0.2            0.6          0              5e-5   50
    4      scene         0.2            0.6          0.2            5e-5   70

Loss = L_seg + alpha L_class + beta L_sync + gamma L_scene (common/losses.py, ``tdsnet_*``). Batch 1,
shuffled, vertical and horizontal flips (p 0.5 each), ImageNet normalisation, full frames. Split by sequence:
fold 0 validates on seq_1..seq_4 and trains on the others. Scene (surgical phase) of a frame = its sequence's
(spec section 3.3). A checkpoint is chosen on the validation mean IoU of the original (12 classes per image,
a class absent from both truth and prediction scores 1, averaged over classes, then over images).

Written to ``--run-dir`` (default ``weights/robotic_scene/tdsnet_fold0`` with the original's settings, plus a
suffix per changed setting, see :func:`run_name`; a folder holding a staged run is refused unless ``--resume``
or ``--overwrite``): one folder per stage
(``stage1_segmentation/`` ...) with ``best.keras``, ``last.keras``, ``state.json``, ``history.csv`` and
curves (common.training.fit), and ``stages.json`` (start epoch, length, best epoch and IoU of each stage).
``--resume`` skips finished stages and continues an interrupted one.

The VGG16 encoder starts from ImageNet as the original (``--encoder-weights``; Keras's file must be on disk,
nothing is downloaded; ``none`` = random). ``--normalise auto`` picks the preprocessing by what is loaded
(any VGG16 file here is Keras's Caffe-converted ImageNet weights: BGR minus the Caffe means; random weights:
the original's torchvision RGB mean/std).
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data.io import DataLayoutError, list_images, pair_files, remove_stale_temporaries, write_json
from common.errors import OptionError, UserError
from common.run_options import add_decode_cache_argument, add_run_arguments, decode_cache_dir
from robotic_scene.prepare import DEFAULT_WORK, IMAGES, MASKS, NUM_CLASSES, PREPARED, sequence_number
from robotic_scene.task import INPUT, RECIPE

#: (name, alpha, beta, gamma, Adam lr, cumulative epochs) of train.sh (README "Training" steps 2-5).
STAGES = RECIPE["stages"]  # task.py
#: surgical phase of each training sequence (util/config.py): 0 preparing, 1 peeling, 2 incising.
SCENES = {1: 0, 2: 0, 4: 0, 5: 0, 7: 0, 3: 1, 10: 1, 11: 1, 12: 1, 16: 1, 6: 2, 9: 2, 13: 2, 14: 2, 15: 2}
NUM_SCENES = 3
VAL_SEQS = RECIPE["val_seqs"]  # fold 0, the only fold of the original
BATCH_SIZE, SEED = RECIPE["batch_size"], RECIPE["seed"]
TORCH_MEAN, TORCH_STD, CAFFE_MEAN_BGR = INPUT["torch_mean"], INPUT["torch_std"], INPUT["caffe_mean_bgr"]
DEFAULT_RUN = cli.repo_path("weights", "robotic_scene", "tdsnet_fold0")


# ------------------------------------------------------------------------------------------------------ data


def sequence_frames(data_dir, seqs):
    """``[(image path, mask path, sequence number), ...]`` of the prepared sequences ``seqs``, sorted."""
    data_dir = Path(data_dir)
    frames = []
    for seq in seqs:
        folder = data_dir / f"seq_{seq}"
        images = list_images(folder / IMAGES, (".png",))
        masks = list_images(folder / MASKS, (".png",))
        frames += [(i, m, seq) for i, m in pair_files(images, masks, lambda p: p.name, lambda p: p.name)]
    return frames


def read_own_split(data_dir):
    """``split.json`` of an own-data prepare run (train/val/test sequences, scenes), or None (ROBOT18)."""
    import json

    path = Path(data_dir) / "split.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        scenes = record.get("scenes")
        return {"train_seqs": [int(s) for s in record["train_seqs"]],
                "val_seqs": [int(s) for s in record["val_seqs"]],
                "test_seqs": [int(s) for s in record.get("test_seqs", [])],
                "scenes": None if scenes is None else {int(k): int(v) for k, v in scenes.items()}}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataLayoutError(f"{path}: not a split.json of robotic_scene/prepare.py ({exc.__class__.__name__}: "
                              f"{exc}); prepare your data again") from None


def split_sequences(data_dir, val_seqs=VAL_SEQS, exclude=()):
    """(train sequence numbers, validation sequence numbers) found in ``data_dir`` (the prepared folder);
    ``exclude``: sequences in neither (an own-data test split)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataLayoutError(f"{data_dir}: folder not found; run robotic_scene/prepare.py first")
    found = sorted(sequence_number(p) for p in data_dir.iterdir() if p.is_dir() and p.name.startswith("seq_"))
    val = [s for s in found if s in set(val_seqs)]
    train = [s for s in found if s not in set(val_seqs) and s not in set(exclude)]
    if not train or not val:
        raise DataLayoutError(f"{data_dir}: sequences {found} leave no {'training' if not train else 'validation'} "
                              f"sequence with validation sequences {list(val_seqs)}")
    return train, val


def scene_of(seq, scenes=SCENES):
    if scenes is None:  # own data prepared without --scenes: a placeholder, its loss weight is 0 (checked)
        return 0
    if seq not in scenes:
        raise DataLayoutError(f"seq_{seq}: no scene (surgical phase) label; known sequences {sorted(scenes)}")
    return scenes[seq]


def frame_size(frames):
    """(rows, cols) shared by every frame and mask (headers only); a different size raises DataLayoutError."""
    from PIL import Image

    size = None
    for image, mask, _ in frames:
        for path in (image, mask):
            with Image.open(path) as img:
                rows_cols = img.size[::-1]
            size = size or rows_cols
            if rows_cols != size:
                raise DataLayoutError(f"{path}: {rows_cols[1]}x{rows_cols[0]} (WxH) but the first frame is "
                                      f"{size[1]}x{size[0]}")
    if size[0] % 32 or size[1] % 32:
        raise DataLayoutError(f"{frames[0][0]}: TDSNet needs frame sides that are multiples of 32, got "
                              f"{size[1]}x{size[0]} (WxH); prepare with --height/--width")
    return size


def resolve_normalise(normalise, encoder_weights):
    """The input preprocessing for ``--normalise`` (``auto``, ``torch``, ``caffe``) and ``--encoder-weights``.

    ``auto`` decides by what is loaded, not by how it was spelled: every VGG16 file this project loads
    (``imagenet`` = Keras's ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``, or a path to that file or
    to weights saved from ``keras.applications.VGG16``) holds Keras's ImageNet weights, converted from Caffe,
    so they get ``caffe`` (BGR, 0..255 minus the Caffe means); random encoder weights (``none``) get the
    original's ``torch`` normalisation (torchvision's RGB mean/std).
    """
    if normalise not in ("auto", "torch", "caffe"):
        raise ValueError(f"unknown normalisation {normalise!r} (auto, torch, caffe)")
    if normalise != "auto":
        return normalise
    return "torch" if encoder_weights_file(encoder_weights) is None else "caffe"


def encoder_weights_file(encoder_weights):
    """The VGG16 weights file ``--encoder-weights`` loads (None for ``none``); a missing file is a one-line
    error (``common.layers.resolve_vgg16_notop_weights``; nothing is downloaded)."""
    from common.layers import resolve_vgg16_notop_weights

    if encoder_weights is None or str(encoder_weights).lower() == "none":
        return None
    try:
        return resolve_vgg16_notop_weights(encoder_weights)
    except FileNotFoundError as exc:
        raise UserError(f"--encoder-weights {encoder_weights}: {' '.join(str(exc).split())}") from None


def normalise_images(images, mode="torch"):
    """uint8-valued RGB (..., H, W, 3) -> network input (float32): ``torch`` = (x/255 - mean)/std (RGB),
    ``caffe`` = BGR 0..255 minus the Caffe means (keras.applications.vgg16.preprocess_input)."""
    from keras import ops

    x = ops.cast(images, "float32")
    if mode == "torch":
        return (x / 255.0 - np.float32(TORCH_MEAN)) / np.float32(TORCH_STD)
    if mode == "caffe":
        return ops.flip(x, axis=-1) - np.float32(CAFFE_MEAN_BGR)
    raise ValueError(f"unknown normalisation {mode!r} (torch, caffe)")


def make_dataset(frames, size, batch_size=BATCH_SIZE, augment=False, shuffle=False, seed=None, normalise="torch",
                 scenes=SCENES, num_parallel_calls=1, cache=None):
    """``tf.data`` of ``(image, {"seg": index mask (H, W) uint8, "scene": scene id})`` batches read from PNGs
    of ``size`` (rows, cols) (see :func:`frame_size`), ``num_parallel_calls`` frames decoded at a time
    (``--data-workers``). The order of epoch ``e`` is a function of ``(seed, e)`` and the flips of the frame at
    position ``p`` of epoch ``e`` a function of ``(seed, e, p)`` (:class:`common.training.EpochOrder`, which
    ``fit`` pins to the epoch about to run; stateless random ops), so the batches are the same for any number
    of calls and a resumed run sees the batches the uninterrupted run saw.

    ``cache``: ``(images, masks)`` uint8 arrays of the decoded frames in the order of ``frames``
    (:func:`decoded_frames`); frames are then gathered from them and the images stay uint8, to be normalised
    on the device (train.py's ``--decode-cache``, ``fit(input_transform=...)``): the same batches after it."""
    import tensorflow as tf

    from common.data.preprocess import flip_image
    from common.training import EpochOrder, without_autotune

    images = tf.constant([str(f[0]) for f in frames])
    masks = tf.constant([str(f[1]) for f in frames])
    scene_ids = tf.constant(np.array([scene_of(f[2], scenes) for f in frames], np.int32))
    base_seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)
    epoch_order = EpochOrder(len(frames), shuffle, base_seed)

    def next_epoch():  # the epoch about to be iterated and its order (advances the counter)
        epoch = epoch_order.epoch
        return np.int64(epoch), epoch_order.next_order()

    def start(_):
        epoch, order = tf.numpy_function(next_epoch, [], [tf.int64, tf.int64], stateful=True)
        epoch.set_shape(())
        order.set_shape((len(frames),))
        return tf.data.Dataset.from_tensor_slices(order).enumerate().map(lambda p, i: (epoch, p, i))

    def flips(epoch, position):  # albumentations VerticalFlip(p=0.5), HorizontalFlip(p=0.5): two keys per frame
        key = tf.stack([tf.constant(base_seed, tf.int64), epoch])
        return [tf.random.experimental.stateless_fold_in(key, 2 * position + k) for k in (0, 1)]

    def gather(index, up_down, left_right):  # a decoded frame, flipped by OpenCV (fast on uint8 RGB)
        return tuple(flip_image(a[index], up_down=up_down, left_right=left_right) for a in cache)

    def load(epoch, position, index):
        if cache is not None:  # the flips of tf.image.stateless_random_flip_*: uniform [0, 1) < 0.5
            up_down, left_right = ([tf.random.stateless_uniform([], seed=s) < 0.5 for s in flips(epoch, position)]
                                   if augment else [tf.constant(False)] * 2)
            image, mask = tf.numpy_function(gather, [index, up_down, left_right], [tf.uint8, tf.uint8])
            image, mask = tf.ensure_shape(image, (*size, 3)), tf.ensure_shape(mask, (*size, 1))
            return image, {"seg": mask[..., 0], "scene": scene_ids[index]}  # normalised in the training step
        image = tf.io.decode_png(tf.io.read_file(images[index]), channels=3)
        mask = tf.io.decode_png(tf.io.read_file(masks[index]), channels=1)
        image, mask = tf.ensure_shape(image, (*size, 3)), tf.ensure_shape(mask, (*size, 1))
        if augment:
            both = tf.concat([image, mask], axis=-1)
            up_down, left_right = flips(epoch, position)
            both = tf.image.stateless_random_flip_up_down(both, seed=up_down)
            both = tf.image.stateless_random_flip_left_right(both, seed=left_right)
            image, mask = both[..., :3], both[..., 3:]
        return normalise_images(image, normalise), {"seg": mask[..., 0], "scene": scene_ids[index]}

    ds = tf.data.Dataset.range(1).flat_map(start).apply(tf.data.experimental.assert_cardinality(len(frames)))
    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = without_autotune(ds.batch(batch_size))
    ds.epoch_order = epoch_order  # fit pins it to the epoch about to run
    return ds


def decoded_frames(frames, cache_root, verbose=True):
    """``(images, masks)``: read-only uint8 memory maps (n, H, W, 3) and (n, H, W, 1) of ``frames``, decoded
    once into ``cache_root`` as :func:`make_dataset` decodes them (common.data.decode_cache; reused while the
    files are unchanged)."""
    import tensorflow as tf

    from common.data.decode_cache import decoded_arrays

    def read(i):
        return tuple(tf.io.decode_png(tf.io.read_file(str(frames[i][k])), channels=c).numpy()
                     for k, c in ((0, 3), (1, 1)))

    return decoded_arrays(cache_root, [f[:2] for f in frames], read, verbose=verbose, what="frames")


# ----------------------------------------------------------------------------------------- model and scores


def _keras_classes():
    """``(TDSNetTrainer, ImageMeanScore)`` (common.tdsnet_trainer; also set as this module's globals)."""
    from common.tdsnet_trainer import trainer_classes

    classes = trainer_classes()
    globals().update(TDSNetTrainer=classes[0], ImageMeanScore=classes[1])
    return classes


def he_reinit(network, seed=None):
    """Ours (``--init he``): He-normal (fan-in) kernels and zero biases for every layer outside the VGG16
    encoder, instead of PyTorch's default U(±1/sqrt(fan_in)), which shrinks the signal about 2.4x per layer
    and makes training from random encoder weights very slow."""
    import keras

    for i, layer in enumerate(network.layers):
        if layer.name.startswith("block") or not layer.weights:
            continue
        kernel, bias = layer.weights[:2]
        initializer = keras.initializers.HeNormal(seed=None if seed is None else seed + i)
        kernel.assign(initializer(kernel.shape))
        bias.assign(np.zeros(bias.shape, "float32"))


def build_trainer(input_shape, encoder_weights=None, lr=STAGES[0][4], init="torch", seed=None, jit_compile=False):
    """TDSNet (common/models/tdsnet.py) wrapped in :class:`TDSNetTrainer`, compiled with Adam (eps 1e-8).

    ``init="he"`` re-initialises the layers outside the encoder with :func:`he_reinit` (ours). A weights file
    that is not a VGG16 notop file is a one-line ``UserError``."""
    import keras

    from common.models import build_model

    trainer_cls, _ = _keras_classes()
    try:
        network = build_model("tdsnet", input_shape, encoder_weights=encoder_weights)
    except (OSError, ValueError, KeyError) as exc:
        if encoder_weights is None or isinstance(exc, UserError):
            raise
        raise UserError(f"--encoder-weights {encoder_weights}: not a VGG16 notop weights file that Keras can read "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); pass Keras's "
                        f"vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 or none") from None
    if init == "he":
        he_reinit(network, seed)
    elif init != "torch":
        raise ValueError(f"unknown init {init!r} (torch, he)")
    trainer = trainer_cls(network)
    trainer.compile(optimizer=keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
                    jit_compile=jit_compile)
    return trainer


def load_trainer(path, compile=False):
    """A checkpoint (``best.keras``/``last.keras``) written by this script (common.tdsnet_trainer)."""
    from common.tdsnet_trainer import load_trainer as load

    _keras_classes()
    return load(path, compile=compile)


def start_stage(trainer, checkpoint, alpha, beta, gamma, lr):
    """Restore the network weights of ``checkpoint`` (None: keep), set the stage's loss weights and reset
    Adam to a fresh state with learning rate ``lr`` (the original builds a new optimizer for every run)."""
    if checkpoint is not None:
        trainer.network.set_weights(load_trainer(checkpoint).network.get_weights())
    trainer.stage_weights.assign(np.float32([alpha, beta, gamma]))
    optimizer = trainer.optimizer
    for var in optimizer.variables:
        var.assign(np.zeros(var.shape, var.dtype))
    optimizer.learning_rate = lr


def best_epoch(stage_dir, monitor="val_iou"):
    """0-based epoch (within the stage) of the stage's best checkpoint: the first maximum of ``monitor``."""
    from common.report import read_history

    history = read_history(Path(stage_dir) / "history.csv")
    if monitor not in history:
        raise FileNotFoundError(f"{Path(stage_dir) / 'history.csv'}: no {monitor} column; the stage did not run")
    return int(np.nanargmax(history[monitor]))


# ------------------------------------------------------------------------------------------------- training


def stage_dir_name(index, name):
    return f"stage{index}_{name}"


def holds_staged_run(run_dir):
    """The stage folders of ``run_dir`` that hold (part of) a run, and whether ``stages.json`` exists."""
    from common.training import holds_run

    run_dir = Path(run_dir)
    stages = [run_dir / stage_dir_name(i, s[0]) for i, s in enumerate(STAGES, 1)]
    return [d for d in stages if holds_run(d)], (run_dir / "stages.json").is_file()


def check_staged_run(run_dir, *, resume=False, overwrite=False):
    """Refuse a fresh staged run in a folder that holds one (nothing is touched), as
    ``common.training.check_run_dir`` does for one-stage runs."""
    from common.training import read_state

    if resume and overwrite:
        raise OptionError("--resume/--overwrite: choose one (continue the run, or replace it)")
    held, has_record = holds_staged_run(run_dir)
    if resume or overwrite or not (held or has_record):
        return
    what = []
    for stage_dir in held:
        state = read_state(stage_dir) or {}
        best = state.get("best")
        what.append(f"{stage_dir.name} {state.get('epoch', 0)} epochs"
                    + (f" (best val_iou {best:.6g})" if best is not None else ""))
    raise UserError(f"{run_dir}: holds a staged TDSNet run ({', '.join(what) or 'stages.json'}); pass --resume to "
                    f"continue it, --overwrite to replace it, or another --run-dir")


def remove_staged_run(run_dir):
    """Delete what a staged run wrote to ``run_dir`` (each stage's run files and ``stages.json``)."""
    from common.training import remove_run

    run_dir = Path(run_dir)
    for i, stage in enumerate(STAGES, 1):
        if (run_dir / stage_dir_name(i, stage[0])).is_dir():
            remove_run(run_dir / stage_dir_name(i, stage[0]))
    (run_dir / "stages.json").unlink(missing_ok=True)


def run_name(*, val_seqs=VAL_SEQS, epochs=None, lrs=None, batch_size=BATCH_SIZE, encoder_weights="imagenet",
             normalise="auto", init="torch", seed=SEED):
    """``tdsnet_fold0`` (the original's settings) plus a suffix for every setting that changes the network or
    the recipe (``_val1-3-6``, ``_e8-9-10-11``, ``_lr0.0001-...``, ``_b2``, ``_enc-none`` / ``_enc-<file stem>``,
    ``_caffe`` / ``_torch``, ``_he``, ``_seed1``), so two recipes never share a default run folder."""
    from common.run_options import tagged_name

    base = "tdsnet_fold0" if tuple(val_seqs) == VAL_SEQS else "tdsnet_val" + "-".join(map(str, val_seqs))
    return tagged_name(base, [
        (None if epochs is None else tuple(epochs), tuple(s[5] for s in STAGES), lambda e: "e" + "-".join(map(str, e))),
        (None if lrs is None else tuple(lrs), tuple(s[4] for s in STAGES),
         lambda lrs: "lr" + "-".join(f"{v:g}" for v in lrs)),
        (batch_size, BATCH_SIZE, "b{}"),
        (str(encoder_weights), "imagenet", lambda w: "enc-none" if w.lower() == "none" else f"enc-{Path(w).stem}"),
        (normalise, "auto", "{}"), (init, "torch", "{}"), (seed, SEED, "seed{}")])


def train(data_dir, run_dir, stages=STAGES, val_seqs=VAL_SEQS, batch_size=BATCH_SIZE, encoder_weights="imagenet",
          normalise="auto", seed=SEED, strategy="default", resume=False, verbose=1, scenes=SCENES, init="torch",
          overwrite=False, mixed_precision="off", jit_compile=False, data_workers=1, decode_cache=None):
    """Run the staged schedule; returns the list of stage records (also written to ``stages.json``).

    ``decode_cache``: a folder: the frames are decoded once into uint8 arrays there and normalised in the
    training and validation steps (``--decode-cache``; the same batches).

    A ``run_dir`` that holds a staged run is refused before any data is read, unless ``resume`` (continue it)
    or ``overwrite`` (its files are removed once the data has been checked)."""
    check_staged_run(run_dir, resume=resume, overwrite=overwrite)
    weights_file = encoder_weights_file(encoder_weights)  # a missing file fails before any data is read
    normalise = resolve_normalise(normalise, encoder_weights)
    import keras

    from common.devices import set_precision
    from common.training import fit, get_strategy, read_state

    strategy = get_strategy(strategy)  # first, before other TensorFlow work
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    own = read_own_split(data_dir)
    if own is not None:  # own data: its scenes (or none) and its test sequences kept out of training
        scenes = own["scenes"] if scenes is SCENES else scenes
        if scenes is None and any(stage[3] > 0 for stage in stages):
            raise cli.option_error("--last-stage", f"{data_dir / 'split.json'}: your data were prepared without "
                                   "--scenes, so the scene head (stage 4, gamma > 0) has no targets; pass "
                                   "--last-stage 3, or prepare with --scenes FILE.json")
    train_seqs, val_seqs = split_sequences(data_dir, val_seqs, exclude=own["test_seqs"] if own else ())
    train_frames, val_frames = sequence_frames(data_dir, train_seqs), sequence_frames(data_dir, val_seqs)
    rows, cols = frame_size(train_frames + val_frames)
    for _, _, seq in train_frames + val_frames:
        scene_of(seq, scenes)
    global_batch = batch_size * strategy.num_replicas_in_sync
    caches = (None, None) if decode_cache is None else \
        (decoded_frames(train_frames, decode_cache, verbose), decoded_frames(val_frames, decode_cache, verbose))
    train_ds = make_dataset(train_frames, (rows, cols), global_batch, augment=True, shuffle=True, seed=seed,
                            normalise=normalise, scenes=scenes, num_parallel_calls=data_workers, cache=caches[0])
    val_ds = make_dataset(val_frames, (rows, cols), global_batch, normalise=normalise, scenes=scenes,
                          num_parallel_calls=data_workers, cache=caches[1])
    policy = set_precision(mixed_precision)  # before the model is built
    settings = {"data_dir": str(data_dir), "train_seqs": train_seqs, "val_seqs": val_seqs,
                "train_frames": len(train_frames), "val_frames": len(val_frames), "input": [rows, cols, 3],
                "batch_size": batch_size, "encoder_weights": str(encoder_weights), "normalise": normalise,
                "seed": seed, "strategy": strategy.__class__.__name__, "init": init, "dtype_policy": policy,
                "jit_compile": jit_compile, "decode_cache": None if decode_cache is None else str(decode_cache)}
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the weights are initialised
    with strategy.scope():
        trainer = build_trainer((rows, cols, 3), weights_file, stages[0][4], init, seed, jit_compile)
    if overwrite:
        remove_staged_run(run_dir)  # the data and the model are fine: replace the old run now
    remove_stale_temporaries([run_dir / "stages.json"])  # left by a run killed while writing it (fit: the rest)

    records, start, checkpoint = [], 0, None
    for index, (name, alpha, beta, gamma, lr, cumulative) in enumerate(stages, 1):
        stage_dir = run_dir / stage_dir_name(index, name)
        length = cumulative - start
        record = {"stage": index, "name": name, "alpha": alpha, "beta": beta, "gamma": gamma, "lr": lr,
                  "start_epoch": start, "epochs": max(length, 0), "cumulative_epochs": cumulative,
                  "start_checkpoint": None if checkpoint is None else str(checkpoint)}
        if length <= 0:  # the original's loop range(start, n_epochs + 1) is empty: the checkpoint is unchanged
            print(f"stage {index} ({name}): the best checkpoint is already at epoch {start} >= {cumulative}; "
                  "nothing to train (as the original)")
            records.append(dict(record, best_epoch=start, best_iou=records[-1]["best_iou"] if records else None))
            continue
        state = read_state(stage_dir)
        same_start = state is not None and state["settings"].get("start_epoch") == start
        done = resume and same_start and state["epoch"] >= length and (stage_dir / "best.keras").is_file()
        if done:
            print(f"stage {index} ({name}): already finished in {stage_dir}")
        else:
            if verbose:
                print(f"stage {index} ({name}): alpha {alpha}, beta {beta}, gamma {gamma}, Adam lr {lr}, epochs "
                      f"{start + 1}..{cumulative}, starting from "
                      f"{'the initial weights' if checkpoint is None else checkpoint}", flush=True)
            with strategy.scope():
                start_stage(trainer, checkpoint, alpha, beta, gamma, lr)
            # an interrupted stage continues only if it started from the same checkpoint; otherwise (under
            # --resume, after an earlier stage changed) it restarts, replacing its stale partial run
            trainer, _ = fit(trainer, train_ds, val_ds, run_dir=stage_dir, epochs=length, monitor="val_iou",
                             mode="max", resume=resume and same_start, overwrite=resume and not same_start,
                             seed=seed, verbose=verbose, settings=dict(settings, **record),
                             input_transform=None if decode_cache is None else lambda x: normalise_images(x, normalise))
        best = best_epoch(stage_dir)
        record.update(best_epoch=start + best + 1, best_iou=read_state(stage_dir)["best"])
        records.append(record)
        start, checkpoint = start + best + 1, stage_dir / "best.keras"
    write_json(run_dir / "stages.json", {"settings": settings, "stages": records,
                                         "final_checkpoint": str(checkpoint)})
    return records


def parse_stages(epochs=None, lrs=None, last=len(STAGES)):
    """STAGES with optional cumulative ``epochs`` / ``lrs`` overrides (one per stage), stages 1..last."""
    stages = list(STAGES)
    for values, column, option in ((epochs, 5, "--epochs"), (lrs, 4, "--lrs")):
        if values is not None:
            if len(values) != len(STAGES):
                raise OptionError(f"{option}: give {len(STAGES)} values, one per stage, got {list(values)}")
            if any(v <= 0 for v in values):
                raise OptionError(f"{option}: every value must be positive, got {list(values)}")
            stages = [s[:column] + (v,) + s[column + 1:] for s, v in zip(stages, values)]
    if epochs is not None and list(epochs) != sorted(epochs):
        raise OptionError(f"--epochs: cumulative epochs must not decrease from stage to stage, got {list(epochs)}")
    return tuple(stages[:last])


EXAMPLES = """examples:
  python robotic_scene/train.py --encoder-weights ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5
  python robotic_scene/train.py --resume                 # skip finished stages, continue the interrupted one
  python robotic_scene/train.py --encoder-weights none --init he --epochs 8 9 10 11 --batch-size 2
  python robotic_scene/train.py --mixed-precision bfloat16 --jit-compile
  python robotic_scene/train.py --decode-cache --data-workers 8   # a GPU host: frames decoded once (ROBOT18: ~12 GB)
"""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help=f"prepare.py's output root (frames in <work-dir>/{PREPARED}; default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoints and logs (default: weights/robotic_scene/tdsnet_fold0 for the original's "
                             "settings, plus a suffix per changed setting, e.g. tdsnet_fold0_b2_enc-none_he)")
    parser.add_argument("--epochs", type=int, nargs=4, default=None, metavar="N",
                        help="cumulative epochs at the end of each stage (default: 10 30 50 70, train.sh)")
    parser.add_argument("--lrs", type=float, nargs=4, default=None, metavar="LR",
                        help="Adam learning rate of each stage (default: 1e-4 1e-4 5e-5 5e-5)")
    parser.add_argument("--last-stage", type=int, default=len(STAGES), choices=range(1, len(STAGES) + 1),
                        help="stop after this stage (default: %(default)s, all)")
    parser.add_argument("--val-seqs", type=int, nargs="+", default=None,
                        help="validation sequences, the rest train (default: fold 0 = 1 2 3 4; own data: the "
                             "validation sequences of prepare.py's split.json)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="per device (default: %(default)s)")
    parser.add_argument("--encoder-weights", default="imagenet",
                        help="VGG16 encoder start: imagenet (Keras's notop file found locally, never downloaded), "
                             "a path to a VGG16 notop weights file, or none (default: %(default)s)")
    parser.add_argument("--normalise", choices=("auto", "torch", "caffe"), default="auto",
                        help="input preprocessing; auto = by what is loaded: caffe for any Keras VGG16 ImageNet "
                             "file (imagenet or a path: converted from Caffe), torch (the original's RGB mean/std) "
                             "for --encoder-weights none (default: %(default)s)")
    parser.add_argument("--init", choices=("torch", "he"), default="torch",
                        help="initialisation of the layers outside the encoder: torch (PyTorch's defaults, as the "
                             "original) or he (ours: He-normal, zero biases; learns faster from random encoder "
                             "weights) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="default: %(default)s")
    add_run_arguments(parser, resume_help="skip finished stages, continue an interrupted one")
    add_decode_cache_argument(parser, "--work-dir")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.batch_size <= 0:
        raise cli.option_error("--batch-size", f"must be positive, got {args.batch_size}")
    stages = parse_stages(args.epochs, args.lrs, args.last_stage)
    if args.val_seqs is None:
        own = read_own_split(args.work_dir / PREPARED)
        args.val_seqs = own["val_seqs"] if own is not None else list(VAL_SEQS)
    run_dir = args.run_dir or cli.repo_path("weights", "robotic_scene", run_name(
        val_seqs=args.val_seqs, epochs=args.epochs, lrs=args.lrs, batch_size=args.batch_size,
        encoder_weights=args.encoder_weights, normalise=args.normalise, init=args.init, seed=args.seed))
    records = train(args.work_dir / PREPARED, run_dir, stages, args.val_seqs, args.batch_size,
                    args.encoder_weights, args.normalise, args.seed, args.strategy, args.resume, args.verbose,
                    init=args.init, overwrite=args.overwrite, mixed_precision=args.mixed_precision,
                    jit_compile=args.jit_compile, data_workers=args.data_workers,
                    decode_cache=decode_cache_dir(args.decode_cache, args.work_dir))
    for r in records:
        print(f"stage {r['stage']} ({r['name']}): epochs {r['start_epoch'] + 1}..{r['cumulative_epochs']}, best "
              f"val IoU {r['best_iou']} at epoch {r['best_epoch']}")
    return records


if __name__ == "__main__":
    cli.run(main)
