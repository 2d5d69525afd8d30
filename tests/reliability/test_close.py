"""Closing never hangs and leaves nothing behind (SPEC S5.1, S7.5; issue 17).

``Session.close()`` from another thread while pulls run (the writer's stop signal used to be
taken by a second writer thread a racing spill had started), and interpreter exit while a
daemon thread computes (the store's finalizer used to join that writer forever).
"""

from __future__ import annotations

import glob
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest

import lazygraph
from lazygraph import LazyGraphError, Session

from ._helpers import child_env, lazygraph_threads

pytestmark = pytest.mark.timeout(300)

ROUNDS = 50
PULLS = 200
THREADS = 8


@lazygraph.node
def chunk(i, salt):
    return np.full(1000, i + salt, dtype=np.int64)  # 8 kB: over spill_threshold below


@lazygraph.node
def total(*parts):
    return int(sum(int(p[0]) for p in parts))


def _spill_dirs(pid: int) -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), f"lazygraph-spill-*-{pid}-*"))


def _pulls(session: Session, first: int, count: int, salt: int, errors: list[BaseException]):
    for n in range(first, first + count):
        try:
            value = session.compute(total(*[chunk(j, salt) for j in range(n, n + 6)]))[0]
            assert value == sum(range(n, n + 6)) + 6 * salt, value
        except LazyGraphError:
            return  # closed under it: the documented outcome of a pull after close()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            return


def _round(salt: int, rng: random.Random) -> float:
    session = Session(memory_limit="200kB", spill_threshold="4kB", progress=False)
    errors: list[BaseException] = []
    per = PULLS // THREADS
    workers = [
        threading.Thread(target=_pulls, args=(session, t * per, per, salt, errors))
        for t in range(THREADS)
    ]
    for worker in workers:
        worker.start()
    time.sleep(rng.uniform(0.0, 0.03))  # anywhere: planning, spilling, writing, storing
    took: list[float] = []

    def close() -> None:
        start = time.monotonic()
        session.close()
        took.append(time.monotonic() - start)

    closer = threading.Thread(target=close, name="test-closer")
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), f"close() hung (round with salt {salt})"
    for worker in workers:
        worker.join(10)
        assert not worker.is_alive(), "a pull hung after close()"
    assert not errors, errors
    deadline = time.monotonic() + 5
    while lazygraph_threads() and time.monotonic() < deadline:
        time.sleep(0.01)  # a thread that was told to stop may still be on its last line
    assert lazygraph_threads() == [], f"threads left after close: {lazygraph_threads()}"
    assert _spill_dirs(os.getpid()) == [], "spill directory left after close"
    return took[0]


def test_close_from_another_thread_during_concurrent_pulls_never_hangs():
    rng = random.Random(17)
    slowest = max(_round(salt, rng) for salt in range(ROUNDS))
    assert slowest < 10


