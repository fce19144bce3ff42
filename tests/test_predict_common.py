"""The shared predict scaffolding (common.predict) and run.json (common.provenance)."""

import argparse
import hashlib
import json

import numpy as np
import pytest

from common.data.io import read_image, write_image
from common.errors import UserError
from common.predict import add_predict_arguments, collect_inputs, overlay_image, run_inputs


def _args(argv):
    parser = argparse.ArgumentParser()
    add_predict_arguments(parser)
    return parser.parse_args(argv)


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_image(folder / name, np.full((4 + i, 5), 10 * i, np.uint8))


def test_collect_inputs_files_folders_globs(tmp_path):
    _images(tmp_path / "a", ["x.png", "y.jpg", "notes.txt.png"])
    (tmp_path / "a" / "readme.txt").write_text("not an image")
    files = collect_inputs([str(tmp_path / "a"), str(tmp_path / "a" / "x.png"), str(tmp_path / "a" / "*.jpg")],
                           extensions=(".png", ".jpg"))
    assert [p.name for p in files] == ["notes.txt.png", "x.png", "y.jpg"]  # no duplicates, folder order
    with pytest.raises(UserError, match="empty: no input files"):
        (tmp_path / "empty").mkdir()
        collect_inputs([str(tmp_path / "empty")], extensions=(".png",))
    with pytest.raises(UserError, match="nothing.png: no such file or folder"):
        collect_inputs([str(tmp_path / "nothing.png")], extensions=(".png",))
    with pytest.raises(UserError, match="readme.txt: not a supported input"):
        collect_inputs([str(tmp_path / "a" / "readme.txt")], extensions=(".png",))
    with pytest.raises(UserError, match=r"\*.tif: the pattern matches no input file"):
        collect_inputs([str(tmp_path / "a" / "*.tif")], extensions=(".tif",))


def _process(path):
    image = read_image(path, "gray")  # raises ImageReadError (a UserError) for a bad file
    return {f"{path.stem}_mask.png": (image > 5).astype(np.uint8) * 255, f"{path.stem}.txt": "ok"}


def _outputs(path):
    return [f"{path.stem}_mask.png", f"{path.stem}.txt"]


def test_run_inputs_writes_outputs_and_run_json(tmp_path):
    _images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    args = _args([str(tmp_path / "in"), "--out-dir", str(out)])
    files = collect_inputs(args.inputs, (".png",))
    weights = tmp_path / "w.keras"
    weights.write_bytes(b"some weights")
    assert run_inputs(files, _process, args=args, outputs=_outputs, model_name="m", weights=[weights]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "a_mask.png", "b.txt", "b_mask.png", "run.json"]
    assert read_image(out / "b_mask.png").max() == 255
    record = json.loads((out / "run.json").read_text())
    assert record["model"] == "m" and record["inputs"] == [str(f) for f in files]
    assert record["weights"][0]["sha256"] == hashlib.sha256(b"some weights").hexdigest()
    assert record["options"]["tta"] == "none" and record["skipped"] == []
    # a second run into the same folder refuses before predicting anything
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        run_inputs(files, _process, args=args, outputs=_outputs, model_name="m", weights=[])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    args.overwrite = True
    assert run_inputs(files, _process, args=args, outputs=_outputs, model_name="m", weights=[]) == 0


def test_bad_input_stops_or_is_skipped_and_leaves_nothing(tmp_path, capsys):
    _images(tmp_path / "in", ["a.png", "c.png"])
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    files = collect_inputs([str(tmp_path / "in")], (".png",))
    args = _args([str(tmp_path / "in"), "--out-dir", str(tmp_path / "stop")])
    with pytest.raises(UserError, match="b.png: cannot decode"):
        run_inputs(files, _process, args=args, outputs=_outputs, model_name="m", weights=[])
    assert sorted(p.name for p in (tmp_path / "stop").iterdir()) == ["a.txt", "a_mask.png"]  # nothing for b
    args = _args([str(tmp_path / "in"), "--out-dir", str(tmp_path / "skip"), "--skip-bad"])
    assert run_inputs(files, _process, args=args, outputs=_outputs, model_name="m", weights=[]) == 1
    names = sorted(p.name for p in (tmp_path / "skip").iterdir())
    assert names == ["a.txt", "a_mask.png", "c.txt", "c_mask.png", "run.json"]
    assert "error: " in capsys.readouterr().err
    assert json.loads((tmp_path / "skip" / "run.json").read_text())["skipped"][0]["input"].endswith("b.png")


def test_output_clash_between_inputs_is_refused(tmp_path):
    _images(tmp_path / "one", ["a.png"])
    _images(tmp_path / "two", ["a.png"])
    args = _args([str(tmp_path / "one"), str(tmp_path / "two"), "--out-dir", str(tmp_path / "out")])
    files = collect_inputs(args.inputs, (".png",))
    with pytest.raises(UserError, match="would also be written"):
        run_inputs(files, _process, args=args, outputs=_outputs, model_name="m", weights=[])
    assert not (tmp_path / "out").exists()


def test_overlay_image():
    image = np.full((2, 3), 100, np.uint8)
    mask = np.array([[1, 0, 0], [0, 0, 1]], bool)
    out = overlay_image(image, mask, color=(200, 0, 0), alpha=0.5)
    assert out.shape == (2, 6, 3)
    np.testing.assert_array_equal(out[:, :3], 100)
    np.testing.assert_array_equal(out[0, 3], [150, 50, 50])
    np.testing.assert_array_equal(out[0, 4], [100, 100, 100])


def test_load_model_and_missing_checkpoint(tmp_path):
    import keras

    from common.predict import load_model

    inputs = keras.Input((4, 4, 1))
    keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs)).save(tmp_path / "best.keras")
    model, path = load_model(_args(["x", "--out-dir", "o", "--run-dir", str(tmp_path)]))
    assert path == tmp_path / "best.keras" and model.output_shape == (None, 4, 4, 1)
    with pytest.raises(UserError, match="last.keras: checkpoint not found"):
        load_model(_args(["x", "--out-dir", "o", "--run-dir", str(tmp_path), "--weights", "last"]))
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="broken.keras: cannot load the model"):
        load_model(_args(["x", "--out-dir", "o", "--model", str(tmp_path / "broken.keras")]))
