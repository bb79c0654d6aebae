"""Typed settings of the services, read from SAIM_* environment variables (the same names in `saim up`,
docker compose and the Kubernetes ConfigMap/Secret).

Secrets (S3 secret key, admin and service tokens) are `SecretStr`: they print as '**********' in any repr or log.
Each can also come from a file: set SAIM_SECRETS_DIR to a directory holding files named like the variable in lower
case (`saim_s3_secret_key`, `saim_admin_token`, `saim_service_token`) -- a Kubernetes Secret volume or Docker
secrets. An environment variable wins over a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from saim.config import ModelConfig, TrainConfig
from saim.errors import SaimError
from saim.storage import S3Config


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAIM_", extra="ignore")

    # infrastructure (required: no silent defaults pointing at nowhere)
    kafka_bootstrap: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: SecretStr
    s3_bucket: str = "saim"
    s3_secure: bool = False
    s3_region: str | None = None

    # this process
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0  # 0: pick a free port (tests); deployments set 50051..
    metrics_port: int | None = None  # None: no Prometheus endpoint; 0: pick a free port
    torch_threads: int = 1
    device: str = "cpu"
    instance_id: str = ""  # distinguishes annotator replicas (broadcast consumer group); default: host+pid
    ready_file: str | None = None  # written with "host:grpc_port metrics_port" once serving (used by `saim up`)

    # the SAIM loop
    image_size: int = 64
    max_slices: int = 8
    batch_size: int = 3  # series per iteration
    max_iterations: int = 3
    selection: str = "entropy"
    epochs: int = 12
    finetune_epochs: int = 6
    steps_per_epoch: int = 25
    train_batch_size: int = 8
    lr: float = 2e-3
    train_mode: str = "finetune"
    encoder: str = "resnet34"
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

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    def tls_server_credentials(self) -> tuple[bytes, bytes] | None:
        """(key, cert chain) PEM bytes when TLS is configured; a half-configured pair is an error."""
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SaimError("TLS needs both SAIM_TLS_CERT_FILE and SAIM_TLS_KEY_FILE")
        if self.tls_cert_file is None:
            return None
        return _read_file(self.tls_key_file, "SAIM_TLS_KEY_FILE"), _read_file(self.tls_cert_file, "SAIM_TLS_CERT_FILE")

    def tls_ca(self) -> bytes | None:
        return None if self.tls_ca_file is None else _read_file(self.tls_ca_file, "SAIM_TLS_CA_FILE")

    def s3(self) -> S3Config:
        return S3Config(
            self.s3_endpoint,
            self.s3_access_key,
            self.s3_secret_key.get_secret_value(),
            self.s3_bucket,
            self.s3_secure,
            self.s3_region,
        )

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            finetune_epochs=self.finetune_epochs,
            steps_per_epoch=self.steps_per_epoch,
            batch_size=self.train_batch_size,
            lr=self.lr,
            mode=self.train_mode,
            seed=seed,
            device=self.device,
        )

    def predictor_config(self, classes: tuple[str, ...]) -> ModelConfig:
        return ModelConfig(classes=classes, image_size=self.image_size, encoder=self.encoder)


def load_settings() -> ServiceSettings:
    """Read settings from the environment; a missing or malformed variable is a clear SaimError."""
    secrets_dir = os.environ.get("SAIM_SECRETS_DIR")
    if secrets_dir and not Path(secrets_dir).is_dir():
        raise SaimError(f"SAIM_SECRETS_DIR: {secrets_dir} is not a directory")
    try:
        return ServiceSettings(_secrets_dir=secrets_dir) if secrets_dir else ServiceSettings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "SAIM_" + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {'is required but not set' if err['type'] == 'missing' else err['msg']}")
        raise SaimError("invalid service settings: " + "; ".join(problems)) from None


def _read_file(path: Path, variable: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SaimError(f"{variable}: cannot read {path}: {exc.strerror}") from None
