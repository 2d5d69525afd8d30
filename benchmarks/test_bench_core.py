"""pytest-benchmark suite for the pull scheduler, the hit path and the store.

Not part of the test run (``testpaths = ["tests"]``); run it on purpose:

    pytest benchmarks/ --benchmark-group-by=group
    pytest benchmarks/ --benchmark-disable      # just check that every case still works

Each group puts lazygraph next to what a user would pick instead (the graph shapes and the
bare evaluator come from ``compare.py``, which prints the ratios and goals in one table).
Every case checks its result, so a fast wrong answer fails.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cachetools
import dask
import dask.local
import joblib
import pytest
import zict
from compare import (
    DELAYED_OPS,
    LG_OPS,
    PLAIN_OPS,
    SHAPES,
    THUNK_OPS,
    bare_compute,
    dask_graph,
    inc,
)

import lazygraph
from lazygraph.config import Config
from lazygraph.sizing import sizeof
from lazygraph.store.base import MISSING
from lazygraph.store.store import Store

NODES = 2_000  # big enough for per-node costs to dominate, small enough for many rounds
ROUNDS = 10


@pytest.fixture
def sessions() -> Iterator[list[lazygraph.Session]]:
    """Fresh sessions made by a case, closed afterwards."""
    made: list[lazygraph.Session] = []
    yield made
    for session in made:
        session.close()


# -- fresh build + compute, per shape --------------------------------------------------------


@pytest.mark.parametrize("shape", list(SHAPES))
def test_lazygraph_fresh(benchmark: Any, sessions: list[lazygraph.Session], shape: str) -> None:
    benchmark.group = f"fresh {shape}"
    build = SHAPES[shape]

    def setup() -> tuple[tuple[lazygraph.Session], dict[str, Any]]:
        session = lazygraph.Session(progress=False)
        sessions.append(session)
        return (session,), {}

    def run(session: lazygraph.Session) -> Any:
        return session.compute(build(LG_OPS, NODES))[0]

    result = benchmark.pedantic(run, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    assert result == build(PLAIN_OPS, NODES)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_bare_pull_floor(benchmark: Any, shape: str) -> None:
    benchmark.group = f"fresh {shape}"
    build = SHAPES[shape]
    result = benchmark(lambda: bare_compute(build(THUNK_OPS, NODES)))
    assert result == build(PLAIN_OPS, NODES)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_dask_get_sync(benchmark: Any, shape: str) -> None:
    benchmark.group = f"fresh {shape}"
    dsk, root = dask_graph(shape, NODES)
    result = benchmark(dask.local.get_sync, dsk, root)
    assert result == SHAPES[shape](PLAIN_OPS, NODES)


def test_dask_delayed_fan_in(benchmark: Any) -> None:
    benchmark.group = "fresh fan-in"
    build = SHAPES["fan-in"]
    result = benchmark.pedantic(
        lambda: build(DELAYED_OPS, NODES).compute(scheduler="sync"), rounds=3
    )
    assert result == build(PLAIN_OPS, NODES)


# -- hits --------------------------------------------------------------------------------------


def test_hit_same_node(benchmark: Any) -> None:
    benchmark.group = "hit"
    with lazygraph.Session(progress=False) as session:
        same = LG_OPS.inc(1)
        session.compute(same)
        assert benchmark(same.compute) == 2
        assert session.stats().computes == 1


def test_hit_new_node(benchmark: Any) -> None:
    benchmark.group = "hit"
    factory = LG_OPS.inc
    with lazygraph.Session(progress=False) as session:
        factory(1).compute()
        assert benchmark(lambda: factory(1).compute()) == 2
        assert session.stats().computes == 1


def test_hit_lru_cache(benchmark: Any) -> None:
    benchmark.group = "hit"
    cached = functools.lru_cache(maxsize=None)(inc)
    cached(1)
    assert benchmark(cached, 1) == 2
    assert cached.cache_info().misses == 1


def test_hit_joblib_memory(benchmark: Any, tmp_path: Path) -> None:
    benchmark.group = "hit"
    cached = joblib.Memory(tmp_path, verbose=0).cache(inc)
    cached(1)
    assert benchmark(cached, 1) == 2


# -- the store ---------------------------------------------------------------------------------

STORE_KEYS = [os.urandom(16) for _ in range(1_000)]


def lazygraph_store() -> Any:
    store = Store(Config.from_options(memory_limit=10**9, spill=False, progress=False))
    return functools.partial(store.put, name="f", seconds=0.0), store.get


def cachetools_store() -> Any:
    cache: cachetools.LRUCache[bytes, Any] = cachetools.LRUCache(10**9, getsizeof=sizeof)
    return cache.__setitem__, lambda key: cache.get(key, MISSING)


def zict_store() -> Any:
    lru: zict.LRU[bytes, Any] = zict.LRU(10**9, {}, weight=lambda k, v: sizeof(v))
    return lru.__setitem__, lambda key: lru.get(key, MISSING)


STORES = {"lazygraph": lazygraph_store, "cachetools": cachetools_store, "zict": zict_store}


@pytest.mark.parametrize("name", list(STORES))
def test_store_put(benchmark: Any, name: str) -> None:
    benchmark.group = "store put x1000"
    holder: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        holder[:] = [STORES[name]()]
        return (holder[0][0],), {}

    def fill(put: Any) -> None:
        for i, key in enumerate(STORE_KEYS):
            put(key, i)

    benchmark.pedantic(fill, setup=setup, rounds=20)
    assert holder[0][1](STORE_KEYS[-1]) == len(STORE_KEYS) - 1


@pytest.mark.parametrize("name", list(STORES))
def test_store_get(benchmark: Any, name: str) -> None:
    benchmark.group = "store get x1000"
    put, get = STORES[name]()
    for i, key in enumerate(STORE_KEYS):
        put(key, i)

    def read() -> int:
        return sum(get(key) for key in STORE_KEYS)

    assert benchmark(read) == sum(range(len(STORE_KEYS)))
