"""Larger than memory: a pipeline whose results add up to several times its memory_limit.

Each chunk of sensor readings is generated, then cleaned (NaNs filled, standardized). The
cleaned chunks together are bigger than the session's ``memory_limit``, so the store spills
the least recently used ones to a private temporary directory (joblib files) instead of
dropping them. Two questions are asked of the cleaned data: per-chunk statistics, then a
histogram. The second question recomputes nothing upstream: the cleaned chunks come back
from their spill files memory-mapped, read-only, without being regenerated.

Run it:

    python examples/larger_than_ram.py                       # 192 MB of results, limit 32 MB
    python examples/larger_than_ram.py --chunks 64 --chunk-mb 64 --memory-limit 1GB   # 8 GB
"""

from __future__ import annotations

import argparse

import numpy as np

import lazygraph
from lazygraph.units import format_bytes


@lazygraph.node
def generate(chunk: int, rows: int) -> np.ndarray:
    """One chunk of raw readings (rows x 8 float64) with some NaNs (stands in for a file)."""
    rng = np.random.default_rng(chunk)
    data = rng.normal(10.0 + chunk % 3, 2.0, size=(rows, 8))
    data[rng.random(rows) < 0.01, 3] = np.nan
    return data


@lazygraph.node
def cleaned(raw: np.ndarray) -> np.ndarray:
    """Fill NaNs with the column mean, then standardize each column."""
    out = np.where(np.isnan(raw), np.nanmean(raw, axis=0), raw)
    out -= out.mean(axis=0)
    out /= out.std(axis=0)
    return out


@lazygraph.node
def chunk_stats(data: np.ndarray) -> dict[str, float]:
    """Small per-chunk numbers: what the final reduction needs, instead of the whole chunk."""
    return {"rows": float(len(data)), "max": float(data.max()), "sumsq": float((data**2).sum())}


@lazygraph.node
def combine(stats: list[dict[str, float]]) -> dict[str, float]:
    """Reduce the per-chunk numbers."""
    rows = sum(s["rows"] for s in stats)
    return {
        "rows": rows,
        "max": max(s["max"] for s in stats),
        "rms": float(np.sqrt(sum(s["sumsq"] for s in stats) / (rows * 8))),
    }


@lazygraph.node
def histogram(data: np.ndarray, bins: int) -> np.ndarray:
    """Counts of standardized values in ``bins`` bins over [-4, 4]."""
    return np.histogram(data, bins=bins, range=(-4.0, 4.0))[0]


@lazygraph.node
def add_up(counts: list[np.ndarray]) -> np.ndarray:
    return np.sum(counts, axis=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=12, help="number of chunks (default 12)")
    parser.add_argument("--chunk-mb", type=float, default=8, help="MB per chunk (default 8)")
    parser.add_argument("--memory-limit", default="32MB", help='memory tier size (default "32MB")')
    args = parser.parse_args(argv)
    rows = int(args.chunk_mb * 1e6 / (8 * 8))

    clean = [cleaned(generate(i, rows)) for i in range(args.chunks)]
    overview = combine([chunk_stats(c) for c in clean])
    counts = add_up([histogram(c, 16) for c in clean])

    with lazygraph.Session(memory_limit=args.memory_limit, progress=True) as session:
        limit = session.config.memory_limit
        first = overview.compute()
        session.store.flush()  # spill files are written in the background: count them all
        stats = session.stats()
        total = sum(c.info().nbytes or 0 for c in clean) * 2  # raw + cleaned chunks
        print(
            f"pass 1: {stats.computes} nodes computed; results add up to {format_bytes(total)}, "
            f"with a memory_limit of {format_bytes(limit)}"
        )
        print(f"  rows {first['rows']:.0f}, max {first['max']:.2f}, rms {first['rms']:.3f}")
        print(
            f"  peak in memory {format_bytes(stats.peak_bytes_in_memory)}, "
            f"spilled {format_bytes(stats.bytes_spilled)} in {stats.spills} files"
        )
        assert stats.peak_bytes_in_memory <= limit

        hist = counts.compute()
        after = session.stats()
        print(
            f"pass 2 (histogram): {after.computes - stats.computes} nodes computed, "
            f"{after.reloads - stats.reloads} chunks reloaded from spill files"
        )
        print(f"  {int(hist.sum())} values, {hist.argmax()} is the fullest of {len(hist)} bins")

        sample = clean[0].compute()
        print(
            f"chunk 0 came back as {type(sample).__name__}, writeable={sample.flags.writeable} "
            f"(from {clean[0].info().location})"
        )
        print(session.stats())


if __name__ == "__main__":
    main()
