"""A persistent cache: run this script twice, and the second run loads its results from disk.

With ``cache_dir`` set, every result is also written there (atomically, authenticated with a
per-user secret kept outside the directory). A new process running the same pipeline finds
each result by its key, which depends only on the code and the data, and loads it instead of
computing it: big arrays come back memory-mapped and read-only. Edit ``features`` below and
run again: only ``features`` and ``model_score`` recompute.

Run it:

    python examples/persistent_cache.py            # computes, writes the cache
    python examples/persistent_cache.py            # loads everything from the cache
    lazygraph cache info --dir <the directory it prints>
    python examples/persistent_cache.py --clear    # start over
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import tempfile
import time

import numpy as np

import lazygraph
from lazygraph.units import format_bytes


@lazygraph.node
def load(rows: int, seed: int) -> np.ndarray:
    """Raw data (stands in for a slow read or download)."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(rows, 16))
    raw[:, 0] += raw[:, 1] * raw[:, 2]  # a pattern that only the product features explain
    return raw


@lazygraph.node
def features(raw: np.ndarray) -> np.ndarray:
    """Pairwise products of the first columns: wide, and slow enough to be worth keeping."""
    cols = [raw[:, i] * raw[:, j] for i in range(8) for j in range(i, 8)]
    return np.column_stack([raw, *cols])


@lazygraph.node
def model_score(x: np.ndarray, ridge: float) -> float:
    """R^2 of a ridge regression of column 0 on the others."""
    y, z = x[:, 0], x[:, 1:]
    beta = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ y)
    residual = y - z @ beta
    return float(1.0 - residual.var() / y.var())


def default_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"lazygraph-example-{getpass.getuser()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=default_dir(), help="where results persist")
    parser.add_argument("--rows", type=int, default=200_000, help="rows (default 200000)")
    parser.add_argument("--clear", action="store_true", help="delete the cache and stop")
    args = parser.parse_args(argv)
    if args.clear:
        shutil.rmtree(args.cache_dir, ignore_errors=True)
        print(f"removed {args.cache_dir}")
        return

    wide = features(load(args.rows, 0))
    score = model_score(wide, 0.1)
    with lazygraph.Session(cache_dir=args.cache_dir, progress=False) as session:
        start = time.perf_counter()
        value = score.compute()
        seconds = time.perf_counter() - start
        stats = session.stats()
        print(
            f"score {value:.6f} in {seconds:.2f} s: {stats.computes} nodes computed, "
            f"{stats.reloads} loaded from {args.cache_dir}"
        )
        where = wide.info().location  # before the pull: memory in run 1, disk in run 2
        x = wide.compute()
        print(f"features from {where}: {type(x).__name__} {x.shape}, writeable={x.flags.writeable}")
    # Closing the session waited for the background writes; the files are complete now.
    print(f"the cache holds {format_bytes(du(args.cache_dir))}; run me again to load from it")


def du(directory: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(directory) if entry.is_file())


if __name__ == "__main__":
    main()
