"""Typed settings, read from SAIM_* environment variables: `ServiceSettings` for the services (the same names in
`saim up`, docker compose and the Kubernetes ConfigMap/Secret), `ClientSettings` for the CLI and the health check.
Every SAIM_* variable is read here; the embedded stack (saim.stack.local) only sets them for its children.

The model's and the training run's settings are the core's dataclasses (saim.model.config), nested with a double
underscore: `SAIM_MODEL__IMAGE_SIZE`, `SAIM_TRAIN__EPOCHS`, `SAIM_TRAIN__MODE`, ...

Secrets (S3 secret key, admin and service tokens) are `SecretStr`: they print as '**********' in any repr or log.
Each can also come from a file: set SAIM_SECRETS_DIR to a directory holding files named like the variable in lower
case (`saim_s3_secret_key`, `saim_admin_token`, `saim_service_token`) -- a Kubernetes Secret volume or Docker
secrets. An environment variable wins over a file.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from saim.errors import SaimError
from saim.model.config import ModelConfig, ServingConfig
from saim.model.device import resolve_device
from saim.storage.objects import S3Config
from saim.storage.pool import DECODE_WORKERS, SERIES_CACHE_MB
from saim.training.config import TrainConfig

# Flat names of nested settings before they moved under SAIM_MODEL__ / SAIM_TRAIN__: set, they are an error that
# names the new variable rather than a value silently ignored.
RENAMED = {
    "SAIM_IMAGE_SIZE": "SAIM_MODEL__IMAGE_SIZE",
    "SAIM_ENCODER": "SAIM_MODEL__ENCODER",
    "SAIM_EPOCHS": "SAIM_TRAIN__EPOCHS",
    "SAIM_FINETUNE_EPOCHS": "SAIM_TRAIN__FINETUNE_EPOCHS",
    "SAIM_STEPS_PER_EPOCH": "SAIM_TRAIN__STEPS_PER_EPOCH",
    "SAIM_TRAIN_BATCH_SIZE": "SAIM_TRAIN__BATCH_SIZE",
    "SAIM_LR": "SAIM_TRAIN__LR",
    "SAIM_TRAIN_MODE": "SAIM_TRAIN__MODE",
}

ENV = SettingsConfigDict(env_prefix="SAIM_", extra="ignore", env_nested_delimiter="__")


class StorageSettings(BaseSettings):
    """The object storage alone: what the commands that only read or write the bucket need (`saim export`,
    `saim admin import`, `saim admin tokens`)."""

    model_config = ENV

    # required: no silent defaults pointing at nowhere
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: SecretStr
    s3_bucket: str = "saim"
    s3_secure: bool = False
    s3_region: str | None = None

    def s3(self) -> S3Config:
        return S3Config(
            self.s3_endpoint,
            self.s3_access_key,
            self.s3_secret_key.get_secret_value(),
            self.s3_bucket,
            self.s3_secure,
            self.s3_region,
        )


class ServiceSettings(StorageSettings):
    model_config = ENV

    # infrastructure (required) beside the object storage
    kafka_bootstrap: str
    kafka_replication_factor: int = Field(3, ge=1)  # replicas of each topic `saim bootstrap` creates

    # this process
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0  # 0: pick a free port (tests); deployments set 50051..
    metrics_port: int | None = None  # None: no Prometheus endpoint; 0: pick a free port
    torch_threads: int = 1
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda[:N]; resolved once at load (saim.model.device)
    instance_id: str = ""  # names a replica (a scorer's parts say who wrote them); default: host+pid
    ready_file: str | None = None  # written with "host:grpc_port metrics_port" once serving (used by `saim up`)
    log_level: str = "INFO"
    selector_target: str | None = None  # annotator -> selector (lease checks); None: leases are not checked
    selector_advertise: str | None = None  # host:port other selectors forward to while this one leads (default:
    # this host's name and the gRPC port)
    selector_lease_s: float = Field(
        15.0, gt=0, description="the selector leader's lease term: a standby takes over within it when the leader dies"
    )

    # the SAIM loop
    model: ModelConfig = ModelConfig()  # classes come from the imported dataset
    train: TrainConfig = TrainConfig()  # seed and device are set per run (seed + iteration, device)
    serving: ServingConfig = ServingConfig()  # how this replica serves a model version (annotator, selector, scorer)
    max_slices: int | None = Field(
        None,
        ge=1,
        description="slices per series for scoring and training (unset: every slice); annotation "
        "always has every slice",
    )
    work_dir: Path | None = Field(
        None, description="local disk for the trainer's decoded slice cache (None: the system's temporary directory)"
    )
    series_cache_mb: float = Field(SERIES_CACHE_MB, description="decoded series kept per process (LRU, by bytes)")
    decode_workers: int = Field(DECODE_WORKERS, ge=1, description="threads decoding series ahead of the model")
    scoring: Literal["local", "sharded"] = Field(
        "local",
        description="local: the selector scores the pool itself; sharded: scorer workers do, over Kafka "
        "(saim.selection.scoring, python -m services.scorer)",
    )
    scoring_resend_s: float = Field(
        300.0, gt=0, description="sharded scoring: parts still missing after this long without progress are resent"
    )
    next_batch: Literal["after_model", "immediate"] = Field(
        "after_model",
        description="after_model: batch k+1 opens with the model trained on batch k (the paper); immediate: it opens "
        "from the current scores as soon as batch k is complete, while k trains (no idle annotators)",
    )
    batch_size: int = 3  # series per iteration
    max_iterations: int = 3
    selection: str = Field(
        "fg_random",
        description="selection strategy (saim.selection.strategies): fg_random, entropy, clasp_pe, mc_dropout, random",
    )
    seed: int = 0
    max_message_mb: int = 16
    session_ttl_s: float = Field(1800.0, description="idle annotator sessions are dropped after this")
    promotion_tolerance: float = Field(0.02, description="a new version may be this much worse in val mIoU")
    lease_ttl_s: float = Field(900.0, description="a case lease expires after this long without activity")
    overlap: int = Field(1, ge=1, description="annotators per case (> 1 for inter-rater studies)")
    reconcile_s: float = Field(10.0, description="how often services compare their state with object storage")

    # access control and transport security (docs/operations.md)
    auth: bool = Field(True, description="require bearer tokens on every saim.v1 call")
    admin_token: SecretStr | None = None  # shared secret: the bootstrap admin
    service_token: SecretStr | None = None  # shared secret: service-to-service calls (annotator -> selector)
    token_refresh_s: float = Field(5.0, description="revocations take effect within this many seconds")
    tls_cert_file: Path | None = None  # server certificate chain (PEM); with tls_key_file: TLS on the gRPC port
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None  # CA that signed the other services' certificates (client side)
    tls_server_name: str | None = None  # expected name in peer certificates when it differs from the host

    @field_validator("device")
    @classmethod
    def _resolve_device(cls, value: str) -> str:
        try:
            return resolve_device(value)
        except SaimError as exc:
            raise ValueError(str(exc)) from None

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    def tls_server_credentials(self) -> tuple[bytes, bytes] | None:
        """(key, cert chain) PEM bytes when TLS is configured; a half-configured pair is an error."""
        cert, key = self.tls_cert_file, self.tls_key_file
        if cert is None or key is None:
            if cert is not None or key is not None:
                raise SaimError("TLS needs both SAIM_TLS_CERT_FILE and SAIM_TLS_KEY_FILE")
            return None
        return _read_file(key, "SAIM_TLS_KEY_FILE"), _read_file(cert, "SAIM_TLS_CERT_FILE")

    def tls_ca(self) -> bytes | None:
        return None if self.tls_ca_file is None else _read_file(self.tls_ca_file, "SAIM_TLS_CA_FILE")

    def train_config(self, seed: int) -> TrainConfig:
        return replace(self.train, seed=seed, device=self.device)

    def predictor_config(self, classes: tuple[str, ...]) -> ModelConfig:
        return replace(self.model, classes=tuple(classes))


class GatewaySettings(BaseSettings):
    """The HTTP gateway (services/gateway): the browser's way in. It holds no bucket credentials and no token of its
    own: every call carries the caller's bearer token to the gRPC services, which decide (saim.rpc.auth)."""

    model_config = ENV

    selector_target: str
    annotator_target: str = Field(
        description="every annotator replica: a DNS name resolving to each (dns:///HOST:PORT, a headless Service) "
        "or ipv4:HOST:PORT,HOST:PORT; a session's calls go to one of them (saim.rpc.replicas)"
    )
    trainer_target: str
    http_host: str = "127.0.0.1"
    http_port: int = 8080  # 0: pick a free port (tests)
    metrics_port: int | None = None
    web_root: Path | None = None  # the built pages (web/dist); None: web/dist of this checkout
    max_body_kb: int = Field(2048, ge=1, description="larger request bodies are refused (413)")
    rpc_timeout_s: float = Field(
        30.0, description="deadline of each call to a gRPC service (a restarting one is waited for)"
    )
    ready_file: str | None = None
    log_level: str = "INFO"
    tls_ca_file: Path | None = None  # CA of the gRPC services' certificates; set: TLS to them
    tls_server_name: str | None = None

    def tls_ca(self) -> bytes | None:
        return None if self.tls_ca_file is None else _read_file(self.tls_ca_file, "SAIM_TLS_CA_FILE")


