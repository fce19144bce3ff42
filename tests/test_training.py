import json

import keras
import numpy as np
import pytest

from common.errors import OptionError, UserError
from common.training import array_dataset, check_run_dir, fit, monitor_mode, read_state, split_last


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


def test_fresh_run_refuses_a_folder_that_holds_a_run(tmp_path):
    train, val = _data()
    fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=2, batch_size=10, verbose=0, tensorboard=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(UserError) as err:
        fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=1, batch_size=10, verbose=0, tensorboard=False)
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: holds a run of 2 epochs (best val_loss ")
    assert "--resume" in message and "--overwrite" in message and "--run-dir" in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # nothing touched
    with pytest.raises(UserError):
        check_run_dir(tmp_path)
    with pytest.raises(OptionError):
        check_run_dir(tmp_path, resume=True, overwrite=True)
    _, history = fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=1, batch_size=10, verbose=0,
                     tensorboard=False, overwrite=True)
    assert history["epoch"] == [0]
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 1


class _Boom(keras.callbacks.Callback):
    """Kills the run at the start of epoch ``at`` (an exception from a callback)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError("killed")


def test_resume_restores_learning_rate_schedule_and_batches(tmp_path):
    """A run killed mid-way and resumed equals the uninterrupted run: same learning rates (ReduceLROnPlateau's
    best value and counters restored), same losses (same shuffled batches per epoch, same optimizer state)."""
    train, val = _data()
    # patience 1 on a noisy tiny problem: the learning rate drops several times in 8 epochs
    options = dict(epochs=8, batch_size=8, seed=3, verbose=0, tensorboard=False,
                   reduce_lr={"factor": 0.5, "patience": 1, "min_delta": 10.0})

    def model():
        keras.utils.set_random_seed(7)
        return _tiny_model()

    _, whole = fit(model(), train, val, run_dir=tmp_path / "whole", **options)
    with pytest.raises(RuntimeError):
        fit(model(), train, val, run_dir=tmp_path / "killed", callbacks=[_Boom(5)], **options)
    assert read_state(tmp_path / "killed")["epoch"] == 5
    _, resumed = fit(model(), train, val, run_dir=tmp_path / "killed", resume=True, **options)
    lr = whole["learning_rate"]
    assert len(set(lr)) >= 3, lr  # the schedule really changed, so the test can fail
    assert resumed["learning_rate"] == pytest.approx(lr, rel=1e-7)
    assert resumed["epoch"] == whole["epoch"]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(resumed[key], whole[key], rtol=1e-5)


def test_shuffled_order_depends_on_seed_and_epoch_only():
    x = np.arange(12, dtype=np.float32).reshape(12, 1)

    def epochs(ds, k):  # each batch's samples (a batch is gathered in sorted order)
        return [[sorted(b.numpy().ravel().tolist()) for _, b in ds] for _ in range(k)]

    a = array_dataset(x, x, batch_size=5, shuffle=True, seed=4)
    first = epochs(a, 3)
    assert first[0] != first[1] and all(sorted(sum(e, [])) == list(range(12)) for e in first)
    b = array_dataset(x, x, batch_size=5, shuffle=True, seed=4)
    b.epoch_order.epoch = 2  # a resumed run starting at epoch 2
    assert epochs(b, 1)[0] == first[2]
    ref = np.random.default_rng([4, 1]).permutation(12).tolist()  # the documented rule
    assert first[1] == [sorted(ref[i:i + 5]) for i in range(0, 12, 5)]


def test_outputs_are_readable_by_others_and_json_is_standard(tmp_path):
    import os
    import stat

    from common.data.io import atomic_path, write_json
    from common.report import write_table

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.npy") as tmp:
            np.save(tmp, np.zeros(2))
        write_table([{"score": float("nan"), "n": np.int64(3)}], tmp_path / "t")
        write_json(tmp_path / "s.json", {"x": float("inf"), "y": np.float32(0.5)})
    finally:
        os.umask(old)
    for name in ("a.npy", "t.json", "t.md", "s.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    text = (tmp_path / "t.json").read_text()
    assert "NaN" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == [{"score": None, "n": 3}]
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": None, "y": 0.5}


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


def test_resume_under_another_precision_is_refused(tmp_path):
    from common.devices import set_precision

    train, val = _data()
    fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=1, batch_size=10, verbose=0, tensorboard=False)
    set_precision("bfloat16")
    try:
        with pytest.raises(OptionError, match="--mixed-precision: .*last.keras was trained under float32; "
                                              "resume it with --mixed-precision off"):
            fit(_tiny_model(), train, val, run_dir=tmp_path, epochs=2, batch_size=10, verbose=0,
                tensorboard=False, resume=True)
    finally:
        set_precision("off")
    assert read_state(tmp_path)["epoch"] == 1


KILLED_RUN = """
import os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
import keras
from test_training import _data, _tiny_model
from common.training import fit

save, calls = keras.Model.save, []  # the last.keras writes


def save_then_die(self, filepath, *args, **kwargs):
    global calls
    calls += [filepath] if os.path.basename(filepath).startswith(".last.") else []
    if len(calls) == 3:  # the write of epoch 2's last.keras (epochs 0 and 1 completed)
        with open(filepath, "wb") as f:
            f.write(b"PK half a model")  # the write has begun ...
        os.kill(os.getpid(), signal.SIGKILL)  # ... and the process is killed in the middle of it
    return save(self, filepath, *args, **kwargs)


keras.Model.save = save_then_die
train, val = _data()
fit(_tiny_model(), train, val, run_dir={run_dir!r}, epochs=6, batch_size=10, seed=0, verbose=0,
    tensorboard=False)
"""


def test_a_run_killed_mid_write_leaves_no_temporary_after_resume(tmp_path):
    """A training SIGKILLed while writing a checkpoint leaves ``.last.<random>.tmp.keras``; the resumed run
    deletes it (and only the temporaries of its own atomic writes in its own folder)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    code = KILLED_RUN.format(root=str(root), tests=str(root / "tests"), run_dir=str(run))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = [p.name for p in run.iterdir() if ".tmp" in p.name]
    assert len(left) == 1 and left[0].startswith(".last.") and left[0].endswith(".tmp.keras"), left
    # names that are not fit's temporaries, and a temporary of another folder, must survive
    keep = [run / ".last.keras.bak", run / "last.tmp.keras", run / ".notes.abcd1234.tmp.keras",
            run / ".last.abc.tmp.keras", tmp_path / ".last.abcd1234.tmp.keras"]
    for path in keep:
        path.write_bytes(b"user file")
    epochs_done = read_state(run)["epoch"]
    model, history = fit(_tiny_model(), *_data(), run_dir=run, epochs=6, batch_size=10, seed=0, verbose=0,
                         tensorboard=False, resume=True)
    assert epochs_done == 2 and history["epoch"] == [0, 1, 2, 3, 4, 5]
    assert sorted(p.name for p in run.iterdir() if ".tmp" in p.name) == sorted(
        p.name for p in keep if p.parent == run and ".tmp" in p.name)
    assert all(p.read_bytes() == b"user file" for p in keep)
