"""The contract every store tier keeps (``lazygraph.store.base.Tier``), run against each tier.

In the spirit of cachetools' shared cache tests: one suite, parametrized over the memory,
weak, pending-write and file tiers (a cluster tier joins by adding a ``make_*`` below).
Failures are real (a callback that raises, a directory removed underneath, a write that
cannot complete), never mocks of our own classes.
"""

from __future__ import annotations

import gc
import os
import shutil
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_executors import dask_cluster  # noqa: F401 - the module's LocalCluster fixture

from lazygraph.store.base import ENTRY_OVERHEAD, MISSING, Entry, Tier
from lazygraph.store.cluster import ClusterTier
from lazygraph.store.files import FileTier
from lazygraph.store.memory import MemoryTier
from lazygraph.store.pending import PendingTier
from lazygraph.store.weak import WeakTier

NBYTES = 8000


class Gate:
    """A value whose pickling waits until ``release()``: a write that takes as long as we say.

    Plugging the pending tier's one writer with it keeps later entries queued, so the test
    sees them in the tier instead of racing the writer thread.
    """

    def __init__(self) -> None:
        self.opened = threading.Event()

    def release(self) -> None:
        self.opened.set()

    def __reduce__(self) -> tuple[Any, ...]:
        self.opened.wait(30)
        return (bytes, (b"gate",))


@dataclass
class Made:
    """A tier under test and what the suite needs to know about it."""

    tier: Tier
    keeps_identity: bool  # get() returns the very object put
    counts_bytes: bool  # sizes() counts the values' bytes (the weak tier holds none)
    evicts: bool  # evict() frees an entry whenever it holds one, after shrink() (not the
    # weak tier, which holds no memory)
    break_it: Callable[[], None]  # make the tier's internals fail for real
    teardown: Callable[[], None] = lambda: None
    shrink: Callable[[], None] = lambda: None  # a bounded tier's budget drops to zero
    base_entries: int = 0  # entries the fixture itself put in (a gate plugging the writer)
    held: list[Any] = field(default_factory=list)  # values the test keeps alive


def make_memory(tmp_path: Path) -> Made:
    armed: list[bool] = []

    def on_evict(entries: list[Entry]) -> None:
        if armed:
            raise OSError("the policy callback failed")

    tier = MemoryTier(10**9, on_evict=on_evict)
    return Made(tier, keeps_identity=True, counts_bytes=True, evicts=True,
                break_it=lambda: armed.append(True))


def make_weak(tmp_path: Path) -> Made:
    tier = WeakTier()
    return Made(tier, keeps_identity=True, counts_bytes=False, evicts=False, break_it=tier.close)


def make_file(tmp_path: Path) -> Made:
    tier = FileTier(tmp_path / "files", secret=os.urandom(32), disk_limit=None)
    return Made(
        tier,
        keeps_identity=False,
        counts_bytes=True,
        evicts=True,
        break_it=lambda: shutil.rmtree(tmp_path / "files"),
        teardown=tier.close,
        shrink=lambda: setattr(tier, "disk_limit", 0),  # within budget, evict frees nothing
    )


def make_pending(tmp_path: Path) -> Made:
    files = FileTier(tmp_path / "pending", secret=os.urandom(32), disk_limit=None)
    tier = PendingTier(route=lambda entry, spill: files, wait_seconds=0.2)
    gate = Gate()
    tier.put(entry(b"\xff" * 16, gate))  # the writer is stuck on it until teardown

    def teardown() -> None:
        gate.release()
        tier.close()
        files.close()

    # A write that can never complete: the gate stays shut, so evict can only time out.
    return Made(tier, keeps_identity=True, counts_bytes=True, evicts=True, break_it=lambda: None,
                teardown=teardown, base_entries=1, held=[gate])


def make_cluster(tmp_path: Path, address: str) -> Made:
    import distributed

    client = distributed.Client(address, set_as_default=False)
    tier = ClusterTier(client, max_bytes=10**9)

    def teardown() -> None:
        tier.close()
        client.close()

    # values are scattered to the workers and come back as copies; a closed client is the
    # failure (futures that cannot be released)
    return Made(tier, keeps_identity=False, counts_bytes=True, evicts=True,
                break_it=client.close, teardown=teardown,
                shrink=lambda: setattr(tier, "max_bytes", 0))


TIERS = {
    "memory": make_memory,
    "weak": make_weak,
    "pending": make_pending,
    "file": make_file,
    "cluster": make_cluster,
}


@pytest.fixture(params=list(TIERS))
def made(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Made]:
    if request.param == "cluster":
        address = request.getfixturevalue("dask_cluster")
        request.getfixturevalue("leak_baseline").retake()  # the cluster outlives this test
        made = make_cluster(tmp_path, address)
    else:
        made = TIERS[request.param](tmp_path)
    try:
        yield made
    finally:
        made.teardown()


def entry(key: bytes, value: Any, nbytes: int = NBYTES) -> Entry:
    return Entry(key, value, ((None, nbytes, "cpu"),), "f", 0.0, True, True, True)


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


