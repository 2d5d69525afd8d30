"""``Counts``: the store's counters, shared by its read side and its write side.

Covers: hits and misses (``store.lookup``), executions and the memory tier's peak
(``Store.insert_many``), and per function name ``[runs, hits, seconds]`` (what
``report()`` lists). Does not cover: locking (every caller holds the store's lock), the
snapshot ``Session.stats()`` returns (``store.stats.Stats.of`` reads these fields).

>>> from lazygraph.store.base import Entry
>>> counts = Counts()
>>> counts.ran("f", 0.5); counts.ran("f", 0.25)
>>> counts.hit(Entry(b"k", 1, (), "f", 0.5, True, True, True))
>>> counts.computes, counts.hits, counts.functions
(2, 1, {'f': [2, 1, 0.75]})
"""

from __future__ import annotations

from .base import Entry

__all__ = ["Counts"]


class Counts:
    """Hits, misses, executions, peak bytes in memory and the per-function tallies."""

    # Slots: the read side bumps ``hits`` once per hit on the re-pull fast path.
    __slots__ = ("hits", "misses", "computes", "peak_bytes", "functions")

    def __init__(self) -> None:
        self.hits = self.misses = self.computes = self.peak_bytes = 0
        self.functions: dict[str, list[float]] = {}  # name -> [runs, hits, seconds]

    def hit(self, entry: Entry | None) -> None:
        """Count one hit, on ``entry`` and its function too when its record is known."""
        self.hits += 1
        if entry is not None:
            entry.hits += 1
            tally = self.functions.get(entry.name)
            if tally is not None:
                tally[1] += 1

    def ran(self, name: str, seconds: float) -> None:
        """Count one execution of function ``name`` that took ``seconds``."""
        self.computes += 1
        tally = self.functions.get(name)
        if tally is None:
            tally = self.functions[name] = [0, 0, 0.0]
        tally[0] += 1
        tally[2] += seconds
