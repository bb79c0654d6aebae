"""Object storage (S3 API via the minio client): the system of record.

Bucket layout (keys are the contract between services):
  dataset/dataset.json, dataset/splits.json           the imported dataset and its fixed splits
  dataset/imagesTr/{case}_0000.nii.gz                 every series (pool included)
  dataset/labelsTr/{case}.nii.gz                      ground truth, only for the initial/val/test splits
  annotations/{case}.nii.gz, annotations/{case}.json  SAIM annotation (label map at model resolution) + provenance
  models/{version}/weights.safetensors, .../metadata.json, models/CURRENT    the model registry
  scores/{version}.json                               selection scores, stamped with the version that made them
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import ENABLED
from minio.error import S3Error
from minio.versioningconfig import VersioningConfig

from saim.errors import NotFound, Unavailable
from saim.model.predictor import InteractivePredictor


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # host:port
    access_key: str
    secret_key: str
    bucket: str = "saim"
    secure: bool = False
    region: str | None = None


@contextlib.contextmanager
def _reachable(what: str):
    """An endpoint that cannot be reached (refused, reset, timed out) is Unavailable: callers retry, gRPC says
    UNAVAILABLE. S3 errors with a code (NoSuchKey, AccessDenied, ...) pass through."""
    try:
        yield
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise Unavailable(f"object storage unreachable during {what}: {type(exc).__name__}") from None


def http_client(secure: bool) -> urllib3.PoolManager:
    """minio's own default waits 5 minutes to connect; an outage must surface in seconds, not stall a request."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=20),  # read: per socket read, not per object
        maxsize=16,
        cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class ObjectStore:
    """Thin, typed wrapper over one bucket."""

    def __init__(self, client: Minio, bucket: str):
        self.client = client
        self.bucket = bucket

    @classmethod
    def connect(cls, cfg: S3Config) -> ObjectStore:
        client = Minio(
            cfg.endpoint,
            access_key=cfg.access_key,
            secret_key=cfg.secret_key,
            secure=cfg.secure,
            region=cfg.region,
            http_client=http_client(cfg.secure),
        )
        return cls(client, cfg.bucket)

    def ensure_bucket(self, versioning: bool = True) -> None:
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        if versioning:
            self.client.set_bucket_versioning(self.bucket, VersioningConfig(ENABLED))

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with _reachable(f"put {key}"):
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        with _reachable(f"get {key}"):
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject"):
                    raise NotFound(f"object {key!r} not found in bucket {self.bucket!r}") from exc
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def put_json(self, key: str, value) -> None:
        self.put_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode(), "application/json")

    def get_json(self, key: str):
        return json.loads(self.get_bytes(key))

    def exists(self, key: str) -> bool:
        with _reachable(f"stat {key}"):
            try:
                self.client.stat_object(self.bucket, key)
                return True
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return False
                raise

    def list(self, prefix: str) -> list[str]:
        with _reachable(f"list {prefix}"):
            objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return sorted(o.object_name for o in objects)

    def versions_of(self, key: str) -> list[str]:
        """Version ids of one key, newest first (the bucket is versioned: every write of a key is kept)."""
        with _reachable(f"list versions of {key}"):
            objects = self.client.list_objects(self.bucket, prefix=key, include_version=True)
            return [o.version_id for o in objects if o.object_name == key and not o.is_delete_marker]

    def get_version(self, key: str, version_id: str) -> bytes:
        with _reachable(f"get {key}@{version_id}"):
            response = self.client.get_object(self.bucket, key, version_id=version_id)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()


class ModelRegistry:
    """Immutable model versions: weights + self-describing metadata under their own keys, and a small CURRENT
    pointer written last, so a reader following the pointer never sees a half-written model."""

    PREFIX = "models/"
    POINTER = "models/CURRENT"

    def __init__(self, store: ObjectStore):
        self.store = store

    def weights_key(self, version: str) -> str:
        return f"{self.PREFIX}{version}/weights.safetensors"

    def metadata_key(self, version: str) -> str:
        return f"{self.PREFIX}{version}/metadata.json"

    def versions(self) -> list[str]:
        return sorted(
            {k[len(self.PREFIX) :].split("/")[0] for k in self.store.list(self.PREFIX) if k.endswith("/metadata.json")}
        )

    def next_version(self) -> str:
        numbers = [int(v[1:]) for v in self.versions() if v[1:].isdigit()]
        return f"v{max(numbers, default=-1) + 1:04d}"

    def publish(self, predictor: InteractivePredictor, make_current: bool = True, **metadata) -> dict:
        """Write weights, then metadata (with the weights' sha256), then (optionally) the pointer."""
        version = metadata.pop("version", None) or self.next_version()
        weights = predictor.to_bytes()
        meta = predictor.describe(
            version=version,
            weights_sha256=hashlib.sha256(weights).hexdigest(),
            created_at=datetime.now(UTC).isoformat(),
            **metadata,
        )
        self.store.put_bytes(self.weights_key(version), weights)
        self.store.put_json(self.metadata_key(version), meta)
        if make_current:
            self.set_current(version)
        return meta

    def status_key(self, version: str) -> str:
        return f"{self.PREFIX}{version}/status.json"

    def mark(self, version: str, status: str, reason: str) -> None:
        """Record the promotion decision beside the immutable weights and metadata."""
        self.store.put_json(
            self.status_key(version),
            {"status": status, "reason": reason, "decided_at": datetime.now(UTC).isoformat()},
        )

    def status(self, version: str) -> str:
        try:
            return self.store.get_json(self.status_key(version))["status"]
        except NotFound:
            return "promoted" if version == self.current_version() else "unknown"

    def set_current(self, version: str) -> None:
        if not self.store.exists(self.metadata_key(version)):
            raise NotFound(f"model version {version!r} is not in the registry")
        self.store.put_json(self.POINTER, {"version": version, "updated_at": datetime.now(UTC).isoformat()})

    def current_version(self) -> str | None:
        try:
            return self.store.get_json(self.POINTER)["version"]
        except NotFound:
            return None

    def metadata(self, version: str) -> dict:
        return self.store.get_json(self.metadata_key(version))

    def load(self, version: str, device: str = "cpu") -> InteractivePredictor:
        meta = self.metadata(version)
        weights = self.store.get_bytes(self.weights_key(version))
        if hashlib.sha256(weights).hexdigest() != meta.get("weights_sha256"):
            raise NotFound(f"model version {version!r}: weights do not match their recorded sha256")
        return InteractivePredictor.from_bytes(weights, meta, device=device)
