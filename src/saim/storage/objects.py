"""Object storage (S3 API via the minio client): the system of record.

Bucket layout (keys are the contract between services):
  dataset/dataset.json, dataset/splits.json           the imported dataset and its fixed splits
  dataset/imagesTr/{case}_0000.nii.gz                 every series (pool included)
  dataset/labelsTr/{case}.nii.gz                      ground truth, only for the initial/val/test splits
  annotations/{case}.nii.gz, annotations/{case}.json  SAIM annotation (label map at model resolution) + provenance
  models/{version}/weights.safetensors, .../metadata.json, .../status.json, models/CURRENT    the model registry
  scores/{version}.json                               selection scores, stamped with the version that made them"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
from dataclasses import dataclass

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import ENABLED
from minio.error import S3Error
from minio.versioningconfig import VersioningConfig

from saim.errors import Conflict, NotFound, Unavailable


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # host:port
    access_key: str
    secret_key: str
    bucket: str = "saim"
    secure: bool = False
    region: str | None = None


def _unquoted(etag: str | None) -> str:
    return (etag or "").strip('"')


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

    def __init__(self, client: Minio, bucket: str, config: S3Config | None = None):
        self.client = client
        self.bucket = bucket
        self.config = config  # how it was reached (another process, e.g. a torchrun rank, connects the same way)

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
        return cls(client, cfg.bucket, cfg)

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
        return self.get_tagged(key)[0]

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

    def delete(self, key: str) -> None:
        """Remove a key (a delete marker in a versioned bucket: earlier versions stay)."""
        with _reachable(f"delete {key}"):
            self.client.remove_object(self.bucket, key)

    def versions_of(self, key: str) -> builtins.list[str]:
        """Version ids of one key, newest first (the bucket is versioned: every write of a key is kept)."""
        with _reachable(f"list versions of {key}"):
            objects = self.client.list_objects(self.bucket, prefix=key, include_version=True)
            return [o.version_id for o in objects if o.object_name == key and not o.is_delete_marker]

    def purge(self, key: str, keep_latest: bool = False) -> None:
        """Remove a key's stored versions and delete markers (scratch data in a versioned bucket, such as training
        checkpoints, must not pile up as old versions); with `keep_latest`, all but the newest version."""
        with _reachable(f"purge {key}"):
            for o in list(self.client.list_objects(self.bucket, prefix=key, include_version=True)):
                latest = str(o.is_latest).lower() == "true"  # the S3 listing's IsLatest, as text
                if o.object_name == key and not (keep_latest and latest):
                    self.client.remove_object(self.bucket, key, version_id=o.version_id)

    def purge_prefix(self, prefix: str) -> None:
        """Remove every version and delete marker of every key under `prefix`: scratch data that is done with (a
        discarded draft) leaves nothing behind, where a delete would keep every version under a marker."""
        with _reachable(f"purge {prefix}"):
            found = self.client.list_objects(self.bucket, prefix=prefix, recursive=True, include_version=True)
            for o in list(found):
                self.client.remove_object(self.bucket, o.object_name, version_id=o.version_id)

    def rewrite_json(self, key: str, value) -> None:
        """A document rewritten in place (loop state, score tables): the new version is written, then the older
        ones are purged, so a crash in between leaves the new one and the bucket keeps one version, not every one."""
        self.put_json(key, value)
        self.purge(key, keep_latest=True)

    # ---- conditional writes: several writers of one key (annotator replicas, selector candidates) -------------------
    def etag(self, key: str) -> str | None:
        """The key's current ETag (None: absent): what `put_if` compares against."""
        with _reachable(f"stat {key}"):
            try:
                return _unquoted(self.client.stat_object(self.bucket, key).etag)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                    return None
                raise

    def etags(self, prefix: str) -> dict[str, str]:
        """Every key under `prefix` with its current ETag (one listing)."""
        with _reachable(f"list {prefix}"):
            found = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return {o.object_name: _unquoted(o.etag) for o in found}

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The key's bytes and the ETag of exactly those bytes."""
        with _reachable(f"get {key}"):
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject"):
                    raise NotFound(f"object {key!r} not found in bucket {self.bucket!r}") from exc
                raise
            try:
                return response.read(), _unquoted(response.headers.get("etag"))
            finally:
                response.close()
                response.release_conn()

    def put_if(self, key: str, data: bytes, etag: str | None, content_type: str = "application/octet-stream") -> str:
        """Write `key` only if it is still what the caller last saw: its ETag is `etag`, or (None) it does not exist
        (S3 conditional writes, If-Match / If-None-Match; MinIO and AWS both honour them). Returns the new ETag;
        Conflict when another writer came first."""
        condition = {"If-Match": f'"{etag}"'} if etag else {"If-None-Match": "*"}
        with _reachable(f"put {key}"):
            try:
                result = self.client._put_object(  # the public put_object turns extra headers into user metadata
                    self.bucket, key, data, headers={"Content-Type": content_type, **condition}
                )
            except S3Error as exc:  # 412; an If-Match on a key deleted meanwhile is NoSuchKey
                if exc.code in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"):
                    raise Conflict(f"{key} was changed by another writer") from None
                raise
            return _unquoted(result.etag)

    def get_version(self, key: str, version_id: str) -> bytes:
        with _reachable(f"get {key}@{version_id}"):
            response = self.client.get_object(self.bucket, key, version_id=version_id)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
