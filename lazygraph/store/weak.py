"""The weak tier: results pushed out of memory that something else still holds.

Covers: weak references by key, so a pull returns the *same* object while the user (or
another cached value) keeps it alive, without holding it. Does not cover: types that
cannot be weakly referenced (ints, tuples, lists, dicts): those are simply not kept here.

Dead references are removed by their callbacks; the callbacks only append to a list,
because they can fire inside any other store operation (in any thread).

>>> import numpy as np
>>> tier = WeakTier()
>>> a = np.zeros(3)
>>> tier.put(b"k", a)
True
>>> tier.get(b"k") is a
True
>>> del a
>>> tier.get(b"k") is None
True
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["WeakTier"]


class WeakTier:
    """Weak references by key; ``get`` returns the object or None once it has died."""

    def __init__(self, on_forget: Callable[[bytes], None] | None = None) -> None:
        self._refs: dict[bytes, weakref.ref[Any]] = {}
        self._dead: list[bytes] = []
        self._on_forget = on_forget

    def __len__(self) -> int:
        self._purge()
        return len(self._refs)

    def __contains__(self, key: bytes) -> bool:
        ref = self._refs.get(key)
        return ref is not None and ref() is not None

    def put(self, key: bytes, value: Any) -> bool:
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

    def get(self, key: bytes) -> Any:
        """The live object for ``key``, or None."""
        ref = self._refs.get(key)
        return None if ref is None else ref()

    def discard(self, key: bytes) -> None:
        """Forget ``key``."""
        self._refs.pop(key, None)

    def _purge(self) -> None:
        while self._dead:
            key = self._dead.pop()
            ref = self._refs.get(key)
            if ref is not None and ref() is None:
                del self._refs[key]
                if self._on_forget is not None:
                    self._on_forget(key)
