"""bench/input_pipeline.py's device step rates: the GPU's FLOP- and launch-bound rates, the kernel count of a
training step, the CPU bfloat16 rate read from bench/train_step.py's results. No timing."""

import json

import keras
import pytest

from bench import input_pipeline


def test_gpu_rate_is_the_smaller_bound():
    # 4.3 GFLOP at 400 TFLOP/s: 93,023 steps/s; 1,252 kernels at 5 us: 6.26 ms a step, 159.7 steps/s
    rates = input_pipeline.device_rates(4.3, 1252, 400.0, 5.0)
    assert rates["flop"] == pytest.approx(400e12 / 4.3e9)
    assert rates["launch"] == pytest.approx(1 / (1252 * 5e-6))
    assert rates["gpu"] == rates["launch"] and rates["cpu"] is None
    big = input_pipeline.device_rates(5106.1, 1000, 400.0, 5.0, cpu_rate=0.05)
    assert big["gpu"] == big["flop"] == pytest.approx(400e3 / 5106.1) and big["cpu"] == 0.05


def _dense(n_layers):
    inputs = keras.Input((4,))
    x = inputs
    for _ in range(n_layers):
        x = keras.layers.Dense(4, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def test_kernels_grow_by_the_same_count_per_layer():
    counts = [input_pipeline.kernels_per_step(_dense(n)) for n in (1, 2, 3)]
    assert counts[0] > 0
    assert counts[1] - counts[0] == counts[2] - counts[1] > 0


def test_cpu_rates_from_the_train_step_results(tmp_path):
    path = tmp_path / "train_step_precision.json"
    assert input_pipeline.cpu_step_rates(path) == {}
    path.write_text(json.dumps({"precision": "bfloat16", "rows": [
        {"case": "nerve_unet", "batch": 32, "bfloat16_img_s": 34.6}, {"case": "tdsnet", "ratio": None}]}))
    assert input_pipeline.cpu_step_rates(path) == {"nerve_unet": pytest.approx(34.6 / 32)}
    path.write_text(json.dumps({"precision": "float16", "rows": [{"case": "x", "batch": 1, "float16_img_s": 1}]}))
    assert input_pipeline.cpu_step_rates(path) == {}
