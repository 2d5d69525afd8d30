"""The weak tier: results pushed out of memory that something else still holds.

Covers: weak references by key, so a pull returns the *same* object while the user (or
another cached value) keeps it alive, without holding it. Does not cover: types that
cannot be weakly referenced (ints, tuples, lists, dicts): those are simply not kept here.

Dead references are removed by their callbacks; the callbacks only append to a list,
because they can fire inside any other store operation (in any thread).

>>> import numpy as np
>>> tier = WeakTier()
>>> a = np.zeros(3)
>>> tier.hold(b"k", a)
True
>>> tier.get(b"k") is a
True
>>> del a
>>> tier.get(b"k")
MISSING
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, KeysView
from typing import Any

from .base import MISSING, Entry

__all__ = ["WeakTier"]


class WeakTier:
    """Weak references by key; ``get`` returns the object, or MISSING once it has died.

    ``on_forget(key)`` is called (from a later operation, never from a callback) for each
    key whose object died.
    """

    name = "weak"

    def __init__(self, on_forget: Callable[[bytes], None] | None = None) -> None:
        self._refs: dict[bytes, weakref.ref[Any]] = {}
        self._dead: list[bytes] = []
        self._on_forget = on_forget

    def __len__(self) -> int:
        self._purge()
        return len(self._refs)

    def __contains__(self, key: object) -> bool:
        ref = self._refs.get(key)  # type: ignore[call-overload]
        return ref is not None and ref() is not None

    def keys(self) -> KeysView[bytes]:
        """A live read-only view of the keys (dead ones included until purged)."""
        return self._refs.keys()

    # -- the Tier protocol -------------------------------------------------------------------

    def get(self, key: bytes) -> Any:
        """The live object for ``key``, or MISSING."""
        ref = self._refs.get(key)
        if ref is None:
            return MISSING
        value = ref()
        return MISSING if value is None else value

    def put(self, entry: Entry) -> None:
        """Remember ``entry.value`` weakly (declined when its type takes no weak references)."""
        self.hold(entry.key, entry.value)

    def discard(self, key: bytes) -> None:
        """Forget ``key``."""
        self._refs.pop(key, None)

    def evict(self) -> int:
        """0: a weak reference keeps nothing alive, so there is never anything to free here."""
        return 0

    def sizes(self) -> tuple[int, int]:
        """``(live references, 0)``: what they point to is held (and counted) elsewhere."""
        return len(self), 0

    def close(self) -> None:
        """Forget every reference (no ``on_forget`` calls). Idempotent."""
        self._refs.clear()
        self._dead.clear()

    # -- for the store -----------------------------------------------------------------------

    def hold(self, key: bytes, value: Any) -> bool:
        """Remember ``value`` weakly; False when its type takes no weak references."""
        self._purge()
        dead = self._dead

        def forget(ref: weakref.ref[Any], key: bytes = key) -> None:
            dead.append(key)

        try:
            self._refs[key] = weakref.ref(value, forget)
        except TypeError:
            return False
        return True

    def _purge(self) -> None:
        while self._dead:
            key = self._dead.pop()
            ref = self._refs.get(key)
            if ref is not None and ref() is None:
                del self._refs[key]
                if self._on_forget is not None:
                    self._on_forget(key)
