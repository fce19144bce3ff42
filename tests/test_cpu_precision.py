"""CPU bfloat16 detection and the --mixed-precision recommendation of ``python -m common.devices``, on real
``/proc/cpuinfo`` flag lines (tests/data/cpuinfo/README.md says where each comes from). No timing."""

import json
from pathlib import Path

import pytest

from common import devices

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"


def _text(name):
    return (CPUINFO / name).read_text()


@pytest.mark.parametrize("name, bf16, fp16", [
    ("amd_epyc_avx512_bf16.txt", ["avx512_bf16"], []),
    ("intel_xeon_sapphire_rapids_amx.txt", ["avx512_bf16", "amx_bf16"], ["avx512_fp16"]),
    ("intel_xeon_gold_6148_avx512_no_bf16.txt", [], []),
    ("intel_xeon_e5_2630_v4_avx2.txt", [], []),
])
def test_native_precision_flags_from_real_cpuinfo(name, bf16, fp16):
    flags = devices.cpu_flags(_text(name))
    assert "sse2" in flags and "avx2" in flags  # the whole line was parsed, not a prefix
    assert devices.cpu_precision_support(flags) == {"bfloat16": bf16, "float16": fp16}


def test_model_name_and_unknown_flags():
    assert devices.cpu_model(_text("intel_xeon_e5_2630_v4_avx2.txt")) == "Intel(R) Xeon(R) CPU E5-2630 v4 @ 2.20GHz"
    assert devices.cpu_flags(None) is None and devices.cpu_flags("processor\t: 0\n") is None
    assert devices.cpu_precision_support(None) == {"bfloat16": None, "float16": None}


def test_cpuinfo_is_read_on_linux_only(monkeypatch, tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(_text("amd_epyc_avx512_bf16.txt"))
    monkeypatch.setattr(devices.sys, "platform", "darwin")
    assert devices.read_cpuinfo(str(path)) is None
    monkeypatch.setattr(devices.sys, "platform", "linux")
    assert devices.read_cpuinfo(str(path)) == path.read_text()
    assert devices.read_cpuinfo(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("name, onednn, value, words", [
    ("amd_epyc_avx512_bf16.txt", True, "bfloat16", ["avx512_bf16 present", "not measured on this machine",
                                                    "1.86x on nerve_unet", "1.99x on bcdu_net_d3"]),
    ("intel_xeon_sapphire_rapids_amx.txt", None, "bfloat16", ["avx512_bf16 and amx_bf16 present"]),
    ("amd_epyc_avx512_bf16.txt", False, "off", ["oneDNN is off", "TF_ENABLE_ONEDNN_OPTS"]),
    ("intel_xeon_gold_6148_avx512_no_bf16.txt", True, "off", ["no native bfloat16", "emulated"]),
    ("intel_xeon_e5_2630_v4_avx2.txt", True, "off", ["no native bfloat16"]),
])
def test_recommendation_on_a_cpu(name, onednn, value, words):
    got, reason = devices.recommend_precision(devices.cpu_flags(_text(name)), onednn)
    assert got == value
    for word in words:
        assert word in reason


def test_recommendation_when_flags_are_unknown_or_a_gpu_is_visible():
    value, reason = devices.recommend_precision(None, True, system="Darwin")
    assert value == "off" and "unknown on Darwin" in reason
    flags = devices.cpu_flags(_text("intel_xeon_e5_2630_v4_avx2.txt"))
    for cc, want in (((9, 0), "bfloat16"), ((7, 5), "float16"), ((6, 1), "off")):
        assert devices.recommend_precision(flags, True, gpus=[{"name": "G", "compute_capability": cc}])[0] == want


def test_measured_speedup_is_quoted_only_from_a_results_file_of_this_cpu(tmp_path):
    path = tmp_path / "train_step_precision.json"
    assert devices.measured_speedups(path, model="AMD EPYC") == {}  # no file
    path.write_text(json.dumps({"cpu": "AMD EPYC", "precision": "float16", "rows": [{"case": "x", "ratio": 2}]}))
    assert devices.measured_speedups(path, model="AMD EPYC") == {}  # a float16 table is not quoted for bfloat16
    path.write_text(json.dumps({"cpu": "AMD EPYC", "precision": "bfloat16", "rows": [
        {"case": "nerve_unet", "ratio": 1.91}, {"case": "tdsnet", "ratio": None}]}))
    assert devices.measured_speedups(path, model="Intel(R) Xeon(R) Platinum 8480C") == {}
    measured = devices.measured_speedups(path, model="AMD EPYC")
    assert measured == {"nerve_unet": 1.91}
    flags = devices.cpu_flags(_text("amd_epyc_avx512_bf16.txt"))
    value, reason = devices.recommend_precision(flags, True, measured=measured)
    assert value == "bfloat16" and "measured on this machine: 1.91x on nerve_unet" in reason
    assert "not measured" not in reason
    # a full table: the range, the median (statistics by hand) and the slowest model, not fifteen numbers
    many = {"a": 1.2, "nerve_unet": 1.78, "c": 2.1, "d": 1.5, "e": 1.6}
    value, reason = devices.recommend_precision(flags, True, measured=many)
    assert "1.20x-2.10x over 5 models (median 1.60x; least on a), 1.78x on nerve_unet" in reason


def test_report_lines(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    cpu = {"system": "Linux", "model": "AMD EPYC", "flags": devices.cpu_flags(_text("amd_epyc_avx512_bf16.txt")),
           "onednn": {"env": "0", "enabled": False}}
    cpu["precision"] = devices.cpu_precision_support(cpu["flags"])
    lines = devices.format_cpu(cpu)
    assert "CPU native bfloat16: yes (avx512_bf16)" in lines[1]
    assert lines[2].startswith("CPU native float16: no")
    assert lines[3] == "oneDNN: off (TF_ENABLE_ONEDNN_OPTS=0)"
    assert lines[4].startswith("recommended: --mixed-precision off: ")
    unknown = dict(cpu, system="Windows", flags=None, precision=devices.cpu_precision_support(None))
    assert "unknown" in devices.format_cpu(unknown)[1]


def test_onednn_state_follows_the_environment():
    import os
    import subprocess
    import sys

    code = "from common.devices import onednn_state; print(onednn_state('tensorflow')['enabled'])"
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
