"""Running on a dask.distributed cluster: the graph runs on Dask's workers, results stay there.

A local cluster (worker processes on this machine) stands in for a real one: pass
``--scheduler tcp://host:8786`` to use an existing cluster instead. With a ``Client`` open,
``Session(executor="dask")`` hands each pull's missing nodes to it (Dask's own convention: the
current client); ``lazygraph.DaskExecutor(client)`` names a client explicitly, per session or
per call. The chunks stay on the workers (the session's cluster tier holds references to
them): only the pulled values travel here, pulling again runs nothing anywhere, and a later
pull uses the chunks where they are and sends only the missing nodes to the cluster.

Run it:

    python examples/dask_cluster.py                 # 2 workers, 8 chunks
    python examples/dask_cluster.py --workers 4 --chunks 64 --rows 1000000
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from dask.distributed import Client, LocalCluster

import lazygraph


@lazygraph.node
def simulate(seed: int, rows: int) -> np.ndarray:
    """A chunk of simulated measurements."""
    return np.random.default_rng(seed).lognormal(0.0, 0.5, rows)


@lazygraph.node
def describe(values: np.ndarray) -> dict[str, float]:
    """Per-chunk numbers, and the process that computed them."""
    return {
        "n": float(len(values)),
        "sum": float(values.sum()),
        "p99": float(np.quantile(values, 0.99)),
        "pid": float(os.getpid()),
    }


@lazygraph.node
def overall(parts: list[dict[str, float]]) -> dict[str, float]:
    """Combine the chunks' numbers."""
    n = sum(p["n"] for p in parts)
    return {
        "n": n,
        "mean": round(sum(p["sum"] for p in parts) / n, 6),
        "worst_p99": round(max(p["p99"] for p in parts), 6),
    }


def pids(parts: list[lazygraph.Node]) -> set[int]:
    return {int(part.compute()["pid"]) for part in parts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="local workers (default 2)")
    parser.add_argument("--chunks", type=int, default=8, help="chunks (default 8)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows per chunk (default 200000)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler")
    args = parser.parse_args(argv)

    parts = [describe(simulate(seed, args.rows)) for seed in range(args.chunks)]
    result = overall(parts)

    if args.scheduler:
        cluster = None
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
    try:
        with lazygraph.Session(executor="dask", progress=False) as session:
            answer = result.compute()
            print(f"on the cluster: {session.stats().computes} nodes computed -> {answer}")
            workers = pids(parts)
            print(
                f"chunks ran in {len(workers)} worker process(es), "
                f"not here: {os.getpid() not in workers}"
            )

            chunks = [simulate(seed, args.rows) for seed in range(args.chunks)]
            kept = sum(chunk.info().location == "cluster" for chunk in chunks)
            print(f"chunks kept on the cluster: {kept} of {len(chunks)}; held here: "
                  f"{session.stats().bytes_in_memory} bytes")

            before = session.stats().computes
            assert result.compute() is answer  # in the local store now: nothing is sent
            print(f"pulled again: {session.stats().computes - before} nodes computed")

            # One more chunk: only its two nodes go to the cluster, named explicitly here.
            more = overall([*parts, describe(simulate(args.chunks, args.rows))])
            bigger = more.compute(executor=lazygraph.DaskExecutor(client))
            print(
                f"one chunk added: {session.stats().computes - before} nodes computed -> {bigger}"
            )

        with lazygraph.Session(progress=False):  # the same graph, run here with "sync"
            assert result.compute() == answer
            print("same answer from the sync executor: True")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()
