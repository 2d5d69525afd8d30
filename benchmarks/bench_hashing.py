"""Content hashing: lazygraph vs the tools a user would reach for instead.

Hashes a large float64 array and a mixed DataFrame (ints, floats, strings) with
``lazygraph.hashing.content_hash``, ``joblib.hash``, ``dask.base.tokenize``, hashlib md5 and
blake2b and raw ``xxhash.xxh3_128`` over the buffer, and times ``a.sum()`` as the floor of
reading the memory once. Then measures the peak extra memory while hashing an array
(tracemalloc, and the RSS high-water mark of a fresh process). Single-threaded throughout.

    python benchmarks/bench_hashing.py                   # 1 GB array, 10 M-row DataFrame
    python benchmarks/bench_hashing.py --array-mb 256 --rows 1000000   # a quick run
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import dask.base
import joblib
import numpy as np
import pandas as pd
import xxhash

from lazygraph.hashing import content_hash


def best_of(func: Callable[[], Any], repeat: int) -> float:
    """Fastest of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def make_array(megabytes: int) -> np.ndarray:
    return np.random.default_rng(0).random(megabytes * 2**20 // 8)


def make_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    ints = rng.integers(0, 1_000_000, rows)
    return pd.DataFrame(
        {
            "id": ints,
            "value": rng.random(rows),
            "label": [f"item-{i}" for i in ints.tolist()],
        }
    )


def array_rows(a: np.ndarray, repeat: int) -> list[tuple[str, float]]:
    buf = a.data.cast("B")
    return [
        ("a.sum() (memory-read floor)", best_of(a.sum, repeat)),
        ("raw xxh3_128 over the buffer", best_of(lambda: xxhash.xxh3_128(buf).digest(), repeat)),
        ("lazygraph content_hash", best_of(lambda: content_hash(a), repeat)),
        ("dask.base.tokenize", best_of(lambda: dask.base.tokenize(a), repeat)),
        ("hashlib.md5 over the buffer", best_of(lambda: hashlib.md5(buf).digest(), repeat)),
        ("hashlib.blake2b over the buffer", best_of(lambda: hashlib.blake2b(buf).digest(), repeat)),
        ("joblib.hash", best_of(lambda: joblib.hash(a), repeat)),
    ]


def frame_rows(df: pd.DataFrame, repeat: int) -> list[tuple[str, float]]:
    return [
        ("lazygraph content_hash", best_of(lambda: content_hash(df), repeat)),
        ("dask.base.tokenize", best_of(lambda: dask.base.tokenize(df), repeat)),
        ("pandas hash_pandas_object", best_of(lambda: pd.util.hash_pandas_object(df), repeat)),
        ("joblib.hash", best_of(lambda: joblib.hash(df), repeat)),
    ]


def print_table(title: str, nbytes: int, rows: list[tuple[str, float]]) -> dict[str, float]:
    times = dict(rows)
    joblib_s = times["joblib.hash"]
    print(f"\n{title} ({nbytes / 1e9:.2f} GB)")
    print(f"{'tool':34} {'seconds':>9} {'GB/s':>8} {'x joblib':>9}")
    for name, seconds in sorted(rows, key=lambda row: row[1]):
        print(f"{name:34} {seconds:9.3f} {nbytes / seconds / 1e9:8.2f} {joblib_s / seconds:9.1f}")
    return times


def traced_peak(func: Callable[[], Any]) -> int:
    """Peak bytes allocated (numpy buffers included) while ``func`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


RSS_PROBE = """
import resource, numpy as np
from lazygraph.hashing import content_hash
a = np.random.default_rng(0).random({n})
content_hash(np.arange(3.0))  # warm up imports and handlers before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
content_hash(a)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


def memory_report(megabytes: int) -> float:
    a = make_array(megabytes)
    strided = a.reshape(-1, 4)[:, ::2]
    lazygraph_peak = traced_peak(lambda: content_hash(a))
    strided_peak = traced_peak(lambda: content_hash(strided))
    joblib_peak = traced_peak(lambda: joblib.hash(a))
    probe = textwrap.dedent(RSS_PROBE).format(n=a.size)
    rss = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    rss_extra = int(rss.stdout.strip())
    print(f"\nPeak extra memory while hashing a {a.nbytes / 2**20:.0f} MiB float64 array")
    for name, peak in [
        ("lazygraph (tracemalloc)", lazygraph_peak),
        ("lazygraph, RSS high-water growth", rss_extra),
        ("lazygraph, strided view a[:, ::2]", strided_peak),
        ("joblib.hash (tracemalloc)", joblib_peak),
    ]:
        print(f"{name:36} {peak / 2**20:9.2f} MiB  {100 * peak / a.nbytes:6.2f} %")
    return max(lazygraph_peak, rss_extra, strided_peak) / a.nbytes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--array-mb", type=int, default=1024, help="array size (MiB)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="DataFrame rows")
    parser.add_argument("--memory-mb", type=int, default=512, help="array for the memory probe")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the best counts")
    args = parser.parse_args(argv)

    a = make_array(args.array_mb)
    array_times = print_table("float64 array", a.nbytes, array_rows(a, args.repeat))
    del a

    start = time.perf_counter()
    df = make_frame(args.rows)
    built = time.perf_counter() - start
    nbytes = int(df.memory_usage(deep=True).sum())
    print(f"\n(built the {args.rows:,}-row DataFrame in {built:.1f} s)")
    frame_times = print_table(
        f"DataFrame, {args.rows:,} rows: int64, float64, str", nbytes, frame_rows(df, args.repeat)
    )
    del df

    extra = memory_report(args.memory_mb)

    lg, floor = array_times["lazygraph content_hash"], array_times["a.sum() (memory-read floor)"]
    print("\nGoals")
    print(
        f"  array: {array_times['joblib.hash'] / lg:.1f}x joblib.hash (goal >= 15x), "
        f"{lg / floor:.2f}x the a.sum() floor (goal <= 1.5x)"
    )
    print(
        f"  DataFrame: {frame_times['joblib.hash'] / frame_times['lazygraph content_hash']:.1f}x "
        "joblib.hash (goal >= 10x)"
    )
    print(f"  memory: {100 * extra:.2f} % of the array (goal < 5 %)")


if __name__ == "__main__":
    main()
