"""The store's memory and weak tiers through real pulls (SPEC S5.2, S5.3, S2.4, S7.5, S8.2)."""

from __future__ import annotations

import ast
import collections
import gc
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lazygraph
from lazygraph import Session, node
from lazygraph.config import Config
from lazygraph.store import lookup as lookup_module
from lazygraph.store import store as store_module
from lazygraph.store.base import ENTRY_OVERHEAD, Entry
from lazygraph.store.lookup import Lookup
from lazygraph.store.memory import MemoryTier
from lazygraph.store.store import Store

MB = 1_000_000


def entry(key: bytes, nbytes: int, buffer=None) -> Entry:
    return Entry(key, None, ((buffer, nbytes, "cpu"),), name="f", seconds=0.0,
                 persistable=True, spill=True, persist=True)


def test_lru_order_under_mixed_access():
    evicted: list[Entry] = []
    tier = MemoryTier(max_bytes=300, on_evict=evicted.extend, overhead=0)
    for k in (b"a", b"b", b"c"):
        tier.put(entry(k, 100))
    tier.get(b"a")  # a is now the most recently used
    tier.put(entry(b"d", 100))
    assert [e.key for e in evicted] == [b"b"]
    tier.get(b"c")
    evicted.clear()
    tier.put(entry(b"e", 150))
    assert [e.key for e in evicted] == [b"a", b"d"]
    assert list(tier) == [b"c", b"e"]


@pytest.mark.parametrize("overhead", [0, ENTRY_OVERHEAD])
def test_limit_is_never_exceeded_after_any_insert(overhead):
    rng = np.random.default_rng(0)
    tier = MemoryTier(max_bytes=4000, overhead=overhead)
    for i in range(500):
        tier.put(entry(i.to_bytes(4, "big"), int(rng.integers(1, 400))))
        assert tier.sizes()[1] <= 4000
        assert tier.cpu_bytes == sum(e.nbytes for e in tier.entries.values())
        assert tier.sizes() == (len(tier), tier.cpu_bytes + overhead * len(tier))


def test_bookkeeping_counts_against_the_limit():
    """A million tiny results must not hold 20x the limit in Entry objects (SPEC S5.2)."""
    tier = MemoryTier(max_bytes=100 * ENTRY_OVERHEAD)
    for i in range(1000):
        tier.put(entry(i.to_bytes(4, "big"), 8))
    assert len(tier) == 100 * ENTRY_OVERHEAD // (ENTRY_OVERHEAD + 8)


def test_shared_buffers_are_counted_once():
    tier = MemoryTier(max_bytes=10_000)
    tier.put(entry(b"a", 800, buffer=("np", 1)))
    tier.put(entry(b"b", 800, buffer=("np", 1)))
    assert tier.cpu_bytes == 800
    tier.pop(b"a")
    assert tier.cpu_bytes == 800
    tier.pop(b"b")
    assert tier.cpu_bytes == 0


def test_slice_and_frame_on_cached_array_count_once():
    base = np.zeros(1_000_000)  # 8 MB

    @node
    def make():
        return base

    @node
    def head(a):
        return a[:10]

    @node
    def frame(a):
        return pd.DataFrame({"x": a}, copy=False)

    with Session(memory_limit="100MB", progress=False) as s:
        lazygraph.compute(make(), head(make()), frame(make()))
        assert s.stats().entries_in_memory == 3
        assert s.stats().bytes_in_memory < base.nbytes * 1.1


def test_value_larger_than_limit_is_returned_not_kept():
    @node
    def big():
        return np.ones(2 * MB)  # 16 MB

    with Session(memory_limit="1MB", spill=False, progress=False) as s:
        n = big()
        out = n.compute()
        assert out.shape == (2 * MB,)
        assert s.stats().bytes_in_memory == 0
        assert s.store.location(n._key) == "weak"  # still reachable while we hold it


def test_memory_limit_holds_during_a_pipeline():
    calls = collections.Counter()

    @node
    def chunk(i):
        calls[i] += 1
        return np.full(250_000, i, dtype=np.float64)  # 2 MB

    with Session(memory_limit="5MB", spill=False, progress=False) as s:
        peak = 0
        for i in range(12):
            chunk(i).compute()
            peak = max(peak, s.stats().bytes_in_memory)
        assert peak <= 5 * MB
        assert s.stats().peak_bytes_in_memory <= 5 * MB
        assert s.stats().evictions >= 9


