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


def test_mixed_precision_reaches_the_scripts_of_each_task(tmp_path, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "fake_precision.py").write_text(
        "import argparse\n"
        "from common.devices import add_precision_arguments\n"
        "def run(work_dir):\n"
        "    args = add_precision_arguments(argparse.ArgumentParser()).parse_args([])\n"
        "    return {'model': 'm', 'metric': 'Dice', 'dice': 0.9, 'pass': 0.5, 'seconds': 1.0,\n"
        "            'settings': args.mixed_precision}\n")
    monkeypatch.setenv("PYTHONPATH", str(mods))
    monkeypatch.setattr(demo, "TASKS", {"p": ("fake_precision", "dice")})
    for option, want in ((["--mixed-precision", "off"], "off"), (["--mixed-precision", "bfloat16"], "bfloat16")):
        work = tmp_path / f"work_{want}"
        assert demo.main(["--tasks", "p", "--work-dir", str(work)] + option) == 0
        assert json.loads((work / "results.json").read_text())[0]["settings"] == want
    assert "--mixed-precision bfloat16" in (tmp_path / "work_bfloat16" / "results.md").read_text()
    # no option = auto: bfloat16 on a CPU with native bfloat16, float32 on one without
    from common import devices

    monkeypatch.setattr(devices, "device_info", lambda: {"backend": "tensorflow", "gpus": []})
    for flags, want in (({"sse2", "avx512_bf16"}, "bfloat16"), ({"sse2", "avx2"}, "off")):
        monkeypatch.setattr(devices, "cpu_info", lambda backend, flags=flags: {
            "flags": flags, "onednn": {"enabled": True}, "model": "x", "system": "Linux"})
        work = tmp_path / f"work_default_{want}"
        assert demo.main(["--tasks", "p", "--work-dir", str(work)]) == 0
        assert json.loads((work / "results.json").read_text())[0]["settings"] == want


def test_auto_precision_is_the_recommendation(monkeypatch):
    from common import devices

    assert demo.resolve_precision("off") == ("off", "") and demo.resolve_precision("bfloat16") == ("bfloat16", "")
    monkeypatch.setattr(devices, "device_info", lambda: {"backend": "tensorflow", "gpus": []})
    monkeypatch.setattr(devices, "cpu_info", lambda backend: {
        "flags": {"sse2", "avx512_bf16"}, "onednn": {"enabled": True}, "model": "x", "system": "Linux"})
    value, why = demo.resolve_precision("auto")
    assert value == "bfloat16" and why.startswith("auto: avx512_bf16 present")
    monkeypatch.setattr(devices, "cpu_info", lambda backend: {
        "flags": {"sse2", "avx2"}, "onednn": {"enabled": True}, "model": "x", "system": "Linux"})
    assert demo.resolve_precision("auto")[0] == "off"
