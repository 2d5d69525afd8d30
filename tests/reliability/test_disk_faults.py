"""Disk faults under real pulls: full disks, damaged files, killed writers, read-only and
unsafe cache directories (SPEC S7.4, S5.5, S5.7, S5.8, S7.3).

The faults are real: a size-limited tmpfs (ENOSPC) or RLIMIT_FSIZE in a child process
(EFBIG), a tmpfs remounted read-only (EROFS), files deleted, truncated or overwritten with
``os`` calls, writer processes killed with SIGKILL, directories chmod-ed and chown-ed.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import signal
import stat
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import lazygraph
from lazygraph import CacheSecurityError, ConfigError, Session

from ._helpers import (
    Spec,
    block,
    build,
    entry_files,
    evaluate,
    lazygraph_threads,
    run_child,
    start_child,
    temp_files,
)

pytestmark = pytest.mark.timeout(180)


def _assert_right(values: tuple, spec: Spec, x: int, indices: range | list[int]) -> None:
    expected = evaluate(spec, [x])
    for i, value in zip(indices, values, strict=True):
        assert isinstance(value, np.ndarray), (spec.labels[i], type(value))
        assert (value == expected[i]).all(), f"{spec.labels[i]}: wrong value after a disk fault"


def _write_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "could not write" in r.getMessage()]


# -- a full disk ----------------------------------------------------------------------------


def test_full_disk_while_spilling(mounts, monkeypatch, caplog, calls):
    disk = mounts.tmpfs("spill", "512k")
    monkeypatch.setattr(tempfile, "tempdir", str(disk))  # the spill directory goes there
    spec = Spec.chain([2000] * 80)  # 80 results of 16 kB: 1.3 MB into 512 kB
    nodes = build(spec, [lazygraph.Input(3, name="x")], func=block)
    caplog.set_level(logging.WARNING, logger="lazygraph")
    with Session(memory_limit="64kB", spill_threshold="4kB", progress=False) as session:
        _assert_right(session.compute(nodes[-1]), spec, 3, [79])
        session.store.flush()
        assert session.stats().spills > 0, "nothing was spilled: the test proved nothing"
        failures = _write_failures(caplog)
        assert failures and "No space left on device" in failures[0], failures
        assert len(failures) == 1, "the same reason must be logged once, not per entry"
        assert temp_files(session.store._spill_dir) == []
        _assert_right(lazygraph.compute(*nodes), spec, 3, range(80))  # dropped: recomputed
        spilled = [i for i, n in enumerate(nodes) if session.store.location(n._key) == "spilled"]
        before = calls.counts()
        _assert_right(lazygraph.compute(*(nodes[i] for i in spilled)), spec, 3, spilled)
        assert calls.counts() == before, "spilled entries must load, not recompute"
    assert os.listdir(disk) == [], "the spill directory must be removed on close"


def test_full_disk_while_persisting(mounts, caplog, calls):
    disk = mounts.tmpfs("cache", "512k")
    cache = disk / "cache"
    spec = Spec.chain([2000] * 80)
    nodes = build(spec, [lazygraph.Input(4, name="x")], func=block)
    caplog.set_level(logging.WARNING, logger="lazygraph")
    with Session(
        cache_dir=cache, memory_limit="64kB", spill_threshold="4kB", progress=False
    ) as session:
        _assert_right(session.compute(nodes[-1]), spec, 4, [79])
        session.store.flush()
        assert any("No space left on device" in m for m in _write_failures(caplog))
        _assert_right(lazygraph.compute(*nodes), spec, 4, range(80))
    assert temp_files(cache) == []
    on_disk = {p.name.removesuffix(".joblib") for p in entry_files(cache)}
    assert 0 < len(on_disk) < 80, "the disk must have filled part-way"
    first = calls.counts()
    with Session(cache_dir=cache, memory_limit="64kB", progress=False):  # a new process, later
        _assert_right(lazygraph.compute(*nodes), spec, 4, range(80))
    ran = {label for label, count in calls.counts().items() if count > first[label]}
    assert ran == {spec.labels[i] for i, n in enumerate(nodes) if n.key not in on_disk}


FSIZE_CHILD = """
import json, logging, resource, signal, sys
import lazygraph
from reliability._helpers import Spec, block, build, evaluate

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append(record.getMessage())
logging.getLogger("lazygraph").addHandler(handler)
spec = Spec.chain([1000, 200_000] * 6)  # 8 kB and 1.6 MB results; files may not pass 1 MB
nodes = build(spec, [lazygraph.Input(5, name="x")], func=block)
options = dict(memory_limit="2MB", spill_threshold="4kB", progress=False)
if sys.argv[1] != "-":
    options["cache_dir"] = sys.argv[1]
