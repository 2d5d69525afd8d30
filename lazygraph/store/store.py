"""The store: one lock around the tiers memory -> weak -> pending writes -> files (-> cluster).

Covers: composing the tiers, inserting results (sized, frozen if asked), discarding,
shedding on memory pressure (``evict``), GPU release, pins, the cross-process locks' calls
and the snapshot behind ``Session.stats()``. Talks to each tier only through its methods
(``store.base.Tier`` and a few documented extras). Does not cover: the lookups, in the
tiers' order (``store.lookup``: the store hands out its methods), the counters
(``store.counts``), forgetting (``store.forgetting``), what happens between tiers
(``store.demote``), the file format (``store.files``), the spill directory
(``store.spilldir``) or the write queue (``store.pending``).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import cuda
from ..sizing import footprint, freeze
from .base import MISSING, Entry, Result
from .base import policy as make_policy
from .cluster import ClusterTier
from .counts import Counts
from .demote import Demotion
from .files import FileTier
from .forgetting import Forgetting
from .locks import ComputeLocks
from .lookup import Lookup
from .memory import MemoryTier
from .pending import PendingTier
from .pins import Pins
from .secret import load_or_create_secret
from .spilldir import SpillDir
from .stats import Stats
from .weak import WeakTier

log = logging.getLogger(__name__)

__all__ = ["Stats", "Store"]


class Store:
    """Cached results by key across tiers; every method is thread-safe.

    The reads (``find``, ``memory_hit``, ``find_remote``, ``lookup``, ``get``, ``peek``,
    ``fetch``, ``location``, ``entry``, ``count_misses``, ``placement``) are the methods of
    its ``store.lookup.Lookup``, handed out as the store's own: ``find`` and ``memory_hit``
    run once per node, and a delegating call would add a call to each. ``forget``,
    ``keys_of`` and ``all_keys`` are those of its ``store.forgetting.Forgetting``.

    >>> from lazygraph.config import Config
    >>> store = Store(Config.from_options(memory_limit="1MB"))
    >>> store.put(b"k" * 16, [1, 2], name="f", seconds=0.1)
    >>> store.get(b"k" * 16)
    [1, 2]
    >>> store.location(b"k" * 16)
    'memory'
    >>> store.close()
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._disk: FileTier | None = None  # the cache_dir (shared, persistent)
        if config.cache_dir is not None:
            self._disk = FileTier(
                Path(config.cache_dir), secret=load_or_create_secret(), disk_limit=config.disk_limit
            )
        self._spill = SpillDir()
        self._records: dict[bytes, Entry] = {}  # metadata of entries outside memory
        self._files: dict[bytes, FileTier] = {}  # what this store wrote, and where
        self._pins = Pins()
        self._weak = WeakTier(self._forget_record)
        self._moves = moves = Demotion(config, weak=self._weak, spill=self._spill, disk=self._disk,
                                       pins=self._pins, records=self._records, files=self._files)
        self._memory = MemoryTier(config.memory_limit, max_cuda_bytes=config.cuda_limit,
                                  on_evict=moves.demote_all)
        self._pending = PendingTier(route=moves.route, on_written=self._written, lock=self._lock)
        moves.attach(self._memory, self._pending)
        self._counts = Counts()
        self._ran = self._counts.ran  # bound once: insert_many counts each computed result
        self.functions = self._counts.functions  # name -> [runs, hits, seconds] (report())
        self.reads = self._hand_out_reads()  # the read side (Session's re-pull calls it)
        self._freeze = config.freeze
        self._cluster: ClusterTier | None = None  # results kept on a Dask cluster
        # S5.10: a key's lock across processes, held from computing it to its entry written
        self._locks: ComputeLocks | None = None
        if self._disk is not None:
            self._locks = ComputeLocks(Path(config.cache_dir), load=self._disk.get,
                                       keep=self._weak.hold, queued=self._pending.keys(),
                                       missing=MISSING)
        self._closed = False
        # A producer waits while tier + held pending bytes exceed memory_limit + a little slack
        # (enough for small writes to overlap the next computation, never a large one).
        self._budget_bytes = config.memory_limit + min(config.memory_limit // 8, 64 * 2**20)
        # Runs on close(), or when a store whose session was never closed is collected (or at
        # exit): finish the writes, then remove the spill directory. Holds no store.
        self._release = weakref.finalize(self, _release, self._pending, self._spill)
        self._forgetting = forgetting = Forgetting(
            lock=self._lock, views=(self._memory.entries, self._weak.keys(), self._files),
            records=self._records, pending=self._pending, disk=self._disk,
            locate=self.location, discard=self.discard)
        # node.forget, factory.clear, session.clear: handed out as the reads are
        self.forget, self.keys_of, self.all_keys = (
            forgetting.forget, forgetting.keys_of, forgetting.all_keys)

    def _hand_out_reads(self) -> Lookup:
        """Make the read side and bind its methods here (bound, not wrapped: no extra call)."""
        reads = Lookup(lock=self._lock, memory=self._memory, weak=self._weak,
                       pending=self._pending, moves=self._moves, records=self._records,
                       files=self._files, disk=self._disk, counts=self._counts)
        self.find, self.memory_hit, self.find_remote = (
            reads.find, reads.memory_hit, reads.find_remote)
        self.lookup, self.get, self.peek, self.fetch = (
            reads.lookup, reads.get, reads.peek, reads.fetch)
        self.location, self.entry, self.count_misses, self.placement = (
            reads.location, reads.entry, reads.count_misses, reads.placement)
        return reads

    @property
    def _spill_dir(self) -> str | None:
        """The private spill directory, once made (None before the first spill and after close)."""
        return self._spill.path

    @property
    def cluster(self) -> ClusterTier | None:
        """The cluster tier the Dask executor attached (results kept on a cluster), or None."""
        return self._cluster

    def attach_cluster(self, tier: ClusterTier) -> None:
        """Keep results computed on a Dask cluster in ``tier`` (the previous one is closed)."""
        with self._lock:
            old, self._cluster = self._cluster, tier
            self.reads.use_cluster(tier)
        if old is not None:
            old.close()

    def _forget_record(self, key: bytes) -> None:
        """Called when the weak tier loses ``key``: its record goes unless a file holds it."""
        if key not in self._files and key not in self._pending:
            self._records.pop(key, None)

    # -- inserting -----------------------------------------------------------------------

    def put(self, key: bytes, value: Any, *, name: str, seconds: float,
            persistable: bool = True, spill: bool = True, persist: bool = True) -> None:
        """Cache ``value`` under ``key`` (most recently used), demoting what no longer fits."""
        policy = make_policy(name, spill, persist)
        self.insert_many([(key, value, footprint(value), seconds, policy, persistable)], False)

    def insert_many(self, results: Iterable[Result], computed: bool = True) -> None:
        """Cache ``results`` in order (the last is the most recently used), under one lock.

        The scheduler's call: each finished node's result, or a batch of small ones. With
        ``computed`` each counts as one execution of its function (``Session.report``).
        Once the store is closed nothing is cached (the pull still returns its values).
        """
        if self._freeze:
            results = list(results)
            for result in results:
                freeze(result[1])
        now = time.time()  # one clock read per batch: its results were made within a moment
        records, ran, counts = self._records, self._ran, self._counts
        with self._lock:
            if self._closed:
                return
            if self._cluster is not None:  # results kept on a cluster go to its tier
                results = self._cluster.take(results, tally=ran if computed else None)
            entries = []
            for key, value, parts, seconds, policy, persistable in results:
                entry = Entry(key, value, parts, policy.name, seconds, persistable,
                              policy.spill, policy.persist, now)
                entries.append(entry)
                if computed:
                    ran(entry.name, seconds)
                if records:
                    records.pop(key, None)
            if self._disk is not None:
                self._moves.write_through(entries)
                if self._locks is not None:
                    self._locks.release_unqueued(entry.key for entry in entries)
            memory = self._memory
            memory.put_many(entries)  # what no longer fits goes to Demotion.demote_all
            if memory.cpu_bytes > counts.peak_bytes:
                counts.peak_bytes = memory.cpu_bytes
            if self._pending.held_bytes:
                self._pending.wait_for_room(room=self._has_room)

    def _has_room(self) -> bool:
        """Back-pressure: whether memory tier + held pending bytes fit the budget.

        Waiting for room keeps what the store holds in RAM within ``memory_limit`` (and a
        slack of at most 64 MiB), so a spilling pipeline needs no more RAM than it was given.
        """
        return self._memory.cpu_bytes + self._pending.held_bytes <= self._budget_bytes

    def note_compute(self, name: str, seconds: float) -> None:
        """Count one execution of a result that is not cached (``cache=False``)."""
        with self._lock:
            self._ran(name, seconds)

    def discard(self, key: bytes, *, disk: bool = True) -> None:
        """Forget ``key`` in every tier, its files included (``disk=False``: not cache_dir's)."""
        with self._lock:
            self._memory.discard(key)
            self._weak.discard(key)
            self._pending.discard(key)
            self._records.pop(key, None)
            tier = self._files.pop(key, None)
            if tier is not None and (disk or tier is not self._disk):
                tier.discard(key)
            if self._disk is not None and disk:
                self._disk.discard(key)
            if self._cluster is not None:
                self._cluster.discard(key)

    # -- run-once across processes (S5.10) -----------------------------------------------

    def lock_to_compute(self, key: bytes) -> Any:
        """Before computing persisted ``key``: its entry if another process wrote it meanwhile,
        else MISSING with the key locked for this process (``locks.ComputeLocks``)."""
        return MISSING if self._locks is None else self._locks.lock_to_compute(key)

    def unlock(self, key: bytes) -> None:
        """Let go of ``key``'s cross-process lock if held (computing it failed, or done)."""
        if self._locks is not None:
            self._locks.release(key)

    def _written(self, entry: Entry, tier: FileTier, result: Any, spill: bool) -> None:
        """The writer's report: the entry is complete (or failed), so its lock goes first."""
        self.unlock(entry.key)
        self._moves.written(entry, tier, result, spill)

    # -- pinned values -------------------------------------------------------------------

    def pin(self, values: dict[bytes, Any]) -> None:
        """Register a pull's ``values`` (key -> value held until its last consumer ran): a
        value whose file completes is swapped for its memory-mapped reload (``store.pins``).

        >>> from lazygraph.config import Config
        >>> store = Store(Config.from_options(memory_limit="1MB"))
        >>> values = {}
        >>> store.pin(values); store.unpin(values); store.close()
        """
        with self._lock:
            self._pins.add(values)

    def unpin(self, values: dict[bytes, Any]) -> None:
        """Stop swapping values in ``values`` (registered with ``pin``); idempotent."""
        with self._lock:
            self._pins.remove(values)

    # -- shedding ------------------------------------------------------------------------

    def evict(self) -> int:
        """Free memory for the monitor: bytes freed, 0 when nothing is left, -1 when it could
        not (yet). Never raises.

        Bytes queued for writing are not freed until their file is complete, so while any are
        held this waits for those writes (``PendingTier.evict``) instead of pushing more
        entries out: one episode of pressure must not drain the memory tier.
        """
        try:
            with self._lock:
                if not self._pending.held_bytes:
                    freed = self._memory.evict()  # demoted through Demotion.demote_all
                    if freed <= 0 or not self._pending.held_bytes:
                        return freed
                return self._pending.evict()
        except Exception:  # the memory monitor relies on this never raising
            log.exception("evicting from the lazygraph store failed")
            return -1

    def release_cuda(self) -> int:
        """Drop every GPU-resident entry from memory and empty torch's cache; bytes freed."""
        freed = 0
        with self._lock:
            while (entry := self._memory.pop_cuda_lru()) is not None:
                freed += entry.nbytes
                self._moves.demote(entry)
        cuda.empty_cache()
        return freed

    # -- reporting -----------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the counters and byte totals."""
        with self._lock:
            return Stats.of(self._counts, self._memory, self._moves, self._disk)

    def flush(self) -> None:
        """Wait until every queued spill and persist write is on disk."""
        self._pending.flush()

    def close(self) -> None:
        """Finish persist writes, drop every reference, remove the private spill directory.

        Idempotent and safe from any thread while others compute: from here on nothing is
        cached, no write is queued and no spill directory is made.
        """
        with self._lock:
            self._closed = self._moves.closed = self._forgetting.closed = self.reads.closed = True
        self._release()  # pending.close() (joins the writer, outside the lock), then the dir
        with self._lock:
            self._memory.close()
            self._weak.close()
            self._records.clear()
            self._files.clear()
            self._pins.clear()
            if self._disk is not None:
                self._disk.close()
            for tier in (self._cluster, self._locks):
                if tier is not None:
                    tier.close()


def _release(pending: PendingTier, spill: SpillDir) -> None:
    """Finish (or refuse) queued writes and stop the writer, then remove the spill directory."""
    pending.close()
    spill.close()
