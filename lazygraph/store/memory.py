"""The memory tier: strong references in least-recently-used order under a byte budget.

Covers: LRU order, size accounting that counts a shared buffer once (a slice of a cached
array, a DataFrame on a cached array) and charges ``ENTRY_OVERHEAD`` bytes of bookkeeping
per entry, a separate budget per CUDA device. Does not cover: what happens to evicted
entries (``on_evict`` decides; the ``Store``'s sends them to the weak tier, a spill file, or
nowhere) or locking (the ``Store`` holds one lock around every tier).

Why not zict.LRU or cachetools.LRUCache: both weigh each key independently, so two entries
sharing one buffer would be counted twice, and both add a layer of calls on the per-node
hot path. The policy here is the same (evict from the least recently used end).

>>> pushed_out = []
>>> tier = MemoryTier(max_bytes=100, on_evict=pushed_out.extend, overhead=0)
>>> from lazygraph.store.base import Entry
>>> def entry(k, n):
...     return Entry(k, None, ((None, n, "cpu"),), name="f", seconds=0.0,
...                  persistable=True, spill=True, persist=True)
>>> tier.put(entry(b"a", 60)); tier.put(entry(b"b", 30)); tier.put(entry(b"c", 50))
>>> [e.key for e in pushed_out], tier.cpu_bytes
([b'a'], 80)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .base import ENTRY_OVERHEAD, MISSING, Entry

log = logging.getLogger(__name__)

__all__ = ["MemoryTier"]


class MemoryTier:
    """Entries by key in LRU order under ``max_bytes``; what no longer fits goes to ``on_evict``.

    ``entries`` is the live mapping, for the store's per-node reads: read it, never write
    it (``put``, ``pop`` and ``touch`` keep the byte counts right). ``touch(key)`` marks a
    held key most recently used (KeyError when absent). ``cpu_bytes`` counts the values;
    the budget also charges ``overhead`` bytes per entry (``sizes()`` reports both).
    """

    name = "memory"

    def __init__(
        self,
        max_bytes: int,
        *,
        max_cuda_bytes: int | None = None,
        on_evict: Callable[[list[Entry]], None] | None = None,
        overhead: int = ENTRY_OVERHEAD,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_cuda_bytes = max_cuda_bytes
        self.overhead = overhead
        self._on_evict = on_evict
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.entries: Mapping[bytes, Entry] = self._entries
        self.touch: Callable[[bytes], None] = self._entries.move_to_end
        self._buffers: dict[object, list[int]] = {}  # buffer id -> [entries using it, bytes]
        self.cpu_bytes = 0
        self.cuda_bytes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._entries)

    # -- the Tier protocol -------------------------------------------------------------------

    def get(self, key: bytes) -> Any:
        """The value for ``key``, marked most recently used, or MISSING."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        self._entries.move_to_end(key)
        return entry.value

    def put(self, entry: Entry) -> None:
        """Insert ``entry`` (most recently used), pushing out what no longer fits.

        An entry larger than the whole budget is not kept: it goes to ``on_evict`` too.
        """
        self.put_many((entry,))

    def discard(self, key: bytes) -> None:
        """Forget ``key`` without calling ``on_evict``."""
        self.pop(key)

    def evict(self) -> int:
        """Push the least recently used entry out: bytes freed, 0 when empty, -1 on failure."""
        try:
            before = self.cpu_bytes + len(self._entries) * self.overhead
            entry = self.pop_lru()
            if entry is None:
                return 0
            if self._on_evict is not None:
                self._on_evict([entry])
            # 0 would tell the monitor nothing is left; a view of a held buffer frees ~0
            return max(before - self.cpu_bytes - len(self._entries) * self.overhead, 1)
        except Exception:  # the memory monitor relies on this never raising
            log.exception("evicting from the lazygraph memory tier failed")
            return -1

    def sizes(self) -> tuple[int, int]:
        """``(entries, bytes)``: bytes are the values plus ``overhead`` per entry."""
        return len(self._entries), self.cpu_bytes + len(self._entries) * self.overhead

    def close(self) -> None:
        """Drop every entry (without calling ``on_evict``). Idempotent."""
        self._entries.clear()
        self._buffers.clear()
        self.cpu_bytes = 0
        self.cuda_bytes.clear()

    # -- for the store -----------------------------------------------------------------------

    def entry(self, key: bytes) -> Entry | None:
        """The entry for ``key`` without touching the LRU order."""
        return self._entries.get(key)

    def put_many(self, entries: Iterable[Entry]) -> None:
        """``put`` each of ``entries`` in order, then push out what no longer fits."""
        table = self._entries
        for entry in entries:
            old = table.pop(entry.key, None)
            if old is not None:
                self._account(old, -1)
            table[entry.key] = entry
            parts = entry.parts
            if len(parts) == 1 and parts[0][0] is None and parts[0][2] == "cpu":
                self.cpu_bytes += parts[0][1]  # the common small result: private CPU bytes
            else:
                self._account(entry, +1)
        if self.cpu_bytes + len(table) * self.overhead <= self.max_bytes and not self.cuda_bytes:
            return
        evicted = self._shrink()
        if evicted and self._on_evict is not None:
            self._on_evict(evicted)

    def pop(self, key: bytes) -> Entry | None:
        """Remove and return the entry for ``key``."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._account(entry, -1)
        return entry

    def pop_lru(self) -> Entry | None:
        """Remove and return the least recently used entry, or None when empty."""
        if not self._entries:
            return None
        key = next(iter(self._entries))
        return self.pop(key)

    def pop_cuda_lru(self, device: str | None = None) -> Entry | None:
        """Remove the least recently used entry holding GPU memory (on ``device``)."""
        for key, entry in self._entries.items():
            if any(part[2] != "cpu" and (device is None or part[2] == device)
                   for part in entry.parts):
                return self.pop(key)
        return None

    def _shrink(self) -> list[Entry]:
        evicted: list[Entry] = []
        while self.cpu_bytes + len(self._entries) * self.overhead > self.max_bytes:
            lru = self.pop_lru()
            if lru is None:
                break
            evicted.append(lru)
        for device in [d for d, n in self.cuda_bytes.items() if n > 0]:
            limit = self._cuda_limit(device)
            while self.cuda_bytes.get(device, 0) > limit:
                victim = self.pop_cuda_lru(device)
                if victim is None:
                    break
                evicted.append(victim)
        return evicted

    def _cuda_limit(self, device: str) -> int:
        """The budget for ``device``: the configured one, else a share of the device."""
        if self.max_cuda_bytes is not None:
            return self.max_cuda_bytes
        from ..cuda import default_cuda_limit

        return default_cuda_limit(device)

    def _account(self, entry: Entry, sign: int) -> None:
        for buffer_id, nbytes, device in entry.parts:
            if buffer_id is not None:
                slot = self._buffers.get(buffer_id)
                if slot is None:
                    slot = self._buffers[buffer_id] = [0, nbytes]
                slot[0] += sign
                if slot[0] == 0:
                    del self._buffers[buffer_id]
                elif slot[0] != 1 or sign < 0:
                    continue  # the buffer was (or still is) counted by another entry
            if device == "cpu":
                self.cpu_bytes += sign * nbytes
            else:
                self.cuda_bytes[device] = self.cuda_bytes.get(device, 0) + sign * nbytes
