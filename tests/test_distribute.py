import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.training import get_strategy, is_chief

JOB = Path(__file__).with_name("_multi_worker_job.py")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_cpu_workers_end_with_identical_weights(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, str(JOB), str(tmp_path), str(tmp_path / "run")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-worker training did not finish in 240 s")
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "replicas 2" in out, out[-1000:]
    w0, w1 = np.load(tmp_path / "weights_0.npy"), np.load(tmp_path / "weights_1.npy")
    np.testing.assert_array_equal(w0, w1)
    # the chief (worker 0) wrote the run; 32 samples, global batch 8 -> 4 steps/epoch
    assert (tmp_path / "run" / "best.keras").is_file() and "steps 8" in outputs[0]
    # The reference: one process, no cluster, batch 8 from the same initial weights. Two workers splitting
    # each global batch of 8 into 4 + 4 and averaging their gradients take the same steps, so a gradient
    # summed instead of averaged (twice the step), a half batch trained alone, or batches that do not
    # partition the samples would all end elsewhere.
    np.testing.assert_array_equal(np.load(tmp_path / "init_0.npy"), np.load(tmp_path / "init_1.npy"))
    single = subprocess.run([sys.executable, str(JOB), str(tmp_path), str(tmp_path / "single_run"), "single"],
                            env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"}, capture_output=True,
                            text=True, timeout=240)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
    assert "steps 8 replicas 1" in single.stdout
    reference = np.load(tmp_path / "weights_single.npy")
    moved = np.abs(reference - np.load(tmp_path / "init_0.npy")).max()
    assert moved > 0.05  # measured 0.31; doubling the SGD step or training on batches of 4 moves it by 0.34
    np.testing.assert_allclose(w0, reference, rtol=1e-4, atol=1e-5)


def test_strategy_by_name():
    assert is_chief(get_strategy("default"))
    with pytest.raises(ValueError, match="unknown strategy"):
        get_strategy("tpu")
    old = os.environ.pop("TF_CONFIG", None)
    try:
        with pytest.raises(ValueError, match="TF_CONFIG"):
            get_strategy("multi_worker")
    finally:
        if old is not None:
            os.environ["TF_CONFIG"] = old
