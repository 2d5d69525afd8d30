"""Incremental recomputation: lazygraph after an Input change vs computing again from scratch.

The graph: ``--chains`` chains of ``--length`` nodes (10,000 by default), each a small numpy
step, all gathered by one final node. One Input feeds the first chain, i.e. 1% of the
nodes. After changing that Input we time

- lazygraph's incremental pull (``x.set(v)`` + ``session.compute(root)``),
- a fresh lazygraph pull of the same graph (new nodes, new Session: keys, plan and runs),
- a fresh ``dask.delayed`` run of the same graph (synchronous and threaded schedulers),

then the re-pull of an unchanged graph (100 vs 20,000 nodes, per call) and what early
cutoff saves downstream of an ``abs`` node (call counts). Single process, best of N.

    python benchmarks/bench_incremental.py                 # the issue's sizes
    python benchmarks/bench_incremental.py --chains 20     # a quick run
"""

from __future__ import annotations

import argparse
import collections
import gc
import time
from collections.abc import Callable
from typing import Any

import dask
import numpy as np

import lazygraph
from lazygraph import Input, Session

CALLS: collections.Counter[str] = collections.Counter()
WIDTH = 64  # floats per step: a small array, so scheduling overhead is what we measure


def best_of(func: Callable[..., Any], repeat: int, setup: Callable[[], Any] | None = None) -> float:
    """Fastest of ``repeat`` runs, in seconds; ``setup()``'s result (untimed) is the argument."""
    times = []
    for _ in range(repeat):
        arg = setup() if setup is not None else None
        gc.collect()
        start = time.perf_counter()
        func() if setup is None else func(arg)
        times.append(time.perf_counter() - start)
        del arg
    return min(times)


# -- the work, shared by lazygraph and dask -----------------------------------------------


def source(seed: Any) -> np.ndarray:
    return np.full(WIDTH, float(seed))


def step(a: np.ndarray, i: int) -> np.ndarray:
    CALLS["step"] += 1
    return a + i


def gather(*tails: np.ndarray) -> float:
    return float(sum(t.sum() for t in tails))


def magnitude(v: float) -> float:
    CALLS["magnitude"] += 1
    return abs(v)


def counted_source(v: Any) -> np.ndarray:
    CALLS["source"] += 1
    return source(v)


lg_source = lazygraph.node(source)
lg_step = lazygraph.node(step)
lg_gather = lazygraph.node(gather)
# The cutoff demo: the same functions with cutoff on (default) and off everywhere.
CUTOFF = {
    flag: (
        lazygraph.node(name="magnitude", cutoff=flag)(magnitude),
        lazygraph.node(name="source", cutoff=flag)(counted_source),
        lazygraph.node(name="step", cutoff=flag)(step),
    )
    for flag in (True, False)
}


def lazygraph_graph(x: Any, chains: int, length: int) -> lazygraph.Node:
    tails = []
    for c in range(chains):
        a = lg_source(x if c == 0 else c)
        for i in range(length - 1):
            a = lg_step(a, i)
        tails.append(a)
    return lg_gather(*tails)


def dask_graph(x: Any, chains: int, length: int) -> Any:
    d_source, d_step, d_gather = (dask.delayed(f) for f in (source, step, gather))
    tails = []
    for c in range(chains):
        a = d_source(x if c == 0 else c)
        for i in range(length - 1):
            a = d_step(a, i)
        tails.append(a)
    return d_gather(*tails)


# -- measurements ------------------------------------------------------------------------


