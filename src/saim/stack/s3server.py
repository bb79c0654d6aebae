"""The S3 stand-in of the local stack and the tests: moto's server, with one fix so that listing versions costs what
it costs on S3 or MinIO.

moto 5.2's `ListObjectVersions` deep-copies every version of every object in the bucket before it applies the
prefix, and a copy of an object re-reads and re-writes its whole value (through a temporary file above 5 MB). With
model weights in the bucket (every version kept) one listing of a single small key grew with everything stored, past
the clients' timeouts, which they rightly report as storage unreachable. Here the listing
sees only the keys under the requested prefix; its answer is the same, key for key.

Run as `python -m saim.stack.s3server -H 127.0.0.1 -p PORT` (moto_server's arguments).
"""

from __future__ import annotations

import copy


def _prefix_only_listing() -> None:
    from moto.s3.models import S3Backend
    from moto.s3.utils import _VersionedKeyStore

    listing = S3Backend.list_object_versions

    class _OneBucket:
        def __init__(self, bucket):
            self._bucket = bucket

        def get_bucket(self, _name):
            return self._bucket

    def list_object_versions(self, bucket_name, delimiter=None, key_marker=None, max_keys=1000, prefix="", **kw):
        bucket = self.get_bucket(bucket_name)  # NoSuchBucket as before
        view = copy.copy(bucket)  # a FakeBucket has no finaliser: the shallow copy shares, never disposes
        view.keys = _VersionedKeyStore()
        for name, versions in list(dict.items(bucket.keys)):  # one C-level snapshot, safe against writers
            if name.startswith(prefix or ""):
                dict.__setitem__(view.keys, name, list(versions))
        return listing(_OneBucket(view), bucket_name, delimiter, key_marker, max_keys, prefix, **kw)  # type: ignore[arg-type]

    # a patch of moto's backend (see above): its stubs cannot know it
    S3Backend.list_object_versions = list_object_versions  # type: ignore[method-assign,assignment]


def main() -> None:
    _prefix_only_listing()
    from moto.server import main as moto_main

    moto_main()


if __name__ == "__main__":
    main()