wrong = 0
with lazygraph.Session(**options) as session:
    for _ in range(2):
        values = lazygraph.compute(*nodes)
        expected = evaluate(spec, [5])
        wrong += sum(int(not (v == e).all()) for v, e in zip(values, expected))
        del values
    session.store.flush()
    stats = session.stats()
print(json.dumps({"wrong": wrong, "spills": stats.spills,
                  "efbig": sum("File too large" in m for m in messages)}))
"""


@pytest.mark.parametrize("persist", [False, True], ids=["spill", "persist"])
def test_file_size_limit_in_a_child_process(tmp_path, calls, persist):
    """RLIMIT_FSIZE fails real writes (EFBIG), also where mounting a filesystem is not allowed."""
    cache = tmp_path / "cache"
    report = json.loads(run_child(FSIZE_CHILD, str(cache) if persist else "-").stdout)
    assert report["wrong"] == 0 and report["efbig"] == 1, report
    assert report["spills"] > 0 or persist, report
    if not persist:
        return
    assert temp_files(cache) == []
    spec = Spec.chain([1000, 200_000] * 6)
    nodes = build(spec, [lazygraph.Input(5, name="x")], func=block)
    first = calls.counts()
    with Session(cache_dir=cache, progress=False):
        _assert_right(lazygraph.compute(*nodes), spec, 5, range(12))
    ran = {label for label, count in calls.counts().items() if count > first[label]}
    assert ran == {label for label in spec.labels if label.endswith(":200000")}


# -- files damaged underneath a running session -------------------------------------------------


def _damage(path: Path, how: str, rng: random.Random, other: Path) -> None:
    size = path.stat().st_size
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        os.truncate(path, rng.randrange(size))
    elif how == "empty":
        os.truncate(path, 0)
    elif how == "garbage-in-place":  # same inode, same size: only the checksum can tell
        with open(path, "r+b") as f:
            f.seek(rng.randrange(size // 2))
            f.write(os.urandom(64))
    elif how == "garbage-trailer":
        with open(path, "r+b") as f:
            f.seek(size - 40)
            f.write(os.urandom(8))
    elif how == "replaced-by-garbage":  # a new file of the same size
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(os.urandom(size))
        os.replace(tmp, path)
    elif how == "swapped":  # another key's (valid) entry under this key's name
        os.replace(other, path)
    else:
        raise AssertionError(how)


DAMAGES = [
    "delete",
    "truncate",
    "empty",
    "garbage-in-place",
    "garbage-trailer",
    "replaced-by-garbage",
    "swapped",
]


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("tier", ["spill", "cache_dir"])
def test_files_damaged_underneath_a_running_session(tmp_path, calls, caplog, how, tier):
    rng = random.Random(how)
    spec = Spec([f"b{i}" for i in range(24)], [[] for _ in range(24)], [[0]] * 24)
    nodes = build(spec, [lazygraph.Input(6, name="x")], func=block)
    options: dict = dict(memory_limit="40kB", spill_threshold="1kB", progress=False)
    if tier == "cache_dir":
        options["cache_dir"] = tmp_path / "cache"
    with Session(**options) as session:
        _assert_right(lazygraph.compute(*nodes), spec, 6, range(24))
        session.store.flush()
        gc.collect()  # no mapped copy stays alive: the next pull must read the files
        directory = session.store._spill_dir if tier == "spill" else options["cache_dir"]
        files = {p.name: p for p in entry_files(directory)}
        on_file = [
            i
            for i, n in enumerate(nodes)
            if f"{n.key}.joblib" in files and session.store.location(n._key) != "memory"
        ]  # only read from the file
        assert len(on_file) >= 12, "too few entries written: the test would prove little"
        damaged = on_file[::2]
        time.sleep(0.02)  # a later clock tick than the writes (see docs/reliability.md)
        for i in damaged:
            victim = files[f"{nodes[i].key}.joblib"]
            other_index = next(j for j in on_file if j not in damaged and j != i)
            other = tmp_path / "other.joblib"
            other.write_bytes(files[f"{nodes[other_index].key}.joblib"].read_bytes())
            _damage(victim, how, rng, other)
        before = calls.counts()
        caplog.set_level(logging.WARNING, logger="lazygraph")
        _assert_right(lazygraph.compute(*nodes), spec, 6, range(24))
        ran = {label for label, count in calls.counts().items() if count > before[label]}
        assert ran == {spec.labels[i] for i in damaged}, "only damaged entries recompute"
        if how != "delete":
            assert any("will be recomputed" in r.getMessage() for r in caplog.records)
        assert session.stats().misses >= len(damaged)
        again = calls.counts()
        _assert_right(lazygraph.compute(*nodes), spec, 6, range(24))
        assert calls.counts() == again


def test_damaged_persisted_entries_are_verified_in_a_new_session(tmp_path, calls):
    """Another process's entries are checksummed before first use: damage found, recomputed."""
    cache = tmp_path / "cache"
    spec = Spec.chain([3000] * 10)
    code = """
    import sys, lazygraph
    from reliability._helpers import Spec, block, build
    spec = Spec.chain([3000] * 10)
    with lazygraph.Session(cache_dir=sys.argv[1], progress=False):
        lazygraph.compute(*build(spec, [lazygraph.Input(8, name="x")], func=block))
    """
    run_child(code, str(cache))
    nodes = build(spec, [lazygraph.Input(8, name="x")], func=block)
    files = entry_files(cache)
    assert len(files) == 10
    rng = random.Random(0)
    damaged = set()
    for i in (2, 5, 7):
        path = cache / f"{nodes[i].key}.joblib"
        with open(path, "r+b") as f:  # one flipped byte inside the array data
            f.seek(rng.randrange(200, 3000 * 8))
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x40]))
        damaged.add(spec.labels[i])
    first = calls.counts()
    with Session(cache_dir=cache, progress=False):
        _assert_right(lazygraph.compute(*nodes), spec, 8, range(10))
    ran = {label for label, count in calls.counts().items() if count > first[label]}
    assert ran == damaged


