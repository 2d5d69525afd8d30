"""``Stats``: a snapshot of a store's counters, as ``Session.stats()`` returns it.

Covers: the fields, how they are shown (through ``display``: the views register
``stats_text`` and ``stats_html``, so this module imports no view), and ``placement``
(where each function's results live). Does not cover:
counting (``store.store``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import display
from .base import Entry

__all__ = ["Stats", "placement"]


@dataclass(frozen=True)
class Stats:
    """A snapshot of the store's counters (``Session.stats()``).

    ``bytes_in_memory`` is the results' estimated size; the memory tier also charges
    ``store.base.ENTRY_OVERHEAD`` bytes of bookkeeping per entry against ``memory_limit``.
    """

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

    @classmethod
    def of(cls, counts: Any, memory: Any, moves: Any, disk: Any) -> Stats:
        """The snapshot of a store's ``counts`` (hits, misses, computes, peak_bytes), its
        memory tier, its ``Demotion`` (evictions, spills, reloads) and its cache_dir tier."""
        return cls(
            hits=counts.hits,
            misses=counts.misses,
            computes=counts.computes,
            evictions=moves.evictions,
            spills=moves.spills,
            reloads=moves.reloads,
            bytes_in_memory=memory.cpu_bytes,
            bytes_spilled=moves.spilled_bytes,
            bytes_on_disk=disk.nbytes() if disk is not None else 0,
            peak_bytes_in_memory=counts.peak_bytes,
            entries_in_memory=len(memory),
            cuda_bytes=sum(memory.cuda_bytes.values()),
        )

    def _repr_html_(self) -> str:
        return str(display.show("stats_html", self))

    def __str__(self) -> str:
        return str(display.show("stats_text", self))


def placement(
    held: list[tuple[Entry, str]], *, locate: Callable[[bytes], str]
) -> dict[str, tuple[int, dict[str, int]]]:
    """Per function name: bytes of the ``held`` entries and how many live where.

    ``held`` pairs each entry with its location, or "" to ask ``locate(key)``; absent ones
    are left out.

    >>> from lazygraph.store.base import Entry
    >>> e = Entry(b"k", None, ((None, 8, "cpu"),), "f", 0.0, True, True, True)
    >>> placement([(e, "memory"), (e, "")], locate=lambda key: "weak")
    {'f': (16, {'memory': 1, 'weak': 1})}
    """
    places_by_name: dict[str, tuple[int, dict[str, int]]] = {}
    for entry, where in held:
        where = where or locate(entry.key)
        if where == "absent":
            continue
        nbytes, places = places_by_name.get(entry.name, (0, {}))
        places[where] = places.get(where, 0) + 1
        places_by_name[entry.name] = (nbytes + entry.nbytes, places)
    return places_by_name
