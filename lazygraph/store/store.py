"""The store: one lock around the tiers memory -> weak -> files, and their statistics.

Covers: looking a key up through the tiers (promoting weak hits back to memory), putting a
result in (sized, frozen if asked), demoting what the memory tier pushes out (weak
reference, spill file, or nothing), shedding on memory pressure (``evict``), releasing GPU
memory, and the counters behind ``Session.stats()``. Does not cover: deciding what to run
(``scheduler``) or the file format (``store.files``).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .. import cuda
from ..sizing import footprint, freeze
from .base import MISSING, Entry, Result
from .files import HOST_TAG, FileTier, process_gone
from .memory import MemoryTier
from .secret import load_or_create_secret
from .weak import WeakTier
from .writer import Writer

log = logging.getLogger(__name__)

__all__ = ["Store", "Stats"]

_ABSENT = (MISSING, "absent")
_SPILL_PREFIX = "lazygraph-spill-"


class _Policy(NamedTuple):
    """The Policy ``Store.put`` makes from its keywords."""

    name: str
    spill: bool
    persist: bool


# A put names one of a few functions: the same few policies, made once each.
_policy = functools.lru_cache(maxsize=1024)(_Policy)


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
        # The tiers' own dicts, for the membership tests on the per-node paths (find,
        # memory_hit): a method call per tier would cost more than the test.
        self._entries = self._memory._entries
        self._weak_refs = self._weak._refs
        self._records: dict[bytes, Entry] = {}  # metadata of entries outside memory
        self._freeze = config.freeze
        self.hits = self.misses = self.computes = 0
        self.evictions = self.spills = self.reloads = 0
        self.peak_bytes = 0
        self._closed = False
        # Files: ``_disk`` is the cache_dir (shared, persistent), ``_spill_dir`` a private
        # temporary directory made on first spill and removed on close.
        self._disk: FileTier | None = None
        if config.cache_dir is not None:
            self._disk = FileTier(
                Path(config.cache_dir),
                secret=load_or_create_secret(),
                disk_limit=config.disk_limit,
            )
        self._spill_tier: FileTier | None = None
        self._spill_dir: str | None = None
        self._writer = Writer(self._written)
        # Runs on close(), or when a store whose session was never closed is collected (or
        # at exit): stop the writer, then remove the private spill directory.
        self._spill_dirs: list[str] = []
        self._release = weakref.finalize(self, _release, self._writer, self._spill_dirs)
        self._writing: dict[bytes, tuple[Entry, bool]] = {}  # queued: (entry, is_spill)
        # Queued entries already out of the memory tier are RAM the store holds beyond it:
        # key -> bytes. A producer waits while tier + these exceed memory_limit + a little
        # slack (enough for small writes to overlap the next computation, never a large one).
        self._unwritten: dict[bytes, int] = {}
        self._unwritten_bytes = 0
        self._budget_bytes = config.memory_limit + min(config.memory_limit // 8, 64 * 2**20)
        self._room = threading.Condition(self._lock)  # signalled as queued writes finish
        self._pins: list[dict[bytes, Any]] = []  # the running pulls' values (see pin())
        self._files: dict[bytes, FileTier] = {}  # what this store wrote, and where
        self._spilled_bytes = 0
        self._warned: set[int] = set()
        self.functions: dict[str, list[float]] = {}  # name -> [runs, hits, seconds]

    # -- lookups -------------------------------------------------------------------------

    def lookup(self, key: bytes) -> tuple[Any, str]:
        """``(value, location)`` for ``key``; ``(MISSING, "absent")`` when no tier has it."""
        found = self.find(key)
        if found[0] is MISSING:
            self.count_misses(1)
        return found

    def find(self, key: bytes) -> tuple[Any, str]:
        """``lookup`` without counting a miss: for a planner that counts them at the end.

        The per-node call of a pull's plan. A key that no tier holds (what every node of a
        new graph is) is answered from dict membership alone, without the lock: each test
        is atomic, and a result stored meanwhile is found when the node is claimed.
        """
        if (
            key not in self._entries
            and key not in self._weak_refs
            and key not in self._writing
            and key not in self._files
            and self._disk is None
        ):
            return _ABSENT
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                self._count_hit(entry)
                return entry.value, "memory"
            value = self._weak.get(key)
            if value is not None:
                self._count_hit(self._records.get(key))
                self._promote(key, value)
                return value, "weak"
            queued = self._writing.get(key)
            if queued is not None and queued[0].value is not None:
                self._count_hit(queued[0])
                return queued[0].value, "memory"
            value, where = self._load(key)
            if value is not MISSING:
                self._count_hit(self._records.get(key))
            return value, where

    def count_misses(self, n: int) -> None:
        """Add ``n`` lookups that found nothing (see ``find``)."""
        with self._lock:
            self.misses += n

    def _count_hit(self, entry: Entry | None) -> None:
        self.hits += 1
        if entry is not None:
            entry.hits += 1
            tally = self.functions.get(entry.name)
            if tally is not None:
                tally[1] += 1

    def _load(self, key: bytes) -> tuple[Any, str]:
        """Read ``key`` back from a file (memory-mapped), keeping it weakly for identity."""
        tier = self._files.get(key)
        where = "spilled"
        if tier is None:
            if self._disk is None or key not in self._disk:
                return MISSING, "absent"
            tier, where = self._disk, "disk"
        value = tier.get(key)
        if value is MISSING:  # deleted, truncated or planted underneath: recompute it
            self._files.pop(key, None)
            self._records.pop(key, None)
            return MISSING, "absent"
        self.reloads += 1
        self._weak.put(key, value)
        return value, where

    def memory_hit(self, key: bytes) -> Any:
        """The value if ``key`` is in the memory tier (counted as a hit), else MISSING.

        The re-pull fast path: the tier's LRU touch and the hit counting are inlined.
        """
        entries = self._entries
        with self._lock:
            entry = entries.get(key)
            if entry is None:
                return MISSING
            entries.move_to_end(key)
            self.hits += 1
            entry.hits += 1
            tally = self.functions.get(entry.name)
            if tally is not None:
                tally[1] += 1
            return entry.value

    def peek(self, key: bytes) -> Any:
        """The value if it is in memory, weakly held or queued for writing, else MISSING.

        Only looks: no hit is counted, the LRU order is untouched and no file is read.
        """
        with self._lock:
            entry = self._memory.peek(key)
            if entry is not None:
                return entry.value
            value = self._weak.get(key)
            if value is not None:
                return value
            queued = self._writing.get(key)
            return queued[0].value if queued is not None else MISSING

    def get(self, key: bytes) -> Any:
        """The value for ``key`` or ``MISSING``."""
        return self.lookup(key)[0]

    def location(self, key: bytes) -> str:
        """Where ``key`` lives now: memory, weak, spilled, disk or absent (no side effects)."""
        with self._lock:
            if key in self._memory or key in self._writing:
                return "memory"
            if key in self._files:  # also when a mapped copy is alive: the data is the file
                return "spilled"
            if key in self._weak:
                return "weak"
            if self._disk is not None and key in self._disk:
                return "disk"
            return "absent"

    def entry(self, key: bytes) -> Entry | None:
        """The metadata record for ``key`` (value None when not in memory), from disk too."""
        with self._lock:
            found = self._memory.peek(key) or self._records.get(key)
            if found is not None or self._disk is None:
                return found
            meta = self._disk.meta(key)
        return None if meta is None else _entry_from_meta(key, meta)

    def _forget_record(self, key: bytes) -> None:
        """Called when the weak tier loses ``key``: its record goes unless a file holds it."""
        if key not in self._files and key not in self._writing:
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
        policy = _policy(name, spill, persist)
        self.insert_many([(key, value, footprint(value), seconds, policy, persistable)], False)

    def insert_many(self, results: Iterable[Result], computed: bool = True) -> None:
        """Cache ``results`` in order (the last is the most recently used), under one lock.

        The scheduler's call: each finished node's result, or a batch of small ones. With
        ``computed`` each counts as one execution of its function (``Session.report``).
        """
        if self._freeze:
            results = list(results)
            for result in results:
                freeze(result[1])
        now = time.time()  # one clock read per batch: its results were made within a moment
        records = self._records
        with self._lock:
            entries = []
            for key, value, parts, seconds, policy, persistable in results:
                entry = Entry(key, value, parts, policy.name, seconds, persistable,
                              policy.spill, policy.persist, now)
                entries.append(entry)
                if computed:
                    self._tally(entry.name, seconds)
                if records:
                    records.pop(key, None)
            memory = self._memory
            evicted = memory.put_many(entries)
            if memory.cpu_bytes > self.peak_bytes:
                self.peak_bytes = memory.cpu_bytes
            if self._disk is not None:
                for entry in entries:  # write-through: persist
                    if entry.persist and entry.persistable and entry.key not in self._files:
                        self._queue_write(entry, self._disk, spill=False)
            if evicted:
                self._demote_all(evicted)
            if self._unwritten_bytes and self._over_budget():
                self._wait_for_room()

    def note_compute(self, name: str, seconds: float) -> None:
        """Count one execution of a result that is not cached (``cache=False``)."""
        with self._lock:
            self._tally(name, seconds)

    def _tally(self, name: str, seconds: float) -> None:
        self.computes += 1
        tally = self.functions.get(name)
        if tally is None:
            tally = self.functions[name] = [0, 0, 0.0]
        tally[0] += 1
        tally[2] += seconds

    def discard(self, key: bytes) -> None:
        """Forget ``key`` in every tier, its files included."""
        with self._lock:
            self._memory.pop(key)
            self._weak.discard(key)
            self._records.pop(key, None)
            tier = self._files.pop(key, None)
            if tier is not None:
                tier.discard(key)
            if self._disk is not None:
                self._disk.discard(key)

    # -- pinned values -------------------------------------------------------------------

    def pin(self, values: dict[bytes, Any]) -> None:
        """Register a pull's ``values`` (key -> value it holds until its last consumer ran).

        A pull holds every result it needs until the consumers have run, so that nothing is
        lost in between; a node reading many large inputs at once would thus hold them all in
        RAM, whatever the store evicted. Once an entry pushed out of memory has its file
        complete, the store replaces the in-RAM value in every registered ``values`` by its
        memory-mapped reload, so the RAM copy can be freed (S5.5). Call ``unpin`` when done.

        >>> from lazygraph.config import Config
        >>> store = Store(Config.from_options(memory_limit="1MB"))
        >>> values = {}
        >>> store.pin(values); store.unpin(values); store.close()
        """
        with self._lock:
            self._pins.append(values)

    def unpin(self, values: dict[bytes, Any]) -> None:
        """Stop swapping values in ``values`` (registered with ``pin``); idempotent."""
        with self._lock:
            self._pins = [pinned for pinned in self._pins if pinned is not values]

    def _swap_pinned(self, key: bytes, original: Any, tier: FileTier) -> None:
        """Replace ``original`` under ``key`` in pinned values by its reload from ``tier``.

        Only worth it for large values: a small one reloaded is a copy, not a mapping.
        Called with the lock held; the reload is O(1) (this process wrote or verified it).
        """
        holders = [values for values in self._pins if values.get(key) is original]
        if not holders:
            return
        mapped = tier.get(key)
        if mapped is MISSING:  # deleted underneath: the pinned copy stays the only one
            return
        for values in holders:
            # A pull's own thread may pop the key meanwhile (its last consumer ran): putting
            # it back would only hold a file-backed value until the pull ends.
            if values.get(key) is original:
                values[key] = mapped

    # -- shedding ------------------------------------------------------------------------

    def evict(self) -> int:
        """Push the least recently used entry out of memory; bytes freed. Never raises."""
        try:
            with self._lock:
                entry = self._memory.pop_lru()
                if entry is None:
                    return 0
                self._demote_all([entry])
                return max(entry.nbytes, 1)  # 0 would tell the monitor nothing is left
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
        """Move an entry pushed out of memory to a spill file and/or the weak tier.

        A spilled entry stays reachable (held by the write queue) until its file is complete.
        """
        self.evictions += 1
        key = entry.key
        if key not in self._files and key not in self._writing and self._spillable(entry):
            self._queue_write(entry, self._tier_for(entry), spill=True)
        if key in self._files and self._pins and self._mappable(entry):
            self._swap_pinned(key, entry.value, self._files[key])  # e.g. persisted earlier
        kept = self._weak.put(key, entry.value)
        if key in self._writing:
            self._count_unwritten(key, entry.nbytes)  # out of the tier, still in RAM
            entry = Entry(key, entry.value, entry.parts, entry.name, entry.seconds,
                          entry.persistable, entry.spill, entry.persist)  # queued keeps value
        entry.value = None
        if kept or key in self._files or key in self._writing:
            self._records[key] = entry
        else:
            self._records.pop(key, None)

    def _spillable(self, entry: Entry) -> bool:
        return (
            self.config.spill
            and entry.spill
            and entry.nbytes >= self.config.spill_threshold
            and not entry.on_cuda()
        )

    def _mappable(self, entry: Entry) -> bool:
        """Large enough that its reload from a file is worth more than the RAM copy."""
        return entry.nbytes >= self.config.spill_threshold and not entry.on_cuda()

    def _tier_for(self, entry: Entry) -> FileTier:
        """The cache_dir for persistable entries when persisting, else the private spill dir."""
        if self._disk is not None and self.config.persist and entry.persist and entry.persistable:
            return self._disk
        if self._spill_tier is None:
            self._spill_dir = make_spill_dir()
            self._spill_dirs.append(self._spill_dir)
            self._spill_tier = FileTier(
                Path(self._spill_dir), secret=os.urandom(32), disk_limit=None
            )
        return self._spill_tier

    def _queue_write(self, entry: Entry, tier: FileTier, *, spill: bool) -> None:
        self._writing[entry.key] = (entry, spill)
        self._writer.submit(entry, tier)

    def _count_unwritten(self, key: bytes, nbytes: int) -> None:
        if key not in self._unwritten:
            self._unwritten[key] = nbytes
            self._unwritten_bytes += nbytes

    def _over_budget(self) -> bool:
        return self._memory.cpu_bytes + self._unwritten_bytes > self._budget_bytes

    def _wait_for_room(self) -> None:
        """Back-pressure: a producer faster than the disk waits instead of filling RAM.

        What the store holds in RAM is the memory tier plus the evicted entries whose files
        are not complete yet; waiting here keeps that within ``memory_limit`` (and a slack
        of at most 64 MiB), so a spilling pipeline needs no more RAM than it was given.
        """
        while self._unwritten_bytes and self._over_budget() and not self._closed:
            self._room.wait(0.5)

    def _written(self, entry: Entry, tier: FileTier, result: int | BaseException) -> None:
        """The writer thread's report: the file is complete (or the write failed)."""
        with self._lock:
            queued = self._writing.pop(entry.key, None)
            self._unwritten_bytes -= self._unwritten.pop(entry.key, 0)
            self._room.notify_all()
            if isinstance(result, BaseException):
                self._write_failed(entry, result)
                return
            self._files[entry.key] = tier
            if queued is not None and queued[1]:
                self.spills += 1
            if tier is self._spill_tier:
                self._spilled_bytes += result
            if entry.key not in self._memory:
                original, entry.value = entry.value, None  # the file now stands in for it
                self._records.setdefault(entry.key, entry)
                if self._pins and self._mappable(entry):
                    self._swap_pinned(entry.key, original, tier)

    def _write_failed(self, entry: Entry, exc: BaseException) -> None:
        code = exc.errno if isinstance(exc, OSError) and exc.errno is not None else -1
        if code not in self._warned:
            self._warned.add(code)
            reason = os.strerror(code) if code > 0 else f"{type(exc).__name__}: {exc}"
            level = logging.WARNING if code in (errno.ENOSPC, errno.EFBIG, errno.EROFS) else (
                logging.INFO)
            log.log(level, "lazygraph could not write %s to disk (%s); it will be recomputed "
                    "when needed (logged once per reason)", entry.name, reason)
        if entry.key not in self._memory and entry.key not in self._weak:
            self._records.pop(entry.key, None)

    def _promote(self, key: bytes, value: Any) -> None:
        record = self._records.pop(key, None)
        if record is None:
            return
        record.value = value
        evicted = self._memory.put(record)
        if evicted:
            self._demote_all([e for e in evicted if e is not record])
            if record in evicted:  # larger than the whole budget: stays weak only
                self._records[key] = record
                record.value = None

    # -- reporting -----------------------------------------------------------------------

    def placement(self) -> dict[str, tuple[int, dict[str, int]]]:
        """Per function name: bytes of the results held now, and how many live where."""
        with self._lock:
            records = [(e, "memory") for e in self._memory._entries.values()]
            records += [(e, "") for e in self._records.values()]
        held: dict[str, tuple[int, dict[str, int]]] = {}
        for entry, where in records:
            where = where or self.location(entry.key)
            if where == "absent":
                continue
            nbytes, places = held.get(entry.name, (0, {}))
            places[where] = places.get(where, 0) + 1
            held[entry.name] = (nbytes + entry.nbytes, places)
        return held

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
                bytes_spilled=self._spilled_bytes,
                bytes_on_disk=self._disk.nbytes() if self._disk is not None else 0,
                peak_bytes_in_memory=self.peak_bytes,
                entries_in_memory=len(self._memory),
                cuda_bytes=sum(self._memory.cuda_bytes.values()),
            )

    def flush(self) -> None:
        """Wait until every queued spill and persist write is on disk."""
        self._writer.flush()

    def close(self) -> None:
        """Finish persist writes, drop every reference, remove the private spill directory."""
        with self._lock:
            self._closed = True
            self._room.notify_all()
        self._writer.close()
        with self._lock:
            while self._memory.pop_lru() is not None:
                pass
            self._weak = WeakTier(self._forget_record)
            self._weak_refs = self._weak._refs
            self._records.clear()
            self._files.clear()
            self._pins.clear()
            for tier in (self._spill_tier, self._disk):
                if tier is not None:
                    tier.close()
            self._release()  # removes the spill directory (the writer is stopped already)
            self._spill_dir = None


