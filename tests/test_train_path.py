"""The project's training path (array_dataset -> fit) computes the same step as the originals' path
(fit on float64 NumPy arrays)."""

import keras
import numpy as np

from common.losses import dice_coef_loss
from common.models import build_model
from common.training import array_dataset


def _one_step(data_kind, x, y, init):
    model = build_model("nerve_unet", (32, 32, 1))
    model.set_weights(init)
    lr = 0.5
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=dice_coef_loss)
    if data_kind == "naive":
        history = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    else:
        data = array_dataset(x.astype(np.float32), y.astype(np.float32), batch_size=len(x))
        history = model.fit(data, epochs=1, shuffle=False, verbose=0)
    grads = [(w0 - w1) / lr for w0, w1 in zip(init, model.get_weights())]  # SGD: w1 = w0 - lr * g
    return history.history["loss"][0], grads


def test_project_path_equals_naive_path():
    keras.utils.set_random_seed(0)
    init = build_model("nerve_unet", (32, 32, 1)).get_weights()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 32, 1))  # float64, as the originals feed it
    y = (rng.random((4, 32, 32, 1)) > 0.7).astype(np.float64)
    loss_a, grads_a = _one_step("naive", x, y, init)
    loss_b, grads_b = _one_step("ours", x, y, init)
    assert abs(loss_a - loss_b) < 1e-6
    assert any(np.abs(g).max() > 0 for g in grads_a)
    for ga, gb in zip(grads_a, grads_b):
        np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-5)


def test_project_pipelines_run_without_tf_data_autotuning():
    # With autotuning on, fit waited ~3.5 s per epoch for tf.data's model thread (see without_autotune).
    x = np.zeros((10, 4, 4, 1), np.float32)
    data = array_dataset(x, x, batch_size=4, shuffle=True, seed=0)
    assert data.options().autotune.enabled is False
    batches = [xb.shape[0] for xb, _ in data]
    assert batches == [4, 4, 2]
