"""Forgetting results on request (SPEC S5.9): ``node.forget()``, ``factory.clear()``,
``session.clear()``.

Covers: finding the keys of a function (by the name its entries record) or of everything a
store holds, and dropping keys from every tier so that a write already queued cannot bring
a file back. Does not cover: dropping one key from the tiers (``Store.discard``) or
eviction under pressure (``Store.evict``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .base import Entry

__all__ = ["Forgetting"]


class Forgetting:
    """Forgets for one store, given what it is made of: its ``lock``, the key views of its
    tiers (``views``: memory entries by key, weakly held keys, files this store wrote),
    ``records`` (metadata of entries outside memory), the ``pending`` tier, the cache_dir
    tier ``disk`` (or None), and how it locates (``locate``) and discards (``discard``) a key.
    """

    def __init__(
        self,
        *,
        lock: Any,
        views: tuple[Any, Any, Any],
        records: dict[bytes, Entry],
        pending: Any,
        disk: Any,
        locate: Callable[[bytes], str],
        discard: Callable[..., None],
    ) -> None:
        self._lock = lock
        self._resident, self._weak_keys, self._files = views
        self._records = records
        self._pending = pending
        self._disk = disk
        self._locate = locate
        self._discard = discard
        self.closed = False  # set by the store's close(): cache_dir is no longer read

    def forget(self, keys: Iterable[bytes], *, disk: bool = True) -> int:
        """Drop ``keys`` from every tier (``disk=False``: keep cache_dir's files); how many
        of them some tier held.

        A write already queued for one of them would complete after the discard and bring
        its file back: those writes are waited for, then their files removed too.
        """
        keys = list(keys)
        with self._lock:
            held = sum(self._locate(key) != "absent" for key in keys)
            queued = any(key in self._pending for key in keys)
            for key in keys:
                self._discard(key, disk=disk)
        if queued:
            self._pending.flush()  # outside the lock: the writer reports under it
            with self._lock:
                for key in keys:
                    self._discard(key, disk=disk)
        return held

    def keys_of(self, name: str) -> set[bytes]:
        """The keys of every result of function ``name`` in any tier, cache_dir included.

        By name, as ``lazygraph cache clear --function`` finds them: the name is what an
        entry records of its function (two functions of one name share it).
        """
        with self._lock:
            keys = {key for key, entry in self._resident.items() if entry.name == name}
            keys.update(key for key, entry in self._records.items() if entry.name == name)
            for key in list(self._pending.keys()):
                queued = self._pending.entry(key)
                if queued is not None and queued.name == name:
                    keys.add(key)
            disk = None if self.closed else self._disk
        if disk is not None:
            keys.update(bytes.fromhex(info.key) for info in disk.entries() if info.function == name)
        return keys

    def all_keys(self, *, disk: bool = False) -> set[bytes]:
        """Every key some tier holds; with ``disk``, cache_dir's entries too."""
        with self._lock:
            keys = set(self._resident) | set(self._records) | set(self._weak_keys)
            keys |= set(self._pending.keys()) | set(self._files)
            tier = None if self.closed or not disk else self._disk
        if tier is not None:
            keys.update(bytes.fromhex(info.key) for info in tier.entries())
        return keys
