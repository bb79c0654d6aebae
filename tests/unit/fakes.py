"""Test doubles with the same interface as the real adapters."""

from __future__ import annotations

import json

from saim.errors import NotFound


class MemoryStore:
    """ObjectStore's interface over a dict (unit tier only; integration tests use a real S3 endpoint)."""

    def __init__(self, bucket: str = "test"):
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        self.objects[key] = bytes(data)

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
        self.objects.pop(key, None)

    def list(self, prefix):
        return sorted(k for k in self.objects if k.startswith(prefix))
