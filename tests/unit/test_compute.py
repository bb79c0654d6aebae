"""saim.model.compute: the tensor thread runs what it is handed, interactive work first, and returns or raises on the
caller's thread."""

import threading
import time

import pytest

from saim.model.compute import Inline, TensorThread


def test_interactive_work_goes_before_queued_background_work():
    compute = TensorThread(name="tensor")
    started, release, order = threading.Event(), threading.Event(), []

    def blocker():
        started.set()
        release.wait(10)

    def submit(name: str, background: bool) -> threading.Thread:
        queued = compute._queue.qsize()
        t = threading.Thread(target=lambda: compute.run(order.append, name, background=background))
        t.start()
        deadline = time.monotonic() + 10
        while compute._queue.qsize() == queued:  # queued before the next one is handed over
            assert time.monotonic() < deadline, f"{name} was never queued"
            time.sleep(0.001)
        return t

    holder = threading.Thread(target=lambda: compute.run(blocker, background=True))
    holder.start()
    assert started.wait(10)
    waiting = [submit("submit slices 0-3", True), submit("submit slices 4-7", True), submit("click", False)]
    release.set()
    for t in [holder, *waiting]:
        t.join(10)
    compute.close()
    assert order == ["click", "submit slices 0-3", "submit slices 4-7"]


def test_results_and_errors_come_back_to_the_caller_and_nested_work_runs_in_place():
    compute = TensorThread(1, name="tensor")
    assert compute.run(lambda a, b: (a + b, threading.current_thread().name), 2, 3) == (5, "tensor")
    with pytest.raises(ValueError, match="bad slice"):
        compute.run(lambda: (_ for _ in ()).throw(ValueError("bad slice")))
    nested = compute.run(lambda: compute.run(lambda: threading.current_thread().name, background=True))
    assert nested == "tensor"  # no deadlock: the tensor thread does not queue work for itself
    assert compute.run(lambda: "still serving") == "still serving"
    compute.close()
    assert Inline().run(lambda: threading.current_thread().name) == threading.current_thread().name


def test_work_that_can_wait_runs_once_the_clicks_pause():
    compute = TensorThread(1)
    try:
        compute.run(lambda: None)  # a click
        clicked = time.monotonic()
        compute.wait_quiet(0.3, stop=lambda: False)
        assert time.monotonic() - clicked >= 0.3  # never under the burst: only after the pause
        compute.run(lambda: None)
        started = time.monotonic()
        compute.wait_quiet(60.0, stop=lambda: time.monotonic() - started > 0.1)  # a closed session stops waiting
        assert time.monotonic() - started < 5.0
    finally:
        compute.close()


def test_work_that_can_wait_waits_while_a_scan_is_streamed_and_a_pause_after():
    compute = TensorThread(1)
    waited: list[float] = []
    try:
        with compute.interactive():  # a page's case opening: no tensor work, the replica busy all the same
            started = time.monotonic()
            waiter = threading.Thread(target=lambda: waited.append(compute.wait_quiet(0.2, lambda: False) or 0.0))
            waiter.start()
            time.sleep(0.5)
            assert not waited  # still streaming: the background work has not begun
            streamed = time.monotonic()
        waiter.join(10)
        assert waited and time.monotonic() - streamed >= 0.2 and streamed - started >= 0.5
    finally:
        compute.close()
    with Inline().interactive():
        Inline().wait_quiet(60.0, lambda: False)  # one-thread programs never wait


def test_work_handed_to_a_stopped_tensor_thread_fails_instead_of_waiting_forever():
    compute = TensorThread(1)
    compute.close()
    with pytest.raises(RuntimeError, match="tensor thread has stopped"):
        compute.run(lambda: 1)
