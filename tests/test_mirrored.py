"""``--strategy mirrored`` (``tf.distribute.MirroredStrategy``) against the default strategy on 2 logical CPUs.

The data-parallel step must equal the one-device step: each replica computes the loss on its half of the
global batch, Keras scales it by 1/replicas and the optimizer sums the gradients over the replicas. Run in a
subprocess (this file as a script) because logical devices must be configured before TensorFlow starts.
The model is the fingernail U-Net (no BatchNorm) with its per-image BCE-Dice loss: a loss that is a mean over
samples, which data parallelism splits exactly (a batch-level Dice or BatchNorm statistics are computed per
replica, see bench/README.md).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

GLOBAL_BATCH, SAMPLES = 8, 16  # two steps of 8 (4 per replica)


def _job(out_dir):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from common.losses import BCEDiceLoss
    from common.models import build_model
    from common.training import array_dataset

    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, 16, 16, 3), dtype=np.float32)
    y = (rng.random((SAMPLES, 16, 16, 1)) > 0.6).astype(np.float32)
    weights, report = None, {}
    strategies = {"default": tf.distribute.get_strategy(),
                  "mirrored": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}
    for name, strategy in strategies.items():
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = build_model("unet2d_8_128", (16, 16, 3))
            if weights is None:
                weights = model.get_weights()
                np.savez(Path(out_dir) / "initial.npz", *weights)
            model.set_weights(weights)
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=BCEDiceLoss())
        history = model.fit(array_dataset(x, y, batch_size=GLOBAL_BATCH), epochs=2, verbose=0, shuffle=False)
        np.savez(Path(out_dir) / f"{name}.npz", *model.get_weights())
        report[name] = {"loss": history.history["loss"], "replicas": strategy.num_replicas_in_sync,
                        "steps": int(model.optimizer.iterations.numpy())}
    (Path(out_dir) / "report.json").write_text(json.dumps(report))


def test_mirrored_on_two_cpus_equals_default(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=1200, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mirrored"]["replicas"] == 2 and report["default"]["replicas"] == 1
    assert report["mirrored"]["steps"] == report["default"]["steps"] == 2 * SAMPLES // GLOBAL_BATCH
    np.testing.assert_allclose(report["mirrored"]["loss"], report["default"]["loss"], atol=1e-5, rtol=1e-5)
    initial, default, mirrored = (np.load(tmp_path / f"{n}.npz") for n in ("initial", "default", "mirrored"))
    moved = 0.0
    for key in default.files:
        np.testing.assert_allclose(mirrored[key], default[key], atol=1e-5)
        moved = max(moved, float(np.abs(default[key] - initial[key]).max()))
    assert moved > 1e-3  # 4 Adam steps of lr 1e-3 moved the weights: the comparison is not of untouched ones


if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    _job(sys.argv[1])
