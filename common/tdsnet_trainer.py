"""TDSNet's training wrapper (the multi-task loss of a stage, the original's per-image IoU/Dice) and the loader of
its checkpoints: robotic_scene/train.py trains with it, robotic_scene/task.py (predict, export) loads with it.

Keras and TensorFlow are imported lazily (on the first call), so importing this module costs nothing. The
classes are registered under the package name ``robotic_scene`` (the checkpoints written so far name them so).
"""

from pathlib import Path

#: TDSNet's EndoVis 2018 class count (common.models.tdsnet.NUM_CLASSES, without importing Keras)
NUM_CLASSES = 12


def trainer_classes():
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


def load_trainer(path, compile=False):
    """A checkpoint (``best.keras``/``last.keras``) written by robotic_scene/train.py."""
    import keras

    trainer_classes()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found; run robotic_scene/train.py first")
    return keras.models.load_model(path, compile=compile)
