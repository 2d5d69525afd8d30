"""Suite-wide fixtures: a hermetic environment, and resource-leak checks around every test.

Hermetic: for the whole run, ``LAZYGRAPH_*`` variables from the caller's shell are removed
(so ``LAZYGRAPH_CACHE_DIR`` or ``LAZYGRAPH_MEMORY_LIMIT`` cannot change what a test sees),
the per-user secret lives in a fresh file (tests never touch ``~/.config``), ``XDG_CACHE_HOME``
and ``XDG_CONFIG_HOME`` point into the run's temporary tree, and so does ``tempfile``'s
directory (``TMPDIR`` too, for child processes): spill directories of this run cannot be
confused with those of another run on the same machine.

Leaks: after each test (and after closing the default session, which may legitimately live
across tests), anything the test started and left behind fails it with a message naming
what leaked: threads still running, file descriptors still open, child processes still
alive (zombies included: a child nobody waited for), ``lazygraph-*`` entries left in the
temporary directory, and Sessions left open. The check is a few directory listings (well
under a millisecond when nothing leaked); only when something looks leaked does it collect
garbage and give threads and processes up to a second to finish. A test that failed is not
also reported for leaks: its traceback keeps its locals (files, sessions) alive.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_GRACE_SECONDS = 1.0
# Looked at again for up to _GRACE_SECONDS before they count: threads told to stop, children
# told to exit, and descriptors another thread holds for a moment (distributed's system
# monitor reads /proc/<pid>/net/dev through psutil every few hundred ms: it showed up once in
# a fresh CI run as "23 -> /proc/30717/net/dev"). A real leak is still there after the grace.
_STILL_ENDING = ("threads", "child processes", "file descriptors")
_TEMP_PREFIXES = ("lazygraph",)
# Threads that libraries start once per process and keep by design: not leaks of a test.
# Dask's worker threads belong to a cluster: a leaked cluster also leaks its "IO loop" thread.
_LIBRARY_THREADS = ("tqdm_monitor", "Dask-Offload", "Dask-Default-Threads")
# Helper processes that multiprocessing and loky start once per process and keep by design.
_LIBRARY_PROCESSES = ("resource_tracker", "multiprocessing.forkserver")
_LOKY_TRACKER = "joblib.externals.loky.backend.resource_tracker"


# -- hermetic environment ---------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _hermetic_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the secret, XDG homes and temp files into this run's tree; restore afterwards."""
    root = tmp_path_factory.mktemp("hermetic")
    # Not under pytest's 0700 base: tests that switch to an unprivileged user must be able to
    # reach their temporary directories (0711: others may traverse, not list).
    temp = Path(tempfile.mkdtemp(prefix="lgtest-tmp-", dir=tempfile.gettempdir()))
    os.chmod(temp, 0o711)
    names = [name for name in os.environ if name.startswith("LAZYGRAPH_")]
    names += ["XDG_CACHE_HOME", "XDG_CONFIG_HOME", "TMPDIR"]
    saved = {name: os.environ.get(name) for name in names}
    saved_tempdir = tempfile.tempdir
    for name in names:
        os.environ.pop(name, None)
    os.environ["LAZYGRAPH_SECRET_FILE"] = str(root / "config" / "lazygraph" / "secret")
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    os.environ["TMPDIR"] = str(temp)
    tempfile.tempdir = str(temp)
    try:
        yield root
    finally:
        tempfile.tempdir = saved_tempdir
        shutil.rmtree(temp, ignore_errors=True)
        os.environ.pop("LAZYGRAPH_SECRET_FILE", None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- leak checks ------------------------------------------------------------------------------


@dataclass
class _Snapshot:
    """What a test could leak, as seen at one moment."""

    threads: set[threading.Thread]
    fds: dict[int, str]
    children: set[int]
    temp_dir: str
    temp_names: set[str]
    sessions: set[int] = field(default_factory=set)

    @classmethod
    def take(cls, temp_dir: str | None = None) -> _Snapshot:
        temp_dir = temp_dir or tempfile.gettempdir()
        return cls(
            threads=set(threading.enumerate()),
            fds=_open_fds(),
            children=_child_pids(),
            temp_dir=temp_dir,
            temp_names=_temp_names(temp_dir),
            sessions=_open_session_ids(),
        )

    def leaks_since(self, before: _Snapshot) -> list[str]:
        """Human-readable descriptions of what is here now and was not ``before``.

        Descriptors 0-2 are left out: pytest's output capture swaps what they point to.
        """
        found = []
        threads = [t for t in self.threads - before.threads if t.is_alive() and not _library(t)]
        if threads:
            names = ", ".join(_describe_thread(t) for t in threads)
            found.append("threads still running: " + names)
        fds = {
            fd: target
            for fd, target in self.fds.items()
            if fd > 2 and before.fds.get(fd) != target and fd not in _library_fds()
        }
        if fds:
            found.append(
                "file descriptors still open: "
                + ", ".join(f"{fd} -> {target}" for fd, target in sorted(fds.items()))
            )
        children = [pid for pid in self.children - before.children if not _library_process(pid)]
        if children:
            found.append("child processes still alive: " + ", ".join(map(_describe_pid, children)))
        temps = sorted(self.temp_names - before.temp_names)
        if temps:
            found.append(f"temporary files left in {self.temp_dir}: " + ", ".join(temps))
        sessions = self.sessions - before.sessions
        if sessions:
            found.append(
                f"{len(sessions)} lazygraph Session(s) left open (use `with Session(...)` or "
                "call close())"
            )
        return found


class LeakBaseline:
    """What the leak check compares against; ``retake()`` after starting a wider-scoped resource.

    A module- or session-scoped fixture started from inside a test's setup (e.g. through
    ``request.getfixturevalue``) would otherwise count as leaked by that test.
    """

    def __init__(self) -> None:
        self.snapshot = _Snapshot.take()

    def retake(self) -> None:
        self.snapshot = _Snapshot.take(self.snapshot.temp_dir)


@pytest.fixture
def leak_baseline(request: pytest.FixtureRequest) -> LeakBaseline:
    """The running test's leak baseline (see ``LeakBaseline``)."""
    baseline: LeakBaseline = request.node.stash[_BASELINE]
    return baseline


_BASELINE = pytest.StashKey[LeakBaseline]()


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves threads, fds, child processes, temp files or Sessions behind."""
    baseline = request.node.stash[_BASELINE] = LeakBaseline()
    yield
    before = baseline.snapshot
    _close_default_session()
    leaks = _Snapshot.take(before.temp_dir).leaks_since(before)
    if leaks:
        gc.collect()  # a Session, file or map only reachable through a reference cycle
        leaks = _Snapshot.take(before.temp_dir).leaks_since(before)
    deadline = time.monotonic() + _GRACE_SECONDS
    while any(leak.startswith(_STILL_ENDING) for leak in leaks) and time.monotonic() < deadline:
        time.sleep(0.05)  # threads told to stop and children told to exit may need a moment
        leaks = _Snapshot.take(before.temp_dir).leaks_since(before)
    if leaks and not _call_failed(request.node):
        pytest.fail(
            f"{request.node.nodeid} leaked resources:\n  - " + "\n  - ".join(leaks),
            pytrace=False,
        )


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


def _call_failed(item: pytest.Item) -> bool:
    """A failed test's traceback keeps its locals (open files, sessions) alive: not a leak."""
    return item.stash.get(_CALL_FAILED, False)


def _close_default_session() -> None:
    """The default session may live across tests; close it so it is not counted as a leak."""
    context = sys.modules.get("lazygraph.context")
    default = None if context is None else context.default_session()
    if default is not None:
        default.close()


def _open_session_ids() -> set[int]:
    module = sys.modules.get("lazygraph.session")
    if module is None:
        return set()
    default = sys.modules["lazygraph.context"].default_session()
    return {id(s) for s in list(module._open) if not s.closed and s is not default}


def _open_fds() -> dict[int, str]:
    targets = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # not Linux: fall back to counting nothing rather than guessing
        return {}
    # A listing of this process's fds open at this moment: our own, or psutil's in another
    # thread (distributed's system monitor counts fds every few hundred ms). Not a leak.
    listings = {"/proc/self/fd", f"/proc/{os.getpid()}/fd"}
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the fd of the listing itself, closed by now
        if target not in listings:
            targets[int(name)] = target
    return targets


def _child_pids() -> set[int]:
    """Direct children of this process (each thread's list: a child belongs to its forker)."""
    pids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return _child_pids_psutil()
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as listing:
                pids.update(int(pid) for pid in listing.read().split())
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        except OSError:
            return _child_pids_psutil()
    return pids


def _child_pids_psutil() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process().children()}


