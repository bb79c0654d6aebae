"""`saim up --tls` as a user runs it: a subprocess that prints addresses once all services are SERVING (over TLS,
with its own self-signed certificate and tokens) and shuts everything down on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from saim.rpc.channel import channel
from saim.v1 import annotator_pb2, annotator_pb2_grpc, selector_pb2, selector_pb2_grpc

from .conftest import FAST


@pytest.fixture
def saim_up(tmp_path):
    env = {**os.environ, **FAST, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "saim.cli", "up", "--workdir", str(tmp_path), "--series", "8", "--tls"],
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
                yield proc, lines, tmp_path
                return
        pytest.fail("saim up did not report all SERVING:\n" + "\n".join(lines))
    finally:
        if proc.poll() is None:  # a failed test: leave no broker, S3 server or service behind
            children = psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.wait()
            for child in children:
                try:
                    child.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(children, timeout=10)


def test_saim_up_serves_over_tls_and_stops_cleanly_on_ctrl_c(saim_up):
    proc, lines, workdir = saim_up
    text = "\n".join(lines)
    addresses = dict(re.findall(r"^(annotator|selector|trainer)\s+(127\.0\.0\.1:\d+)", text, flags=re.M))
    assert set(addresses) == {"annotator", "selector", "trainer"}
    assert "export SAIM_KAFKA_BOOTSTRAP=127.0.0.1:" in text and "export SAIM_S3_ENDPOINT=127.0.0.1:" in text
    env = dict(re.findall(r"^export (SAIM_\w+)=(.*)$", (workdir / "stack" / "client.env").read_text(), flags=re.M))
    assert env["SAIM_ADMIN_TOKEN"] not in text and env["SAIM_S3_SECRET_KEY"] not in text  # secrets: file only
    assert (workdir / "stack" / "client.env").stat().st_mode & 0o077 == 0
    ca = open(env["SAIM_TLS_CA_FILE"], "rb").read()
    for target in addresses.values():
        with channel(target, tls_ca=ca) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(target) as ch:  # plaintext is refused
            with pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
    # the web app: its address and a first annotator's token are printed; the gateway reaches the services over TLS
    url = re.search(r"^annotate in a browser: (http://127\.0\.0\.1:\d+)/", text, flags=re.M).group(1)
    token_file = workdir / "stack" / "annotator-token"
    assert token_file.stat().st_mode & 0o077 == 0 and token_file.read_text().strip() not in text
    me = httpx.get(url + "/api/me", headers={"Authorization": f"Bearer {token_file.read_text().strip()}"}, timeout=30)
    assert me.json() == {"name": "annotator-1", "role": "annotator"}
    assert (
        httpx.get(url + "/", timeout=10).status_code == 200
        and httpx.get(url + "/readyz", timeout=10).status_code == 200
    )
    assert f"{url}/dashboard" in text
    # one case end to end over TLS: the annotator checks the lease with the selector over TLS (service token)
    token = env["SAIM_ADMIN_TOKEN"]
    selector = selector_pb2_grpc.SelectorServiceStub(channel(addresses["selector"], token, ca))
    annotator = annotator_pb2_grpc.AnnotatorServiceStub(channel(addresses["annotator"], token, ca))
    lease = selector.NextCase(selector_pb2.NextCaseRequest(annotator_id="tls-check"), timeout=30)
    opened = annotator.OpenSession(
        annotator_pb2.OpenSessionRequest(case_id=lease.case_id, annotator_id="tls-check", lease_id=lease.lease_id),
        timeout=60,
    )
    reply = annotator.AddClick(
        annotator_pb2.AddClickRequest(
            session_id=opened.session_id, class_index=1, positive=True, voxel=annotator_pb2.Voxel(i=5, j=5, k=0)
        ),
        timeout=30,
    )
    assert reply.model_version == opened.model_version
    assert annotator.Submit(annotator_pb2.SubmitRequest(session_id=opened.session_id), timeout=30).annotation_key
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 5  # broker, S3 server, three services
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.pid for p in alive]}"
