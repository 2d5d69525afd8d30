"""The store: one lock around the tiers memory -> weak -> files, and their statistics.

Covers: looking a key up through the tiers (promoting weak hits back to memory), putting a
result in (sized, frozen if asked), demoting what the memory tier pushes out (weak
reference, spill file, or nothing), shedding on memory pressure (``evict``), releasing GPU
memory, and the counters behind ``Session.stats()``. Does not cover: deciding what to run
(``scheduler``) or the file format (``store.files``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from .. import cuda
from ..sizing import footprint, freeze
from .base import MISSING, Entry
from .memory import MemoryTier
from .weak import WeakTier

log = logging.getLogger(__name__)

__all__ = ["Store", "Stats"]


@dataclass(frozen=True)
class Stats:
    """A snapshot of the store's counters (``Session.stats()``)."""

    hits: int
    misses: int
    computes: int
    evictions: int
    spills: int
    reloads: int
    bytes_in_memory: int
    bytes_spilled: int
    bytes_on_disk: int
    peak_bytes_in_memory: int
    entries_in_memory: int = 0
    cuda_bytes: int = 0

    def _repr_html_(self) -> str:
        from ..inspection import stats_html

        return stats_html(self)

    def __str__(self) -> str:
        from ..inspection import stats_text

        return stats_text(self)


class Store:
    """Cached results by key across tiers; every method is thread-safe.

    >>> from lazygraph.config import Config
    >>> store = Store(Config.from_options(memory_limit="1MB"))
    >>> store.put(b"k" * 16, [1, 2], name="f", seconds=0.1)
    >>> store.get(b"k" * 16)
    [1, 2]
    >>> store.location(b"k" * 16)
    'memory'
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._memory = MemoryTier(config.memory_limit, max_cuda_bytes=config.cuda_limit)
        self._weak = WeakTier(self._forget_record)
        self._records: dict[bytes, Entry] = {}  # metadata of entries outside memory
        self._freeze = config.freeze
        self.hits = self.misses = self.computes = 0
        self.evictions = self.spills = self.reloads = 0
        self.peak_bytes = 0
        self._closed = False

    # -- lookups -------------------------------------------------------------------------

    def lookup(self, key: bytes) -> tuple[Any, str]:
        """``(value, location)`` for ``key``; ``(MISSING, "absent")`` when no tier has it."""
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                self.hits += 1
                entry.hits += 1
                return entry.value, "memory"
            value = self._weak.get(key)
            if value is not None:
                self.hits += 1
                self._promote(key, value)
                return value, "weak"
            self.misses += 1
            return MISSING, "absent"

    def get(self, key: bytes) -> Any:
        """The value for ``key`` or ``MISSING``."""
        return self.lookup(key)[0]

    def location(self, key: bytes) -> str:
        """Where ``key`` lives now: memory, weak, spilled, disk or absent (no side effects)."""
        with self._lock:
            if key in self._memory:
                return "memory"
            if key in self._weak:
                return "weak"
            return "absent"

    def entry(self, key: bytes) -> Entry | None:
        """The metadata record for ``key`` (value may be None when not in memory)."""
        with self._lock:
            return self._memory.peek(key) or self._records.get(key)

    def _forget_record(self, key: bytes) -> None:
        """Called when the weak tier loses ``key``: its record goes unless a file holds it."""
        self._records.pop(key, None)

    # -- inserting -----------------------------------------------------------------------

    def put(
        self,
        key: bytes,
        value: Any,
        *,
        name: str,
        seconds: float,
        persistable: bool = True,
        spill: bool = True,
        persist: bool = True,
    ) -> None:
        """Cache ``value`` under ``key`` (most recently used), demoting what no longer fits."""
        if self._freeze:
            freeze(value)
        entry = Entry(
            key,
            value,
            footprint(value),
            name=name,
            seconds=seconds,
            persistable=persistable,
            spill=spill,
            persist=persist,
        )
        with self._lock:
            self._records.pop(key, None)
            evicted = self._memory.put(entry)
            if self._memory.cpu_bytes > self.peak_bytes:
                self.peak_bytes = self._memory.cpu_bytes
            if evicted:
                self._demote_all(evicted)

    def note_compute(self) -> None:
        """Count one function execution (the scheduler calls this)."""
        self.computes += 1

    def discard(self, key: bytes) -> None:
        """Forget ``key`` in every tier."""
        with self._lock:
            self._memory.pop(key)
            self._weak.discard(key)
            self._records.pop(key, None)

    # -- shedding ------------------------------------------------------------------------

    def evict(self) -> int:
        """Push the least recently used entry out of memory; bytes freed. Never raises."""
        try:
            with self._lock:
                entry = self._memory.pop_lru()
                if entry is None:
                    return 0
                self._demote_all([entry])
                return entry.nbytes
        except Exception:  # the memory monitor relies on this never raising
            log.exception("evicting from the lazygraph store failed")
            return 0

    def release_cuda(self) -> int:
        """Drop every GPU-resident entry from memory and empty torch's cache; bytes freed."""
        freed = 0
        with self._lock:
            while (entry := self._memory.pop_cuda_lru()) is not None:
                freed += entry.nbytes
                self._demote(entry)
        cuda.empty_cache()
        return freed

    def _demote_all(self, entries: list[Entry]) -> None:
        on_gpu = False
        for entry in entries:
            on_gpu |= entry.on_cuda()
            self._demote(entry)
        if on_gpu:
            cuda.empty_cache()

    def _demote(self, entry: Entry) -> None:
        """Move an entry pushed out of memory to the weak tier (where its type allows)."""
        self.evictions += 1
        value, entry.value = entry.value, None
        if self._weak.put(entry.key, value):
            self._records[entry.key] = entry
        else:
            self._records.pop(entry.key, None)

    def _promote(self, key: bytes, value: Any) -> None:
        record = self._records.pop(key, None)
        if record is None:
            return
        record.hits += 1
        record.value = value
        evicted = self._memory.put(record)
        if evicted:
            self._demote_all([e for e in evicted if e is not record])
            if record in evicted:  # larger than the whole budget: stays weak only
                self._records[key] = record
                record.value = None

    # -- reporting -----------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the counters and byte totals."""
        with self._lock:
            return Stats(
                hits=self.hits,
                misses=self.misses,
                computes=self.computes,
                evictions=self.evictions,
                spills=self.spills,
                reloads=self.reloads,
                bytes_in_memory=self._memory.cpu_bytes,
                bytes_spilled=0,
                bytes_on_disk=0,
                peak_bytes_in_memory=self.peak_bytes,
                entries_in_memory=len(self._memory),
                cuda_bytes=sum(self._memory.cuda_bytes.values()),
            )

    def close(self) -> None:
        """Drop every reference the store holds."""
        with self._lock:
            self._closed = True
            while self._memory.pop_lru() is not None:
                pass
            self._weak = WeakTier(self._forget_record)
            self._records.clear()
