"""The store: lazygraph's Store vs cachetools.LRUCache and zict.LRU, and a bounded pipeline.

Three measurements, in one process:

1. Operations per second on the same keys and values (small ints, 8 KB numpy arrays): put
   into a cache with room, get (hit), get (miss), and put into a full cache (each put evicts
   one entry). Contenders: ``lazygraph.store.store.Store`` (sizing by ``lazygraph.sizing``,
   weak tier behind the memory tier), ``cachetools.LRUCache(maxsize, getsizeof=...)`` and
   ``zict.LRU(n, {}, weight=...)`` weighed with the same ``lazygraph.sizing.sizeof``, and a
   plain ``dict`` as the floor.
2. What the store adds to a pull: a fresh 10,000-node chain pulled with the real Store, and
   with the Store swapped for a dict, a cachetools and a zict adapter (same scheduler, same
   nodes); the difference per node is the store's cost. Goal (issue 4): <= 2 us per node.
3. A pipeline writing 3x ``memory_limit`` of arrays with ``spill=False``: after every node
   the store's bytes must be <= ``memory_limit`` and the process's RSS (without file-backed
   pages) within 10% + 100 MB of ``memory_limit`` over the baseline taken before it started.

    python benchmarks/bench_store.py               # about 30 seconds
    python benchmarks/bench_store.py --quick
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import cachetools
import numpy as np
import zict

import lazygraph
from lazygraph.config import Config
from lazygraph.pressure import process_memory
from lazygraph.sizing import sizeof
from lazygraph.store.base import MISSING
from lazygraph.store.store import Store

MB = 10**6

# -- 1. operations ----------------------------------------------------------------------------


class Contender:
    """One cache behind a uniform put/get interface (the store's keyword arguments included)."""

    def __init__(self, name: str, make: Callable[[int], Any]) -> None:
        self.name = name
        self.make = make  # max_bytes -> (put, get)


def lazygraph_ops(max_bytes: int) -> tuple[Callable[..., Any], Callable[[bytes], Any], Any]:
    store = Store(Config.from_options(memory_limit=max_bytes, spill=False, progress=False))

    def put(key: bytes, value: Any) -> None:
        store.put(key, value, name="f", seconds=0.0)

    return put, store.get, store


def cachetools_ops(max_bytes: int) -> tuple[Callable[..., Any], Callable[[bytes], Any], Any]:
    cache: cachetools.LRUCache[bytes, Any] = cachetools.LRUCache(max_bytes, getsizeof=sizeof)
    return cache.__setitem__, lambda key: cache.get(key, MISSING), cache


def zict_ops(max_bytes: int) -> tuple[Callable[..., Any], Callable[[bytes], Any], Any]:
    lru: zict.LRU[bytes, Any] = zict.LRU(max_bytes, {}, weight=lambda k, v: sizeof(v))
    return lru.__setitem__, lambda key: lru.get(key, MISSING), lru


def dict_ops(max_bytes: int) -> tuple[Callable[..., Any], Callable[[bytes], Any], Any]:
    data: dict[bytes, Any] = {}
    return data.__setitem__, lambda key: data.get(key, MISSING), data


CONTENDERS = {
    "lazygraph Store": lazygraph_ops,
    "cachetools.LRUCache": cachetools_ops,
    "zict.LRU": zict_ops,
    "dict (floor)": dict_ops,  # no bound: its "put + evict" is a plain put
}


def in_memory(cache: Any, key: bytes) -> bool:
    """Whether ``key`` is held strongly (the Store's weak tier may still reach evicted ones)."""
    if isinstance(cache, Store):
        return cache.location(key) == "memory"
    return key in cache


def best_per_op(
    run: Callable[[Any], int], repeat: int, setup: Callable[[], Any] = lambda: None
) -> float:
    """Fastest seconds per operation of ``repeat`` runs of ``run(setup())``.

    ``run`` returns its operation count; what ``setup`` made is freed outside the clock.
    """
    times = []
    for _ in range(repeat):
        state = setup()
        gc.collect()
        start = time.perf_counter()
        count = run(state)
        times.append((time.perf_counter() - start) / count)
        del state
    return min(times)


def measure_ops(make: Callable[[int], Any], values: list[Any], repeat: int) -> dict[str, float]:
    keys = [os.urandom(16) for _ in values]
    misses = [os.urandom(16) for _ in values]
    one = sizeof(values[0])
    out: dict[str, float] = {}

    def put_room(cache: Any) -> int:
        put = cache[0]
        for k, v in zip(keys, values, strict=True):
            put(k, v)
        return len(keys)

    out["put"] = best_per_op(put_room, repeat, lambda: make(10**9))
    put, get, _ = make(10**9)
    for k, v in zip(keys, values, strict=True):
        put(k, v)

    def get_all(which: list[bytes]) -> Callable[[Any], int]:
        def run(_: Any) -> int:
            for k in which:
                get(k)
            return len(which)

        return run

    out["get hit"] = best_per_op(get_all(keys), repeat)
    out["get miss"] = best_per_op(get_all(misses), repeat)

    def put_evicting(made: Any) -> int:
        put, get, cache = made
        for k, v in zip(keys, values, strict=True):
            put(k, v)
        evicts = make is not dict_ops  # a dict never evicts: its column is a plain put
        if evicts and (in_memory(cache, keys[0]) or not in_memory(cache, keys[-1])):
            raise AssertionError("the cache did not evict least recently used entries")
        return len(keys)

    # room for 100 values: from the 101st on, every put evicts one
    out["put + evict"] = best_per_op(put_evicting, repeat, lambda: make(one * 100))
    return out


def ops_table(count: int, repeat: int) -> None:
    kinds: dict[str, list[Any]] = {
        "int": list(range(10**6, 10**6 + count)),
        "8 KB array": [np.full(1024, i, dtype=np.float64) for i in range(count)],
    }
    for kind, values in kinds.items():
        print(f"-- operations on {count:,} {kind} values: us per operation (x dict)")
        results = {name: measure_ops(make, values, repeat) for name, make in CONTENDERS.items()}
        floor = results["dict (floor)"]
        ops = list(floor)
        print(f"{'':<22}" + "".join(f"{op:>20}" for op in ops))
        for name, row in results.items():
            cells = "".join(f"{row[op] * 1e6:>11.3f} ({row[op] / floor[op]:>5.1f}x)" for op in ops)
            print(f"{name:<22}{cells}")
        print()


# -- 2. what the store adds to a pull ---------------------------------------------------------


@lazygraph.node
def inc(x: int) -> int:
    return x + 1


def chain(n: int) -> lazygraph.Node:
    x = inc(0)
    for _ in range(n - 1):
        x = inc(x)
    return x


class MappingStore:
    """The part of the Store interface a pull uses, over any mapping (dict, cachetools, zict).

    Counts nothing and sizes nothing beyond what the mapping itself does: the floor a
    scheduler could reach with that mapping as its memo.
    """

    def __init__(self, mapping: Any) -> None:
        self.mapping = mapping
        self.computes = self.hits = self.misses = 0

    def find(self, key: bytes) -> tuple[Any, str]:
        value = self.mapping.get(key, MISSING)
        return value, ("absent" if value is MISSING else "memory")

    lookup = find

    def count_misses(self, n: int) -> None:
        self.misses += n

    def get(self, key: bytes) -> Any:
        return self.mapping.get(key, MISSING)

    def memory_hit(self, key: bytes) -> Any:
        return self.mapping.get(key, MISSING)

    def put(self, key: bytes, value: Any, **meta: Any) -> None:
        self.mapping[key] = value

    def insert_many(self, results: Any, computed: bool = True) -> None:
        mapping = self.mapping
        for key, value, *_ in results:
            mapping[key] = value
        self.computes += len(results)

    def note_compute(self, name: str = "", seconds: float = 0.0) -> None:
        self.computes += 1

    def pin(self, values: Any) -> None:
        pass

    def unpin(self, values: Any) -> None:
        pass

    def entry(self, key: bytes) -> None:
        return None

    def location(self, key: bytes) -> str:
        return "memory" if key in self.mapping else "absent"

    def release_cuda(self) -> int:
        return 0

    def evict(self) -> int:
        return 0

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.mapping.clear()


PULL_STORES: dict[str, Callable[[], Any] | None] = {
    "lazygraph Store": None,  # the session's own
    "cachetools.LRUCache": lambda: MappingStore(cachetools.LRUCache(10**9, getsizeof=sizeof)),
    "zict.LRU": lambda: MappingStore(zict.LRU(10**9, {}, weight=lambda k, v: sizeof(v))),
    "dict (floor)": lambda: MappingStore({}),
}


def one_pull(make_store: Callable[[], Any] | None, n: int) -> float:
    """Seconds of one fresh pull of an ``n``-chain with the store ``make_store`` makes."""
    session = lazygraph.Session(progress=False, spill=False)
    if make_store is not None:
        session.store.close()
        session.store = make_store()
    root = chain(n)
    gc.collect()
    start = time.perf_counter()
    (value,) = session.compute(root)
    elapsed = time.perf_counter() - start
    session.close()
    if value != n:
        raise AssertionError(f"the chain returned {value}, expected {n}")
    return elapsed


def pull_table(n: int, repeat: int) -> float:
    print(f"-- a fresh pull of a {n:,}-node chain (keys + plan + run), per node")
    # Round robin, so that a busy moment on the machine hits every contender alike.
    runs: dict[str, list[float]] = {name: [] for name in PULL_STORES}
    for i in range(repeat + 1):
        for name, make in PULL_STORES.items():
            elapsed = one_pull(make, n)
            if i:  # the first round is a warm-up
                runs[name].append(elapsed)
    seconds = {name: min(times) for name, times in runs.items()}
    floor = seconds["dict (floor)"]
    print(f"{'store behind the pull':<22}{'us/node':>10}{'added vs dict':>16}")
    for name, s in seconds.items():
        print(f"{name:<22}{s / n * 1e6:>10.2f}{(s - floor) / n * 1e6:>13.2f} us")
    added = (seconds["lazygraph Store"] - floor) / n * 1e6
    print()
    return added


# -- 3. a pipeline three times the memory limit -----------------------------------------------


@lazygraph.node
def produce(i: int, nbytes: int) -> np.ndarray:
    return np.full(nbytes // 8, float(i))


@lazygraph.node
def step(previous: np.ndarray, i: int) -> np.ndarray:
    return previous + i  # a new array each step, as a real pipeline stage makes


class CheckingExecutor:
    """Runs the plan in order and checks the store's bytes and the RSS after every node."""

    def __init__(self, session: lazygraph.Session, baseline: int) -> None:
        self.session = session
        self.baseline = baseline
        self.max_store = 0
        self.max_rss_over = 0
        self.steps = 0

    def run(self, pull: Any) -> None:
        limit = self.session.config.memory_limit
        for n in pull.order:
            pull.run_node(n)
            self.steps += 1
            held = self.session.stats().bytes_in_memory
            if held > limit:
                raise AssertionError(f"store holds {held:,} bytes > memory_limit {limit:,}")
            self.max_store = max(self.max_store, held)
            self.max_rss_over = max(self.max_rss_over, process_memory() - self.baseline)

    def close(self) -> None:
        pass


def pipeline(limit: int, array_bytes: int) -> bool:
    count = 3 * limit // array_bytes
    gc.collect()
    baseline = process_memory()
    session = lazygraph.Session(memory_limit=limit, spill=False, progress=False)
    executor = CheckingExecutor(session, baseline)
    x = produce(0, array_bytes)
    for i in range(1, count):
        x = step(x, i)
    start = time.perf_counter()
    (result,) = session.compute(x, executor=executor)
    seconds = time.perf_counter() - start
    stats = session.stats()
    expected = count * (count - 1) / 2
    if result[0] != expected:
        raise AssertionError(f"pipeline result {result[0]} != {expected}")
    del result
    session.close()
    allowed = int(limit * 1.1) + 100 * MB
    ok = executor.max_store <= limit and executor.max_rss_over <= allowed
    print(
        f"-- pipeline: {count} arrays of {array_bytes / MB:.0f} MB = "
        f"{count * array_bytes / MB:,.0f} MB through memory_limit={limit / MB:.0f} MB, "
        f"spill=False, {seconds:.2f} s"
    )
    print(f"{'nodes checked':<34}{executor.steps:>12,}")
    print(f"{'max store bytes':<34}{executor.max_store / MB:>12.1f} MB  (limit {limit / MB:.0f})")
    print(f"{'peak_bytes_in_memory (stats)':<34}{stats.peak_bytes_in_memory / MB:>12.1f} MB")
    print(
        f"{'max RSS over baseline':<34}{executor.max_rss_over / MB:>12.1f} MB  "
        f"(allowed {allowed / MB:.0f})"
    )
    print(f"{'evictions':<34}{stats.evictions:>12,}")
    print()
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20_000, help="values per operation run")
    parser.add_argument("--chain", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--limit-mb", type=int, default=256)
    parser.add_argument("--array-mb", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.ops, args.chain, args.repeat, args.limit_mb = 5_000, 2_000, 3, 64
    print(
        f"lazygraph {lazygraph.__version__}, cachetools {cachetools.__version__}, "
        f"zict {zict.__version__}, Python {sys.version.split()[0]}; best of {args.repeat}\n"
    )
    bounded = pipeline(args.limit_mb * MB, args.array_mb * MB)  # first: a clean RSS baseline
    ops_table(args.ops, args.repeat)
    added = pull_table(args.chain, args.repeat)
    print(
        f"{'PASS' if added <= 2.0 else 'FAIL'}  the store adds <= 2 us per node to a fresh "
        f"pull ({added:.2f} us)"
    )
    print(
        f"{'PASS' if bounded else 'FAIL'}  pipeline at 3x memory_limit stays within the "
        f"store limit and RSS <= limit + 10% + 100 MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
