"""Background threads beside the training loop, joined to it by a bounded queue, and sure to stop.

Two ways to use them, one lifecycle:

- ``Producer``: one thread runs an iterator and queues its items, ahead of the caller who iterates the
  producer (word2vec's batches made in advance);
- ``Workers``: threads apply a function to what the caller ``submit``s, while the caller goes on
  (word2vec's updates applied beside Lightning's loop); ``drain`` waits for them and returns the results.

torch releases the GIL in its operations, so the threads really run beside the caller (a worker
*process* would have to pickle every batch). An error in a thread is raised in the caller's thread, at
its next call. ``stop()``, the object's collection, or the interpreter's exit (``weakref.finalize``)
stops the threads and waits for them: a daemon thread cut off inside a torch operation at exit aborts
the process ("terminate called without an active exception").
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from queue import Empty, Full, Queue
from typing import Any

_DONE = object()  # the end of a producer's items, or a worker's signal to stop


class _QueueThreads:
    """Threads and the bounded queue between them and the caller; an error slot; a stop that always runs."""

    def __init__(self, targets: list[Callable[[], None]], depth: int, name: str) -> None:
        self.queue: Queue = Queue(maxsize=max(depth, 1))
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._guarded(target), name=f"{name}-{i}", daemon=True)
            for i, target in enumerate(targets)
        ]
        for thread in self._threads:
            thread.start()
        self._finalizer = weakref.finalize(self, _stop, self._stopping, self.queue, self._threads)

    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as error:  # handed to the caller's thread
                self._error = error
                self._offer(_DONE)

        return run

    def _offer(self, item: object) -> bool:
        """Queue ``item``, waiting for room unless the threads are being stopped; False if they are."""
        while not self._stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def stop(self) -> None:
        """Stop the threads (each ends its item in progress first) and wait for them; once."""
        self._finalizer()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the threads to end by themselves (a producer's, once it has queued every item)."""
        for thread in self._threads:
            thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether any of the threads still runs."""
        return any(thread.is_alive() for thread in self._threads)


def _stop(stopping: threading.Event, queue: Queue, threads: list[threading.Thread]) -> None:
    stopping.set()
    for _ in threads:  # wakes a worker waiting for an item now, not at its next 0.1 s look
        with contextlib.suppress(Full):
            queue.put_nowait(_DONE)
    for thread in threads:
        if thread is not threading.current_thread():
            thread.join()


class Producer(_QueueThreads):
    """One thread queues the items of ``items`` (at most ``depth`` ahead); iterate the producer to take
    them. ``then`` is called in the thread once every item is queued (to start the next epoch's)."""

    def __init__(
        self, items: Iterator[Any], depth: int, name: str, then: Callable[[], None] | None = None
    ) -> None:
        self._items = items
        self._then = then
        super().__init__([self._produce], depth, name)

    def _produce(self) -> None:
        for item in self._items:
            if not self._offer(item):
                return
        self._offer(_DONE)
        if self._then is not None:
            self._then()

    def __iter__(self) -> Iterator[Any]:
        while (item := self.queue.get()) is not _DONE:
            yield item
        self._raise()


class Workers(_QueueThreads):
    """``threads`` threads apply ``work`` to the items ``submit`` queues (at most ``depth`` waiting), in
    queue order; with one thread they are applied in the order submitted, as a plain loop would."""

    def __init__(self, work: Callable[..., Any], threads: int, depth: int, name: str) -> None:
        self._work_function = work
        self._results: list[Any] = []
        self._lock = threading.Lock()
        self._pending = 0  # submitted, not yet done
        self._idle = threading.Condition(self._lock)
        super().__init__([self._work] * threads, depth, name)

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self.queue.get(timeout=0.1)
            except Empty:
                continue
            if item is _DONE:
                return
            try:
                if self._error is None:  # after an error the rest is dropped; drain raises it
                    result = self._work_function(*item)
                    with self._lock:
                        self._results.append(result)
            except BaseException as error:
                self._error = error
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def submit(self, *args: Any) -> None:
        """Queue ``work(*args)``; returns at once unless ``depth`` items wait. Raises a thread's error."""
        self._raise()
        with self._lock:
            self._pending += 1
        if not self._offer(args):
            with self._lock:
                self._pending -= 1
            raise RuntimeError("submit to workers that were stopped")

    def drain(self) -> list[Any]:
        """Wait until every submitted item is done; their results, in the order they finished."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0)
            results, self._results = self._results, []
        self._raise()
        return results
