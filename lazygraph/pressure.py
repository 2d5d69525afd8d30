"""The memory monitor: sheds cached entries when the process or the machine runs short.

Covers: measuring the process's resident memory and the system's available memory (psutil),
and calling an ``evict() -> int`` callable with hysteresis (start above the threshold, stop
below a target) from a lazily started daemon thread (SPEC S5.4).  Does not cover: what is
evicted or where it goes (the store's ``evict`` decides: drop, weak reference or spill); GPU
memory (``lazygraph.cuda``).

The ``evict`` protocol, as in distributed's worker memory manager, is all the monitor relies
on: free some memory (one least recently used entry, or wait for a queued write of one) and
return the bytes that freed; 0 when nothing is left to evict (an entry that frees nothing
reports 1, not 0); -1 when it could not free anything now (the monitor ends the pass and
tries again at the next one); never raise.

>>> held = [bytearray(10)]
>>> def evict():
...     return len(held.pop()) if held else 0
>>> monitor = MemoryMonitor(evict, rss_limit=0, min_available=0)  # always over the limit
>>> monitor.check(), held
(10, [])
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

import psutil

from lazygraph.errors import ConfigError

__all__ = ["MemoryMonitor", "Trigger", "process_memory"]

logger = logging.getLogger(__name__)

THREAD_NAME = "lazygraph-memory-monitor"


@dataclasses.dataclass(frozen=True)
class Trigger:
    """One episode of shedding: why it started, the readings then, and what it freed."""

    reason: str  # "rss" (process over rss_limit) or "available" (system under min_available)
    rss: int
    available: int
    freed: int
    at: float  # time.time() when it started


def process_memory() -> int:
    """Return this process's resident memory that is not backed by files, in bytes.

    On Linux that is ``RssAnon + RssShmem`` from ``/proc/self/status``: pages of memory-mapped
    files (spilled arrays loaded with ``mmap_mode="r"``, shared libraries) can be dropped by
    the kernel at any time, so they neither lead to an OOM kill nor are worth evicting for.
    Elsewhere it is psutil's RSS.

    >>> process_memory() > 0
    True
    """
    try:
        with open("/proc/self/status", "rb") as status:
            text = status.read()
        anon = text.split(b"RssAnon:", 1)[1].split(None, 1)[0]
        shmem = text.split(b"RssShmem:", 1)[1].split(None, 1)[0]
        return (int(anon) + int(shmem)) * 1024
    except (OSError, IndexError, ValueError):
        return int(psutil.Process().memory_info().rss)


class MemoryMonitor:
    """Call ``evict`` while the process or the system is short of memory.

    Shedding starts when :func:`process_memory` exceeds ``rss_limit`` or the system's
    available memory (psutil) falls below ``min_available``, and goes on until memory is back
    under ``target_fraction * rss_limit`` and available memory above ``min_available /
    target_fraction``, or ``evict`` has nothing left.  When it runs out of entries while still
    over, it runs ``gc.collect()`` (evicted values caught in reference cycles) and returns
    freed heap to the OS (glibc ``malloc_trim``), once per episode.

    ``check()`` runs one pass; ``ensure_started()`` runs it every ``interval`` seconds on a
    daemon thread named ``lazygraph-memory-monitor``, which holds the monitor only weakly and
    ends when ``stop()`` is called or the monitor is garbage.

    >>> monitor = MemoryMonitor(lambda: 0, rss_limit=2**50, min_available=0, interval=0.01)
    >>> monitor.ensure_started(); monitor.running
    True
    >>> monitor.stop(); monitor.running
    False
    """

    def __init__(
        self,
        evict: Callable[[], int],
        *,
        rss_limit: int,
        min_available: int,
        interval: float = 0.05,
        target_fraction: float = 0.9,
    ) -> None:
        if not interval > 0:
            raise ConfigError(f"interval must be a positive number of seconds (got {interval!r})")
        if not 0 < target_fraction <= 1:
            raise ConfigError(f"target_fraction must be in (0, 1] (got {target_fraction!r})")
        self._evict = evict
        self.rss_limit = rss_limit
        self.min_available = min_available
        self.interval = interval
        self.target_fraction = target_fraction
        self.checks = 0  # passes run
        self.triggers = 0  # episodes of shedding started
        self.evict_calls = 0
        self.bytes_freed = 0
        self.gc_collections = 0
        self.last_trigger: Trigger | None = None
        self._in_episode = False
        self._collected_in_episode = False
        self._closed = False  # close(): stopped for good, ensure_started() does nothing
        self._reset_threading()

    def _reset_threading(self) -> None:
        self._pid = os.getpid()
        self._check_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the monitor thread is alive in this process."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def ensure_started(self) -> None:
        """Start the monitor thread unless it runs already; idempotent and thread-safe."""
        if self.running:
            return
        if self._pid != os.getpid():  # a forked child: the parent's thread and locks are not ours
            self._reset_threading()
        with self._start_lock:
            if self.running or self._closed:
                return
            self._stop_event = threading.Event()
            thread = threading.Thread(
                target=_run,
                args=(weakref.ref(self), self._stop_event, self.interval),
                name=THREAD_NAME,
                daemon=True,
            )
            thread.start()
            self._thread = thread

    def stop(self) -> None:
        """Stop the monitor thread and wait for it to end; idempotent."""
        with self._start_lock:
            thread, self._thread = self._thread, None
            self._stop_event.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def close(self) -> None:
        """Stop the thread for good: a later ``ensure_started`` (a pull that was already
        running when its session closed) starts nothing. Idempotent, from any thread."""
        with self._start_lock:
            self._closed = True
        self.stop()

    # -- one pass --------------------------------------------------------------------------

    def measure(self) -> tuple[int, int]:
        """Return ``(process memory, system available memory)`` in bytes."""
        available = psutil.virtual_memory().available if self.min_available > 0 else 0
        return process_memory(), int(available)

    def check(self) -> int:
        """Run one pass: shed if over a threshold; return the bytes ``evict`` reported freed.

        Returns 0 at once if another thread is running a pass.
        """
        if not self._check_lock.acquire(blocking=False):
            return 0
        try:
            self.checks += 1
            rss, available = self.measure()
            reason = self._reason(rss, available)
            if reason is None:
                self._in_episode = self._collected_in_episode = False
                return 0
            return self._shed(reason, rss, available)
        finally:
            self._check_lock.release()

    def _reason(self, rss: int, available: int) -> str | None:
        if rss > self.rss_limit:
            return "rss"
        if self.min_available > 0 and available < self.min_available:
            return "available"
        return None

    def _under_target(self, rss: int, available: int) -> bool:
        rss_ok = rss < self.target_fraction * self.rss_limit
        return rss_ok and (
            self.min_available <= 0 or available > self.min_available / self.target_fraction
        )

    def _shed(self, reason: str, rss: int, available: int) -> int:
        trigger = Trigger(reason, rss, available, 0, time.time())
        if not self._in_episode:
            self._in_episode = True
            self.triggers += 1
            self.last_trigger = trigger  # visible while shedding, not only after
            logger.debug("memory pressure (%s): rss=%d available=%d", reason, rss, available)
        freed = 0
        while not self._under_target(rss, available):
            count = self._evict()
            self.evict_calls += 1
            if count < 0:  # could not free now (a write still in flight): next pass
                break
            if count == 0:
                self._out_of_entries(reason, rss, available)
                break
            freed += count
            self.bytes_freed += count
            rss, available = self.measure()
        if freed:
            self.last_trigger = dataclasses.replace(trigger, freed=freed)
        return freed

    def _out_of_entries(self, reason: str, rss: int, available: int) -> None:
        if self._collected_in_episode:
            return
        self._collected_in_episode = True
        self.gc_collections += 1
        gc.collect()
        _trim_heap()
        logger.warning(
            "memory pressure (%s) and nothing left to evict from the lazygraph store: "
            "process memory %d bytes (rss_limit %d), system available %d (min_available %d)",
            reason,
            rss,
            self.rss_limit,
            available,
            self.min_available,
        )


def _run(ref: weakref.ref[MemoryMonitor], stop: threading.Event, interval: float) -> None:
    """The monitor thread: a pass every ``interval`` seconds while the monitor lives."""
    while not stop.wait(interval):
        monitor = ref()
        if monitor is None:
            return
        try:
            monitor.check()
        except Exception:  # a failed pass must not end monitoring; evict itself never raises
            logger.exception("lazygraph memory monitor pass failed")
        del monitor  # hold the monitor only while checking, so it can be collected


def _trim_heap() -> None:
    """Give free heap pages back to the OS (glibc only); freed small objects otherwise stay."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