class ClientSettings(BaseSettings):
    """What a client of running services needs (the `saim admin` commands, `saim drive`, the health check)."""

    model_config = ENV

    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None  # the admin token from a file (when SAIM_ADMIN_TOKEN is not set)
    tls_ca_file: Path | None = None  # CA that signed the servers' certificates; set: TLS
    tls_cert_file: Path | None = None  # the health check's fallback CA: a self-signed server certificate is its own
    tls_server_name: str | None = None
    grpc_port: int = 50051  # the health check's default target port on 127.0.0.1

    def token(self) -> str | None:
        if self.admin_token is not None:
            return self.admin_token.get_secret_value()
        if self.admin_token_file is not None:
            return _read_file(self.admin_token_file, "SAIM_ADMIN_TOKEN_FILE").decode().strip() or None
        return None

    def tls_ca(self, fall_back_to_cert: bool = False) -> bytes | None:
        """The CA to verify servers against; with `fall_back_to_cert`, the server's own certificate when no CA is
        set (the health check runs beside the server it checks)."""
        if self.tls_ca_file is not None:
            return _read_file(self.tls_ca_file, "SAIM_TLS_CA_FILE")
        if fall_back_to_cert and self.tls_cert_file is not None:
            return _read_file(self.tls_cert_file, "SAIM_TLS_CERT_FILE")
        return None