def test_close_twice_and_from_two_threads_at_once():
    session = Session(memory_limit="200kB", spill_threshold="4kB", progress=False)
    session.compute(total(*[chunk(j, 1) for j in range(40)]))
    barrier = threading.Barrier(3)

    def close() -> None:
        barrier.wait()
        session.close()

    closers = [threading.Thread(target=close) for _ in range(3)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(10)
        assert not closer.is_alive()
    session.close()
    assert lazygraph_threads() == [] and _spill_dirs(os.getpid()) == []


_DAEMON_AT_EXIT = """
import os, sys, threading, time
import numpy as np
import lazygraph

lazygraph.configure(memory_limit="200kB", spill_threshold="4kB", progress=False)

@lazygraph.node
def chunk(i):
    return np.full(1000, i, dtype=np.int64)

@lazygraph.node
def total(*parts):
    return int(sum(int(p[0]) for p in parts))

def loop():
    i = 0
    while True:
        total(*[chunk(j) for j in range(i, i + 10)]).compute()
        i += 7

threading.Thread(target=loop, daemon=True).start()
time.sleep(float(sys.argv[1]))
print(os.getpid(), flush=True)
"""


def test_exit_while_a_daemon_thread_computes_never_hangs():
    runs = 20
    rng = random.Random(6)
    code = textwrap.dedent(_DAEMON_AT_EXIT)
    outcomes = []
    for batch in range(0, runs, 4):  # four at a time: each is mostly interpreter start-up
        children = [
            subprocess.Popen(
                [sys.executable, "-c", code, f"{rng.uniform(0.05, 0.6):.3f}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
            )
            for _ in range(min(4, runs - batch))
        ]
        for child in children:
            try:
                out, err = child.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
                pytest.fail("the interpreter hung at exit while a daemon thread computed")
            outcomes.append((child.returncode, out.strip(), err))
    for returncode, out, err in outcomes:
        assert returncode == 0, err[-2000:]
        assert out.isdigit() and _spill_dirs(int(out)) == [], "spill directory left at exit"


def test_interrupts_landing_right_after_an_open_leak_no_descriptor(tmp_path):
    """The flaky "lazygraph-spill-….joblib (deleted)" fd of the SIGINT test: a Ctrl-C landing
    just after ``os.open`` returned (Python runs handlers right after C calls) lost the
    descriptor before any ``finally`` could close it (issue 17)."""
    import signal

    from lazygraph.store.base import Entry
    from lazygraph.store.files import FileTier

    tier = FileTier(tmp_path / "c", secret=os.urandom(32), disk_limit=None)
    key = b"\x01" * 16
    tier.put(Entry(key, np.zeros(1000), ((None, 8000, "cpu"),), "f", 0.0, True, True, True))
    before = set(os.listdir("/proc/self/fd"))
    armed = [False]

    def handler(signum, frame):
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    stop = threading.Event()

    def fire() -> None:
        while not stop.is_set():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            time.sleep(0.0002)

    previous = signal.signal(signal.SIGINT, handler)
    firing = threading.Thread(target=fire, name="test-interrupter", daemon=True)
    interrupted = 0
    try:
        firing.start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                armed[0] = True
                tier.get(key)
                armed[0] = False
            except KeyboardInterrupt:
                interrupted += 1
    finally:
        armed[0] = False
        stop.set()
        firing.join()
        signal.signal(signal.SIGINT, previous)
        tier.close()
    assert interrupted > 100, "too few interrupts landed to test anything"
    leaked = {
        fd: os.readlink(f"/proc/self/fd/{fd}")
        for fd in set(os.listdir("/proc/self/fd")) - before
        if os.path.exists(f"/proc/self/fd/{fd}")
    }
    assert not leaked, f"{len(leaked)} descriptors leaked, e.g. {list(leaked.values())[:3]}"


def test_pulls_racing_close_with_a_cache_dir_fail_cleanly(tmp_path):
    """With a cache_dir the store also holds a directory handle: a pull still running after
    close() must get the documented LazyGraphError or its value, never a closed-handle error."""
    for salt in range(10):
        session = Session(memory_limit="200kB", spill_threshold="4kB", progress=False,
                          cache_dir=str(tmp_path / "cache"))
        errors: list[BaseException] = []
        workers = [threading.Thread(target=_pulls, args=(session, t * 10, 10, salt, errors))
                   for t in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(0.005 * salt)
        session.close()
        for worker in workers:
            worker.join(10)
            assert not worker.is_alive(), "a pull hung after close()"
        assert not errors, errors
    assert lazygraph_threads() == []


PERSIST_AND_EXIT = """
import sys
import numpy as np
import lazygraph

lazygraph.configure(cache_dir=sys.argv[1], progress=False)

@lazygraph.node
def big(n):
    print("ran", flush=True)
    return np.arange(n, dtype=np.float64)

assert big(2_000_000).compute()[-1] == 1_999_999.0
# no flush, no close: the result was queued for writing a moment before the end
"""


def test_a_result_queued_for_persisting_at_exit_is_written(tmp_path):
    """S5.7: a script that computes, then ends, leaves its result for the next run. The
    first write of a process used to run in the writer thread during interpreter exit,
    where importing joblib fails ("can't register atexit after shutdown"): it was lost."""
    script = tmp_path / "persist.py"
    script.write_text(PERSIST_AND_EXIT)
    cache = tmp_path / "cache"
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script), str(cache)], capture_output=True, text=True,
            timeout=120, env=child_env(),
        )
        assert done.returncode == 0, done.stderr
        assert "could not write" not in done.stderr, done.stderr
        runs.append(done.stdout.count("ran"))
    assert runs == [1, 0], runs  # the second process loads the entry instead of recomputing
