"""The counters mean what docs/concepts.md says, in every view (issue 16).

- A miss is a run: over the README's quickstart (inputs, a change, a change back, a forget)
  ``misses == computes``; an input's value is no miss; a stale node reused by backdating is
  a hit, not a miss; the lookups a pull makes to compare results count nothing.
- ``str(stats())`` says "1 hit", "1 miss", "1 compute" in the singular.
- With ``cache_dir``, a result evicted from memory lives on "disk" (its cache_dir file) in
  ``info()``, ``report()`` and the stats, never "spilled" (the private spill directory).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lazygraph


@lazygraph.node
def load(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@lazygraph.node
def scale(a: np.ndarray, factor: float) -> np.ndarray:
    return a * factor


@lazygraph.node
def biggest(values: list[int]) -> int:
    return max(values)


@lazygraph.node
def label(m: int) -> str:
    return f"max={m}"


def test_a_miss_is_a_run_over_the_quickstart() -> None:
    with lazygraph.Session(progress=False) as session:
        size = lazygraph.Input(1_000, name="size")
        result = scale(load(size), 2.0)
        out = result.compute()
        assert (session.stats().misses, session.stats().computes) == (2, 2)  # size is no miss
        assert result.compute() is out
        size.set(10)
        result.compute()
        size.set(1_000)
        assert result.compute() is out
        stats = session.stats()
        assert stats.misses == stats.computes == 4, stats
        assert stats.hits >= 2


def test_a_backdated_node_is_a_hit_not_a_miss() -> None:
    with lazygraph.Session(progress=False) as session:
        numbers = lazygraph.Input([3, 1, 2], name="numbers")
        top = label(biggest(numbers))
        assert top.compute() == "max=3"
        numbers.set([1, 3, 2])  # biggest reruns to the same result: label is backdated
        before = session.stats()
        assert top.compute() == "max=3"
        after = session.stats()
        assert after.computes - before.computes == 1  # biggest only
        assert after.misses - before.misses == 1, (before, after)
        assert after.hits - before.hits == 1, (before, after)  # label, reused
        assert after.misses == after.computes


def test_stats_text_is_singular_for_one() -> None:
    with lazygraph.Session(progress=False) as session:
        load(3).compute()
        load(3).compute()
        assert str(session.stats()).startswith(
            "lazygraph stats: 1 hit, 1 miss (50% hit rate), 1 compute\n"
        )


def test_evicted_results_with_cache_dir_live_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAZYGRAPH_SECRET_FILE", str(tmp_path / "secret"))
    with lazygraph.Session(cache_dir=tmp_path / "c", memory_limit="3MB", progress=False) as s:
        for i in range(4):
            load(250_000 + i).compute()  # 2 MB each: the older ones leave memory
        s.flush()
        locations = {load(250_000 + i).info().location for i in range(4)}
        assert locations == {"memory", "disk"}, locations
        report = str(s.report())
        assert "disk" in report and "spilled" not in report, report
        stats = s.stats()
        assert stats.spills == 0 and stats.bytes_on_disk > 0
