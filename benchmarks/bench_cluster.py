"""Results that stay on the cluster, against dask.delayed on the same cluster (issue 15).

One ``LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="3GB")`` (worker
processes), one client, and in one run:

1. ten chunks of ``--mb`` MB (200) -> a float per chunk -> their sum, pulling only the sum:
   ``dask.delayed`` with the same functions, then lazygraph (``DaskExecutor``, chunk seeds
   as ``Input``s), each from scratch, taken in turns. Goals: lazygraph <= 1.2x dask.delayed's
   wall time; this process's anonymous memory grows < 50 MB (the chunks stay on the workers).
2. the sum pulled again: no task runs, milliseconds.
3. ``chunk(3)`` pulled: no task runs, one chunk travels (its bytes are reported).
4. one chunk's ``Input`` changed, the sum pulled: one chunk runs again on the cluster.
5. ``--tasks`` (10,000) tiny tasks (100 chains joined by a sum): lazygraph's time per task on
   top of dask.delayed's, same client.

    python benchmarks/bench_cluster.py              # the issue's sizes (needs ~7 GB free)
    python benchmarks/bench_cluster.py --quick      # 20 MB chunks, 2,000 tasks: a smoke test
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import lazygraph
from lazygraph.executors.dask import DaskExecutor
from lazygraph.executors.dask_run import DIGEST_PREFIX
from lazygraph.pressure import process_memory

MB = 2**20


# -- the functions, shared by both contenders ------------------------------------------------


def make_chunk(seed: int, mb: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(mb * MB // 8)


def chunk_mean(values: np.ndarray) -> float:
    return float(values.mean())


def add_all(*parts: float) -> float:
    return float(sum(parts))


def inc(x: int) -> int:
    return x + 1


chunk = lazygraph.node(make_chunk, name="chunk")
mean = lazygraph.node(chunk_mean, name="mean")
total = lazygraph.node(add_all, name="total")
step = lazygraph.node(inc, name="step")


# -- measuring ---------------------------------------------------------------------------------


def timed(run: Callable[[], Any]) -> tuple[float, int, Any]:
    """Seconds, growth of this process's anonymous memory (bytes), and what ``run`` returned."""
    gc.collect()
    before = process_memory()
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    return seconds, process_memory() - before, result


def ran(client: Any, run: Callable[[], Any]) -> tuple[float, list[str], Any]:
    """Seconds, the keys of the tasks that ran (hashing tasks left out), and the result."""
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
    keys = [str(t["key"]) for t in stream.data if not str(t["key"]).startswith(DIGEST_PREFIX)]
    return seconds, keys, result


def with_delayed(client: Any, n: int, mb: int) -> float:
    import dask

    parts = [dask.delayed(chunk_mean)(dask.delayed(make_chunk)(i, mb)) for i in range(n)]
    (value,) = dask.compute(dask.delayed(add_all)(*parts), scheduler=client)
    return float(value)


def with_lazygraph(client: Any, n: int, mb: int) -> tuple[float, lazygraph.Session, Any]:
    session = lazygraph.Session(progress=False, executor=DaskExecutor(client))
    seeds = [lazygraph.Input(i, name=f"seed{i}") for i in range(n)]
    chunks = [chunk(s, mb) for s in seeds]
    root = total(*[mean(c) for c in chunks])
    (value,) = session.compute(root)
    return value, session, (seeds, chunks, root)


def chains_delayed(client: Any, chains: int, length: int) -> int:
    import dask

    ends = []
    for c in range(chains):
        x: Any = c
        for _ in range(length):
            x = dask.delayed(inc)(x)
        ends.append(x)
    (value,) = dask.compute(dask.delayed(add_all)(*ends), scheduler=client)
    return int(value)


def chains_lazygraph(client: Any, chains: int, length: int, salt: int) -> int:
    ends = []
    for c in range(chains):
        x: Any = c + salt * 10**9  # fresh keys every run: nothing cached
        for _ in range(length):
            x = step(x)
        ends.append(x)
    with lazygraph.Session(progress=False, executor=DaskExecutor(client)) as session:
        (value,) = session.compute(total(*ends))
    return int(value) - chains * salt * 10**9


# -- the report ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--mb", type=int, default=200, help="MB per chunk (default 200)")
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each contender, in turns")
    args = parser.parse_args(argv)
    if args.quick:
        args.mb, args.tasks = 20, 2_000
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="3GB", processes=True,
                     dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        print(f"cluster: 2 workers x 1 thread, 3GB each; {args.chunks} chunks of {args.mb} MB")
        workload(client, args)
        overhead(client, args)


def workload(client: Any, args: argparse.Namespace) -> None:
    n, mb = args.chunks, args.mb
    best_dask = best_lg = float("inf")
    grown_dask = grown_lg = 0
    session = None
    for _ in range(args.repeat):
        seconds, grown, expected = timed(lambda: with_delayed(client, n, mb))
        best_dask, grown_dask = min(best_dask, seconds), max(grown_dask, grown)
        if session is not None:
            session.close()
        seconds, grown, (value, session, graph) = timed(lambda: with_lazygraph(client, n, mb))
        best_lg, grown_lg = min(best_lg, seconds), max(grown_lg, grown)
        assert value == expected, (value, expected)
    ratio = best_lg / best_dask
    print(f"1. sum of {n} chunks: dask.delayed {best_dask:.2f} s (+{grown_dask / MB:.0f} MB here), "
          f"lazygraph {best_lg:.2f} s (+{grown_lg / MB:.0f} MB here): {ratio:.2f}x "
          f"[goal <= 1.2x, < 50 MB] {'OK' if ratio <= 1.2 and grown_lg < 50 * MB else 'MISSED'}")
    assert session is not None
    seeds, chunks, root = graph
    with session:
        seconds, keys, _ = ran(client, lambda: session.compute(root))
        print(f"2. the sum again: {len(keys)} tasks, {seconds * 1e3:.2f} ms")
        gc.collect()
        before = process_memory()
        seconds, keys, (one,) = ran(client, lambda: session.compute(chunks[3]))
        moved = process_memory() - before
        print(f"3. chunk(3): {len(keys)} tasks, {one.nbytes / MB:.0f} MB value, "
              f"+{moved / MB:.0f} MB here, {seconds:.2f} s")
        del one
        seeds[3].set(n + 3)
        seconds, keys, _ = ran(client, lambda: session.compute(root))
        chunk_runs = [k for k in keys if k.startswith("chunk-")]
        names = sorted(k.split("-")[0] for k in keys)
        print(f"4. one seed changed: {len(chunk_runs)} chunk(s) recomputed on the cluster "
              f"(tasks: {', '.join(names)}), {seconds:.2f} s")


def overhead(client: Any, args: argparse.Namespace) -> None:
    chains = 100
    length = max(args.tasks // chains, 1)
    tasks = chains * length
    best_dask = best_lg = float("inf")
    for salt in range(1, args.repeat + 1):
        seconds, _, expected = timed(lambda: chains_delayed(client, chains, length))
        best_dask = min(best_dask, seconds)
        seconds, _, value = timed(lambda s=salt: chains_lazygraph(client, chains, length, s))
        best_lg = min(best_lg, seconds)
        assert value == expected, (value, expected)
    per_task = (best_lg - best_dask) / tasks
    print(f"5. {tasks} tiny tasks: dask.delayed {best_dask:.2f} s ({best_dask / tasks * 1e6:.0f} "
          f"us/task), lazygraph {best_lg:.2f} s: +{per_task * 1e6:.0f} us/task on top "
          f"({best_lg / best_dask:.2f}x)")


if __name__ == "__main__":
    main()
