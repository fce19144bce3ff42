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

Written to ``--run-dir`` (default ``weights/robotic_scene/tdsnet_fold0``): one folder per stage
(``stage1_segmentation/`` ...) with ``best.keras``, ``last.keras``, ``state.json``, ``history.csv`` and
curves (common.training.fit), and ``stages.json`` (start epoch, length, best epoch and IoU of each stage).
``--resume`` skips finished stages and continues an interrupted one.

The VGG16 encoder starts from ImageNet as the original (``--encoder-weights``; Keras's file must be on disk,
nothing is downloaded; ``none`` = random). ``--normalise auto`` picks the preprocessing that goes with it
(Keras's Caffe-converted ImageNet file: BGR minus means; otherwise the original's torchvision RGB mean/std).
"""

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from common import cli
from common.data.io import DataLayoutError, atomic_path, list_images, pair_files
from common.training import add_strategy_argument, without_autotune
from robotic_scene.prepare import DEFAULT_WORK, IMAGES, MASKS, NUM_CLASSES, PREPARED, sequence_number

#: (name, alpha, beta, gamma, Adam lr, cumulative epochs) of train.sh (README "Training" steps 2-5).
STAGES = (
    ("segmentation", 0.0, 0.0, 0.0, 1e-4, 10),
    ("class", 0.2, 0.0, 0.0, 1e-4, 30),
    ("sync", 0.2, 0.6, 0.0, 5e-5, 50),
    ("scene", 0.2, 0.6, 0.2, 5e-5, 70),
)
#: surgical phase of each training sequence (util/config.py): 0 preparing, 1 peeling, 2 incising.
SCENES = {1: 0, 2: 0, 4: 0, 5: 0, 7: 0, 3: 1, 10: 1, 11: 1, 12: 1, 16: 1, 6: 2, 9: 2, 13: 2, 14: 2, 15: 2}
NUM_SCENES = 3
VAL_SEQS = (1, 2, 3, 4)  # fold 0, the only fold of the original
BATCH_SIZE = 1
SEED = 0
TORCH_MEAN, TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
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


def split_sequences(data_dir, val_seqs=VAL_SEQS):
    """(train sequence numbers, validation sequence numbers) found in ``data_dir`` (the prepared folder)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataLayoutError(f"{data_dir}: folder not found; run robotic_scene/prepare.py first")
    found = sorted(sequence_number(p) for p in data_dir.iterdir() if p.is_dir() and p.name.startswith("seq_"))
    val = [s for s in found if s in set(val_seqs)]
    train = [s for s in found if s not in set(val_seqs)]
    if not train or not val:
        raise DataLayoutError(f"{data_dir}: sequences {found} leave no {'training' if not train else 'validation'} "
                              f"sequence with validation sequences {list(val_seqs)}")
    return train, val


def scene_of(seq, scenes=SCENES):
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
    """``auto`` -> ``caffe`` for Keras's ImageNet file, else ``torch`` (the original's)."""
    if normalise == "auto":
        return "caffe" if encoder_weights == "imagenet" else "torch"
    return normalise


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
                 scenes=SCENES):
    """``tf.data`` of ``(image, {"seg": index mask (H, W) uint8, "scene": scene id})`` batches read from PNGs
    of ``size`` (rows, cols) (see :func:`frame_size`)."""
    import tensorflow as tf

    images = [str(f[0]) for f in frames]
    masks = [str(f[1]) for f in frames]
    scene_ids = np.array([scene_of(f[2], scenes) for f in frames], np.int32)

    def load(image_path, mask_path, scene):
        image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
        image, mask = tf.ensure_shape(image, (*size, 3)), tf.ensure_shape(mask, (*size, 1))
        if augment:  # albumentations VerticalFlip(p=0.5), HorizontalFlip(p=0.5) on image and mask together
            both = tf.concat([image, mask], axis=-1)
            both = tf.image.random_flip_up_down(both, seed=seed)  # independent flips: different op seeds
            both = tf.image.random_flip_left_right(both, seed=None if seed is None else seed + 1)
            image, mask = both[..., :3], both[..., 3:]
        return normalise_images(image, normalise), {"seg": mask[..., 0], "scene": scene}

    ds = tf.data.Dataset.from_tensor_slices((images, masks, scene_ids))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return without_autotune(ds.map(load, num_parallel_calls=2).batch(batch_size))


