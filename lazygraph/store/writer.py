"""A background writer, so spilling and persisting stay off the caller's critical path.

Covers: a queue of (entry, file tier) jobs written by one daemon thread per writer, a
callback with each outcome, ``flush`` and ``close``, and the guard of SPEC S2.5: a job may
carry the content digest its value had when it was queued; a value changed in place since
(by the caller or a downstream node) is not written (:class:`ChangedSinceQueued`), and a
file whose value changed while it was being written is removed again. Start and stop happen
under one lock, so a ``submit`` racing ``close`` can never start a second thread (which could
take the first one's stop signal and leave ``close`` joining forever); once closed,
``submit`` refuses.
Does not cover: keeping the entry reachable until its file is complete (``store.pending``)
or the file format (``store.files``).
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..describe import summarize
from ..hashing import content_hash
from .base import Entry

log = logging.getLogger(__name__)

__all__ = ["THREAD_NAME", "ChangedSinceQueued", "Writer", "digest_of"]

THREAD_NAME = "lazygraph-writer"

Done = Callable[[Entry, Any, "int | BaseException"], None]


class ChangedSinceQueued(Exception):
    """A queued value's content changed before its file was complete: it is not written."""


def digest_of(value: Any) -> bytes | None:
    """The content digest that ``Writer`` re-checks, or None when ``value`` cannot be hashed.

    Never raises: a value that cannot be hashed is written unchecked, as before.

    >>> digest_of([1, 2]) == digest_of([1, 2]) != digest_of([1, 3])
    True
    """
    try:
        return content_hash(value)[0]
    except Exception:  # an exotic object: no guard, but no lost write either
        log.debug("cannot hash a value of type %s to guard its write", type(value).__name__)
        return None


class Writer:
    """Writes entries with ``tier.put`` on a daemon thread; reports each outcome to ``done``.

    ``done(entry, tier, result)`` gets the bytes written, or the exception raised (the writer
    itself never dies of one).

    >>> seen = []
    >>> class Tier:
    ...     def put(self, entry):
    ...         return 3
    >>> writer = Writer(lambda entry, tier, result: seen.append(result))
    >>> e = Entry(b"k", "v", ((None, 1, "cpu"),), "f", 0.0, True, True, True)
    >>> writer.submit(e, Tier()), writer.flush(), seen
    (True, None, [3])
    >>> writer.close(); writer.submit(e, Tier())
    False
    """

    def __init__(self, done: Done, *, name: str = THREAD_NAME) -> None:
        # A bound method is held weakly: the thread must not keep its store (and every value
        # cached there) alive once the session is dropped without close(); the store's
        # finalizer then closes this writer.
        self._done: Callable[[], Done | None] = (
            weakref.WeakMethod(done) if inspect.ismethod(done) else lambda: done
        )
        self._name = name
        self._queue: queue.Queue[tuple[Entry, Any, bytes | None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()  # start, submit and stop: never interleaved

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (``submit`` refuses from then on)."""
        return self._closed

    def submit(self, entry: Entry, tier: Any, digest: bytes | None = None) -> bool:
        """Queue ``entry`` for writing to ``tier``; False (nothing queued) once closed.

        With ``digest`` (``digest_of(entry.value)`` now), the write happens only if the value
        still has that content when the writer gets to it, and is undone if it changed during
        the write; either way ``done`` gets a ``ChangedSinceQueued``.
        """
        with self._lock:
            if self._closed:
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            # Queued under the lock: close() puts its stop signal after every accepted job.
            self._queue.put((entry, tier, digest))
        return True

    def flush(self) -> None:
        """Wait until every queued entry is written (or failed)."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Finish what is queued, then stop the thread. Idempotent, from any thread."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)  # the last item: submit() refuses from now on
        if thread is not None and thread is not threading.current_thread():
            thread.join()  # a finalizer may run in the writer thread itself: no self-join

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                entry, tier, digest = job
                try:
                    result: int | BaseException = _put(tier, entry, digest)
                except Exception as exc:  # reported to the store, which logs and recovers
                    result = exc
                done = self._done()
                try:
                    if done is not None:
                        done(entry, tier, result)
                except Exception:
                    log.exception("lazygraph writer callback failed")
                finally:
                    del done  # hold the store only while reporting to it
            finally:
                self._queue.task_done()


def _put(tier: Any, entry: Entry, digest: bytes | None) -> int:
    """Write ``entry`` into ``tier``; the bytes written (the entry's size if not told).

    With ``digest``, checked before the write (a value changed since it was queued is not
    written) and after it (a file of a value changed meanwhile is removed): between the two
    checks another process may see the file for the moment the second hash takes.
    """
    if digest is not None and digest_of(entry.value) != digest:
        raise _changed(entry, "before")
    if entry.summary is None:
        entry.summary = summarize(entry.value, entry.nbytes)
    written = tier.put(entry)  # FileTier.put may report the file's bytes; else the estimate
    if digest is not None and digest_of(entry.value) != digest:
        tier.discard(entry.key)
        raise _changed(entry, "while")
    return written if isinstance(written, int) else entry.nbytes


def _changed(entry: Entry, when: str) -> ChangedSinceQueued:
    log.info(
        "not persisting %s: its result was changed in place %s it was written (a caller or "
        "a downstream node wrote into it); another process will compute it again",
        entry.name,
        when,
    )
    return ChangedSinceQueued(f"the result of {entry.name} changed in place {when} its write")

