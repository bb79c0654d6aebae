"""Which annotator replica serves a session: the same on every gateway, and only the sessions of a replica that goes
move (saim.rpc.replicas)."""

from saim.rpc import replicas
from saim.rpc.replicas import Replicas, rank, resolve

ADDRESSES = [f"10.0.0.{n}:50051" for n in range(1, 5)]
KEYS = [f"{n:032x}" for n in range(400)]


def test_every_gateway_ranks_the_same_and_a_lost_replica_moves_only_its_own_sessions():
    first = {key: rank(key, ADDRESSES)[0] for key in KEYS}
    assert first == {key: rank(key, list(reversed(ADDRESSES)))[0] for key in KEYS}  # order of discovery: no matter
    assert all(sum(a == b for b in first.values()) > 50 for a in ADDRESSES)  # each replica gets a share
    gone = ADDRESSES[0]
    after = {key: rank(key, ADDRESSES[1:])[0] for key in KEYS}
    moved = {key for key in KEYS if after[key] != first[key]}
    assert moved == {key for key in KEYS if first[key] == gone}  # nobody else's session moves
    assert all(after[key] == rank(key, ADDRESSES)[1] for key in moved)  # each to its next-ranked replica


def test_targets_resolve_to_every_address():
    assert resolve("ipv4:127.0.0.1:2,127.0.0.1:1") == ["127.0.0.1:1", "127.0.0.1:2"]
    assert "127.0.0.1:50051" in resolve("dns:///localhost:50051")
    assert resolve("dns:///no-such-host.invalid:50051") == []


class _Channel:
    def __init__(self, address):
        self.address, self.closed = address, False

    def close(self):
        self.closed = True


def test_addresses_are_resolved_again_and_a_failed_resolution_keeps_the_known_ones(monkeypatch):
    now = [0.0]
    found = {"addresses": ADDRESSES[:2]}
    monkeypatch.setattr(replicas, "resolve", lambda target: list(found["addresses"]))
    pool = Replicas("dns:///annotator-pods:50051", _Channel, refresh_s=10, clock=lambda: now[0])
    first = pool.ranked("s")
    assert sorted(c.address for c in first) == ADDRESSES[:2]
    found["addresses"] = ADDRESSES[1:3]  # a pod went, another came
    assert pool.ranked("s") == first  # not before refresh_s
    now[0] = 10
    again = pool.ranked("s")
    assert sorted(c.address for c in again) == ADDRESSES[1:3]
    assert [c.closed for c in first if c.address == ADDRESSES[0]] == [True]
    found["addresses"] = []  # DNS fails for a moment: the replicas known stay
    now[0] = 20
    assert pool.ranked("s") == again
