"""Run-once across threads: which pull computes which key, and waiting for another's key.

A Session owns one ``Claims``. A pull claims a key before it runs the node; a second pull
meeting a claimed key waits until the owner releases it (finished or failed), then reads
the result from the store (the pull's business, not this module's). The pulls running
are counted here too: a pull that started while no other ran, and saw none start since,
can skip re-reading the store before it runs a node. Covers: claiming, releasing, waiting,
counting pulls. Does not cover: what a pull does once it owns a key (``scheduler``).

>>> claims = Claims()
>>> pull_a, pull_b = object(), object()
>>> claims.claim(b"k", pull_a) is pull_a      # free: now pull_a's
True
>>> claims.claim(b"k", pull_b) is pull_a      # taken: the owner is returned
True
>>> claims.release(b"k", pull_a); len(claims)
0
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["Claims"]


class Claims:
    """The keys claimed by the running pulls of one session, and a condition to wait on.

    ``claim(key, owner)`` takes ``key`` for ``owner`` if nobody holds it and returns the
    owner it has after the call: ``owner`` itself when the claim succeeded. It is the
    owners dict's own ``setdefault`` (a C call): the sync loop claims every node with it.
    """

    __slots__ = ("_owners", "_cond", "_waiting", "_lock", "claim", "started", "active")

    def __init__(self) -> None:
        self._owners: dict[bytes, Any] = {}
        self._cond = threading.Condition()
        self._waiting = 0  # pulls blocked in wait(); a release notifies only when some are
        self._lock = threading.Lock()
        self.claim: Callable[[bytes, Any], Any] = self._owners.setdefault
        self.started = 0  # pulls started so far (read per node by the sync loop)
        self.active = 0  # pulls running now

    def pull_started(self) -> int:
        """Count a starting pull; a ticket: the count if no other pull runs, else -1.

        While ``started`` still equals the ticket, no other pull ran meanwhile, so nothing
        can have put a result in the store that this pull planned as missing.
        """
        with self._lock:
            self.active += 1
            self.started += 1
            return self.started if self.active == 1 else -1

    def pull_ended(self) -> None:
        """Count a pull that ended (finished, failed or never planned)."""
        with self._lock:
            self.active -= 1

    def __len__(self) -> int:
        """How many keys are claimed now."""
        return len(self._owners)

    @property
    def waiting(self) -> int:
        """How many pulls are waiting for a key another pull holds."""
        return self._waiting

    def owner(self, key: bytes) -> Any:
        """The pull holding ``key``, or None."""
        return self._owners.get(key)

    def wait(self, key: bytes, owner: Any) -> None:
        """Block until ``owner`` holds ``key`` (another pull held it and let it go).

        Waits with a timeout: a release that raced with the check before waiting is seen
        at the next round rather than never.
        """
        owners = self._owners
        with self._cond:
            self._waiting += 1
            try:
                while owners.setdefault(key, owner) is not owner:
                    self._cond.wait(0.1)
            finally:
                self._waiting -= 1

    def release(self, key: bytes, owner: Any) -> None:
        """Give up ``key`` if ``owner`` holds it, and wake the pulls waiting for keys."""
        owners = self._owners
        if owners.get(key) is owner:
            del owners[key]
            if self._waiting:
                with self._cond:
                    self._cond.notify_all()

    def release_batch(self, batch: Iterable[Sequence[Any]], owner: Any) -> None:
        """``release`` the key of each result in ``batch`` (key first), waking waiters once.

        Takes the store's result tuples as they are, so the sync loop builds no list of keys.
        """
        owners = self._owners
        for result in batch:
            key = result[0]
            if owners.get(key) is owner:
                del owners[key]
        if self._waiting:
            with self._cond:
                self._cond.notify_all()

    def release_all(self, owner: Any) -> None:
        """Give up every key ``owner`` still holds (after an error or an interrupt)."""
        owners = self._owners
        for key in [k for k, held in list(owners.items()) if held is owner]:
            owners.pop(key, None)
        with self._cond:
            self._cond.notify_all()
