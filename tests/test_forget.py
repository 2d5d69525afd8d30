"""Forgetting results (SPEC S5.9, issue 16), with real files.

- ``node.forget()`` drops that result from every tier: memory, weak, a queued write,
  the spill directory and ``cache_dir`` (a new session over the directory computes it again).
- ``factory.clear()`` drops every result of that function, in this session and in
  ``cache_dir`` (entries another session wrote included), and nothing of other functions.
- ``session.clear()`` drops everything the session holds but keeps ``cache_dir``'s files;
  ``session.clear(disk=True)`` removes those too.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

import lazygraph

calls: list[tuple[str, int]] = []


@lazygraph.node
def block(i: int) -> np.ndarray:
    calls.append(("block", i))
    return np.full(300_000, float(i))  # 2.4 MB: over spill_threshold


@lazygraph.node
def small(i: int) -> list[int]:
    calls.append(("small", i))
    return [i]


@pytest.fixture(autouse=True)
def _private_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYGRAPH_SECRET_FILE", str(tmp_path / "secret"))
    calls.clear()


def _files(cache: Path) -> set[str]:
    return {p.stem for p in cache.glob("*.joblib")}


def test_forget_drops_memory_and_cache_dir(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with lazygraph.Session(cache_dir=cache, progress=False) as session:
        first = block(1).compute()
        block(2).compute()
        session.store.flush()
        assert {block(1).key, block(2).key} <= _files(cache)
        block(1).forget()
        assert block(1).info().location == "absent"
        assert block(1).key not in _files(cache) and block(2).key in _files(cache)
        again = block(1).compute()
        assert again is not first and calls.count(("block", 1)) == 2
    with lazygraph.Session(cache_dir=cache, progress=False) as later:
        block(1).forget()
        block(1).compute()
        block(2).compute()
        assert later.stats().computes == 1  # block(1) only: block(2) came from the file


def test_forget_while_its_write_is_queued_leaves_no_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with lazygraph.Session(cache_dir=cache, progress=False) as session:
        for i in range(5):
            block(i).compute()
            block(i).forget()  # right away: its write may not even have started
        session.store.flush()
        assert not _files(cache) & {block(i).key for i in range(5)}
    assert not _files(cache)


def test_forget_drops_weak_and_spilled_results(tmp_path: Path) -> None:
    with lazygraph.Session(memory_limit="3MB", progress=False) as session:
        kept = block(0).compute()
        block(1).compute()  # block(0) leaves memory: spilled, and weakly held through `kept`
        session.store.flush()
        assert block(0).info().location in ("weak", "spilled")
        spill_dir = Path(session.store._spill_dir)
        assert block(0).key in {p.stem for p in spill_dir.glob("*.joblib")}
        block(0).forget()
        assert block(0).info().location == "absent"
        assert block(0).key not in {p.stem for p in spill_dir.glob("*.joblib")}
        assert block(0).compute() is not kept
        del kept
        gc.collect()


def test_factory_clear_drops_every_result_of_that_function_only(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with lazygraph.Session(cache_dir=cache, progress=False):
        block(7).compute()  # written by an earlier session: only on disk from now on
    with lazygraph.Session(cache_dir=cache, progress=False) as session:
        for i in range(3):
            block(i).compute()
            small(i).compute()
        session.store.flush()
        block.clear()
        assert not _files(cache) & {block(i).key for i in (0, 1, 2, 7)}
        assert {small(i).key for i in range(3)} <= _files(cache)
        assert all(block(i).info().location == "absent" for i in (0, 1, 2, 7))
        assert all(small(i).info().location == "memory" for i in range(3))
        calls.clear()
        block(7).compute()
        small(0).compute()
        assert calls == [("block", 7)]


def test_session_clear_keeps_cache_dir_unless_asked(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with lazygraph.Session(cache_dir=cache, progress=False) as session:
        for i in range(3):
            small(i).compute()
        session.store.flush()
        before = _files(cache)
        session.clear()
        assert session.stats().bytes_in_memory == 0
        assert _files(cache) == before  # still there: the next pull loads them
        assert small(0).info().location == "disk"
        calls.clear()
        small(0).compute()
        assert calls == []
        session.clear(disk=True)
        assert not _files(cache)
        assert small(1).info().location == "absent"
        small(1).compute()
        assert calls == [("small", 1)]