def test_weak_tier_hit_returns_same_object_and_runs_nothing():
    calls = collections.Counter()

    @node
    def make(i):
        calls[i] += 1
        return np.full(200_000, i)  # 1.6 MB

    with Session(memory_limit="2MB", spill=False, progress=False) as s:
        n0 = make(0)
        first = n0.compute()
        make(1).compute()  # pushes make(0) out of memory
        assert s.store.location(n0._key) == "weak"
        again = make(0).compute()
        assert again is first
        assert calls[0] == 1


def test_weak_tier_miss_after_user_drops_object_recomputes():
    calls = collections.Counter()

    @node
    def make(i):
        calls[i] += 1
        return np.full(200_000, i)

    with Session(memory_limit="2MB", spill=False, progress=False) as s:
        n0 = make(0)
        first = n0.compute()
        make(1).compute()
        del first
        gc.collect()
        assert s.store.location(n0._key) == "absent"
        again = n0.compute()
        assert calls[0] == 2
        assert (again == 0).all()


def test_freeze_makes_cached_arrays_read_only():
    @node
    def make():
        return np.zeros(4)

    @node
    def frame():
        return pd.DataFrame({"a": [1.0, 2.0]})

    with Session(freeze=True, progress=False):
        arr, df = lazygraph.compute(make(), frame())
        with pytest.raises(ValueError):
            arr[0] = 1.0
        values = df["a"].to_numpy()
        with pytest.raises(ValueError):
            values[0] = 3.0


def test_without_freeze_results_are_shared_and_mutable():
    @node
    def make():
        return np.zeros(4)

    with Session(progress=False):
        arr = make().compute()
        arr[0] = 5.0
        assert make().compute()[0] == 5.0  # documented: shared results can be mutated


def test_stats_fields_are_updated_by_the_store():
    @node
    def make(i):
        return np.zeros(10_000) + i

    with Session(memory_limit="100KB", spill=False, progress=False) as s:
        a = make(1)
        a.compute()
        a.compute()
        make(2).compute()
        st = s.stats()
        for field in ("hits", "misses", "computes", "evictions", "spills", "reloads",
                      "bytes_in_memory", "bytes_spilled", "bytes_on_disk",
                      "peak_bytes_in_memory"):
            assert isinstance(getattr(st, field), int)
        assert st.computes == 2 and st.hits >= 1 and st.misses >= 2
        assert st.bytes_in_memory == 80_000 and st.evictions == 1


def test_eight_threads_on_overlapping_graphs_run_each_node_once():
    calls = collections.Counter()
    lock = threading.Lock()

    @node
    def leaf(i):
        with lock:
            calls[("leaf", i)] += 1
        return np.full(1000, i)

    @node
    def combine(*parts):
        with lock:
            calls[("combine", len(parts), int(parts[0][0]))] += 1
        return sum(p.sum() for p in parts)

    with Session(progress=False) as s:
        results = {}
        errors = []
        barrier = threading.Barrier(8)

        def worker(t):
            try:
                barrier.wait()
                for r in range(5):
                    start = (t + r) % 6
                    n = combine(*[leaf(i) for i in range(start, start + 10)])
                    results[(t, r)] = (start, n.compute())
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for start, value in results.values():
            assert value == sum(range(start, start + 10)) * 1000
        assert all(c == 1 for c in calls.values()), calls
        assert not s.claims


def test_the_per_node_reads_are_the_lookups_own_methods_not_wrappers():
    """``find`` and ``memory_hit`` run once per planned node: the store hands out its read
    side's methods themselves, so moving the reads out of ``Store`` added no call."""
    store = Store(Config.from_options(memory_limit="1MB"))
    try:
        for name in ("find", "memory_hit", "find_remote", "lookup", "get", "peek", "fetch",
                     "location", "entry", "count_misses", "placement"):
            assert getattr(store, name).__func__ is getattr(Lookup, name), name
        store.put(b"k" * 16, [1], name="f", seconds=0.0)
        assert store.memory_hit(b"k" * 16) == [1] and store.find(b"k" * 16)[1] == "memory"
        assert store.stats().hits == 2 and store.functions == {}  # put() is not a run
    finally:
        store.close()


@pytest.mark.parametrize("module", [store_module, lookup_module], ids=["store", "lookup"])
def test_the_store_reads_no_private_name_of_a_tier(module):
    """Compose, don't reach in: the store's modules use only its own private names
    (``self._x``), never one of a tier or helper (``self._memory._entries``)."""
    tree = ast.parse(Path(module.__file__).read_text())
    reached = [
        ast.unparse(n) for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
        and not (isinstance(n.value, ast.Name) and n.value.id == "self")
    ]
    assert reached == []
