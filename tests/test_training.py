import json

import keras
import numpy as np
import pytest

from common.training import array_dataset, fit, monitor_mode, read_state, split_last


def _tiny_model():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = (x[:, :1] + x[:, 1:2] > 0).astype(np.float32)
    return split_last(0.25, x, y)


class _Recorder(keras.callbacks.Callback):
    def __init__(self, stop_before=None):
        super().__init__()
        self.epochs, self.stop_before = [], stop_before

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop_before:
            raise KeyboardInterrupt  # the run is killed here
        self.epochs.append(epoch)


def test_resume_continues_a_killed_run(tmp_path):
    train, val = _data()
    first = _Recorder(stop_before=3)
    with pytest.raises(KeyboardInterrupt):
        fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=6, batch_size=10, seed=0, verbose=0,
            tensorboard=False, callbacks=[first])
    assert first.epochs == [0, 1, 2]
    assert read_state(tmp_path)["epoch"] == 3
    saved = keras.models.load_model(tmp_path / "last.keras")

    second = _Recorder()
    model, history = fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=6, batch_size=10, seed=0,
                         verbose=0, tensorboard=False, callbacks=[second], resume=True)
    assert second.epochs == [3, 4, 5]
    assert history["epoch"] == [0, 1, 2, 3, 4, 5]
    assert int(model.optimizer.iterations) == 6 * 3  # optimizer state carried over: 3 steps per epoch
    assert int(saved.optimizer.iterations) == 3 * 3
    best_epoch = int(np.argmin(history["val_loss"]))
    assert read_state(tmp_path)["best"] == pytest.approx(history["val_loss"][best_epoch])
    assert (tmp_path / "training_curves.png").stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_fresh_run_discards_old_state(tmp_path):
    train, val = _data()
    fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=2, batch_size=10, verbose=0, tensorboard=False)
    _, history = fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=1, batch_size=10, verbose=0,
                     tensorboard=False)
    assert history["epoch"] == [0]
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 1


def test_best_checkpoint_is_the_best_epoch(tmp_path):
    train, val = _data()
    model, history = fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=4, batch_size=10, verbose=0,
                         tensorboard=True)
    best = keras.models.load_model(tmp_path / "best.keras")
    assert best.evaluate(*val, verbose=0) == pytest.approx(min(history["val_loss"]), rel=1e-5)
    assert (tmp_path / "tensorboard").is_dir()


def test_array_dataset_batches_every_sample_once_per_epoch():
    x = np.arange(10, dtype=np.uint8).reshape(10, 1)
    ds = array_dataset(x, x, batch_size=4, shuffle=True, seed=1,
                       transform=lambda a, b: (a / 10.0, b))
    for _ in range(2):
        seen = np.concatenate([b.numpy() for _, b in ds]).ravel()
        assert sorted(seen) == list(range(10))
    xb, _ = next(iter(ds))
    assert xb.dtype == "float32" and float(xb.numpy().max()) < 1


def test_split_last_and_monitor_mode():
    (a,), (b,) = split_last(0.2, np.arange(10))
    assert list(b) == [8, 9] and len(a) == 8
    assert monitor_mode("val_loss") == "min" and monitor_mode("val_dice_coef") == "max"
    assert monitor_mode("val_accuracy") == "max" and monitor_mode("val_dice_loss") == "min"
