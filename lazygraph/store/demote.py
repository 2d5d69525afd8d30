"""Demotion: what happens to an entry the memory tier pushes out, and once its file is written.

Covers: choosing the next tier of an evicted entry (a spill or persist file through the
pending tier, a weak reference, or nothing), where a queued entry is written (``route``;
``write_through`` for the cache_dir), what a completed or failed write changes
(``written``), reading a value back from its file (``reload``), promoting a weak hit back
into memory, and the counters of all that (evictions, spills, bytes spilled, reloads).
Does not cover: locking (the ``Store`` calls every method with its lock held, the writer's
report included) or the tiers' own mechanics.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

from .. import cuda
from .base import MISSING, Entry
from .files import FileTier
from .memory import MemoryTier
from .pending import PendingTier
from .pins import Pins
from .spilldir import SpillDir
from .weak import WeakTier

log = logging.getLogger(__name__)

__all__ = ["Demotion"]


class Demotion:
    """The policy between the tiers; ``records`` and ``files`` are shared with the ``Store``.

    ``records``: key -> Entry (value None) of results outside the memory tier that some tier
    still holds; ``files``: key -> the file tier this store wrote it to.
    """

    def __init__(
        self,
        config: Any,
        *,
        weak: WeakTier,
        spill: SpillDir,
        disk: FileTier | None,
        pins: Pins,
        records: dict[bytes, Entry],
        files: dict[bytes, FileTier],
    ) -> None:
        self.config = config
        self.weak, self.spill, self.disk, self.pins = weak, spill, disk, pins
        self.records, self.files = records, files
        self.memory: MemoryTier  # set by attach(): the tiers call back into this object
        self.pending: PendingTier
        self.evictions = self.spills = self.spilled_bytes = self.reloads = 0
        self.closed = False
        self._warned: set[int] = set()

    def attach(self, memory: MemoryTier, pending: PendingTier) -> None:
        """The two tiers made with this object's ``demote_all``, ``route`` and ``written``."""
        self.memory, self.pending = memory, pending
        self._queued = pending.keys()  # per evicted entry: the view, not a method call

    def demote_all(self, entries: list[Entry]) -> None:
        """``demote`` each entry; empty torch's CUDA cache once if any was on a GPU."""
        on_gpu = False
        for entry in entries:
            on_gpu |= entry.on_cuda()
            self.demote(entry)
        if on_gpu:
            cuda.empty_cache()

    def demote(self, entry: Entry) -> None:
        """Move an entry pushed out of memory to a spill file and/or the weak tier.

        A spilled entry stays reachable (held by the pending tier) until its file is complete.
        """
        self.evictions += 1
        key, files, queued = entry.key, self.files, self._queued
        if key not in files and key not in queued and self._spillable(entry):
            self.pending.put(entry)
        if key in files and self.pins and self.mappable(entry):
            self.pins.swap(key, entry.value, files[key])  # e.g. persisted earlier
        kept = self.weak.hold(key, entry.value)
        if key in queued:
            self.pending.hold(key, entry.nbytes)  # out of the memory tier, still in RAM
            entry = Entry(key, entry.value, entry.parts, entry.name, entry.seconds,
                          entry.persistable, entry.spill, entry.persist)  # queued keeps value
        entry.value = None
        if kept or key in files or key in queued:
            self.records[key] = entry
        else:
            self.records.pop(key, None)

    def promote(self, key: bytes, value: Any) -> None:
        """A weak hit goes back into memory (unless larger than the whole budget)."""
        record = self.records.pop(key, None)
        if record is None:
            return
        record.value = value
        self.memory.put(record)  # what it pushes out comes back through demote_all
        if key not in self.memory:  # larger than the whole budget: stays weak only
            self.records[key] = record
            record.value = None

    def reload(self, key: bytes) -> tuple[Any, str]:
        """``(value, "spilled" or "disk")`` read back from a file (memory-mapped) and kept
        weakly for identity; ``(MISSING, "absent")`` when no file holds a good copy."""
        tier = self.files.get(key)
        where = "spilled" if tier is not self.disk else "disk"  # see Store.location
        if tier is None:
            if self.disk is None or key not in self.disk:
                return MISSING, "absent"
            tier, where = self.disk, "disk"
        value = tier.get(key)
        if value is MISSING:  # deleted, truncated or planted underneath: recompute it
            self.files.pop(key, None)
            self.records.pop(key, None)
            return MISSING, "absent"
        self.reloads += 1
        self.weak.hold(key, value)
        return value, where

    def write_through(self, entries: list[Entry]) -> None:
        """Queue persistable entries for the cache_dir while they are still in memory."""
        for entry in entries:
            if entry.persist and entry.persistable and entry.key not in self.files:
                self.pending.put(entry, spill=False)

    def mappable(self, entry: Entry) -> bool:
        """Large enough that its reload from a file is worth more than the RAM copy."""
        return entry.nbytes >= self.config.spill_threshold and not entry.on_cuda()

    def _spillable(self, entry: Entry) -> bool:
        return self.config.spill and entry.spill and self.mappable(entry)

    def route(self, entry: Entry, spill: bool) -> FileTier | None:
        """Where a queued entry is written: cache_dir when persisting, else the spill dir."""
        persist = entry.persist and entry.persistable and self.disk is not None
        if persist and (self.config.persist or not spill):
            return self.disk
        return self.spill.tier()

    def written(self, entry: Entry, tier: FileTier, result: int | BaseException,
                spill: bool) -> None:
        """The writer's report: the file is complete (it stands in for the value), or not."""
        if self.closed:
            return
        if isinstance(result, BaseException):
            self._write_failed(entry, result)
            return
        self.files[entry.key] = tier
        self.spills += spill
        if tier is not self.disk:
            self.spilled_bytes += result
        if entry.key not in self.memory:
            original, entry.value = entry.value, None
            self.records.setdefault(entry.key, entry)
            if self.pins and self.mappable(entry):
                self.pins.swap(entry.key, original, tier)

    def _write_failed(self, entry: Entry, exc: BaseException) -> None:
        code = exc.errno if isinstance(exc, OSError) and exc.errno is not None else -1
        if code not in self._warned:
            self._warned.add(code)
            reason = os.strerror(code) if code > 0 else f"{type(exc).__name__}: {exc}"
            level = logging.WARNING if code in (errno.ENOSPC, errno.EFBIG, errno.EROFS) else (
                logging.INFO)
            log.log(level, "lazygraph could not write %s to disk (%s); it will be recomputed "
                    "when needed (logged once per reason)", entry.name, reason)
        if entry.key not in self.memory and entry.key not in self.weak:
            self.records.pop(entry.key, None)
