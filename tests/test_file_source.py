"""lazygraph.file(path): a source whose key follows a file's content (SPEC S1.12)."""

from __future__ import annotations

import gc
import glob
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import lazygraph
from lazygraph.incremental import watched

READS: list[str] = []


@lazygraph.node
def read(path: str) -> str:
    READS.append(path)
    if os.path.isdir(path):
        return ",".join(sorted(os.listdir(path)))
    with open(path) as fh:
        return fh.read()


@pytest.fixture(autouse=True)
def session() -> Iterator[lazygraph.Session]:
    READS.clear()
    with lazygraph.Session(progress=False) as s:
        yield s


@lazygraph.node
def count_matches(pattern: str) -> int:
    READS.append(pattern)
    return len(glob.glob(pattern))


def _bump_mtime(path: Path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_the_value_is_the_path(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("1,2")
    src = lazygraph.file(path)
    assert src.compute() == str(path)
    assert isinstance(src.compute(), str)


def test_recomputes_after_the_content_changes(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("1,2")
    n = read(lazygraph.file(path))
    assert n.compute() == "1,2"
    assert n.compute() == "1,2"
    assert len(READS) == 1
    path.write_text("1,2,3")
    assert n.compute() == "1,2,3"
    assert len(READS) == 2


def test_same_size_edit_is_seen_through_the_mtime(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("aaa")
    n = read(lazygraph.file(path))
    n.compute()
    path.write_text("bbb")
    _bump_mtime(path)
    assert n.compute() == "bbb"
    assert len(READS) == 2


def test_a_touch_recomputes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("1,2")
    n = read(lazygraph.file(path))
    first = n.compute()
    _bump_mtime(path)
    path.touch()
    assert n.compute() is first
    assert len(READS) == 1


def test_a_directory_follows_its_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    n = read(lazygraph.file(tmp_path))
    assert n.compute() == "a"
    (tmp_path / "a").touch()
    n.compute()
    assert len(READS) == 1
    (tmp_path / "b").write_text("2")
    assert n.compute() == "a,b"
    assert len(READS) == 2
    (tmp_path / "a").write_text("changed")
    n.compute()
    assert len(READS) == 3


def test_a_glob_follows_its_matches(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("1")
    (tmp_path / "notes.txt").write_text("n")
    src = lazygraph.file(str(tmp_path / "*.csv"))
    n = count_matches(src)
    assert n.compute() == 1
    (tmp_path / "notes.txt").write_text("other")
    assert n.compute() == 1
    assert len(READS) == 1
    (tmp_path / "y.csv").write_text("2")
    assert n.compute() == 2
    assert len(READS) == 2


def test_equal_content_gives_equal_keys(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("1,2")
    assert lazygraph.file(path).key == lazygraph.file(path).key
    before = lazygraph.file(path).key
    path.write_text("3")
    assert lazygraph.file(path).key != before


def test_a_dropped_source_is_no_longer_checked(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("1")
    src = lazygraph.file(path)
    assert any(ref() is src for ref in watched.values())
    del src
    gc.collect()
    assert not any(isinstance(ref(), lazygraph.Node) and ref().name == f"file:{path}"
                   for ref in watched.values())


def test_the_repull_fast_path_comes_back_when_the_last_source_goes(tmp_path: Path) -> None:
    from lazygraph.repull import attention

    path = tmp_path / "a.csv"
    path.write_text("1")
    gc.collect()  # sources other tests dropped
    src = lazygraph.file(path)
    assert "watched" in attention  # node.compute() re-checks files before a memory hit
    del src
    gc.collect()
    assert not watched and "watched" not in attention  # one truth test per re-pull again
