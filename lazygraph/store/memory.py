"""The memory tier: strong references in least-recently-used order under a byte budget.

Covers: LRU order, size accounting that counts a shared buffer once (a slice of a cached
array, a DataFrame on a cached array), a separate budget per CUDA device. Does not cover:
what happens to evicted entries (the ``Store`` decides: weak tier, spill, or drop) or
locking (the ``Store`` holds one lock around every tier).

Why not zict.LRU or cachetools.LRUCache: both weigh each key independently, so two entries
sharing one buffer would be counted twice, and both add a layer of calls on the per-node
hot path. The policy here is the same (evict from the least recently used end).

>>> tier = MemoryTier(max_bytes=100)
>>> from lazygraph.store.base import Entry
>>> def entry(k, n):
...     return Entry(k, None, ((None, n, "cpu"),), name="f", seconds=0.0,
...                  persistable=True, spill=True, persist=True)
>>> tier.put(entry(b"a", 60)); tier.put(entry(b"b", 30))
[]
[]
>>> [e.key for e in tier.put(entry(b"c", 50))]
[b'a']
>>> tier.cpu_bytes
80
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

from .base import Entry

__all__ = ["MemoryTier"]

_NOTHING: list[Entry] = []  # returned, never mutated: nothing was evicted


class MemoryTier:
    """Entries by key in LRU order; ``put`` returns the entries it pushed out."""

    def __init__(self, max_bytes: int, *, max_cuda_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_cuda_bytes = max_cuda_bytes
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._buffers: dict[object, list[int]] = {}  # buffer id -> [entries using it, bytes]
        self.cpu_bytes = 0
        self.cuda_bytes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._entries)

    def get(self, key: bytes) -> Entry | None:
        """The entry for ``key``, marked most recently used, or None."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def peek(self, key: bytes) -> Entry | None:
        """The entry for ``key`` without touching the LRU order."""
        return self._entries.get(key)

    def put(self, entry: Entry) -> list[Entry]:
        """Insert ``entry`` (most recently used) and return the entries evicted to fit.

        An entry larger than the whole budget is not kept: it comes back in the list.
        """
        return self.put_many((entry,))

    def put_many(self, entries: Iterable[Entry]) -> list[Entry]:
        """``put`` each of ``entries`` in order, then evict what no longer fits."""
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
        if self.cpu_bytes <= self.max_bytes and not self.cuda_bytes:
            return _NOTHING
        return self._shrink()

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
        while self.cpu_bytes > self.max_bytes and self._entries:
            lru = self.pop_lru()
            assert lru is not None
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
