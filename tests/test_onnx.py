"""ONNX export (python -m common.export --format onnx) and the TensorFlow-free predict path.

Every model family is exported at its smallest shape and run in onnxruntime; its outputs must lie within
1e-4 of the Keras model's (the reference). tf2onnx's time grows with the graph, so each family is built as
small as its structure allows (see ``FAMILIES``). A predict script run with --onnx in a subprocess where TensorFlow and
Keras cannot be imported must write the same masks as its Keras path; bad ONNX inputs are one-line errors.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _cli import RUN_SCRIPT_BLOCKED, error_line
from _onnx_family_job import FAMILIES
from common import export
from common.errors import UserError
from common.predict import load_segmenter
from common.tasks import get_task

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_exports_and_matches_keras_in_onnxruntime(family, tmp_path):
    """Each family exported and compared in a process of its own (tests/_onnx_family_job.py): tf2onnx's peak
    for the VGG16-encoder families is several GB, which the pytest process would keep."""
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "_onnx_family_job.py"), family, str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["keys"] == result["reference_keys"]
    for key, diff in result["max_diff"].items():
        assert diff <= 1e-4, (key, diff)
    assert result["task"] == result["expected_task"] and result["shape"] == result["expected_shape"]


def test_a_layer_that_cannot_be_converted_is_named(tmp_path):
    import keras

    class Svd(keras.layers.Layer):
        def call(self, x):
            return keras.ops.expand_dims(keras.ops.svd(x[..., 0], compute_uv=False), -1)

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, Svd(name="odd_svd")(inputs))
    model(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(UserError) as info:
        export.export_onnx(model, tmp_path / "out", task=get_task("ultrasound_nerve"), context={})
    assert "odd_svd" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def _nerve_run(tmp_path, side=32):
    """A tiny trained-looking nerve run: weights/ultrasound_nerve/tiny/best.keras + norm_stats.json."""
    import keras

    from common.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("nerve_unet", (side, side, 1), filters=(4, 8, 16, 32, 64))
    run = tmp_path / "weights" / "ultrasound_nerve" / "tiny"
    run.mkdir(parents=True)
    model.save(run / "best.keras")
    (run / "norm_stats.json").write_text(json.dumps({"mean": 100.0, "std": 40.0, "img_size": side}))
    return run


def _frames(folder, n=3):
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 58), dtype=np.uint8)).save(folder / f"{i}.tif")
    return folder


@pytest.fixture(scope="module")
def nerve_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nerve")
    run = _nerve_run(tmp)
    assert export.main([str(run), str(tmp / "onnx"), "--format", "onnx"]) == 0
    return run, tmp / "onnx" / "model.onnx", _frames(tmp / "frames")


def test_onnx_segmenter_equals_the_keras_segmenter(nerve_export):
    run, onnx_file, frames = nerve_export
    keras_seg, onnx_seg = load_segmenter(run), load_segmenter(onnx_file)
    assert onnx_seg.task.NAME == "ultrasound_nerve" and onnx_seg.options["mean"] == 100.0
    for path in sorted(frames.iterdir()):
        frame = np.asarray(Image.open(path))
        assert np.abs(keras_seg.probabilities(frame) - onnx_seg.probabilities(frame)).max() <= 1e-4
        np.testing.assert_array_equal(keras_seg(frame), onnx_seg(frame))


def test_predict_script_with_onnx_runs_without_tensorflow_and_writes_the_keras_masks(nerve_export, tmp_path):
    from ultrasound_nerve import predict

    run, onnx_file, frames = nerve_export
    assert predict.main([str(frames), "--run-dir", str(run), "--out-dir", str(tmp_path / "keras"), "--quiet"]) == 0
    done = subprocess.run([sys.executable, "-c", RUN_SCRIPT_BLOCKED, "ultrasound_nerve/predict.py", str(frames), "--onnx",
                           str(onnx_file), "--out-dir", str(tmp_path / "onnx"), "--quiet"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    masks = sorted(p.name for p in (tmp_path / "keras").glob("*_mask.tif"))
    assert len(masks) == 3
    for name in masks:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "onnx" / name)),
                                      np.asarray(Image.open(tmp_path / "keras" / name)))
    assert json.loads((tmp_path / "onnx" / "run.json").read_text())["weights"][0]["path"].endswith("model.onnx")


def _copy_export(onnx_file, folder):
    folder.mkdir()
    for name in ("model.onnx", "preprocessing.json"):
        (folder / name).write_bytes((onnx_file.parent / name).read_bytes())
    return folder / "model.onnx"


def test_bad_onnx_inputs_are_one_line_errors_and_write_nothing(nerve_export, tmp_path):
    from common.provenance import sha256_file
    from skin_lesion import predict as skin_predict
    from ultrasound_nerve import predict

    run, onnx_file, frames = nerve_export

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(photos / "a.png")

    def refused(main, model, expected):
        out = tmp_path / f"out_{expected.split()[0]}"
        inputs = photos if main is skin_predict.main else frames
        line = error_line(main, [str(inputs), "--onnx", str(model), "--out-dir", str(out), "--quiet"])
        assert expected in line, line
        assert not out.exists()

    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "model.onnx").write_bytes(onnx_file.read_bytes())
    refused(predict.main, missing / "model.onnx", "preprocessing.json: not found")
    other = _copy_export(onnx_file, tmp_path / "other")
    other.write_bytes(other.read_bytes() + b"\0")  # the json describes another file now
    refused(predict.main, other, "not this model.onnx")
    corrupt = _copy_export(onnx_file, tmp_path / "corrupt")
    corrupt.write_bytes(b"not an onnx model")
    record = json.loads((corrupt.parent / "preprocessing.json").read_text())
    record["model_file"]["sha256"] = sha256_file(corrupt)
    (corrupt.parent / "preprocessing.json").write_text(json.dumps(record))
    refused(predict.main, corrupt, "not a readable ONNX model")
    refused(skin_predict.main, onnx_file, "a model of the task ultrasound_nerve, not skin_lesion")
    resized = _copy_export(onnx_file, tmp_path / "resized")
    record = json.loads((resized.parent / "preprocessing.json").read_text())
    record["context"]["img_size"] = 16  # the preprocessing now gives 16 x 16 frames to a 32 x 32 network
    (resized.parent / "preprocessing.json").write_text(json.dumps(record))
    refused(predict.main, resized, "takes 32x32x1 inputs")
