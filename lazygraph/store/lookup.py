"""The store's read side: the lookup order memory -> weak -> pending -> files -> cluster.

Covers: finding a key's value through the tiers in that order (``find``, the per-node call
of a pull's plan, lock-free for an absent key), the re-pull fast path (``memory_hit``), a
pull on the cluster that leaves results where they are (``find_remote``), looks that count
nothing (``peek``, ``fetch``, ``location``, ``entry``, ``placement``), and the hits and
misses counted on the way. ``Store`` hands these methods out as its own.

Does not cover: what a weak hit or a reload changes between tiers (``store.demote``),
inserting, shedding or forgetting (``store.store``), the tiers' own mechanics.

>>> from lazygraph.config import Config
>>> from lazygraph.store.store import Store
>>> store = Store(Config.from_options(memory_limit="1MB"))
>>> store.put(b"k" * 16, [1, 2], name="f", seconds=0.1)
>>> store.find(b"k" * 16), store.find(b"j" * 16)   # Lookup.find, the store's own
(([1, 2], 'memory'), (MISSING, 'absent'))
>>> store.close()
"""

from __future__ import annotations

import threading
from typing import Any

from .base import MISSING, Entry
from .cluster import ClusterTier, OnDisk
from .counts import Counts
from .demote import Demotion
from .files import FileTier
from .memory import MemoryTier
from .pending import PendingTier
from .stats import placement
from .weak import WeakTier

__all__ = ["Lookup"]

_ABSENT = (MISSING, "absent")


