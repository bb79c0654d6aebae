"""The selectors' leader lease and the fencing of the leader's state (saim.selection.leader, saim.selection.loop)."""

from __future__ import annotations

from saim.selection.leader import LEADER_KEY, LeaderLease
from tests.unit.fakes import MemoryStore


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_candidate_leads_and_a_standby_takes_over_when_the_term_runs_out():
    store, clock = MemoryStore(), Clock()
    a = LeaderLease(store, "a", "10.0.0.1:50051", 15.0, clock)
    b = LeaderLease(store, "b", "10.0.0.2:50051", 15.0, clock)
    assert a.acquire() and not b.acquire()
    assert b.leader().holder == "a" and b.leader().address == "10.0.0.1:50051"
    clock.now += 10
    assert a.renew() and not b.acquire()  # renewed: the term runs from now
    clock.now += 14
    assert not b.acquire()
    clock.now += 2  # a died: no renewal for a whole term
    assert b.leader() is None and b.acquire()
    assert not a.renew()  # a comes back: it must stop leading
    assert not a.acquire() and a.leader().holder == "b"
    assert len(store.versions[LEADER_KEY]) == 1  # one version of the record, not one per renewal


def test_two_candidates_racing_for_an_expired_lease_one_wins():
    store, clock = MemoryStore(), Clock()
    LeaderLease(store, "old", "x:1", 5.0, clock).acquire()
    clock.now += 6
    a = LeaderLease(store, "a", "a:1", 5.0, clock)
    b = LeaderLease(store, "b", "b:1", 5.0, clock)
    # both read the expired record, then write: the second write's If-Match no longer holds
    _, etag = store.get_tagged(LEADER_KEY)
    assert a._write(etag, clock.now + 5)
    assert not b._write(etag, clock.now + 5)
    assert LeaderLease(store, "c", "c:1", 5.0, clock).leader().holder == "a"


def test_a_released_lease_is_taken_at_once():
    store, clock = MemoryStore(), Clock()
    a = LeaderLease(store, "a", "a:1", 15.0, clock)
    b = LeaderLease(store, "b", "b:1", 15.0, clock)
    assert a.acquire()
    a.release()
    assert b.acquire() and b.leader().holder == "b"
