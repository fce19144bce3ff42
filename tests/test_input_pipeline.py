"""``array_dataset(num_parallel_calls=N)`` delivers the batches of the serial pipeline, in the same order."""

import importlib

import numpy as np
import pytest

from _cli import error_lines
from common.training import array_dataset


def _epochs(calls, n=53, batch=4, epochs=2, in_memory=False):
    x = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 3, 1), np.float32)
    y = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 3, 1), np.uint8)
    ds = array_dataset(x, y, batch, shuffle=True, seed=3, transform=lambda xb, yb: (xb * 2.0, yb),
                       num_parallel_calls=calls, in_memory=in_memory)
    return [[(xb.numpy(), yb.numpy()) for xb, yb in ds] for _ in range(epochs)]


def test_parallel_calls_give_the_serial_batches():
    serial, parallel = _epochs(1), _epochs(4)
    for serial_epoch, parallel_epoch in zip(serial, parallel):
        assert len(serial_epoch) == len(parallel_epoch) == 14  # ceil(53 / 4)
        for (xs, ys), (xp, yp) in zip(serial_epoch, parallel_epoch):
            np.testing.assert_array_equal(xp, xs)
            np.testing.assert_array_equal(yp, ys)
    for epoch in serial:
        ids = np.concatenate([yb[:, 0, 0, 0] for _, yb in epoch])
        assert sorted(ids) == list(range(53))  # every sample once per epoch
        for xb, yb in epoch:  # the transform ran on the gathered samples
            np.testing.assert_array_equal(xb[:, 0, 0, 0], 2.0 * yb[:, 0, 0, 0])
    first, second = (np.concatenate([yb[:, 0, 0, 0] for _, yb in e]) for e in serial)
    assert not np.array_equal(first, second)  # reshuffled between epochs


def test_in_memory_gives_the_same_batches():
    for reference, held in zip(_epochs(1), _epochs(1, in_memory=True)):
        assert len(held) == len(reference) == 14
        for (xr, yr), (xm, ym) in zip(reference, held):
            np.testing.assert_array_equal(xm, xr)
            np.testing.assert_array_equal(ym, yr)


@pytest.mark.parametrize("module", ["fingernail.train", "lung.train_lung"])
def test_in_memory_with_the_tasks_uint8_scaling(module):
    scale_images = importlib.import_module(module).scale_images
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (23, 8, 6, 3), dtype=np.uint8)
    y = (rng.random((23, 8, 6, 1)) > 0.5).astype(np.uint8) * 255
    batches = [[(a.numpy(), b.numpy()) for a, b in array_dataset(x, y, 4, shuffle=True, seed=1,
                                                                  transform=scale_images, in_memory=m)]
               for m in (False, True)]
    for (xr, yr), (xm, ym) in zip(*batches):
        np.testing.assert_array_equal(xm, xr)
        np.testing.assert_array_equal(ym, yr)
    assert len(batches[1]) == 6


TRAIN_SCRIPTS = ["skin_lesion.train_isic18", "retina_vessel.train_retina", "lung.train_lung", "ultrasound_nerve.train",
                 "fingernail.train", "retinal_edema.train", "robotic_scene.train"]


@pytest.mark.parametrize("module", TRAIN_SCRIPTS)
def test_every_train_script_takes_data_workers(module):
    """--data-workers N reaches the parser of every train script (default 1); 0 is one `error:` line, exit 2."""
    script = importlib.import_module(module)
    assert script.build_parser().parse_args([]).data_workers == 1
    assert script.build_parser().parse_args(["--data-workers", "6"]).data_workers == 6
    err = error_lines(script.main, ["--data-workers", "0"])
    assert len(err) == 1 and err[0].startswith("error: --data-workers: expected a whole number >= 1, got '0'")


@pytest.mark.parametrize("module", ["fingernail.train", "lung.train_lung"])
def test_in_memory_option(module):
    parser = importlib.import_module(module).build_parser()
    assert parser.parse_args([]).in_memory is False  # default: memory maps, as before
    assert parser.parse_args(["--in-memory"]).in_memory is True
