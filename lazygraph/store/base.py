"""What every store tier shares: the ``Tier`` protocol, the ``MISSING`` sentinel, ``Entry``.

Covers: the contract each tier keeps (one contract suite, ``tests/test_tiers.py``, runs
against every tier) and the record kept per cached result. Does not cover: any policy
(see the tiers) or how tiers are composed (``store.store``).
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple, Protocol

__all__ = ["ENTRY_OVERHEAD", "MISSING", "Entry", "Missing", "Policy", "Result", "Tier", "policy"]

#: Bytes the memory tier itself spends per entry beyond the value: the ``Entry`` (13 slots),
#: its parts tuples, the seconds float, the 16-byte key, the OrderedDict slot and links and
#: the dict's spare room. Measured with tracemalloc over 100,000 entries of the memory tier
#: (``tests/test_tiers.py::test_entry_overhead_matches_tracemalloc`` keeps it honest); the
#: tier charges it against ``memory_limit`` so a million tiny results cannot hold 20x the
#: limit in bookkeeping (SPEC S5.2).
ENTRY_OVERHEAD = 480


class Policy(Protocol):
    """What the store may do with a result: its name in reports, may it spill, may it persist.

    A node's ``NodeOptions`` is one; ``Store.put`` makes its own from keywords.
    """

    @property
    def name(self) -> str: ...

    @property
    def spill(self) -> bool: ...

    @property
    def persist(self) -> bool: ...


class _Policy(NamedTuple):
    """The Policy ``policy()`` makes."""

    name: str
    spill: bool
    persist: bool


@functools.lru_cache(maxsize=1024)  # a put names one of a few functions: made once each
def policy(name: str, spill: bool = True, persist: bool = True) -> Policy:
    """A Policy from its three fields (``Store.put``'s keywords).

    >>> policy("load", spill=False).spill
    False
    """
    return _Policy(name, spill, persist)


#: One result for ``Store.insert_many``: key, value, ``sizing.footprint(value)``, seconds it
#: took, its Policy, persistable (False when its key holds an identity token).
Result = tuple[bytes, Any, tuple[tuple[Any, int, str], ...], float, Policy, bool]


class Missing:
    """The type of ``MISSING``: a lookup found nothing (``None`` is a valid result)."""

    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING = Missing()


class Entry:
    """A cached result and what the store knows about it.

    ``parts`` is ``sizing.footprint(value)``: (buffer id or None, bytes, device) triples,
    so views of one buffer are counted once across entries.
    """

    __slots__ = (
        "key",
        "value",
        "parts",
        "nbytes",
        "name",
        "seconds",
        "persistable",
        "spill",
        "persist",
        "created",
        "hits",
        "type",
        "summary",
    )

    def __init__(
        self,
        key: bytes,
        value: Any,
        parts: tuple[tuple[Any, int, str], ...],
        name: str,
        seconds: float,
        persistable: bool,
        spill: bool,
        persist: bool,
        created: float | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.parts = parts
        self.nbytes = parts[0][1] if len(parts) == 1 else sum(part[1] for part in parts)
        self.name = name
        self.seconds = seconds
        self.persistable = persistable
        self.spill = spill
        self.persist = persist
        self.created = time.time() if created is None else created
        self.hits = 0
        self.type = type(value).__name__
        self.summary: str | None = None  # filled in when the entry is written to a file

    def meta(self) -> dict[str, object]:
        """What a file keeps about its entry, so info() and ``lazygraph cache ls`` can say it.

        ``summary`` is filled in by the writer before the file tier is handed the entry.
        """
        return {
            "name": self.name,
            "seconds": self.seconds,
            "nbytes": self.nbytes,
            "type": self.type,
            "summary": self.summary,
            "created": self.created,
            "persistable": self.persistable,
        }

    @classmethod
    def from_meta(cls, key: bytes, meta: dict[str, Any]) -> Entry:
        """A record (no value) from the metadata a file keeps (see ``meta``)."""
        nbytes = meta.get("nbytes")
        entry = cls(
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

    def on_cuda(self) -> bool:
        """True when part of the value lives in GPU memory."""
        return any(part[2] != "cpu" for part in self.parts)

    def __repr__(self) -> str:
        return f"<Entry {self.name} {self.key.hex()[:12]} {self.nbytes} B>"


class Tier(Protocol):
    """One level of the store's hierarchy: results by key, under the tier's own policy.

    Modelled on zict's mappings and distributed's spill buffer. Every tier answers a key it
    does not hold with ``MISSING`` (``None`` is a valid result) and never raises for one;
    ``evict`` is what the memory monitor relies on, so it never raises either. ``Store``
    talks to tiers only through these methods.
    """

    #: Where a value found in this tier lives, as ``info().location`` reports it.
    name: str

    def get(self, key: bytes) -> Any:
        """The value held under ``key``, or ``MISSING``."""
        ...

    def __contains__(self, key: object) -> bool:
        """Whether ``get(key)`` would find a value (cheap: no loading)."""
        ...

    def put(self, entry: Entry) -> object:
        """Hold ``entry.value`` under ``entry.key``; a tier may decline (then ``get`` misses).

        What it returns is the tier's own business (the file tier: bytes written); callers
        going through the protocol ignore it.
        """
        ...

    def discard(self, key: bytes) -> None:
        """Forget ``key`` (no error when absent)."""
        ...

    def evict(self) -> int:
        """Let go of the least valuable entry: bytes freed, 0 when there was nothing to
        free, -1 when it could not. Never raises."""
        ...

    def sizes(self) -> tuple[int, int]:
        """``(entries, bytes)`` held now."""
        ...

    def close(self) -> None:
        """Let go of everything (idempotent)."""
        ...