def value(i: int) -> np.ndarray:
    return np.full(NBYTES // 8, i, dtype=np.float64)


def same(got: Any, expected: np.ndarray, *, identity: bool) -> bool:
    if identity:
        return got is expected
    return isinstance(got, np.ndarray) and np.array_equal(got, expected)


def test_every_tier_has_a_name(made: Made) -> None:
    assert isinstance(made.tier.name, str) and made.tier.name


def test_absent_key_is_missing_and_never_raises(made: Made) -> None:
    tier = made.tier
    assert tier.get(key(1)) is MISSING
    assert key(1) not in tier
    assert "not even bytes" not in tier
    tier.discard(key(1))  # absent: no error
    assert tier.get(key(1)) is MISSING


def test_put_get_contains_discard_round_trip(made: Made) -> None:
    tier = made.tier
    values = [value(i) for i in range(3)]
    made.held.extend(values)
    for i, v in enumerate(values):
        tier.put(entry(key(i), v))
    for i, v in enumerate(values):
        assert key(i) in tier
        assert same(tier.get(key(i)), v, identity=made.keeps_identity)
    tier.discard(key(1))
    assert key(1) not in tier and tier.get(key(1)) is MISSING
    assert same(tier.get(key(2)), values[2], identity=made.keeps_identity)


def test_none_is_a_value_not_an_absence(made: Made) -> None:
    if isinstance(made.tier, WeakTier):
        pytest.skip("None takes no weak reference: the weak tier declines it, as documented")
    made.tier.put(entry(key(7), None))
    assert key(7) in made.tier and made.tier.get(key(7)) is None


def test_sizes_follow_puts_and_discards(made: Made) -> None:
    tier = made.tier
    assert tier.sizes()[0] == made.base_entries
    values = [value(i) for i in range(4)]
    made.held.extend(values)
    for i, v in enumerate(values):
        tier.put(entry(key(i), v))
    count, nbytes = tier.sizes()
    assert count == made.base_entries + 4
    assert nbytes >= (4 * NBYTES if made.counts_bytes else 0)
    tier.discard(key(0))
    assert tier.sizes()[0] == made.base_entries + 3
    assert tier.sizes()[1] <= nbytes


def test_evict_frees_bytes_then_reports_empty(made: Made) -> None:
    tier = made.tier
    if made.base_entries:  # the plugged writer completes nothing: evict cannot free yet
        assert tier.evict() in (0, -1)
        return
    assert tier.evict() == 0  # empty
    values = [value(i) for i in range(2)]
    made.held.extend(values)
    for i, v in enumerate(values):
        tier.put(entry(key(i), v))
    made.shrink()
    freed = [tier.evict() for _ in range(3)]
    if made.evicts:
        assert freed[0] >= NBYTES and freed[1] >= NBYTES and freed[2] == 0
        assert tier.sizes()[0] == 0
    else:
        assert freed == [0, 0, 0]


def test_evict_never_raises_when_the_tier_fails(made: Made) -> None:
    tier = made.tier
    values = [value(i) for i in range(2)]
    made.held.extend(values)
    for i, v in enumerate(values):
        tier.put(entry(key(i), v))
    made.break_it()
    result = tier.evict()
    assert isinstance(result, int) and result >= -1


def test_close_is_idempotent(made: Made) -> None:
    for held in made.held:
        if isinstance(held, Gate):
            held.release()  # close() finishes queued writes: let the plugged one complete
    made.held.append(value(1))
    made.tier.put(entry(key(1), made.held[-1]))
    made.tier.close()
    made.tier.close()


def test_pending_tier_keeps_values_reachable_until_the_file_is_complete(tmp_path: Path) -> None:
    files = FileTier(tmp_path / "c", secret=os.urandom(32), disk_limit=None)
    written: list[bytes] = []
    tier = PendingTier(route=lambda e, spill: files,
                       on_written=lambda e, t, result, spill: written.append(e.key))
    gate = Gate()
    big = value(3)
    try:
        tier.put(entry(key(1), gate))
        tier.put(entry(key(2), big))
        assert tier.get(key(2)) is big and tier.sizes() == (2, 2 * NBYTES)
        gate.release()
        tier.flush()
        assert written == [key(1), key(2)] and tier.sizes() == (0, 0)
        assert tier.get(key(2)) is MISSING and np.array_equal(files.get(key(2)), big)
    finally:
        gate.release()
        tier.close()
        files.close()


def test_pending_evict_waits_for_the_write_and_reports_its_bytes(tmp_path: Path) -> None:
    files = FileTier(tmp_path / "c", secret=os.urandom(32), disk_limit=None)
    tier = PendingTier(route=lambda e, spill: files, wait_seconds=10)
    gate = Gate()
    try:
        tier.put(entry(key(1), gate, nbytes=5000))
        threading.Timer(0.2, gate.release).start()
        assert tier.evict() == 5000  # returned once the file was complete, not before
        assert key(1) not in tier and key(1) in files
    finally:
        gate.release()
        tier.close()
        files.close()


def test_closed_pending_tier_declines_and_leaves_no_thread(tmp_path: Path) -> None:
    files = FileTier(tmp_path / "c", secret=os.urandom(32), disk_limit=None)
    tier = PendingTier(route=lambda e, spill: files)
    tier.put(entry(key(1), value(1)))
    tier.close()
    tier.put(entry(key(2), value(2)))
    assert key(2) not in tier and key(2) not in files and key(1) in files
    assert not [t for t in threading.enumerate() if t.name == "lazygraph-writer"]
    files.close()


def test_entry_overhead_matches_tracemalloc() -> None:
    """ENTRY_OVERHEAD covers what the memory tier really spends per entry (SPEC S5.2)."""
    n = 20_000
    keys = [os.urandom(16) for _ in range(n)]
    tier = MemoryTier(10**12)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, k in enumerate(keys):
            tier.put(Entry(k, None, ((None, 8, "cpu"),), "f", i * 0.001, True, True, True))
        spent = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_entry = (spent + n * 49) / n  # + the 16-byte key, held by the store once its node goes
    assert 0.6 * ENTRY_OVERHEAD <= per_entry <= ENTRY_OVERHEAD, per_entry