def after_a_change(chains: int, length: int, repeat: int) -> list[tuple[str, float, str]]:
    nodes = chains * length + 1

    def fresh_pull(root: lazygraph.Node) -> None:
        with Session(progress=False) as s:
            s.compute(root)

    fresh = best_of(fresh_pull, repeat, setup=lambda: lazygraph_graph(1.0, chains, length))

    def build_and_pull() -> None:
        with Session(progress=False) as s:
            s.compute(lazygraph_graph(1.0, chains, length))

    build_fresh = best_of(build_and_pull, repeat)

    x = Input(1.0, name="x")
    root = lazygraph_graph(x, chains, length)
    values = iter(range(2, 2 + repeat))
    with Session(progress=False) as session:
        session.compute(root)
        CALLS.clear()
        incremental = best_of(lambda: (x.set(float(next(values))), session.compute(root)), repeat)
        per_change = CALLS["step"] / repeat
        expected = dask_graph(x.value, chains, length).compute(scheduler="sync")
        assert session.compute(root)[0] == expected

    dask_sync = best_of(lambda: dask_graph(1.0, chains, length).compute(scheduler="sync"), repeat)
    dask_threads = best_of(
        lambda: dask_graph(1.0, chains, length).compute(scheduler="threads"), repeat
    )
    note = f"{per_change:.0f} of {nodes:,} nodes ran, incl. x.set()"
    return [
        ("lazygraph incremental pull", incremental, note),
        ("lazygraph fresh pull", fresh, f"graph built beforehand, {nodes:,} nodes ran"),
        ("lazygraph fresh build + pull", build_fresh, "graph built in the timing"),
        ("dask.delayed fresh (sync)", dask_sync, "graph built in the timing"),
        ("dask.delayed fresh (threads)", dask_threads, "graph built in the timing"),
    ]


def repull(nodes: int, calls: int) -> dict[str, float]:
    """Seconds per re-pull of an unchanged graph of about ``nodes`` nodes, three ways."""
    x = Input(1.0, name="x")
    root = lazygraph_graph(x, max(1, nodes // 100), min(100, nodes))
    with Session(progress=False) as session:
        session.compute(root)
        compute = session.compute
        return {
            "session.compute(root)": best_of(lambda: [compute(root) for _ in range(calls)], 5),
            "root.compute()": best_of(lambda: [root.compute() for _ in range(calls)], 5),
            "session.compute(root, root)": best_of(
                lambda: [compute(root, root) for _ in range(calls)], 5
            ),
        }


def cutoff_savings(length: int) -> list[tuple[str, int, float]]:
    rows = []
    for flag, label in ((True, "cutoff on (default)"), (False, "cutoff=False everywhere")):
        magnitude_node, source_node, step_node = CUTOFF[flag]
        x = Input(2.0, name="x")
        tail = source_node(magnitude_node(x))
        for i in range(length):
            tail = step_node(tail, i)
        with Session(progress=False) as session:
            session.compute(tail)
            CALLS.clear()
            x.set(-2.0)  # |x| unchanged
            start = time.perf_counter()
            session.compute(tail)
            seconds = time.perf_counter() - start
        rows.append((label, sum(CALLS.values()), seconds))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    rows = after_a_change(args.chains, args.length, args.repeat)
    fresh = rows[1][1]
    print(f"\nAfter changing one Input that feeds 1% of a {args.chains * args.length:,}-node graph")
    print(f"{'':30} {'ms':>9} {'% of fresh lazygraph':>21}  notes")
    for name, seconds, note in rows:
        print(f"{name:30} {seconds * 1e3:9.2f} {100 * seconds / fresh:20.1f}%  {note}")

    calls = 2000
    small, big = repull(100, calls), repull(20_000, calls)
    print("\nRe-pull of an unchanged graph (per call)")
    print(f"{'':30} {'100 nodes µs':>13} {'20,000 nodes µs':>16} {'ratio':>7}")
    for how in small:
        a, b = small[how] / calls * 1e6, big[how] / calls * 1e6
        print(f"{how:30} {a:13.2f} {b:16.2f} {b / a:7.2f}")

    print("\nEarly cutoff: x 2 -> -2 above abs(), then source + a 1,000-node chain")
    print(f"{'':30} {'calls':>9} {'ms':>9}")
    for label, calls, seconds in cutoff_savings(1000):
        print(f"{label:30} {calls:9,} {seconds * 1e3:9.2f}")


if __name__ == "__main__":
    main()
