"""The embedded stack's ports: drawn where an outgoing connection cannot take them before the service binds them."""

import socket

import pytest

from saim.errors import SaimError
from saim.stack import local
from saim.stack.local import ephemeral_range, free_port


def test_ports_are_drawn_outside_the_ephemeral_range_and_never_twice(monkeypatch):
    monkeypatch.setattr(local, "_given", set())
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= p < low or high < p <= 65535 for p in ports)


def test_a_port_something_listens_on_is_passed_over(monkeypatch):
    """With two ports left outside the range and a listener on one, the other is given, and then none is left."""
    monkeypatch.setattr(local, "_given", set())
    narrow = (10000, 65533)  # leaves 65534 and 65535
    with socket.socket() as listener:
        try:
            listener.bind(("127.0.0.1", 65534))
        except OSError:
            pytest.skip("port 65534 is taken on this machine")
        listener.listen()
        assert free_port(narrow) == 65535
        with pytest.raises(SaimError, match="no free port"):
            free_port(narrow)


def test_the_range_is_read_from_the_kernel_or_defaults(tmp_path):
    path = tmp_path / "ip_local_port_range"
    path.write_text("20000\t40000\n")
    assert ephemeral_range(path) == (20000, 40000)
    assert ephemeral_range(tmp_path / "absent") == local.EPHEMERAL_DEFAULT
