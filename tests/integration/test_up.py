"""`saim up` as a user runs it: a subprocess that prints addresses once all services are SERVING and shuts
everything down on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import FAST


@pytest.fixture
def saim_up(tmp_path):
    env = {**os.environ, **FAST, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "saim.cli", "up", "--workdir", str(tmp_path), "--series", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "all SERVING" in line:
                yield proc, lines
                return
        pytest.fail("saim up did not report all SERVING:\n" + "\n".join(lines))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_saim_up_serves_and_stops_cleanly_on_ctrl_c(saim_up):
    proc, lines = saim_up
    text = "\n".join(lines)
    addresses = dict(re.findall(r"^(annotator|selector|trainer)\s+(127\.0\.0\.1:\d+)", text, flags=re.M))
    assert set(addresses) == {"annotator", "selector", "trainer"}
    assert "export SAIM_KAFKA_BOOTSTRAP=127.0.0.1:" in text and "export SAIM_S3_ENDPOINT=127.0.0.1:" in text
    for target in addresses.values():
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 5  # broker, S3 server, three services
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.pid for p in alive]}"
