"""bench/inference.py: options and the DRIVE section's skips (no timing, no model is run)."""

from bench import inference
from tests._cli import error_line


def test_options(tmp_path):
    assert error_line(inference.main, ["--repeats", "0"]).startswith("error: --repeats")
    out = tmp_path / "inference.json"
    out.write_text("{}")
    line = error_line(inference.main, ["--sections", "timing", "--out", str(out)])
    assert line.startswith("error: --out") and "--overwrite" in line
    assert out.read_text() == "{}"  # kept


def test_drive_section_skips_without_images_or_checkpoint(tmp_path):
    assert "real DRIVE images" in inference.drive(tmp_path, tmp_path / "best.keras", "bfloat16", "full", 1)["skipped"]
    (tmp_path / "training" / "images").mkdir(parents=True)
    assert "drive_repro.py" in inference.drive(tmp_path, tmp_path / "best.keras", "bfloat16", "full", 1)["skipped"]
