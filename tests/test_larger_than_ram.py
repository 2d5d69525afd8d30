"""Larger than RAM, for real: a pipeline three times the memory it may use, in a memory cgroup.

Issue 5, "Larger than RAM, for real". A child memory cgroup (v1 or v2, see ``cgroup_util``)
limits a subprocess to ``LIMIT`` bytes with no swap. In it, the same 30 chunks of 40 MB
(1.2 GB, three times the limit) are summed twice:

- in plain Python, holding every chunk in a list: the kernel's OOM killer must end it, which
  proves the limit binds and the data does not fit;
- with lazygraph at its default settings (``Session()``; only the progress bar is off), as
  a reduction node reading all the chunks at once, then as a chain folding 30 new chunks one
  at a time, then a second reduction over the first chunks, read back from spill files: it
  must finish with the exact sums, without being killed, having spilled more than the limit.

The defaults come from the cgroup (``memory_limit`` = 25% and ``rss_limit`` = 80% of the
usable memory), which the child reports and the test checks against the limit set here.
Skipped, with the reason, where a memory cgroup cannot be created (not root, read-only
cgroupfs, a v2 hierarchy that does not delegate the memory controller).
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator

import pytest
from cgroup_util import CgroupRun, CgroupUnavailable, MemoryCgroup

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux only"),
]

LIMIT = 400 * 10**6
COUNT = 30
LENGTH = 5_000_000  # float64: 40 MB per chunk, COUNT chunks = 3x LIMIT

CHUNKS = """
import numpy as np

def make_chunk(i, length):
    return np.full(length, float(i))
"""

PLAIN_CHILD = (
    CHUNKS
    + """
import sys
count, length = int(sys.argv[1]), int(sys.argv[2])
chunks = [make_chunk(i, length) for i in range(count)]  # every result held, as a list does
print(sum(float(c.sum()) for c in chunks))
"""
)

LAZYGRAPH_CHILD = (
    CHUNKS
    + """
import json, sys, threading
import lazygraph
from lazygraph.machine import usable_memory

count, length = int(sys.argv[1]), int(sys.argv[2])
peak_anon = 0

def anon_bytes():
    # RssAnon: resident memory not backed by files; mapped spill files do not count.
    with open("/proc/self/status", "rb") as status:
        return int(status.read().split(b"RssAnon:")[1].split()[0]) * 1024

def sample(stop):
    global peak_anon
    while not stop.wait(0.002):
        peak_anon = max(peak_anon, anon_bytes())

@lazygraph.node
def chunk(i):
    return make_chunk(i, length)

@lazygraph.node
def total(*chunks):  # needs every chunk at once
    return float(sum(float(c.sum()) for c in chunks))

@lazygraph.node
def fold(acc, c):  # one chunk at a time
    return acc + float(c.sum())

@lazygraph.node
def total_of_maxima(*chunks):
    return float(sum(float(c.max()) for c in chunks))

stop = threading.Event()
threading.Thread(target=sample, args=(stop,), daemon=True).start()
with lazygraph.Session(progress=False) as session:
    (all_at_once,) = session.compute(total(*[chunk(i) for i in range(count)]))
    acc = 0.0
    for i in range(count, 2 * count):
        acc = fold(acc, chunk(i))
    (one_at_a_time,) = session.compute(acc)
    computes = session.stats().computes
    (again,) = session.compute(total_of_maxima(*[chunk(i) for i in range(count)]))
    stats = session.stats()
    config = session.config
