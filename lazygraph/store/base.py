"""What every store tier shares: the ``Tier`` protocol, the ``MISSING`` sentinel, ``Entry``.

Covers: the contract each tier keeps (one contract suite, ``tests/test_tiers.py``, runs
against every tier) and the record kept per cached result. Does not cover: any policy
(see the tiers) or how tiers are composed (``store.store``).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

__all__ = ["MISSING", "Entry", "Missing", "Policy", "Result", "Tier"]


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

    def put(self, entry: Entry) -> None:
        """Hold ``entry.value`` under ``entry.key``; a tier may decline (then ``get`` misses)."""
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
