"""demo.py runs every task even when one fails, marks the failed one and exits 1."""

import json

import demo


def test_failed_task_is_marked_and_the_rest_still_run(tmp_path, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "fake_bad.py").write_text("def run(work_dir):\n    raise RuntimeError('synthetic failure')\n")
    (mods / "fake_ok.py").write_text(
        "def run(work_dir):\n"
        "    return {'model': 'm', 'metric': 'Dice', 'dice': 0.9, 'pass': 0.5, 'seconds': 1.0, 'settings': 's'}\n")
    monkeypatch.setenv("PYTHONPATH", str(mods))
    monkeypatch.setattr(demo, "TASKS", {"bad": ("fake_bad", "dice"), "ok": ("fake_ok", "dice")})
    code = demo.main(["--tasks", "bad", "ok", "--work-dir", str(tmp_path / "work")])
    assert code == 1
    rows = json.loads((tmp_path / "work" / "results.json").read_text())
    assert [(r["task"], r["ok"]) for r in rows] == [("bad", "FAILED"), ("ok", "yes")]
    assert rows[0]["score"] is None and rows[1]["score"] == 0.9