class Lookup:
    """Reads over the store's tiers under the store's ``lock``; counts into ``counts``.

    ``records`` (metadata of entries outside memory) and ``files`` (key -> the file tier
    this store wrote it to) are the maps the store shares with its ``Demotion``.
    """

    def __init__(
        self,
        *,
        lock: threading.RLock,
        memory: MemoryTier,
        weak: WeakTier,
        pending: PendingTier,
        moves: Demotion,
        records: dict[bytes, Entry],
        files: dict[bytes, FileTier],
        disk: FileTier | None,
        counts: Counts,
    ) -> None:
        self._lock = lock
        self._weak, self._pending, self._moves = weak, pending, moves
        self._records, self._files, self._disk = records, files, disk
        self._counts, self._functions = counts, counts.functions  # one lookup less per hit
        # Live read-only views for the lock-free miss test of find(): a method call per tier
        # would cost more than the test. Each membership test is atomic.
        self._resident = memory.entries
        self._touch = memory.touch
        self._weak_keys = weak.keys()
        self._queued_keys = pending.keys()
        self.cluster: ClusterTier | None = None  # results kept on a Dask cluster
        self._cluster_keys: Any = {}.keys()
        self.closed = False  # set by Store.close(): a pull still running lets its files go

    def use_cluster(self, tier: ClusterTier) -> None:
        """Look in ``tier`` last from now on (the caller holds the lock)."""
        self.cluster, self._cluster_keys = tier, tier.keys()

    def lookup(self, key: bytes) -> tuple[Any, str]:
        """``(value, location)`` for ``key``; ``(MISSING, "absent")`` when no tier has it."""
        found = self.find(key)
        if found[0] is MISSING:
            self.count_misses(1)
        return found

    def get(self, key: bytes) -> Any:
        """The value for ``key`` or ``MISSING`` (a miss is counted)."""
        return self.lookup(key)[0]

    def find(self, key: bytes) -> tuple[Any, str]:
        """``lookup`` without counting a miss: for a planner that counts them at the end.

        The per-node call of a pull's plan. A key that no tier holds (what every node of a
        new graph is) is answered from membership tests alone, without the lock: each test
        is atomic, and a result stored meanwhile is found when the node is claimed.
        """
        if (
            key not in self._resident
            and key not in self._weak_keys
            and key not in self._queued_keys
            and key not in self._files
            and key not in self._cluster_keys
            and self._disk is None
        ):
            return _ABSENT
        with self._lock:
            if self.closed:  # a pull still running after close(): its files are let go
                return _ABSENT
            entry = self._resident.get(key)
            if entry is not None:
                self._touch(key)
                self._counts.hit(entry)
                return entry.value, "memory"
            value = self._weak.get(key)
            if value is not MISSING:
                self._counts.hit(self._records.get(key))
                self._moves.promote(key, value)
                return value, "weak"
            queued = self._pending.entry(key)
            if queued is not None:
                self._counts.hit(queued)
                return queued.value, "memory"
            value, where = self._moves.reload(key)
            if value is MISSING and self.cluster is not None and key in self._cluster_keys:
                value, where = self.cluster.get(key), "cluster"  # one transfer from there
            if value is not MISSING:
                self._counts.hit(self._records.get(key))
            return value, where

    def memory_hit(self, key: bytes) -> Any:
        """The value if ``key`` is in the memory tier (counted as a hit), else MISSING.

        The re-pull fast path: the hit counting is inlined.
        """
        with self._lock:
            entry = self._resident.get(key)
            if entry is None:
                return MISSING
            self._touch(key)
            self._counts.hits += 1
            entry.hits += 1
            tally = self._functions.get(entry.name)
            if tally is not None:
                tally[1] += 1
            return entry.value

    def find_remote(self, key: bytes, *, workers_load: bool = False) -> tuple[Any, str]:
        """``find`` for a pull on the cluster: a result held there stays there (``Remote``);
        with ``workers_load`` an entry on disk is left for the workers to load (``OnDisk``)."""
        ref: Any = self.cluster.ref(key) if self.cluster is not None else None
        if ref is None and workers_load and self.location(key) == "disk":
            ref = OnDisk(key)
        if ref is None:
            return self.find(key)
        with self._lock:
            self._counts.hits += 1
        return ref, "disk" if isinstance(ref, OnDisk) else "cluster"

    def count_misses(self, n: int) -> None:
        """Add ``n`` lookups that found nothing (see ``find``)."""
        with self._lock:
            self._counts.misses += n

    def peek(self, key: bytes) -> Any:
        """The value if it is in memory, weakly held or queued for writing, else MISSING.

        Only looks: no hit is counted, the LRU order is untouched and no file is read.
        """
        with self._lock:
            entry = self._resident.get(key)
            if entry is not None:
                return entry.value
            value = self._weak.get(key)
            return value if value is not MISSING else self._pending.get(key)

    def fetch(self, key: bytes) -> Any:
        """The value for ``key`` from any tier, files included, or MISSING; counts nothing.

        For lookups that are not a pull's use of a result (comparing a recomputed result
        with the one before it): hits and misses count what pulls needed (concepts.md).
        """
        value = self.peek(key)
        if value is not MISSING:
            return value
        with self._lock:
            if self.closed:
                return MISSING
            return self._moves.reload(key)[0]

    def location(self, key: bytes) -> str:
        """Where ``key`` lives now: memory, weak, spilled, disk or absent (no side effects)."""
        with self._lock:
            if key in self._resident or key in self._pending:
                return "memory"
            tier = self._files.get(key)
            if tier is not None:  # also when a mapped copy is alive: the data is the file
                # a file this session wrote to cache_dir is "disk" (concepts.md): "spilled"
                # is the private spill directory, as stats().spills counts it
                return "disk" if tier is self._disk else "spilled"
            if key in self._weak:
                return "weak"
            if self._disk is not None and key in self._disk:
                return "disk"
            return "cluster" if key in self._cluster_keys else "absent"

    def entry(self, key: bytes) -> Entry | None:
        """The metadata record for ``key`` (value None when not in memory), from disk too."""
        with self._lock:
            found = self._resident.get(key) or self._records.get(key)
            if found is not None or self._disk is None or self.closed:
                return found
            meta = self._disk.meta(key)
        return None if meta is None else Entry.from_meta(key, meta)

    def placement(self) -> dict[str, tuple[int, dict[str, int]]]:
        """Per function name: bytes of the results held now, and how many live where."""
        with self._lock:
            held = [(e, "memory") for e in self._resident.values()]
            held += [(e, "") for e in self._records.values()]
        return placement(held, locate=self.location)
