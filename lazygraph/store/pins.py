"""Pinned values: the running pulls' key -> value maps, and swapping in file-backed reloads.

A pull holds every result it needs until the consumers have run, so that nothing is lost in
between; a node reading many large inputs at once would thus hold them all in RAM, whatever
the store evicted. Once an entry pushed out of memory has its file complete, the store asks
``Pins.swap`` to replace the in-RAM value in every registered map by its memory-mapped
reload, so the RAM copy can be freed (SPEC S5.5).

Covers: the registry and the swap. Does not cover: locking (the ``Store`` holds its lock
around every call) or deciding when a swap is worth it (``Store._mappable``).
"""

from __future__ import annotations

from typing import Any

from .base import MISSING

__all__ = ["Pins"]


class Pins:
    """The registered ``values`` maps of running pulls.

    >>> class Tier:
    ...     def get(self, key):
    ...         return "mapped"
    >>> pins, original = Pins(), ["big"]
    >>> values = {b"k": original}
    >>> pins.add(values); pins.swap(b"k", original, Tier()); values
    {b'k': 'mapped'}
    """

    def __init__(self) -> None:
        self._maps: list[dict[bytes, Any]] = []

    def __bool__(self) -> bool:
        return bool(self._maps)

    def add(self, values: dict[bytes, Any]) -> None:
        """Register ``values``."""
        self._maps.append(values)

    def remove(self, values: dict[bytes, Any]) -> None:
        """Unregister ``values`` (no error when it is not registered)."""
        self._maps = [pinned for pinned in self._maps if pinned is not values]

    def clear(self) -> None:
        """Unregister every map."""
        self._maps.clear()

    def swap(self, key: bytes, original: Any, tier: Any) -> None:
        """Replace ``original`` under ``key`` in the registered maps by its reload from ``tier``.

        Only called for large values: a small one reloaded is a copy, not a mapping. The
        reload is O(1) (this process wrote or verified the file).
        """
        holders = [values for values in self._maps if values.get(key) is original]
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