# ----------------------------------------------------------------------------------------- model and scores


def _keras_classes():
    """Defines (once) and returns the Keras classes; Keras is imported lazily so ``--help`` is fast."""
    global TDSNetTrainer, ImageMeanScore
    if "TDSNetTrainer" in globals():
        return TDSNetTrainer, ImageMeanScore
    import keras
    import tensorflow as tf
    from keras import ops

    from common.losses import tdsnet_loss_terms

    @keras.saving.register_keras_serializable(package="robotic_scene")
    class ImageMeanScore(keras.metrics.Metric):
        """The original's validation score: per image, IoU (or Dice) of each class, 1 for a class absent
        from both truth and prediction (0 if only predicted), mean over classes, then over images."""

        def __init__(self, kind="iou", num_classes=NUM_CLASSES, name=None, **kwargs):
            super().__init__(name=name or kind, **kwargs)
            self.kind, self.num_classes = kind, num_classes
            self.total = self.add_variable((), initializer="zeros", name="total")
            self.count = self.add_variable((), initializer="zeros", name="count")

        def update_state(self, y_true, y_pred, sample_weight=None):
            n = self.num_classes
            truth = ops.one_hot(ops.cast(y_true, "int32"), n)
            pred = ops.one_hot(ops.argmax(y_pred, axis=-1), n)
            axes = (1, 2)
            inter = ops.sum(truth * pred, axis=axes)
            t_sum, p_sum = ops.sum(truth, axis=axes), ops.sum(pred, axis=axes)
            eps = 1e-15
            if self.kind == "iou":
                score = (inter + eps) / (t_sum + p_sum - inter + eps)
            else:
                score = (2.0 * inter + eps) / (t_sum + p_sum + eps)
            score = ops.where(t_sum > 0, score, ops.cast(p_sum == 0, "float32"))
            self.total.assign_add(ops.sum(ops.mean(score, axis=-1)))
            self.count.assign_add(ops.cast(ops.shape(score)[0], "float32"))

        def result(self):
            return self.total / ops.maximum(self.count, 1.0)

        def get_config(self):
            return {**super().get_config(), "kind": self.kind, "num_classes": self.num_classes}

    @keras.saving.register_keras_serializable(package="robotic_scene")
    class TDSNetTrainer(keras.Model):
        """Wraps the TDSNet network with its multi-task loss (the weights of a stage are a variable, so a
        stage changes them without retracing) and logs every term and the original's IoU/Dice."""

        def __init__(self, network, loss_weights=(0.0, 0.0, 0.0), jaccard_weight=0.5, **kwargs):
            super().__init__(**kwargs)
            self.network = network
            self.jaccard_weight = jaccard_weight
            self.stage_weights = self.add_weight(shape=(3,), initializer=keras.initializers.Constant(loss_weights),
                                                 trainable=False, name="stage_weights")
            self.seg_tracker = keras.metrics.Mean(name="seg_loss")
            self.cls_tracker = keras.metrics.Mean(name="cls_loss")
            self.sync_tracker = keras.metrics.Mean(name="sync_loss")
            self.scene_tracker = keras.metrics.Mean(name="scene_loss")
            self.iou = ImageMeanScore("iou", network.outputs[0].shape[-1])
            self.dice = ImageMeanScore("dice", network.outputs[0].shape[-1])

        def call(self, inputs, training=False):
            return self.network(inputs, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            seg, cls, scene = y_pred
            one_hot = ops.one_hot(ops.cast(y["seg"], "int32"), ops.shape(seg)[-1])
            w = self.stage_weights
            terms = tdsnet_loss_terms(one_hot, None, y["scene"], seg, cls, scene, (w[0], w[1], w[2]),
                                      self.jaccard_weight)
            for tracker, key in ((self.seg_tracker, "seg"), (self.cls_tracker, "cls"),
                                 (self.sync_tracker, "sync"), (self.scene_tracker, "scene")):
                tracker.update_state(terms[key])
            return terms["total"] / tf.distribute.get_strategy().num_replicas_in_sync

        def compute_metrics(self, x, y, y_pred, sample_weight=None):
            self.iou.update_state(y["seg"], y_pred[0])
            self.dice.update_state(y["seg"], y_pred[0])
            return self.get_metrics_result()

        def get_config(self):
            return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                    "loss_weights": [float(v) for v in keras.ops.convert_to_numpy(self.stage_weights)],
                    "jaccard_weight": self.jaccard_weight}

        @classmethod
        def from_config(cls, config):
            config = dict(config)
            config["network"] = keras.saving.deserialize_keras_object(config["network"])
            return cls(**config)

    globals().update(TDSNetTrainer=TDSNetTrainer, ImageMeanScore=ImageMeanScore)
    return TDSNetTrainer, ImageMeanScore


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


