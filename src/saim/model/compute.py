"""Where a process's tensor work runs: `Inline` (the caller's thread) or `TensorThread` (one thread for all of it).

Why a service needs `TensorThread`: torch's CPU kernels run on libgomp, which keeps one OpenMP thread team for every
thread that has entered a parallel region. Once a process holds more OpenMP threads than the machine has cores,
libgomp stops spin-waiting between parallel regions and every region pays a sleep and a wake-up. A gRPC server runs
each request on one of its pool threads, so the annotator's forwards ran on a second (third, ...) team and paid that
cost on every forward (docs/benchmarks.md, "Why the code is as it is"). With every tensor operation of the process
on one thread there is one team, and a request thread only hands over a closure and waits.

One thread serialises the work, so it is ordered: interactive work (a click, the slice on screen) before background
work (the untouched slices at submit, a new series, a model version to load). Background work comes in pieces short
enough that a click waits for at most one of them. A closure must not wait for a lock held by its caller's thread
(the caller is blocked on the closure): pass it the arrays it needs.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

T = TypeVar("T")

INTERACTIVE, BACKGROUND = 0, 1


class Compute(Protocol):
    def run(self, fn: Callable[..., T], *args, background: bool = False) -> T: ...

    def wait_quiet(self, quiet_s: float, stop: Callable[[], bool]) -> None: ...

    def interactive(self) -> AbstractContextManager[None]: ...


class Inline:
    """Runs the work on the caller's thread (one-thread programs: the emulation, the tests, the CLI)."""

    def run(self, fn: Callable[..., T], *args, background: bool = False) -> T:
        return fn(*args)

    def wait_quiet(self, quiet_s: float, stop: Callable[[], bool]) -> None:
        return None

    def interactive(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


class TensorThread:
    """One daemon thread that runs every tensor operation handed to it, interactive work first (FIFO within a
    priority). `run` returns the result or raises the exception of the work, on the caller's thread."""

    def __init__(self, torch_threads: int | None = None, name: str = "tensor"):
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._torch_threads = torch_threads
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._last_interactive = 0.0  # monotonic time interactive work last came in or finished
        self._serving = 0  # interactive work in progress that is not tensor work (interactive())
        self._serving_lock = threading.Lock()
        self._thread.start()

    def run(self, fn: Callable[..., T], *args, background: bool = False) -> T:
        if threading.current_thread() is self._thread:  # work that hands over more work runs it in place
            return fn(*args)
        future: Future = Future()
        if not background:
            self._last_interactive = time.monotonic()
        self._queue.put((BACKGROUND if background else INTERACTIVE, next(self._order), fn, args, future))
        try:
            while True:
                try:
                    return future.result(timeout=1.0)
                except TimeoutError:  # still running, or handed to a thread that has stopped: then it never will
                    if not self._thread.is_alive() and not future.done():
                        raise RuntimeError("the tensor thread has stopped: the work was not run") from None
        finally:
            if not background:
                self._last_interactive = time.monotonic()

    def wait_quiet(self, quiet_s: float, stop: Callable[[], bool]) -> None:
        """Wait until no interactive work has come in or run for `quiet_s` (or `stop()`): work that can wait, such as
        predicting slices ahead, then runs in a person's pauses instead of under their clicks (a piece in flight is
        not interrupted: a click that arrives meanwhile waits for it)."""
        while not stop():
            idle = time.monotonic() - self._last_interactive
            if idle >= quiet_s and not self._serving:
                return
            time.sleep(0.05 if self._serving else min(quiet_s - idle, 0.05))  # short steps: stop() is asked again

    @contextlib.contextmanager
    def interactive(self) -> Iterator[None]:
        """Mark interactive work that is not tensor work (a scan streamed to a page: reading, compressing): work
        that waits for quiet (`wait_quiet`) waits while it runs and `quiet_s` after it, as after a click."""
        with self._serving_lock:
            self._serving += 1
        try:
            yield
        finally:
            with self._serving_lock:
                self._serving -= 1
            self._last_interactive = time.monotonic()

    def close(self) -> None:
        self._queue.put((BACKGROUND + 1, next(self._order), None, (), None))
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)
        while True:
            _, _, fn, args, future = self._queue.get()
            if fn is None:
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # the caller re-raises it
                future.set_exception(exc)
