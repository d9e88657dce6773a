"""core.threads: a producer ahead of its consumer, workers beside their caller; errors reach the caller;
stopping always ends the threads."""

from __future__ import annotations

import threading
import time

import pytest

from core.threads import Producer, Workers


def test_a_producer_yields_every_item_in_order_and_then_runs_its_follow_up():
    done = threading.Event()
    producer = Producer(iter(range(50)), depth=4, name="test-producer", then=done.set)
    assert list(producer) == list(range(50))
    producer.join(timeout=5)
    assert done.is_set() and not producer.is_alive()


def test_a_producers_error_is_raised_in_the_consumer():
    def items():
        yield 1
        raise ValueError("bad chunk")

    producer = Producer(items(), depth=2, name="test-producer")
    with pytest.raises(ValueError, match="bad chunk"):
        list(producer)


def test_stopping_a_producer_ends_its_thread_while_it_waits_for_room():
    producer = Producer(iter(range(1000)), depth=1, name="test-producer")
    time.sleep(0.05)  # the queue is full: the thread waits
    producer.stop()
    assert not producer.is_alive()


def test_workers_apply_the_work_in_submission_order_with_one_thread():
    seen: list[int] = []
    workers = Workers(lambda n: seen.append(n) or n * n, threads=1, depth=3, name="test-workers")
    for n in range(20):
        workers.submit(n)
    assert workers.drain() == [n * n for n in range(20)] and seen == list(range(20))
    assert workers.drain() == []
    started = time.monotonic()
    workers.stop()
    assert not workers.is_alive() and time.monotonic() - started < 0.05  # woken, not polled


def test_several_workers_finish_everything_and_report_an_error():
    workers = Workers(lambda n: n, threads=3, depth=2, name="test-workers")
    for n in range(30):
        workers.submit(n)
    assert sorted(workers.drain()) == list(range(30))

    def fail(n: int) -> None:
        raise RuntimeError(f"item {n}")

    failing = Workers(fail, threads=2, depth=1, name="test-workers")
    with pytest.raises(RuntimeError, match="item"):  # at the next submit or at the drain
        for n in range(5):
            failing.submit(n)
        failing.drain()
    failing.stop()
    workers.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        workers.submit(1)