def build_trainer(input_shape, encoder_weights=None, lr=STAGES[0][4], init="torch", seed=None):
    """TDSNet (common/models/tdsnet.py) wrapped in :class:`TDSNetTrainer`, compiled with Adam (eps 1e-8).

    ``init="he"`` re-initialises the layers outside the encoder with :func:`he_reinit` (ours)."""
    import keras

    from common.models import build_model

    trainer_cls, _ = _keras_classes()
    network = build_model("tdsnet", input_shape, encoder_weights=encoder_weights)
    if init == "he":
        he_reinit(network, seed)
    elif init != "torch":
        raise ValueError(f"unknown init {init!r} (torch, he)")
    trainer = trainer_cls(network)
    trainer.compile(optimizer=keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8))
    return trainer


def load_trainer(path, compile=False):
    """A checkpoint (``best.keras``/``last.keras``) written by this script."""
    import keras

    _keras_classes()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found; run robotic_scene/train.py first")
    return keras.models.load_model(path, compile=compile)


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


def train(data_dir, run_dir, stages=STAGES, val_seqs=VAL_SEQS, batch_size=BATCH_SIZE, encoder_weights="imagenet",
          normalise="auto", seed=SEED, strategy="default", resume=False, verbose=1, scenes=SCENES, init="torch"):
    """Run the staged schedule; returns the list of stage records (also written to ``stages.json``)."""
    import keras

    from common.training import fit, get_strategy, read_state

    strategy = get_strategy(strategy)  # first, before other TensorFlow work
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    train_seqs, val_seqs = split_sequences(data_dir, val_seqs)
    train_frames, val_frames = sequence_frames(data_dir, train_seqs), sequence_frames(data_dir, val_seqs)
    rows, cols = frame_size(train_frames + val_frames)
    normalise = resolve_normalise(normalise, encoder_weights)
    weights = None if encoder_weights in (None, "none") else encoder_weights
    global_batch = batch_size * strategy.num_replicas_in_sync
    train_ds = make_dataset(train_frames, (rows, cols), global_batch, augment=True, shuffle=True, seed=seed,
                            normalise=normalise, scenes=scenes)
    val_ds = make_dataset(val_frames, (rows, cols), global_batch, normalise=normalise, scenes=scenes)
    settings = {"data_dir": str(data_dir), "train_seqs": train_seqs, "val_seqs": val_seqs,
                "train_frames": len(train_frames), "val_frames": len(val_frames), "input": [rows, cols, 3],
                "batch_size": batch_size, "encoder_weights": str(encoder_weights), "normalise": normalise,
                "seed": seed, "strategy": strategy.__class__.__name__, "init": init}
    if seed is not None:
        keras.utils.set_random_seed(seed)  # before the weights are initialised
    with strategy.scope():
        trainer = build_trainer((rows, cols, 3), weights, stages[0][4], init, seed)

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
            # an interrupted stage continues only if it started from the same checkpoint; otherwise it restarts
            trainer, _ = fit(trainer, train_ds, val_ds, run_dir=stage_dir, epochs=length, monitor="val_iou",
                             mode="max", resume=resume and same_start, seed=seed, verbose=verbose,
                             settings=dict(settings, **record))
        best = best_epoch(stage_dir)
        record.update(best_epoch=start + best + 1, best_iou=read_state(stage_dir)["best"])
        records.append(record)
        start, checkpoint = start + best + 1, stage_dir / "best.keras"
    with atomic_path(run_dir / "stages.json") as tmp:
        tmp.write_text(json.dumps({"settings": settings, "stages": records, "final_checkpoint": str(checkpoint)},
                                  indent=2))
    return records


