"""bench/precision_fidelity.py on a tiny run folder: the comparison machinery and the options (no timing)."""

import numpy as np
import pytest

from bench import precision_fidelity
from tests._cli import error_line


@pytest.fixture
def run_dir(tmp_path):
    """A drive_repro-shaped folder: 20 patches of 16x16 whose grey levels are multiples of 1/8 (exact in
    bfloat16), their masks, and a float32 bcdu_net_d3 checkpoint."""
    from common.models import build_model
    from retina_vessel.train_retina import IMGS_FILE, MASKS_FILE

    rng = np.random.default_rng(0)
    np.save(tmp_path / IMGS_FILE, (rng.integers(0, 9, (20, 16, 16, 1)) / 8).astype(np.float32))
    np.save(tmp_path / MASKS_FILE, (rng.random((20, 16, 16, 1)) > 0.8).astype(np.uint8))
    (tmp_path / "run").mkdir()
    build_model("bcdu_net_d3", (16, 16, 1)).save(tmp_path / "run" / "best.keras")
    return tmp_path


def test_comparison_against_float32(run_dir):
    result = precision_fidelity.fidelity(run_dir, batches=1, batch_size=2, val_patches=4, verbose=False)
    rows = {row["variant"]: row for row in result["rows"]}
    assert list(rows) == ["float32", *precision_fidelity.VARIANTS]
    # the image is exact in bfloat16: rounding it changes nothing, bit for bit
    exact = rows["float32, image rounded to bfloat16"]
    assert exact["relerr"] == 0 and exact["max_dp"] == 0 and exact["cos"] == pytest.approx(1.0)
    assert exact["val_loss"] == rows["float32"]["val_loss"]
    for variant in precision_fidelity.VARIANTS[1:]:  # bfloat16 arithmetic: close to float32, not equal
        row = rows[variant]
        assert 0 < row["relerr"] < 0.5 and row["cos"] > 0.85 and 0 < row["mean_dp"] < 0.05
        assert all(0 <= row[stage] for stage, _ in precision_fidelity.STAGES)
    table = precision_fidelity.markdown(result)
    assert table.count("\n| ") == 1 + len(rows)  # the header and a row per variant (the rule is "|---")


def test_options(tmp_path):
    assert error_line(precision_fidelity.main, ["--batches", "0"]).startswith("error: --batches")
    line = error_line(precision_fidelity.main, ["--run-dir", str(tmp_path), "--out", str(tmp_path / "f.md")])
    assert "best.keras" in line and "drive_repro.py" in line
    out = tmp_path / "f.md"
    out.write_text("kept")
    line = error_line(precision_fidelity.main, ["--run-dir", str(tmp_path), "--out", str(out)])
    assert line.startswith("error: --out") and "--overwrite" in line
    assert out.read_text() == "kept"
    assert not (tmp_path / "f.md.tmp").exists()


def test_too_few_patches_is_one_line_and_writes_nothing(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "f.md"
    line = error_line(precision_fidelity.main, ["--run-dir", str(run_dir), "--batches", "20", "--out", str(out)])
    assert line.startswith("error: --run-dir") and "20 batches" in line
    assert not out.parent.exists() or not any(out.parent.iterdir())