stop.set()
print(json.dumps({
    "all_at_once": all_at_once, "one_at_a_time": one_at_a_time, "again": again,
    "computes_again": stats.computes - computes, "reloads": stats.reloads,
    "spills": stats.spills, "bytes_spilled": stats.bytes_spilled,
    "usable": usable_memory(), "memory_limit": config.memory_limit,
    "rss_limit": config.rss_limit, "peak_anon": peak_anon,
}))
"""
)


@pytest.fixture
def cgroup() -> Iterator[MemoryCgroup]:
    try:
        group = MemoryCgroup.create(LIMIT)
    except CgroupUnavailable as exc:
        pytest.skip(f"no memory cgroup for this test: {exc}")
    try:
        yield group
    finally:
        group.remove()


def run_in(group: MemoryCgroup, code: str) -> CgroupRun:
    argv = [sys.executable, "-c", textwrap.dedent(code), str(COUNT), str(LENGTH)]
    return group.run(argv, timeout=120)


def describe(done: CgroupRun) -> str:
    return (
        f"exit {done.returncode}, peak {done.peak_bytes} of {done.limit_bytes} bytes, "
        f"OOM kills {done.oom_kills}\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-4000:]}"
    )


def test_plain_python_holding_every_result_is_oom_killed(cgroup: MemoryCgroup) -> None:
    done = run_in(cgroup, PLAIN_CHILD)
    assert done.returncode != 0, f"the limit does not bind, so nothing is proven: {describe(done)}"
    assert done.killed or done.oom_kills, describe(done)
    if done.oom_kills is not None:
        assert done.oom_kills >= 1, describe(done)
    print(
        f"plain Python under {done.limit_bytes / 1e6:.0f} MB: exit {done.returncode}, "
        f"OOM kills {done.oom_kills}"
    )


def test_lazygraph_defaults_finish_a_pipeline_three_times_the_limit(cgroup: MemoryCgroup) -> None:
    done = run_in(cgroup, LAZYGRAPH_CHILD)
    assert done.returncode == 0, f"lazygraph did not finish: {describe(done)}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # Exact: the chunks hold whole numbers, so every partial sum is exact in float64.
    assert report["all_at_once"] == LENGTH * sum(range(COUNT))
    assert report["one_at_a_time"] == LENGTH * sum(range(COUNT, 2 * COUNT))
    assert report["again"] == sum(range(COUNT))
    assert report["computes_again"] == 1, "the chunks should come back from spill files"
    assert report["reloads"] >= COUNT - 3  # a few may still be in the memory tier
    # The defaults were derived from the cgroup's limit, not from the machine's RAM.
    assert report["usable"] == done.limit_bytes
    assert report["memory_limit"] == done.limit_bytes // 4
    assert report["rss_limit"] == done.limit_bytes * 4 // 5
    # More went through files than the process could ever have held.
    assert report["bytes_spilled"] > 2 * done.limit_bytes
    # Memory: not killed, under the cgroup's limit, and anonymous memory (what the OOM killer
    # weighs) kept under lazygraph's own rss_limit.
    assert not done.oom_kills, describe(done)
    if done.peak_bytes is not None:
        assert done.peak_bytes <= done.limit_bytes, describe(done)
    assert 0 < report["peak_anon"] < report["rss_limit"], describe(done)
    print(  # shown with -rP: the numbers behind the verdict
        f"cgroup {cgroup.version} limit {done.limit_bytes / 1e6:.0f} MB: sums exact, "
        f"{report['bytes_spilled'] / 1e9:.2f} GB spilled in {report['spills']} files, "
        f"{report['reloads']} reloads, peak RssAnon {report['peak_anon'] / 1e6:.0f} MB "
        f"(rss_limit {report['rss_limit'] / 1e6:.0f} MB), cgroup peak "
        f"{(done.peak_bytes or 0) / 1e6:.0f} MB (page cache included), OOM kills {done.oom_kills}"
    )


# -- the mechanism, without a cgroup ----------------------------------------------------------


def test_a_pinned_value_is_swapped_for_its_mapping_once_spilled() -> None:
    """What lets a node read more inputs than fit in RAM: a pull pins the values it still
    needs, and the store swaps each one it spills for the memory-mapped reload, so the RAM
    copy can go (``Store.pin``)."""
    import gc
    import weakref

    import numpy as np

    from lazygraph.config import Config
    from lazygraph.store.store import Store

    store = Store(Config.from_options(memory_limit="1MB", progress=False))
    try:
        pinned: dict[bytes, object] = {}
        store.pin(pinned)
        original = np.arange(500_000, dtype=np.float64)  # 4 MB: more than the memory tier
        alive = weakref.ref(original)
        pinned[b"k" * 16] = original
        store.put(b"k" * 16, original, name="chunk", seconds=1.0)
        store.flush()
        del original
        gc.collect()
        swapped = pinned[b"k" * 16]
        assert isinstance(swapped, np.memmap)
        assert swapped[-1] == 499_999.0 and swapped.shape == (500_000,)
        assert alive() is None, "the RAM copy is still referenced"
        store.unpin(pinned)
    finally:
        store.close()
