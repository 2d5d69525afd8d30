"""Per-key locks shared by every process using one cache directory (SPEC S5.10).

Covers: ``KeyLocks``, one ``flock``-ed file per key in ``<cache_dir>/.locks/``: a process
about to compute a persisted node takes its key's lock, and a process that needs the same
node meanwhile waits for it, then finds the entry the holder wrote instead of computing it
again. Does not cover: what is computed or written (the pull and the store decide; the
store releases a key's lock once its entry is on disk) or run-once among the threads of
one session (``claims``: in-process, and checked first).

Why ``flock`` on a file that the holder removes. The kernel releases a ``flock`` when the
holder's descriptor closes, so also when the holder dies, SIGKILL included: a crashed
process never leaves a key locked. The holder unlinks the file *before* letting go, so a
finished key leaves nothing in the directory; a waiter that opened the old file then holds
a lock on an unlinked inode, which it notices (the path no longer names its descriptor's
inode) and retries on the new file. A crashed holder leaves its empty file behind,
unlocked: the next process that needs the key takes it and removes it when done.
``flock`` locks belong to an open file description, not to a process, so two sessions of
one process exclude each other too. On NFS, Linux emulates ``flock`` with POSIX byte-range
locks, which NFS supports (v4, or v3 with lockd).

>>> import tempfile
>>> locks = KeyLocks(Path(tempfile.mkdtemp()))
>>> locks.acquire(b"k" * 16), locks.try_acquire(b"k" * 16), locks.held(b"k" * 16)
(True, True, True)
>>> locks.release(b"k" * 16); locks.held(b"k" * 16), os.listdir(locks.directory)
(False, [])
>>> locks.close()
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Container, Iterable
from pathlib import Path
from typing import Any

__all__ = ["LOCK_DIR", "ComputeLocks", "KeyLocks", "is_locked"]

log = logging.getLogger(__name__)

LOCK_DIR = ".locks"  # a directory: the file tier and `lazygraph cache` ignore directories
_SUFFIX = ".lock"


class KeyLocks:
    """Cross-process locks by key under ``cache_dir / ".locks"``; thread-safe.

    A key locked here is locked for every other ``KeyLocks`` (this process or another) on
    the same directory. ``acquire`` on a key this instance already holds returns at once.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.directory = Path(cache_dir) / LOCK_DIR
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._held: dict[bytes, int] = {}  # key -> descriptor holding its flock
        self._lock = threading.Lock()

    def path(self, key: bytes) -> Path:
        """The lock file of ``key``."""
        return self.directory / (key.hex() + _SUFFIX)

    def acquire(self, key: bytes, *, timeout: float | None = None) -> bool:
        """Take ``key``'s lock, waiting while another holds it; False when ``timeout`` passed.

        The wait polls (up to 50 ms between tries) rather than blocking in the kernel, so
        an interrupt (Ctrl+C) and ``timeout`` are seen promptly.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while not self.try_acquire(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return True

    def try_acquire(self, key: bytes) -> bool:
        """Take ``key``'s lock if nobody holds it; never waits."""
        with self._lock:
            if key in self._held:
                return True
        path = self.path(key)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            if _names(path, fd):
                break
            os.close(fd)  # the holder removed it after we opened it: lock the new file
        with self._lock:
            self._held[key] = fd
        return True

    def held(self, key: bytes) -> bool:
        """Whether this instance holds ``key``'s lock."""
        return key in self._held

    def release(self, key: bytes) -> None:
        """Let go of ``key``'s lock (no error when not held); its file goes first."""
        with self._lock:
            fd = self._held.pop(key, None)
        if fd is None:
            return
        try:
            os.unlink(self.path(key))  # while locked: nobody can have locked this inode since
        except FileNotFoundError:
            pass
        except OSError as exc:  # left behind unlocked: harmless, the next holder removes it
            log.debug("could not remove lock file of %s: %s", key.hex()[:12], exc)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Release every lock this instance holds. Idempotent."""
        for key in list(self._held):
            self.release(key)

    def __len__(self) -> int:
        return len(self._held)

    def __repr__(self) -> str:
        return f"<KeyLocks {self.directory} holding {len(self._held)}>"


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def is_locked(path: Path) -> bool:
    """Whether some process holds the lock file ``path`` now (for tests and tools)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class ComputeLocks:
    """Run-once across processes for one store (S5.10): a persisted key's lock is held from
    the decision to compute it until its entry is written, or until computing it failed.

    ``load(key)`` reads an entry from the cache directory (MISSING when absent), ``keep(key,
    value)`` remembers a value another process computed, ``queued`` answers whether a key's
    write is still queued (its lock then goes when the writer reports).
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        load: Callable[[bytes], Any],
        keep: Callable[[bytes, Any], Any],
        queued: Container[bytes],
        missing: Any,
    ) -> None:
        # KeyLocks made at the first lock: a process that only loads entries (a new
        # process's cache hit) takes none, and making its directory was a tenth of that hit.
        self._cache_dir = cache_dir
        self._made: KeyLocks | None = None
        self._made_lock = threading.Lock()
        self._closed = False  # no lock is taken once the store closed (none would be let go)
        self._load, self._keep, self._queued, self._missing = load, keep, queued, missing
        self._warned = False  # a lock that cannot be taken is said once per store

    def lock_to_compute(self, key: bytes) -> Any:
        """Wait while another process computes ``key``; then its entry, or ``missing`` (this
        process then holds the lock until ``release``)."""
        try:
            locks = self._locks()
            if locks is None:  # the store closed: it keeps nothing, so nothing to wait for
                return self._missing
            locks.acquire(key)
        except OSError as exc:  # a read-only, full or vanished cache_dir: run unlocked
            if not self._warned:
                self._warned = True
                log.warning("cannot lock %s in %s (%s); computing without the cross-process "
                            "lock (other processes may compute the same nodes)",
                            key.hex(), Path(self._cache_dir) / LOCK_DIR, exc)
            return self._missing
        if self._closed:  # closed while this thread waited: close() may have missed this lock
            locks.release(key)
            return self._missing
        value = self._load(key)  # the file itself: the index may not list it yet
        if value is not self._missing:
            locks.release(key)
            self._keep(key, value)
        return value

    def release(self, key: bytes) -> None:
        """Let go of ``key``'s lock if this process holds it."""
        if self._made is not None:
            self._made.release(key)

    def release_unqueued(self, keys: Iterable[bytes]) -> None:
        """Results that will not be written (not persisted, or written before): unlock now."""
        locks = self._made
        if locks is not None and len(locks):
            for key in keys:
                if key not in self._queued:
                    locks.release(key)

    def close(self) -> None:
        """Release every lock this process holds and take no more. Idempotent.

        The flag is set before the locks go: a lock another thread takes meanwhile is either
        released here or, seeing the flag, by that thread (``lock_to_compute``).
        """
        with self._made_lock:
            self._closed = True
            made = self._made
        if made is not None:
            made.close()

    def _locks(self) -> KeyLocks | None:
        """The key locks, made (their directory too) on first use, None once closed; raises
        OSError as mkdir does."""
        with self._made_lock:
            if self._closed:
                return None
            if self._made is None:
                self._made = KeyLocks(self._cache_dir)
            return self._made