def make_spill_dir(base: str | None = None) -> str:
    """A new private spill directory under ``base`` (the temp dir), named by host and pid.

    First removes the spill directories of this user's processes that died without cleaning
    up (killed, or the machine lost power): nothing else would ever delete their files.
    """
    base = tempfile.gettempdir() if base is None else base
    _sweep_dead_spill_dirs(base)
    return tempfile.mkdtemp(prefix=f"{_SPILL_PREFIX}{HOST_TAG}-{os.getpid()}-", dir=base)


def _sweep_dead_spill_dirs(base: str) -> None:
    try:
        listing = list(os.scandir(base))
    except OSError as exc:
        log.debug("cannot list %s for dead spill directories: %s", base, exc)
        return
    for item in listing:
        parts = item.name[len(_SPILL_PREFIX) :].split("-")
        if not item.name.startswith(_SPILL_PREFIX) or len(parts) != 3:
            continue
        try:
            st = item.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and process_gone(*parts[:2]):
            log.info("removing spill directory %s left by a process that died", item.path)
            shutil.rmtree(item.path, ignore_errors=True)


def _release(writer: Writer, spill_dirs: list[str]) -> None:
    """Stop ``writer`` (finishing queued writes), then remove the spill directories."""
    writer.close()
    for directory in spill_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    spill_dirs.clear()


def _entry_from_meta(key: bytes, meta: dict[str, Any]) -> Entry:
    """An Entry record (no value) from the metadata a file keeps."""
    nbytes = meta.get("nbytes")
    entry = Entry(
        key,
        None,
        ((None, int(nbytes) if isinstance(nbytes, (int, float)) else 0, "cpu"),),
        str(meta.get("name", "?")),
        float(meta.get("seconds", 0.0) or 0.0),
        bool(meta.get("persistable", True)),
        True,
        True,
    )
    entry.type = str(meta.get("type", "")) or entry.type
    summary = meta.get("summary")
    entry.summary = str(summary) if summary is not None else None
    created = meta.get("created")
    if isinstance(created, (int, float)):
        entry.created = float(created)
    return entry
