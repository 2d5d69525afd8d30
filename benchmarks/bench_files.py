"""FileTier write and reload speed next to what a user would write by hand.

Writes a large float64 array with: raw ``f.write`` + ``fsync``, ``np.save`` + ``fsync``,
``joblib.dump`` + ``fsync`` and ``FileTier.write`` (joblib stream + checksum + authenticated
trailer + fsync + atomic rename). Reloads it memory-mapped with ``np.load``,
``joblib.load(mmap_mode="r")`` (neither verifies anything) and ``FileTier.get``: in the writing
process, and in a new process (the pickle stream's MAC is checked, the array payload is
trusted because the file is the one its writer bound: O(1)), then for a *copy* of the entry
(same bytes and mtime, another inode) in a new process (its payload is hashed on first use,
the second get is O(1)). With ``--cold`` (root only), the new-process gets also run after
dropping the page cache.

Run: /work/venv/bin/python benchmarks/bench_files.py [--gb 1] [--dir DIR] [--cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np

from lazygraph.store.files import FileTier

SECRET = bytes(range(32))
KEY = b"\x42" * 16


def fsynced(path: Path, write: Callable[[object], None]) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def median_time(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_writes(arr: np.ndarray, where: Path, repeats: int) -> dict[str, float]:
    """Median per method over ``repeats`` rounds; methods interleave within a round, so
    background writeback and other load on the machine hit them all alike."""
    target = where / "w.bin"
    tier = FileTier(where / "tier", secret=SECRET)
    methods: dict[str, tuple[Callable[[], object], Callable[[], None]]] = {
        "raw f.write + fsync": (
            lambda: fsynced(target, lambda f: f.write(arr.data)),
            lambda: target.unlink(),
        ),
        "np.save + fsync": (
            lambda: fsynced(target, lambda f: np.save(f, arr)),
            lambda: target.unlink(),
        ),
        "joblib.dump + fsync": (
            lambda: fsynced(target, lambda f: joblib.dump(arr, f)),
            lambda: target.unlink(),
        ),
        "FileTier.write": (
            lambda: tier.write(KEY, arr, meta={"name": "bench"}),
            lambda: tier.discard(KEY),
        ),
    }
    times = interleaved_times(methods, repeats)
    tier.close()
    return {name: statistics.median(values) for name, values in times.items()}


def interleaved_times(
    methods: dict[str, tuple[Callable[[], object], Callable[[], object]]], repeats: int
) -> dict[str, list[float]]:
    """Seconds of each ``(run, cleanup)`` over ``repeats`` rounds, contenders interleaved.

    Round 0 warms up (imports, page cache) and is dropped; the disk is synced before each.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(repeats + 1):
        for name, (run, cleanup) in methods.items():
            os.sync()
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            cleanup()
            if round_:
                times[name].append(elapsed)
    return times


CHILD = """
import sys, time
import joblib  # imported on first use by FileTier; kept out of the timing
from pathlib import Path
from lazygraph.store.files import FileTier
tier = FileTier(Path(sys.argv[1]), secret=bytes(range(32)))
key = b"\\x42" * 16
t0 = time.perf_counter(); first = tier.get(key); t1 = time.perf_counter()
second = tier.get(key); t2 = time.perf_counter()
assert first.shape == second.shape and first[-1] == second[-1]
print(t1 - t0, t2 - t1)
"""


def new_process_get(directory: Path, *, cold: bool) -> tuple[float, float]:
    if cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(directory)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def copy_entry(directory: Path) -> None:
    """Replace the entry by a copy of itself: the same bytes and mtime, another inode."""
    path = directory / (KEY.hex() + ".joblib")
    copy = path.with_name("copy")
    shutil.copy2(path, copy)
    os.replace(copy, path)


def bench_reads(arr: np.ndarray, where: Path, repeats: int, cold: bool) -> dict[str, float]:
    np.save(where / "r.npy", arr)
    joblib.dump(arr, where / "r.joblib")
    tier = FileTier(where / "tier", secret=SECRET)
    tier.write(KEY, arr, meta={"name": "bench"})
    results = {
        "np.load(mmap_mode='r')": median_time(
            repeats, lambda: np.load(where / "r.npy", mmap_mode="r")
        ),
        "joblib.load(mmap_mode='r')": median_time(
            repeats, lambda: joblib.load(where / "r.joblib", mmap_mode="r")
        ),
        "FileTier.get, writing process": median_time(repeats, lambda: tier.get(KEY)),
    }
    tier.close()
    first, second = new_process_get(where / "tier", cold=False)
    results["FileTier.get, new process, 1st (bound file: O(1))"] = first
    results["FileTier.get, new process, 2nd"] = second
    if cold:
        first, _ = new_process_get(where / "tier", cold=True)
        results["FileTier.get, new process, 1st, cold cache"] = first
    copy_entry(where / "tier")
    first, second = new_process_get(where / "tier", cold=False)
    results["FileTier.get of a copy, new process, 1st (hashes)"] = first
    results["FileTier.get of a copy, new process, 2nd"] = second
    if cold:
        copy_entry(where / "tier")
        first, _ = new_process_get(where / "tier", cold=True)
        results["FileTier.get of a copy, new process, 1st, cold cache"] = first
    return results


def print_table(title: str, results: dict[str, float], nbytes: int, base: str) -> None:
    print(f"\n{title}")
    print(f"{'method':<44} {'seconds':>10} {'GB/s':>8} {'vs ' + base:>16}")
    for name, seconds in results.items():
        ratio = results[base] / seconds
        print(f"{name:<44} {seconds:>10.4f} {nbytes / seconds / 1e9:>8.2f} {ratio:>15.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="array size in GB (default 1)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also a cold-cache get (root)")
    args = parser.parse_args()
    arr = np.random.default_rng(0).random(int(args.gb * 1e9) // 8)
    with tempfile.TemporaryDirectory(dir=args.dir) as where:
        writes = bench_writes(arr, Path(where), args.repeats)
        reads = bench_reads(arr, Path(where), max(args.repeats, 20), args.cold)
    print(f"array: {arr.nbytes / 1e9:.2f} GB float64; median of {args.repeats} interleaved rounds")
    print_table("write (higher ratio is better)", writes, arr.nbytes, "raw f.write + fsync")
    print("\nreload, memory-mapped and untouched (ms):")
    for name, seconds in reads.items():
        print(f"  {name:<48} {seconds * 1e3:>9.2f} ms")


if __name__ == "__main__":
    main()
