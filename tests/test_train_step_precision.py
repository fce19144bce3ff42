"""bench/train_step.py --mixed-precision: the float32 / bfloat16 table's arithmetic, its JSON (read by
common.devices), its options, and the profiler's op table. No timing is asserted."""

import json

import pytest

from bench import train_step
from common import devices
from tests._cli import error_line


def _fake_part(case, img_s, step_s):
    return {"case": case, "input": "96x96x1", "batch": 32, "gflop_step": 320.0, "ours_img_s": img_s,
            "ours_step_s": step_s, "peak_rss_gb": 1.5}


def test_precision_table_rows_and_json(monkeypatch, tmp_path, capsys):
    rates = {"float32": 200.0, "bfloat16": 400.0}
    monkeypatch.setattr(train_step, "matmul_gflops", lambda dtype="float32", **_: rates[dtype])
    calls = []

    def fake_run(case, path, args, precision="off"):
        calls.append((case, path, precision))
        return _fake_part(case, 20.0 if precision == "off" else 36.0, 1.6 if precision == "off" else 0.9), None

    monkeypatch.setattr(train_step, "_run_isolated", fake_run)
    out = tmp_path / "precision.json"
    assert train_step.main(["--mixed-precision", "bfloat16", "--models", "nerve_unet", "--out", str(out)]) == 0
    assert calls == [("nerve_unet", "ours", "off"), ("nerve_unet", "ours", "bfloat16")]
    results = json.loads(out.read_text())
    row = results["rows"][0]
    # 320 GFLOP per batch of 32 = 10 GFLOP an image: 20 img/s = 200 GFLOP/s (100 % of 200); 36 img/s = 360 (90 % of 400)
    assert row["ratio"] == pytest.approx(1.8)
    assert row["float32_matmul_share"] == pytest.approx(1.0) and row["bfloat16_matmul_share"] == pytest.approx(0.9)
    assert "| 1.80 | 200, 100 % | 360, 90 % |" in capsys.readouterr().out
    assert results["precision"] == "bfloat16" and results["matmul_gflops"] == rates
    # common.devices quotes it for a CPU of the same model name
    assert devices.measured_speedups(out, model=results["cpu"]) == {"nerve_unet": pytest.approx(1.8)}
    # an existing table is kept unless --overwrite
    line = error_line(train_step.main, ["--mixed-precision", "bfloat16", "--models", "nerve_unet", "--out", str(out)])
    assert line.startswith("error: --out") and "--overwrite" in line


def test_a_failed_model_is_a_row_without_ratio(monkeypatch, tmp_path):
    monkeypatch.setattr(train_step, "matmul_gflops", lambda **_: 100.0)
    monkeypatch.setattr(train_step, "_run_isolated", lambda *a, **k: (None, "MemoryError"))
    out = tmp_path / "p.json"
    train_step.main(["--mixed-precision", "bfloat16", "--models", "tdsnet", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == [{"case": "tdsnet", "error": "float32: MemoryError", "ratio": None}]


def test_options():
    assert set(train_step.ALL_CASES) >= set(train_step.CASES)
    registered = {name for name, *_ in train_step.ALL_CASES.values()}
    from common.models import available_models

    assert registered == set(available_models())  # every registered model is timed
    assert error_line(train_step.main, ["--profile", "-1"]).startswith("error: --profile")
    assert error_line(train_step.main, ["--mixed-precision", "off"]).startswith("error: --mixed-precision: invalid choice")


def test_profile_names_the_convolutions(float32_policy):
    import keras
    import numpy as np

    from common.models import build_model
    from common.training import array_dataset

    devices.set_precision("bfloat16")
    model = build_model("nerve_unet", (32, 32, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
    x = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    prof = train_step.profile_ops(model, array_dataset(x, (x > 0.5).astype(np.float32), batch_size=2), steps=1, top=50)
    kinds = [kind for kind, _, _ in prof["types"]]
    assert any("Conv2D" in kind for kind in kinds)
    assert not any("::" in op or op in ("Process", "Run") for op, *_ in prof["ops"])  # ops only
    assert sum(share for *_, share in prof["types"]) <= 1.0 + 1e-9


@pytest.fixture
def float32_policy():
    yield
    devices.set_precision("off")
