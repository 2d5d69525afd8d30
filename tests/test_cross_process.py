"""Run-once across processes sharing a cache_dir (SPEC S5.10), with real processes and signals.

Four processes pull one 30-node graph into one cache_dir at the same moment: every node runs
once in total, the others load its entry. A process SIGKILLed while it holds a node's lock
leaves nothing locked: the others take the node over and finish. Also the lock itself
(``store.locks.KeyLocks``) between processes and threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lazygraph.store.locks import LOCK_DIR, KeyLocks, is_locked

# The graph, as each process builds it: 10 leaves, 10 pairs of leaves, 9 pairs of pairs, 1 root.
_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import lazygraph

    LOG, START = sys.argv[1], sys.argv[2]

    def logged(label):
        with open(LOG, "a") as f:
            f.write(f"{label} {os.getpid()}\\n")

    @lazygraph.node
    def leaf(i):
        logged(f"leaf{i}")
        time.sleep(0.01)
        return i

    @lazygraph.node
    def pair(a, b):
        logged(f"pair{a}-{b}")
        time.sleep(0.01)
        return a + b

    @lazygraph.node
    def slow_root(*parts):
        logged("root")
        if os.environ.get("LG_VICTIM"):  # hold the root's lock until killed
            open(START + ".holding", "w").close()
            time.sleep(120)
        return sum(parts)

    leaves = [leaf(i) for i in range(10)]
    pairs = [pair(leaves[i], leaves[(i + 1) % 10]) for i in range(10)]
    quads = [pair(pairs[i], pairs[i + 1]) for i in range(9)]
    root = slow_root(*quads)

    while not os.path.exists(START):  # all processes start pulling at once
        time.sleep(0.005)
    with lazygraph.Session(cache_dir=sys.argv[3], progress=False) as s:
        print(s.compute(root)[0], flush=True)
    """
)


def _expected() -> int:
    leaves = list(range(10))
    pairs = [leaves[i] + leaves[(i + 1) % 10] for i in range(10)]
    return sum(pairs[i] + pairs[i + 1] for i in range(9))