# -- writers killed with SIGKILL --------------------------------------------------------------

KILLED_WRITER = """
import itertools, sys
import lazygraph
from reliability._helpers import Spec, block, build
spec = Spec.chain([250_000] * 4)  # 2 MB results, persisted by the background writer
x = lazygraph.Input(0, name="x")
nodes = build(spec, [x], func=block)
with lazygraph.Session(cache_dir=sys.argv[1], memory_limit="4MB", progress=False) as s:
    print("ready", flush=True)
    for i in itertools.count():
        x.set(i)
        s.compute(nodes[-1])
        print("done", i, flush=True)
"""


def test_entries_from_writers_killed_at_random_moments(tmp_path, calls):
    cache = tmp_path / "cache"
    spec = Spec.chain([250_000] * 4)
    rng = random.Random(9)
    saw_temp = loaded = 0
    for _ in range(3):
        child = start_child(KILLED_WRITER, str(cache))
        assert child.stdout is not None and child.stdout.readline() == "ready\n", (
            child.stderr.read() if child.stderr else ""
        )
        time.sleep(rng.uniform(0.1, 0.6))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        done = [int(line.split()[1]) for line in out.splitlines() if line.startswith("done")]
        reached = (max(done) if done else -1) + 2  # the pull cut short, and one more
        saw_temp += bool(temp_files(cache))
        x = lazygraph.Input(0, name="x")
        nodes = build(spec, [x], func=block)
        with Session(cache_dir=cache, memory_limit="4MB", progress=False):
            assert temp_files(cache) == [], "a dead writer's temp files must be cleaned"
            for value in range(reached):
                x.set(value)
                before = calls.total()
                _assert_right(lazygraph.compute(*nodes), spec, value, range(4))
                loaded += 4 - (calls.total() - before)
    assert loaded > 0, "nothing written by the killed writers was ever used"
    assert saw_temp, "no kill landed in the middle of a write: the test proved little"


