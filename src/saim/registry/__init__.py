"""The model registry: immutable versions (weights + self-describing metadata + the gate's decision) in object
storage, their lifecycle, and the live model a service serves and hot-reloads. Services use these names only."""

from saim.registry.live import LiveModel, ServedModel
from saim.registry.versions import ModelMetadata, ModelRegistry, VersionStatus, version_name, version_number

__all__ = [
    "LiveModel",
    "ModelMetadata",
    "ModelRegistry",
    "ServedModel",
    "VersionStatus",
    "version_name",
    "version_number",
]
