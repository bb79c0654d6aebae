"""Domain exceptions. Services map them to gRPC status codes in exactly one place (saim.rpc.errors)."""


class SaimError(Exception):
    """Base class of every error saim raises on purpose."""


class InvalidInput(SaimError):
    """The caller sent something malformed (bad click, bad image, bad dataset)."""


class DatasetError(InvalidInput):
    """A dataset on disk violates the nnU-Net raw layout; the message names the offending file."""


class NotFound(SaimError):
    """An unknown case, session, or model version."""


class FailedPrecondition(SaimError):
    """The request is valid but the system is not in a state to serve it (no model yet, expired lease)."""


class TooLarge(SaimError):
    """Input exceeds a configured size cap."""


class Unauthenticated(SaimError):
    """No or bad credentials."""


class PermissionDenied(SaimError):
    """Valid credentials, but not allowed to do this."""


class Conflict(SaimError):
    """Someone else changed the object first (a conditional write lost): read it again, then retry."""


class Unavailable(SaimError):
    """A dependency (storage, broker, another service) cannot be reached right now; retry later."""