# -- read-only and unsafe cache directories ---------------------------------------------------


def test_read_only_cache_dir_is_refused_at_construction(mounts):
    disk = mounts.tmpfs("ro", "1m")
    (disk / "cache").mkdir(mode=0o700)
    mounts.read_only(disk)
    with pytest.raises(ConfigError, match="not writable") as caught:
        Session(cache_dir=disk / "cache")
    assert str(disk / "cache") in str(caught.value)


def test_cache_dir_without_write_permission_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere; the read-only mount test covers root")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            Session(cache_dir=cache)
    finally:
        os.chmod(cache, 0o700)


def test_cache_dir_turning_read_only_mid_session(mounts, caplog, calls):
    disk = mounts.tmpfs("rw", "4m")
    spec = Spec.chain([2000] * 20)
    x = lazygraph.Input(1, name="x")
    nodes = build(spec, [x], func=block)
    caplog.set_level(logging.WARNING, logger="lazygraph")
    with Session(
        cache_dir=disk / "cache", memory_limit="32kB", spill_threshold="1kB", progress=False
    ) as session:
        _assert_right(lazygraph.compute(*nodes), spec, 1, range(20))
        session.store.flush()
        mounts.read_only(disk)
        x.set(2)  # new keys: every persist write now fails with EROFS
        _assert_right(lazygraph.compute(*nodes), spec, 2, range(20))
        session.store.flush()
        assert any("Read-only file system" in m for m in _write_failures(caplog))
        gc.collect()
        x.set(1)  # the entries written before still load
        before = calls.total()
        _assert_right(lazygraph.compute(*nodes), spec, 1, range(20))
        assert calls.total() == before
        x.set(2)
        _assert_right(lazygraph.compute(*nodes), spec, 2, range(20))


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o770])
def test_cache_dir_others_may_write_to_is_refused(tmp_path, mode):
    cache = tmp_path / "shared"
    cache.mkdir()
    os.chmod(cache, mode)
    with pytest.raises(CacheSecurityError) as caught:
        Session(cache_dir=cache)
    message = str(caught.value)
    assert str(cache) in message and oct(mode) in message
    assert f"chmod 700 {cache}" in message  # says how to fix it
    assert isinstance(caught.value, PermissionError)
    assert os.listdir(cache) == [] and stat.S_IMODE(cache.stat().st_mode) == mode
    assert lazygraph_threads() == []


def test_cache_dir_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    with pytest.raises(CacheSecurityError) as caught:
        Session(cache_dir=cache)
    message = str(caught.value)
    assert str(cache) in message and "not by you" in message and "chown" in message
    assert os.listdir(cache) == []


def test_entry_written_into_a_cache_dir_that_became_unsafe(tmp_path, calls):
    """A directory opened as safe and later made group-writable is refused by the next Session."""
    cache = tmp_path / "cache"
    spec = Spec.chain([100] * 3)
    nodes = build(spec, [lazygraph.Input(1, name="x")], func=block)
    with Session(cache_dir=cache, progress=False):
        lazygraph.compute(*nodes)
    os.chmod(cache, 0o770)
    with pytest.raises(CacheSecurityError, match="writable by its group"):
        Session(cache_dir=cache)


# -- interpreter exit while spill writes are in flight ------------------------------------------

EXIT_WHILE_SPILLING = """
import numpy as np
import lazygraph
lazygraph.configure(memory_limit="20MB", progress=False)  # the default session, never closed

@lazygraph.node
def make(i):
    return np.full(400_000, i, dtype=np.float64)  # 3.2 MB: the last ones are still being spilled

values = lazygraph.compute(*[make(i) for i in range(20)])
assert [float(v[0]) for v in values] == [float(i) for i in range(20)]
"""


def test_exit_while_spilling_leaves_stderr_clean():
    """Exit used to close the spill directory's descriptor under a spill write still in flight:
    "cannot remove .lgtmp-...: [Errno 9] Bad file descriptor" in about half of the runs."""
    children = [start_child(EXIT_WHILE_SPILLING) for _ in range(10)]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and err == "", err

