"""Tests for lazygraph.pressure: real memory pressure shed by the monitor thread."""

from __future__ import annotations

import gc
import mmap
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import psutil
import pytest

from lazygraph.errors import ConfigError
from lazygraph.pressure import THREAD_NAME, MemoryMonitor, process_memory

MiB = 2**20
NO_LIMIT = 2**50


def monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture(autouse=True)
def no_leaked_monitor_threads() -> Iterator[None]:
    yield
    leaked = monitor_threads()
    assert not leaked, f"monitor threads left running: {leaked}"


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass (bounded, no wall-clock asserts)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class ArrayStore:
    """A stand-in for the store: real arrays, evicted oldest first."""

    def __init__(self, count: int, nbytes: int) -> None:
        self.arrays = [np.ones(nbytes // 8) for _ in range(count)]  # ones: pages touched
        self.evicted = 0

    def evict(self) -> int:
        if not self.arrays:
            return 0
        self.evicted += 1
        return int(self.arrays.pop(0).nbytes)


def test_process_memory_follows_real_allocations() -> None:
    before = process_memory()
    block = np.ones(64 * MiB // 8)
    grown = process_memory() - before
    assert 0.9 * block.nbytes <= grown <= 1.1 * block.nbytes + 8 * MiB
    del block
    assert process_memory() < before + 16 * MiB  # big blocks go back to the OS at once
    assert process_memory() <= psutil.Process().memory_info().rss + 16 * MiB


def test_pressure_from_a_real_allocation_is_shed_by_the_thread() -> None:
    store = ArrayStore(count=8, nbytes=32 * MiB)
    baseline = process_memory()
    monitor = MemoryMonitor(
        store.evict,
        rss_limit=baseline + 100 * MiB,
        min_available=0,
        interval=0.01,
        target_fraction=0.98,
    )
    monitor.ensure_started()
    try:
        assert not wait_for(lambda: store.evicted > 0, seconds=0.3)  # under the limit: nothing
        outside = np.ones(150 * MiB // 8)  # memory the store does not own pushes us over
        assert wait_for(lambda: monitor.triggers >= 1 and process_memory() < monitor.rss_limit)
        monitor.stop()  # joins the thread: the counters below are final
        assert 1 <= store.evicted < 8  # shed down to the target, not everything
        assert monitor.bytes_freed == store.evicted * 32 * MiB
        assert monitor.last_trigger is not None and monitor.last_trigger.reason == "rss"
        assert monitor.last_trigger.rss > monitor.rss_limit
        del outside
    finally:
        monitor.stop()


def test_low_available_memory_sheds_until_nothing_is_left() -> None:
    store = ArrayStore(count=3, nbytes=MiB)
    shortfall = psutil.virtual_memory().available + 2**40  # more than this machine will free
    monitor = MemoryMonitor(store.evict, rss_limit=NO_LIMIT, min_available=shortfall, interval=0.01)
    monitor.ensure_started()
    try:
        assert wait_for(lambda: not store.arrays and monitor.gc_collections == 1)
        assert monitor.last_trigger is not None and monitor.last_trigger.reason == "available"
        assert monitor.last_trigger.available < shortfall
    finally:
        monitor.stop()


def test_no_pressure_evicts_nothing() -> None:
    calls: list[int] = []
    monitor = MemoryMonitor(lambda: calls.append(1) or 1, rss_limit=NO_LIMIT, min_available=1)
    assert monitor.check() == 0
    assert calls == [] and monitor.checks == 1 and monitor.triggers == 0


def test_check_sheds_until_evict_reports_nothing_left() -> None:
    store = ArrayStore(count=4, nbytes=MiB)
    monitor = MemoryMonitor(store.evict, rss_limit=0, min_available=0)
    assert monitor.check() == 4 * MiB
    assert store.evicted == 4 and monitor.evict_calls == 5 and monitor.triggers == 1


def test_garbage_collection_once_per_episode_frees_evicted_cycles() -> None:
    class Node:
        def __init__(self, data: np.ndarray) -> None:
            self.data = data
            self.me = self  # a reference cycle: only the cycle collector frees it

    held = [Node(np.ones(8 * MiB // 8))]
    data_alive = weakref.ref(held[0].data)

    def evict() -> int:
        return 8 * MiB if held and held.pop() else 0

    monitor = MemoryMonitor(evict, rss_limit=0, min_available=0)
    gc.disable()
    try:
        monitor.check()
        assert data_alive() is None  # the cycle was collected after the store ran dry
        assert monitor.gc_collections == 1
        monitor.check()
        assert monitor.gc_collections == 1  # still the same episode: no second collection
        monitor.rss_limit = NO_LIMIT
        monitor.check()  # back under: the episode ends
        monitor.rss_limit = 0
        monitor.check()
        assert monitor.gc_collections == 2 and monitor.triggers == 2
    finally:
        gc.enable()


def test_ensure_started_is_idempotent_across_threads() -> None:
    monitor = MemoryMonitor(lambda: 0, rss_limit=NO_LIMIT, min_available=0, interval=0.01)
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        monitor.ensure_started()

    starters = [threading.Thread(target=start) for _ in range(8)]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join()
    try:
        assert len(monitor_threads()) == 1 and monitor.running
        assert all(t.daemon for t in monitor_threads())
        assert wait_for(lambda: monitor.checks >= 3)  # the thread runs passes on its own
    finally:
        monitor.stop()
    assert not monitor.running and monitor_threads() == []
    monitor.stop()  # idempotent
    monitor.ensure_started()  # a stopped monitor can start again
    assert monitor.running
    monitor.stop()


def test_thread_ends_when_the_monitor_is_garbage() -> None:
    monitor = MemoryMonitor(lambda: 0, rss_limit=NO_LIMIT, min_available=0, interval=0.01)
    monitor.ensure_started()
    thread = monitor._thread
    assert thread is not None
    del monitor
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_thread_survives_a_failing_evict(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = iter([RuntimeError("broken store"), 5, 0])

    def evict() -> int:
        outcome = next(outcomes, 0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monitor = MemoryMonitor(evict, rss_limit=0, min_available=0, interval=0.01)
    with caplog.at_level("ERROR", logger="lazygraph.pressure"):
        monitor.ensure_started()
        try:
            assert wait_for(lambda: monitor.bytes_freed == 5)
            assert monitor.running
        finally:
            monitor.stop()
    assert "memory monitor pass failed" in caplog.text


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"interval": 0}, r"interval must be a positive number of seconds \(got 0\)"),
        ({"target_fraction": 1.5}, r"target_fraction must be in \(0, 1\] \(got 1.5\)"),
    ],
)
def test_bad_settings(options: dict[str, float], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        MemoryMonitor(lambda: 0, rss_limit=1, min_available=0, **options)


# -- the store's evict() under the monitor ------------------------------------------------------


class SlowToWrite:
    """8 MiB of real RAM whose pickling takes a while, as a frame of Python objects does.

    The RAM is an anonymous mapping of its own, so freeing it lowers RSS at once (a malloc'd
    block may stay in the allocator). What its file holds does not matter here.
    """

    def __init__(self, i: int) -> None:
        self.ram = mmap.mmap(-1, 8 * MiB)
        self.ram.write(bytes([i % 256]) * (8 * MiB))  # touched: resident

    def __reduce__(self) -> tuple[object, ...]:
        time.sleep(0.3)
        return (bytes, (b"small stand-in",))


class _Policy(NamedTuple):
    name: str = "slow"
    spill: bool = True
    persist: bool = False


def test_one_episode_does_not_drain_the_store_while_writes_are_queued(tmp_path) -> None:
    """Bytes queued for writing are not freed yet: evict() must not report them as freed
    (issue 13), else the monitor, seeing RSS unchanged, pushes out every entry at once."""
    from lazygraph.config import Config
    from lazygraph.store.store import Store

    store = Store(Config.from_options(memory_limit="1GB", spill=True, spill_threshold="1MB",
                                      progress=False))
    try:
        results = [(i.to_bytes(16, "big"), SlowToWrite(i), ((None, 8 * MiB, "cpu"),), 0.0,
                    _Policy(), True) for i in range(10)]
        store.insert_many(results)
        del results
        gc.collect()
        # Over the limit by half an entry: freeing one entry's RAM ends the episode.
        monitor = MemoryMonitor(store.evict, rss_limit=process_memory() - 4 * MiB,
                                min_available=0, target_fraction=1.0)
        monitor.check()
        assert monitor.triggers == 1
        assert store.stats().entries_in_memory >= 8, (monitor.evict_calls, store.stats())
        assert monitor.bytes_freed >= 8 * MiB
    finally:
        store.close()


def test_store_evict_returns_minus_one_when_a_write_cannot_finish_in_time(tmp_path) -> None:
    from lazygraph.config import Config
    from lazygraph.store.store import Store

    store = Store(Config.from_options(memory_limit="1GB", spill=True, spill_threshold="1MB",
                                      progress=False))
    store._pending.wait_seconds = 0.05  # the 0.3 s pickling cannot finish within it
    try:
        store.insert_many([(b"k" * 16, SlowToWrite(1), ((None, 8 * MiB, "cpu"),), 0.0,
                            _Policy(), True)])
        assert store.evict() == -1  # pushed out, but its RAM is not free until written
        store.flush()
        assert store.evict() == 0  # nothing held, nothing left in memory
        assert store.location(b"k" * 16) == "spilled"
    finally:
        store.close()


def test_a_pull_that_only_loads_persisted_results_starts_no_monitor(tmp_path) -> None:
    """A new process's first hit (issue 17): every result comes from cache_dir, which the
    store holds weakly only, so there is nothing to shed and no thread is started; the
    first pull that runs a node starts it."""
    import lazygraph

    calls: list[int] = []

    @lazygraph.node
    def make(n: int) -> np.ndarray:
        calls.append(n)
        return np.arange(n, dtype=np.float64)

    cache = tmp_path / "cache"
    with lazygraph.Session(cache_dir=cache, progress=False) as first:
        first.compute(make(10_000))
    with lazygraph.Session(cache_dir=cache, progress=False) as second:
        node = make(10_000)
        (value,) = second.compute(node)
        assert calls == [10_000] and value[-1] == 9_999  # loaded, not run again
        assert [what for _, *what in second.history[-1].record] == [["hit", "disk"]]
        assert monitor_threads() == []
        second.compute(make(5))
        assert calls == [10_000, 5]
        assert len(monitor_threads()) == 1
    assert monitor_threads() == []