def load_settings() -> ServiceSettings:
    """Read the services' settings from the environment; a missing or malformed variable is a clear SaimError."""
    return _load(ServiceSettings, "service settings")


def load_gateway_settings() -> GatewaySettings:
    return _load(GatewaySettings, "gateway settings")


def load_storage_settings() -> StorageSettings:
    return _load(StorageSettings, "storage settings")


def load_client_settings() -> ClientSettings:
    return _load(ClientSettings, "client settings")


def _load(cls: type[BaseSettings], what: str):
    renamed = [f"{old} is now {new}" for old, new in RENAMED.items() if old in os.environ]
    if renamed:
        raise SaimError(f"invalid {what}: " + "; ".join(renamed))
    secrets_dir = os.environ.get("SAIM_SECRETS_DIR")
    if secrets_dir and not Path(secrets_dir).is_dir():
        raise SaimError(f"SAIM_SECRETS_DIR: {secrets_dir} is not a directory")
    try:
        return cls(_secrets_dir=secrets_dir) if secrets_dir else cls()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "SAIM_" + "__".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {'is required but not set' if err['type'] == 'missing' else err['msg']}")
        raise SaimError(f"invalid {what}: " + "; ".join(problems)) from None


def _read_file(path: Path, variable: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SaimError(f"{variable}: cannot read {path}: {exc.strerror}") from None
