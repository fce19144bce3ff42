"""common.predict.load_segmenter: the predict scripts' path in one call; one compiled function per input size;
the predict scripts' --help without TensorFlow."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _cli import BLOCK_FRAMEWORKS
from common.predict import load_segmenter

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["fingernail", "lung", "retina_vessel", "retinal_edema", "robotic_scene", "skin_lesion", "ultrasound_nerve"]
BLOCKED_HELP = BLOCK_FRAMEWORKS + """
sys.argv = [sys.argv[1], '--help']
runpy.run_path(sys.argv[0], run_name='__main__')
"""


@pytest.mark.parametrize("task", SCRIPTS)
def test_predict_help_needs_no_tensorflow(task):
    done = subprocess.run([sys.executable, "-c", BLOCKED_HELP, f"{task}/predict.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "--onnx" in done.stdout


@pytest.fixture(scope="module")
def retina_run(tmp_path_factory):
    import keras

    from common.models import build_model

    tmp = tmp_path_factory.mktemp("retina")
    keras.utils.set_random_seed(0)
    run = tmp / "weights" / "retina_vessel" / "tiny"
    run.mkdir(parents=True)
    build_model("bcdu_net_d3", (16, 16, 1)).save(run / "best.keras")
    photos = tmp / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):  # five photos of one size, one of another
        Image.fromarray(rng.integers(0, 256, (24, 21, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(photos / "other.png")
    return run, photos


def test_one_compiled_function_per_input_size(retina_run):
    run, photos = retina_run
    seg = load_segmenter(run)  # the task from the path: weights/retina_vessel/...
    assert seg.task.NAME == "retina_vessel"
    for path in sorted(photos.iterdir()):
        mask = seg(np.asarray(Image.open(path)))
        assert mask.shape == np.asarray(Image.open(path)).shape[:2] and mask.dtype == np.uint8
    assert sorted(seg.network.traced) == [(24, 24, 1), (24, 32, 1)]  # padded to multiples of 8
    assert [f.experimental_get_tracing_count() for f in seg.network.traced.values()] == [1, 1]


def test_segmenter_equals_the_script_and_the_run_prints_no_tensorflow_warning(retina_run, tmp_path):
    run, photos = retina_run
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "retina_vessel/predict.py", str(photos), "--run-dir", str(run),
                           "--out-dir", str(out), "--save-probabilities", "--quiet"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "retracing" not in done.stderr and "WARNING:tensorflow" not in done.stderr, done.stderr
    seg = load_segmenter(run)
    for path in sorted(photos.iterdir()):
        image = np.asarray(Image.open(path))
        np.testing.assert_allclose(np.load(out / f"{path.stem}_prob.npy"), seg.probabilities(image), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{path.stem}_mask.png")), seg(image))


def test_a_path_without_a_task_needs_task(tmp_path):
    from common.errors import UserError

    with pytest.raises(UserError, match="pass task="):
        load_segmenter(tmp_path / "model.keras")