@pytest.fixture
def shared(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "pipeline.py"
    script.write_text(_SCRIPT)
    return {
        "script": str(script),
        "log": str(tmp_path / "calls.log"),
        "start": str(tmp_path / "start"),
        "cache": str(tmp_path / "cache"),
    }


def _spawn(shared: dict[str, str], *, victim: bool = False) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if victim:
        env["LG_VICTIM"] = "1"
    return subprocess.Popen(
        [sys.executable, shared["script"], shared["log"], shared["start"], shared["cache"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.strip()


def _calls(shared: dict[str, str]) -> list[str]:
    with open(shared["log"]) as f:
        return [line.split()[0] for line in f]


def _locks_left(cache: str) -> list[str]:
    directory = Path(cache) / LOCK_DIR
    if not directory.exists():
        return []
    return [p.name for p in directory.iterdir() if is_locked(p)]


def test_four_processes_compute_each_node_of_a_30_node_graph_once(shared):
    procs = [_spawn(shared) for _ in range(4)]
    try:
        Path(shared["start"]).touch()
        results = [_finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert results == [str(_expected())] * 4
    calls = _calls(shared)
    assert len(calls) == 30, sorted(calls)
    assert len(set(calls)) == 30
    assert _locks_left(shared["cache"]) == []
    assert os.listdir(Path(shared["cache"]) / LOCK_DIR) == []


def test_a_process_killed_while_holding_a_lock_leaves_nothing_locked(shared):
    Path(shared["start"]).touch()
    victim = _spawn(shared, victim=True)
    others: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(shared["start"] + ".holding"):  # it holds the root's lock
            assert victim.poll() is None, victim.communicate()[1]
            assert time.monotonic() < deadline, "the victim never reached the root"
            time.sleep(0.02)
        others = [_spawn(shared) for _ in range(3)]
        _wait_for_calls(shared, "root", count=1)  # nobody else runs the root while it holds it
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        results = [_finish(p) for p in others]
    finally:
        for p in [victim, *others]:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert results == [str(_expected())] * 3
    calls = _calls(shared)
    assert calls.count("root") == 2  # the victim's run, then exactly one of the others'
    assert len(calls) == 31  # and every other node ran once, by the victim
    assert _locks_left(shared["cache"]) == []


def _wait_for_calls(shared: dict[str, str], label: str, *, count: int) -> None:
    time.sleep(0.5)  # the others have planned and wait on the lock (no wall-clock assert)
    assert _calls(shared).count(label) == count


# -- the lock itself ----------------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from lazygraph.store.locks import KeyLocks
    locks = KeyLocks(Path(sys.argv[1]))
    locks.acquire(bytes.fromhex(sys.argv[2]))
    print("held", flush=True)
    time.sleep(120)
    """
)


def test_a_lock_held_by_a_killed_process_is_free_at_once(tmp_path):
    key = b"\x07" * 16
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path), key.hex()],
        stdout=subprocess.PIPE,
        text=True,
    )
    locks = KeyLocks(tmp_path)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not locks.try_acquire(key)
        assert is_locked(locks.path(key))
        holder.kill()
        holder.wait()
        assert locks.acquire(key, timeout=30)  # the kernel let go of the dead holder's lock
        locks.release(key)
        assert not locks.path(key).exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
        locks.close()


def test_two_instances_exclude_each_other_and_the_waiter_gets_the_new_file(tmp_path):
    key = b"\x01" * 16
    first, second = KeyLocks(tmp_path), KeyLocks(tmp_path)
    got = threading.Event()
    try:
        assert first.acquire(key)
        waiter = threading.Thread(target=lambda: got.set() if second.acquire(key) else None)
        waiter.start()
        assert not got.wait(0.2)  # still held by `first`
        first.release(key)  # removes the file: the waiter must lock a fresh one
        waiter.join(10)
        assert got.is_set() and second.held(key)
        assert is_locked(second.path(key))
        assert not first.try_acquire(key)
    finally:
        first.close()
        second.close()
    assert not (tmp_path / LOCK_DIR / (key.hex() + ".lock")).exists()


def test_acquire_times_out(tmp_path):
    key = b"\x02" * 16
    first, second = KeyLocks(tmp_path), KeyLocks(tmp_path)
    try:
        assert first.acquire(key)
        assert second.acquire(key, timeout=0.05) is False
    finally:
        first.close()
        second.close()


def _make(n: int) -> list[int]:
    return list(range(n))


def test_a_session_that_only_loads_entries_makes_no_lock_directory(tmp_path):
    """Locks are for computing: a new process's cache hit takes none, and makes no
    ``.locks`` directory (issue 17: that mkdir was a tenth of the hit); a compute makes it."""
    import lazygraph

    make = lazygraph.node(_make)
    cache = tmp_path / "cache"
    with lazygraph.Session(cache_dir=cache, progress=False) as first:
        first.compute(make(3))
    os.rmdir(cache / LOCK_DIR)  # empty: the lock went with the entry written
    with lazygraph.Session(cache_dir=cache, progress=False) as second:
        assert second.compute(make(3)) == ([0, 1, 2],)
        assert not (cache / LOCK_DIR).exists()
        assert second.compute(make(4)) == ([0, 1, 2, 3],)
        assert (cache / LOCK_DIR).is_dir()
        second.flush()  # the lock goes once the entry is written
        assert os.listdir(cache / LOCK_DIR) == []


def test_a_cache_dir_whose_lock_directory_cannot_be_made_computes_unlocked(tmp_path, caplog):
    import lazygraph

    make = lazygraph.node(_make)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / LOCK_DIR).write_text("not a directory")
    with lazygraph.Session(cache_dir=cache, progress=False) as session:
        assert session.compute(make(2)) == ([0, 1],)
    assert "computing without the cross-process lock" in caplog.text
    with lazygraph.Session(cache_dir=cache, progress=False) as again:
        assert again.compute(make(2)) == ([0, 1],)  # persisted all the same


def test_no_lock_is_taken_once_the_store_closed(tmp_path: Path) -> None:
    """A pull racing Session.close() may ask for a lock after the locks were let go: it must
    get none (before, the lock file stayed open and locked for the life of the process)."""
    from lazygraph.store.base import MISSING
    from lazygraph.store.locks import ComputeLocks

    locks = ComputeLocks(tmp_path, load=lambda key: MISSING, keep=lambda key, value: None,
                         queued=set(), missing=MISSING)
    key = b"\x01" * 16
    assert locks.lock_to_compute(key) is MISSING  # held now
    assert is_locked(tmp_path / LOCK_DIR / (key.hex() + ".lock"))
    locks.close()
    assert not is_locked(tmp_path / LOCK_DIR / (key.hex() + ".lock"))
    other = b"\x02" * 16
    assert locks.lock_to_compute(other) is MISSING
    assert not any(LOCK_DIR in path for path in _open_paths()), _open_paths()
    assert not is_locked(tmp_path / LOCK_DIR / (other.hex() + ".lock"))


def _open_paths() -> list[str]:
    """What this process's file descriptors point at (Linux)."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir used, closed since
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
    return paths
