"""A background writer, so spilling and persisting stay off the caller's critical path.

Covers: a queue of (entry, file tier) jobs written by one daemon thread, a callback with the
outcome, ``flush`` and ``close``. Does not cover: keeping the entry reachable until its file
is complete (the ``Store`` holds it in its pending map) or the file format (``files``).
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .base import Entry

log = logging.getLogger(__name__)

__all__ = ["Writer"]

Done = Callable[[Entry, Any, "int | BaseException"], None]


class Writer:
    """Writes entries with ``tier.put`` on a daemon thread; reports each outcome to ``done``.

    ``done(entry, tier, result)`` gets the bytes written, or the exception raised (the writer
    itself never dies of one).
    """

    def __init__(self, done: Done, *, name: str = "lazygraph-writer") -> None:
        # A bound method is held weakly: the thread must not keep its store (and every value
        # cached there) alive once the session is dropped without close(); the store's
        # finalizer then closes this writer.
        self._done: Callable[[], Done | None] = (
            weakref.WeakMethod(done) if inspect.ismethod(done) else lambda: done
        )
        self._name = name
        self._queue: queue.Queue[tuple[Entry, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, entry: Entry, tier: Any) -> None:
        """Queue ``entry`` for writing to ``tier``."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((entry, tier))

    def flush(self) -> None:
        """Wait until every queued entry is written (or failed)."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Finish what is queued, then stop the thread. Idempotent."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            if thread is not threading.current_thread():  # a finalizer may run in it
                thread.join()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                entry, tier = job
                try:
                    result: int | BaseException = tier.put(
                        entry.key, entry.value, meta=_meta(entry)
                    )
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


def _meta(entry: Entry) -> dict[str, object]:
    """What a file keeps about its entry, so info() and `lazygraph cache ls` can say it."""
    from ..inspection import summarize

    if entry.summary is None:
        entry.summary = summarize(entry.value, entry.nbytes)
    return {
        "name": entry.name,
        "seconds": entry.seconds,
        "nbytes": entry.nbytes,
        "type": entry.type,
        "summary": entry.summary,
        "created": entry.created,
        "persistable": entry.persistable,
    }