def parse_stages(epochs=None, lrs=None, last=len(STAGES)):
    """STAGES with optional cumulative ``epochs`` / ``lrs`` overrides (one per stage), stages 1..last."""
    stages = list(STAGES)
    for values, column in ((epochs, 5), (lrs, 4)):
        if values is not None:
            if len(values) != len(STAGES):
                raise ValueError(f"give {len(STAGES)} values, one per stage, got {values}")
            stages = [s[:column] + (v,) + s[column + 1:] for s, v in zip(stages, values)]
    return tuple(stages[:last])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                        help=f"prepare.py's output root (frames in <work-dir>/{PREPARED}; default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN, help="checkpoints and logs (default: %(default)s)")
    parser.add_argument("--epochs", type=int, nargs=4, default=None, metavar="N",
                        help="cumulative epochs at the end of each stage (default: 10 30 50 70, train.sh)")
    parser.add_argument("--lrs", type=float, nargs=4, default=None, metavar="LR",
                        help="Adam learning rate of each stage (default: 1e-4 1e-4 5e-5 5e-5)")
    parser.add_argument("--last-stage", type=int, default=len(STAGES), choices=range(1, len(STAGES) + 1),
                        help="stop after this stage (default: %(default)s, all)")
    parser.add_argument("--val-seqs", type=int, nargs="+", default=list(VAL_SEQS),
                        help="validation sequences, the rest train (default: fold 0 = 1 2 3 4)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="per device (default: %(default)s)")
    parser.add_argument("--encoder-weights", default="imagenet",
                        help="VGG16 encoder start: imagenet (Keras's notop file found locally, never downloaded), "
                             "a path to a VGG16 notop weights file, or none (default: %(default)s)")
    parser.add_argument("--normalise", choices=("auto", "torch", "caffe"), default="auto",
                        help="input preprocessing; auto = caffe for --encoder-weights imagenet (Keras's file), "
                             "torch (the original's RGB mean/std) otherwise (default: %(default)s)")
    parser.add_argument("--init", choices=("torch", "he"), default="torch",
                        help="initialisation of the layers outside the encoder: torch (PyTorch's defaults, as the "
                             "original) or he (ours: He-normal, zero biases; learns faster from random encoder "
                             "weights) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="default: %(default)s")
    parser.add_argument("--resume", action="store_true", help="skip finished stages, continue an interrupted one")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    add_strategy_argument(parser)
    args = parser.parse_args(argv)
    stages = parse_stages(args.epochs, args.lrs, args.last_stage)
    records = train(args.work_dir / PREPARED, args.run_dir, stages, args.val_seqs, args.batch_size,
                    args.encoder_weights, args.normalise, args.seed, args.strategy, args.resume, args.verbose,
                    init=args.init)
    for r in records:
        print(f"stage {r['stage']} ({r['name']}): epochs {r['start_epoch'] + 1}..{r['cumulative_epochs']}, best "
              f"val IoU {r['best_iou']} at epoch {r['best_epoch']}")
    return records


if __name__ == "__main__":
    cli.run(main)
