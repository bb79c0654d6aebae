"""Every replica of a service, and which one serves a key: rendezvous hashing.

The gateways send all calls of one annotation session to the same annotator replica while it is up, and every
gateway picks the same one, with nothing shared between them: each ranks the replicas by a hash of (key, address)
and takes the first that answers. A replica that goes away moves only its own sessions, each to its next-ranked
replica (which rebuilds it from storage); one that comes back takes them back. Per-call round robin would instead
make every replica load every open session's scan (memory and background prediction on each of them).

Addresses come from the target: `ipv4:HOST:PORT,HOST:PORT` as given, or the addresses a DNS name resolves to
(`dns:///saim-annotator-pods:50051`, a headless Service: one per ready pod), resolved again every `refresh_s`.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable

import grpc

log = logging.getLogger(__name__)


def rank(key: str, addresses: list[str]) -> list[str]:
    """The addresses in the order `key` tries them: the same order on every gateway."""
    score = {a: hashlib.sha256(f"{key}|{a}".encode()).digest() for a in addresses}
    return sorted(addresses, key=score.__getitem__, reverse=True)


def resolve(target: str) -> list[str]:
    """HOST:PORT of every address the target names (sorted); [] when a name does not resolve now."""
    if target.startswith("ipv4:"):
        return sorted(target[len("ipv4:") :].split(","))
    name = target.removeprefix("dns:///").removeprefix("dns:")
    host, _, port = name.rpartition(":")
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (socket.gaierror, ValueError) as exc:
        log.warning("%s does not resolve (%s)", target, exc)
        return []
    ips = {str(info[4][0]) for info in found}
    return sorted(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in ips)


class Replicas:
    """Channels to every replica the target names; `ranked(key)` in the key's order."""

    def __init__(
        self,
        target: str,
        connect: Callable[[str], grpc.Channel],
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.target, self.connect, self.refresh_s, self.clock = target, connect, refresh_s, clock
        self._channels: dict[str, grpc.Channel] = {}
        self._resolved_at: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def single(cls, channel: grpc.Channel) -> Replicas:
        """One channel as it is (a client that balances by other means, or a test)."""
        replicas = cls("", lambda address: channel, refresh_s=float("inf"))
        replicas._channels, replicas._resolved_at = {"": channel}, 0.0
        return replicas

    def ranked(self, key: str) -> list[grpc.Channel]:
        with self._lock:
            now = self.clock()
            if self._resolved_at is None or now - self._resolved_at >= self.refresh_s:
                self._refresh()
                self._resolved_at = now
            return [self._channels[a] for a in rank(key, list(self._channels))]

    def _refresh(self) -> None:
        addresses = resolve(self.target)
        if not addresses:  # keep what was known; with nothing known, let gRPC resolve the name itself
            addresses = list(self._channels) or [self.target]
        for gone in set(self._channels) - set(addresses):
            self._channels.pop(gone).close()
        for address in addresses:
            if address not in self._channels:
                self._channels[address] = self.connect(address)

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
