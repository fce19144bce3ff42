"""common.data.decode_cache (the file tasks' --decode-cache) and common.training.transform_inputs_on_device
(the normalisation moved into the training step)."""

import json
import os

import numpy as np
import pytest

from common.data.decode_cache import cache_key, decoded_arrays
from common.errors import UserError


def _files(tmp_path, n=5, shape=(6, 4)):
    rng = np.random.default_rng(0)
    arrays, sources = [], []
    for i in range(n):
        image, label = rng.integers(0, 256, (*shape, 3), np.uint8), rng.integers(0, 4, shape, np.uint8)
        paths = (tmp_path / "src" / f"{i}.npy", tmp_path / "src" / f"{i}_label.npy")
        paths[0].parent.mkdir(exist_ok=True)
        np.save(paths[0], image)
        np.save(paths[1], label)
        arrays.append((image, label))
        sources.append(paths)
    return arrays, sources


def _reader(sources, calls):
    def read(i):
        calls.append(i)
        return tuple(np.load(p) for p in sources[i])
    return read


def test_cache_holds_the_decoded_items_and_is_reused_while_the_files_are_unchanged(tmp_path):
    arrays, sources = _files(tmp_path)
    calls = []
    images, labels = decoded_arrays(tmp_path / "cache", sources, _reader(sources, calls), verbose=False)
    assert images.dtype == labels.dtype == np.uint8 and images.shape == (5, 6, 4, 3) and labels.shape == (5, 6, 4)
    for i, (image, label) in enumerate(arrays):
        np.testing.assert_array_equal(images[i], image)
        np.testing.assert_array_equal(labels[i], label)
    with pytest.raises(ValueError):  # read-only memory maps: training cannot change the cache
        images[0, 0, 0, 0] = 1
    folder = tmp_path / "cache" / cache_key(sources)
    assert sorted(p.name for p in folder.iterdir()) == ["part0.npy", "part1.npy", "sources.json"]
    record = json.loads((folder / "sources.json").read_text())["items"]
    assert [[row[0] for row in item] for item in record] == [[str(p.resolve()) for p in s] for s in sources]
    assert sorted(calls) == list(range(5))

    calls.clear()  # unchanged files: reused, nothing decoded
    decoded_arrays(tmp_path / "cache", sources, _reader(sources, calls), verbose=False)
    assert calls == []

    # a changed file makes a new cache beside the old one, which is left as it was
    changed = arrays[2][1].copy()
    changed[0, 0] = (changed[0, 0] + 1) % 4
    np.save(sources[2][1], changed)
    os.utime(sources[2][1], ns=(1, 10 ** 18))
    _, labels2 = decoded_arrays(tmp_path / "cache", sources, _reader(sources, calls), verbose=False)
    np.testing.assert_array_equal(labels2[2], changed)
    assert (folder / "sources.json").is_file() and len(list((tmp_path / "cache").iterdir())) == 2
    np.testing.assert_array_equal(np.load(folder / "part1.npy")[2], arrays[2][1])


def test_a_failed_decoding_leaves_no_cache_and_odd_files_are_named(tmp_path):
    arrays, sources = _files(tmp_path)

    def broken(i):
        if i == 3:
            raise UserError(f"{sources[3][0]}: truncated file")
        return arrays[i]

    with pytest.raises(UserError, match="3.npy: truncated"):
        decoded_arrays(tmp_path / "cache", sources, broken, verbose=False)
    assert list((tmp_path / "cache").iterdir()) == []  # no folder, no temporary

    def other_size(i):
        return (arrays[i][0][:5], arrays[i][1]) if i == 1 else arrays[i]

    with pytest.raises(UserError, match=r"1\.npy: uint8 5x4x3, but .*0\.npy is uint8 6x4x3"):
        decoded_arrays(tmp_path / "cache", sources, other_size, verbose=False)
    with pytest.raises(UserError, match=r"0\.npy: decoded to uint16"):
        decoded_arrays(tmp_path / "cache", sources, lambda i: (arrays[i][0].astype(np.uint16), arrays[i][1]),
                       verbose=False)
    os.remove(sources[4][1])
    with pytest.raises(UserError, match="4_label.npy: No such file"):
        decoded_arrays(tmp_path / "cache", sources, _reader(sources, []), verbose=False)
    assert list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match="--decode-cache .*a_file: cannot create the folder"):
        decoded_arrays(tmp_path / "a_file", sources, lambda i: arrays[i], verbose=False)


def test_a_cache_larger_than_the_free_disk_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil

    arrays, sources = _files(tmp_path)
    need = sum(a.nbytes + b.nbytes for a, b in arrays)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 ** 12, 10 ** 12, need - 1))
    with pytest.raises(UserError, match=r"need 0\.00 GB, 0\.00 GB are free there; pass a DIR on a disk with room"):
        decoded_arrays(tmp_path / "cache", sources, lambda i: arrays[i], verbose=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_inputs_transformed_on_the_device_train_as_the_transformed_inputs_do(tmp_path):
    """fit(input_transform=...) on uint8 batches = fit on the batches normalised beforehand (same seed, same
    batches): the same weights and history; the saved file is the plain network, which takes floats."""
    import keras

    from common.training import fit

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 4, 4, 3), np.uint8)
    y = (x.astype(np.float32).mean(axis=(1, 2, 3)) > 127).astype(np.float32)[:, None]
    mean, std = np.float32([0.4, 0.5, 0.6]), np.float32([0.2, 0.25, 0.3])

    def normalise(images):  # the host formula (numpy) and its Keras twin for the step
        return (np.asarray(images, np.float32) / np.float32(255.0) - mean) / std

    def on_device(images):
        return (keras.ops.cast(images, "float32") / np.float32(255.0) - mean) / std

    def run(name, inputs, transform):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 3, activation="relu"),
                                  keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((inputs, y)).batch(8)
        model, history = fit(model, data, data, run_dir=tmp_path / name, epochs=2, seed=0, verbose=0,
                             tensorboard=False, input_transform=transform)
        return model, history

    plain, history_plain = run("plain", normalise(x), None)
    device, history_device = run("device", x, on_device)
    for a, b in zip(plain.get_weights(), device.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(history_device["loss"], history_plain["loss"], rtol=1e-6)
    np.testing.assert_allclose(history_device["val_loss"], history_plain["val_loss"], rtol=1e-6)
    assert history_device["loss"][-1] < history_device["loss"][0]
    saved = keras.models.load_model(tmp_path / "device" / "last.keras")
    np.testing.assert_allclose(saved.predict(normalise(x), verbose=0), plain.predict(normalise(x), verbose=0),
                               rtol=1e-5, atol=1e-6)
