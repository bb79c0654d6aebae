"""Test doubles with the same interface as the real adapters."""

from __future__ import annotations

import hashlib
import json

from saim.errors import Conflict, NotFound


class MemoryStore:
    """ObjectStore's interface over a dict, versioned like the real bucket: every write is a new version, a delete
    adds a marker and keeps the versions, purge removes them (unit tier only; integration tests use a real S3
    endpoint). `objects` is the current view; `versions[key]` every version, oldest first, None for a marker."""

    def __init__(self, bucket: str = "test"):
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.versions: dict[str, list[bytes | None]] = {}

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        self.objects[key] = bytes(data)
        self.versions.setdefault(key, []).append(self.objects[key])

    def get_bytes(self, key):
        if key not in self.objects:
            raise NotFound(f"object {key!r} not found")
        return self.objects[key]

    def put_json(self, key, value):
        self.put_bytes(key, json.dumps(value).encode())

    def get_json(self, key):
        return json.loads(self.get_bytes(key))

    def exists(self, key):
        return key in self.objects

    def delete(self, key):
        if self.objects.pop(key, None) is not None:
            self.versions[key].append(None)

    def versions_of(self, key):
        return [f"{key}#{i}" for i, v in reversed(list(enumerate(self.versions.get(key, [])))) if v is not None]

    def purge(self, key, keep_latest=False):
        kept = [self.versions[key][-1]] if keep_latest and self.versions.get(key) else []
        self.versions.pop(key, None)
        if kept and kept[0] is not None:
            self.versions[key] = kept
        elif key in self.objects and not keep_latest:
            del self.objects[key]

    def purge_prefix(self, prefix):
        for key in [k for k in self.versions if k.startswith(prefix)]:
            self.versions.pop(key)
            self.objects.pop(key, None)

    def rewrite_json(self, key, value):
        self.put_json(key, value)
        self.purge(key, keep_latest=True)

    def stored_versions(self, prefix: str = "") -> int:
        """Versions and delete markers under `prefix`: what the bucket keeps (and bills)."""
        return sum(len(v) for k, v in self.versions.items() if k.startswith(prefix))

    def list(self, prefix):
        return sorted(k for k in self.objects if k.startswith(prefix))

    # conditional writes, as S3's If-Match / If-None-Match (the ETag of a plain upload is the MD5 of its bytes)
    def etag(self, key):
        return hashlib.md5(self.objects[key]).hexdigest() if key in self.objects else None

    def etags(self, prefix):
        return {k: self.etag(k) for k in self.list(prefix)}

    def get_tagged(self, key):
        return self.get_bytes(key), self.etag(key)

    def put_if(self, key, data, etag, content_type="application/octet-stream"):
        if self.etag(key) != etag:
            raise Conflict(f"{key} was changed by another writer")
        self.put_bytes(key, data, content_type)
        return self.etag(key)
