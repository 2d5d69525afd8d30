"""Which entries a cache directory holds, kept in memory: a planned miss costs no syscall.

Covers: entry file names (``<key hex>.joblib``: an even number of lowercase hex digits, so
every name is a key), listing a directory's entries through its descriptor (``scan``),
``EntryInfo`` (one entry as ``lazygraph cache ls`` shows it), and ``EntryIndex``, the keys
and sizes a file tier knows of. Another process may add entries to
a shared ``cache_dir``; the index finds them by reading the directory's mtime (one
``fstat``) at most every ``RESCAN_SECONDS`` when asked about a key it does not hold, and
listing the names again when the mtime moved (no stat per name it already knows).

Does not cover: reading, writing or removing entries (``store.files``). The honest limit:
an entry another process wrote is found up to ``RESCAN_SECONDS`` later (meanwhile it is
recomputed, which is never wrong); on NFS, attribute caching may delay that up to
``FULL_RESCAN_SECONDS``, after which the names are listed whatever the mtime says.

>>> entry_name(b"\\x01\\xab"), entry_key("01ab.joblib"), entry_key("abc.joblib")
('01ab.joblib', b'\\x01\\xab', None)
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENTRY_SUFFIX",
    "FULL_RESCAN_SECONDS",
    "Listing",
    "RESCAN_SECONDS",
    "EntryIndex",
    "EntryInfo",
    "entry_key",
    "entry_name",
    "scan",
]

ENTRY_SUFFIX = ".joblib"
_ENTRY_NAME = re.compile(r"(?:[0-9a-f]{2}){1,64}\.joblib")
RESCAN_SECONDS = 1.0
FULL_RESCAN_SECONDS = 60.0
# A listing taken while the directory's mtime is this recent may have missed a change made
# within the same timestamp tick (the mtime would not move again): list again next time.
_RACY_NS = 2 * 10**9


def entry_name(key: bytes) -> str:
    """The file name of ``key``'s entry."""
    return key.hex() + ENTRY_SUFFIX


def entry_key(name: str) -> bytes | None:
    """The key an entry file name stands for, or None when ``name`` is not an entry's."""
    if not _ENTRY_NAME.fullmatch(name):
        return None
    return bytes.fromhex(name[: -len(ENTRY_SUFFIX)])


Listing = list[tuple[str, os.stat_result]]


def scan(dirfd: int) -> tuple[Listing, Listing]:
    """``(name, lstat)`` of every regular entry file, and of what is named like one but is not.

    The second list holds symlinks, directories, FIFOs...: never entries.
    """
    found, odd = [], []
    with os.scandir(dirfd) as listing:
        for item in listing:
            if entry_key(item.name) is None:
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed by another process meanwhile
            if stat.S_ISREG(st.st_mode):
                found.append((item.name, st))
            else:
                odd.append((item.name, st))
    return found, odd


@dataclass(frozen=True)
class EntryInfo:
    """One entry on disk, as ``lazygraph cache ls`` shows it.

    ``meta`` is the metadata stored with the entry, or None when the entry fails
    authentication (it will be deleted and recomputed on next use). Times are epoch seconds.

    >>> info = EntryInfo("ab" * 16, 10, created=0.0, last_used=5.0, meta={"name": "f"})
    >>> info.function, info.valid
    ('f', True)
    """

    key: str
    nbytes: int
    created: float
    last_used: float
    meta: dict[str, Any] | None

    @property
    def valid(self) -> bool:
        """True when the entry's header authenticates with this user's secret."""
        return self.meta is not None

    @property
    def function(self) -> str | None:
        """The function name the store recorded (``meta["name"]``), if any."""
        name = self.meta.get("name") if self.meta else None
        return None if name is None else str(name)


class EntryIndex:
    """Keys and sizes of a directory's entries; the caller serializes changes (one lock).

    Lookups (``key in index``) read one dict and take no lock: a dict lookup is atomic, and
    ``refresh`` swaps in a new dict rather than editing the one being read.

    >>> index = EntryIndex()
    >>> index.add(b"k", 10); index.add(b"k", 12); (b"k" in index, index.nbytes, len(index))
    (True, 12, 1)
    >>> index.remove(b"k"), index.nbytes
    (12, 0)
    """

    def __init__(self, *, rescan_seconds: float = RESCAN_SECONDS) -> None:
        self.sizes: dict[bytes, int] = {}
        self.nbytes = 0
        self._rescan_seconds = rescan_seconds
        self._next_check = 0.0  # time.monotonic() after which a miss looks at the directory
        self._listed_at = float("-inf")
        self._mtime_ns: int | None = None
        self._racy = True

    def __contains__(self, key: object) -> bool:
        return key in self.sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def due(self) -> bool:
        """Whether a miss should look at the directory again (cheap: a clock read)."""
        return time.monotonic() >= self._next_check

    def add(self, key: bytes, size: int) -> None:
        self.nbytes += size - self.sizes.get(key, 0)
        self.sizes[key] = size

    def remove(self, key: bytes) -> int:
        """Forget ``key``; the size it had (0 when unknown)."""
        size = self.sizes.pop(key, 0)
        self.nbytes -= size
        return size

    def clear(self) -> None:
        self.sizes = {}
        self.nbytes = 0

    def rebuild(self, found: Listing, dir_st: os.stat_result) -> None:
        """Replace the index by a full ``scan`` (taken after ``dir_st`` was read)."""
        sizes = {}
        for name, st in found:
            key = entry_key(name)
            if key is not None:
                sizes[key] = st.st_size
        self._replace(sizes, dir_st)

    def refresh(self, dirfd: int) -> None:
        """List the names again if the directory changed since the last listing."""
        now = time.monotonic()
        self._next_check = now + self._rescan_seconds
        dir_st = os.fstat(dirfd)  # read before listing: a later change moves it again
        if (
            dir_st.st_mtime_ns == self._mtime_ns
            and not self._racy
            and now - self._listed_at < FULL_RESCAN_SECONDS
        ):
            return
        known, sizes = self.sizes, {}
        with os.scandir(dirfd) as listing:
            for item in listing:
                key = entry_key(item.name)
                if key is None or not item.is_file(follow_symlinks=False):
                    continue
                size = known.get(key)
                if size is None:
                    try:
                        size = item.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue
                sizes[key] = size
        self._replace(sizes, dir_st)

    def _replace(self, sizes: dict[bytes, int], dir_st: os.stat_result) -> None:
        self.sizes = sizes
        self.nbytes = sum(sizes.values())
        self._mtime_ns = dir_st.st_mtime_ns
        self._listed_at = time.monotonic()
        self._next_check = self._listed_at + self._rescan_seconds
        self._racy = time.time_ns() - dir_st.st_mtime_ns < _RACY_NS
