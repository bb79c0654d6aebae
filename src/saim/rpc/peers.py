"""Clients a service holds of another saim service. A peer's refusal reaches our caller as the same domain error
(saim.rpc.errors.error_of); no answer at all is Unavailable."""

from __future__ import annotations

from typing import NamedTuple

import grpc

from saim.rpc.errors import error_of
from saim.v1 import selector_pb2, selector_pb2_grpc


class Lease(NamedTuple):
    iteration: int
    model_version: str  # the version whose scores chose the batch
    expires_at: float  # unix time (0: no selector to ask)


class LeaseChecker:
    """Asks the selector who holds a lease (the selector owns work distribution)."""

    def __init__(self, selector_channel: grpc.Channel | None):
        self._stub = None
        if selector_channel is not None:
            self._stub = selector_pb2_grpc.SelectorServiceStub(selector_channel)

    def check(self, case: str, lease_id: str, annotator: str) -> Lease:
        """A valid lease, renewed (activity): its iteration, the batch's model version, its new expiry."""
        if self._stub is None:
            return Lease(0, "", 0.0)
        try:
            reply = self._stub.CheckLease(
                selector_pb2.CheckLeaseRequest(case_id=case, lease_id=lease_id, annotator_id=annotator),
                timeout=10,
                wait_for_ready=True,  # a restarting selector: wait for it (up to the timeout) rather than fail fast
            )
        except grpc.RpcError as exc:
            raise error_of(exc, "selector could not check the lease") from None
        return Lease(reply.iteration, reply.model_version, reply.lease_expires_at)
