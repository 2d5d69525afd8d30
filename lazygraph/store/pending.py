"""The pending-write tier: entries queued for the background writer, reachable until written.

Covers: holding each queued entry (so a lookup still finds its value while the file is being
written), the RAM that only this tier keeps alive (entries the memory tier already let go
of: "held" bytes), back-pressure on producers faster than the disk (``wait_for_room``), and
``evict``, which frees memory the only way this tier can: by waiting for held entries'
files to complete. Owns the store's one ``Writer``. Does not cover: where an entry goes
(``route`` decides) or what happens once it is written (``on_written``, the ``Store``'s).

Like zict's ``AsyncBuffer``: the slow tier's writes are a layer of their own. Every method
takes ``lock`` (the ``Store``'s, shared so a store-wide operation sees one consistent state);
the writer thread reports under it.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from collections.abc import Callable, KeysView
from typing import Any

from .base import MISSING, Entry
from .writer import Writer, digest_of

__all__ = ["PendingTier"]

#: ``route(entry, spill)`` -> the file tier to write to, or None to decline.
Route = Callable[[Entry, bool], Any]
#: ``on_written(entry, tier, bytes written or the exception, spill)``, under the lock.
Written = Callable[[Entry, Any, "int | BaseException", bool], None]


class PendingTier:
    """Entries being written to a file tier; ``get`` finds them until the file is complete.

    >>> import os, tempfile
    >>> from pathlib import Path
    >>> from lazygraph.store.files import FileTier
    >>> files = FileTier(Path(tempfile.mkdtemp()), secret=os.urandom(32))
    >>> tier = PendingTier(route=lambda entry, spill: files)
    >>> e = Entry(b"k" * 16, [1], ((None, 64, "cpu"),), "f", 0.0, True, True, True)
    >>> tier.put(e); tier.get(b"k" * 16)
    [1]
    >>> tier.close(); tier.get(b"k" * 16), files.get(b"k" * 16)
    (MISSING, [1])
    """

    name = "memory"  # the value is still in RAM, as info().location reports it

    def __init__(
        self,
        *,
        route: Route,
        on_written: Written | None = None,
        lock: threading.RLock | None = None,
        wait_seconds: float = 1.0,
    ) -> None:
        # Both held weakly when bound methods: neither the writer thread nor the store's
        # finalizer (which holds this tier) may keep the store alive.
        self._route: Callable[[], Route | None] = _weakly(route)
        self._on_written: Callable[[], Written | None] = _weakly(on_written)
        self._lock = lock if lock is not None else threading.RLock()
        self._written = threading.Condition(self._lock)  # notified as each write ends
        self._queued: dict[bytes, tuple[Entry, bool]] = {}  # key -> (entry, spill)
        self._held: dict[bytes, int] = {}  # queued and out of the memory tier: key -> bytes
        self.held_bytes = 0
        self.released_bytes = 0  # held bytes whose files completed, ever: what evict waits on
        self.wait_seconds = wait_seconds
        self._closed = False
        self._writer = Writer(self._done)

    # -- the Tier protocol -------------------------------------------------------------------

    def get(self, key: bytes) -> Any:
        """The queued value for ``key``, or MISSING."""
        queued = self._queued.get(key)
        return MISSING if queued is None else queued[0].value

    def __contains__(self, key: object) -> bool:
        return key in self._queued

    def keys(self) -> KeysView[bytes]:
        """A live read-only view of the queued keys (for the store's lock-free miss test)."""
        return self._queued.keys()

    def put(self, entry: Entry, *, spill: bool = True) -> None:
        """Queue ``entry`` for writing to ``route(entry, spill)`` and hold it until then.

        ``spill``: the memory tier no longer holds it, so its RAM is this tier's ("held") and
        its file counts as a spill. Declined (not held) when closed or the route says None.
        A write-through (``spill=False``: a persist of a result just computed, which its
        caller and dependents may still change in place) is queued with the digest of its
        content now, which the writer re-checks (SPEC S2.5): one hash per persisted result,
        in the producer's thread. A spill needs none: the store holds no other copy, so a
        change in place is what every later pull would see from memory too.
        """
        with self._lock:
            if self._closed or entry.key in self._queued:
                return
            route = self._route()
            target = None if route is None else route(entry, spill)
            if target is None:
                return
            self._queued[entry.key] = (entry, spill)
            digest = None if spill else digest_of(entry.value)
            if not self._writer.submit(entry, target, digest):
                del self._queued[entry.key]
                return
            if spill:
                self.hold(entry.key, entry.nbytes)

    def discard(self, key: bytes) -> None:
        """Stop finding ``key`` here (its write, already queued, still completes)."""
        with self._lock:
            self._queued.pop(key, None)
            self._release(key)

    def evict(self) -> int:
        """Wait (at most ``wait_seconds``) for held entries' files to complete: bytes freed.

        0 when nothing is held, -1 when no write completed in time. Never raises.
        """
        try:
            with self._lock:
                if not self.held_bytes:
                    return 0
                before = self.released_bytes
                deadline = time.monotonic() + self.wait_seconds
                while self.released_bytes == before and self.held_bytes and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return -1
                    self._written.wait(left)
                return max(self.released_bytes - before, 1)
        except Exception:  # the memory monitor relies on this never raising
            return -1

    def sizes(self) -> tuple[int, int]:
        """``(entries queued, bytes held only by this tier)``."""
        return len(self._queued), self.held_bytes

    def close(self) -> None:
        """Refuse new writes, finish the queued ones, then let go of everything. Idempotent."""
        with self._lock:
            self._closed = True
            self._written.notify_all()
        self._writer.close()  # outside the lock: the writer reports under it
        with self._lock:
            self._queued.clear()
            self._held.clear()
            self.held_bytes = 0

    # -- for the store -----------------------------------------------------------------------

    def entry(self, key: bytes) -> Entry | None:
        """The queued entry for ``key`` (its value still held), or None."""
        queued = self._queued.get(key)
        return None if queued is None else queued[0]

    def hold(self, key: bytes, nbytes: int) -> None:
        """The memory tier let go of queued ``key``: its ``nbytes`` are now held here."""
        if key in self._queued and key not in self._held:
            self._held[key] = nbytes
            self.held_bytes += nbytes

    def wait_for_room(self, *, room: Callable[[], bool]) -> None:
        """Back-pressure: wait while held bytes remain and ``room()`` says no (or closed)."""
        while self.held_bytes and not room() and not self._closed:
            self._written.wait(0.5)

    def flush(self) -> None:
        """Wait until every queued write has ended."""
        self._writer.flush()

    @property
    def writer(self) -> Writer:
        """The one writer thread's owner (closed with this tier)."""
        return self._writer

    def _release(self, key: bytes) -> None:
        nbytes = self._held.pop(key, None)
        if nbytes is not None:
            self.held_bytes -= nbytes
            self.released_bytes += nbytes

    def _done(self, entry: Entry, tier: Any, result: int | BaseException) -> None:
        """The writer thread's report: drop the entry, wake waiters, tell the store."""
        with self._lock:
            queued = self._queued.get(entry.key)
            if queued is not None and queued[0] is entry:
                del self._queued[entry.key]
            self._release(entry.key)
            self._written.notify_all()
            on_written = self._on_written()
            if on_written is not None:
                on_written(entry, tier, result, queued is not None and queued[1])


def _weakly(func: Any) -> Callable[[], Any]:
    """A getter for ``func``: weak when it is a bound method, so its object can be collected."""
    if inspect.ismethod(func):
        return weakref.WeakMethod(func)
    return lambda: func
