"""python -m common.export: SavedModel of a run's checkpoint, reloaded with tf.saved_model.load and compared
with the Keras model's own outputs; refusal of an existing OUT_DIR; one-line errors (exit 2)."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from common import export
from common.errors import UserError
from common.layers import SpatialRNN2D, conv_lstm_fusion


def tiny_model():
    inputs = keras.Input((16, 16, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="tiny")


def custom_layer_model():
    """The project's custom pieces: ConvLSTM fusion (registered Keras-2 hard sigmoid) and SpatialRNN2D."""
    inputs = keras.Input((16, 16, 2), name="image")
    a = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    b = layers.Conv2D(4, 3, padding="same", activation="relu")(a)
    x = conv_lstm_fusion(a, b, 4, name="fuse")
    x = SpatialRNN2D(rnn_seq_length=4, name="srnn")(x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="custom")


def make_run(tmp_path, model, name="best.keras"):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(run_dir / name)
    return run_dir


def reload_and_compare(out_dir, model, shape):
    import tensorflow as tf

    x = np.random.default_rng(0).random((3,) + shape, dtype=np.float32)
    expected = np.asarray(model(x, training=False))
    served = tf.saved_model.load(str(out_dir))
    np.testing.assert_allclose(served.serve(x).numpy(), expected, atol=1e-5)
    signature = served.signatures["serving_default"]
    (result,) = signature(**{model.inputs[0].name: tf.constant(x)}).values()
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-5)


def test_export_run_dir_and_reload(tmp_path, capsys):
    model = tiny_model()
    run_dir = make_run(tmp_path, model)
    out = tmp_path / "exports" / "tiny"
    assert export.main([str(run_dir), str(out)]) == 0
    reload_and_compare(out, model, (16, 16, 1))
    record = json.loads((out / "run.json").read_text())
    assert record["weights"][0]["path"].endswith("best.keras") and len(record["weights"][0]["sha256"]) == 64
    assert record["serving"]["inputs"] == {"shape": [None, 16, 16, 1], "dtype": "float32"}
    assert "serve(float32 (None, 16, 16, 1), preprocessed) -> float32 (None, 16, 16, 1)" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]  # no temporary folder left


def test_export_custom_layers_with_model_option(tmp_path):
    """ConvLSTM fusion and SpatialRNN2D reload from the .keras file (common.predict.load_model registers the
    project's layers) and export."""
    model = custom_layer_model()
    path = tmp_path / "custom.keras"
    model.save(path)
    out = tmp_path / "custom_export"
    assert export.main(["--model", str(path), str(out)]) == 0
    reload_and_compare(out, model, (16, 16, 2))


def test_export_dict_outputs(tmp_path, capsys):
    """A multi-task model (dict outputs, as the edema networks) serves the same dict."""
    import tensorflow as tf

    inputs = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    det = layers.Dense(3, activation="sigmoid")(layers.GlobalMaxPooling2D()(x))
    model = keras.Model(inputs, {"seg": layers.Conv2D(4, 1)(x), "det": det}, name="multi")
    out = tmp_path / "multi"
    export.export_saved_model(model, out)
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    expected = model(x, training=False)
    loaded = tf.saved_model.load(str(out))  # keep a reference: its variables die with it
    served = loaded.serve(x)
    assert set(served) == {"seg", "det"}
    for key in served:
        np.testing.assert_allclose(served[key].numpy(), np.asarray(expected[key]), atol=1e-5)
    record = json.loads((out / "run.json").read_text())
    assert record["serving"]["outputs"]["det"] == {"shape": [None, 3], "dtype": "float32"}


def test_existing_out_dir_is_refused_unless_overwrite(tmp_path):
    run_dir = make_run(tmp_path, tiny_model(), name="last.keras")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user's file")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        export.main([str(run_dir), str(out), "--weights", "last"])
    assert (out / "keep.txt").read_text() == "user's file"
    assert export.main([str(run_dir), str(out), "--weights", "last", "--overwrite"]) == 0
    assert (out / "saved_model.pb").is_file() and not (out / "keep.txt").exists()


def test_missing_run_or_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    from common.cli import run

    for argv in ([str(tmp_path / "nope"), str(tmp_path / "o1")],          # no run folder
                 [str(tmp_path), str(tmp_path / "o2")],                    # folder without best.keras
                 ["--model", str(tmp_path / "m.keras"), str(tmp_path / "o3")],
                 [str(tmp_path / "o4")]):                                  # neither RUN_DIR nor --model
        with pytest.raises(SystemExit) as info:
            run(export.main, argv)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        export.main(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "python -m common.export" in text and "PREPROCESSED" in text