def _temp_names(temp_dir: str) -> set[str]:
    try:
        return {name for name in os.listdir(temp_dir) if name.startswith(_TEMP_PREFIXES)}
    except OSError:
        return set()


def _library(thread: threading.Thread) -> bool:
    return any(name in thread.name for name in _LIBRARY_THREADS)


def _library_fds() -> set[int]:
    """The pipes to the resource trackers of multiprocessing and loky (kept for the process)."""
    fds = set()
    for name in ("multiprocessing.resource_tracker", _LOKY_TRACKER):
        tracker = getattr(sys.modules.get(name), "_resource_tracker", None)
        fd = getattr(tracker, "_fd", None)
        if isinstance(fd, int):
            fds.add(fd)
    return fds


def _library_process(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # gone since the listing: not alive, so not leaked
    return any(name in command for name in _LIBRARY_PROCESSES)


def _describe_thread(thread: threading.Thread) -> str:
    kind = "daemon" if thread.daemon else "non-daemon"
    target = getattr(thread, "_target", None)
    where = f" running {getattr(target, '__qualname__', target)}" if target else ""
    return f"{thread.name!r} ({kind}{where})"


def _describe_pid(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            state = stat_file.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"pid {pid}"
    zombie = " (zombie: never waited for)" if state == "Z" else ""
    return f"pid {pid}{zombie}: {command[:120] or '?'}"
