"""Loading one entry exactly as verified: one open descriptor, checked, then unpickled.

Covers: opening an entry file relative to its directory's descriptor (never following a
symbolic link, never blocking on a FIFO), authenticating it through that descriptor (header
MAC, pickle-stream MAC, then the payload: the writer's binding or a checksum) and unpickling
it from that same descriptor, its arrays memory-mapped through it (``entryfile.load``). No
path is looked up between the checks and the load, so a file or directory swapped meanwhile
is never what gets unpickled. Also the per-process memo of payloads already hashed.

Does not cover: the bytes of the format (``entryfile``), names, the directory and what to do
with a bad entry (``files``: it is logged, deleted and recomputed).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from typing import Any

from .entryfile import load
from .entryheader import FORMAT, other_format, payload_matches, pickle_intact, read_header

__all__ = ["BadEntry", "open_entry", "load_verified"]

_O_NOATIME = getattr(os, "O_NOATIME", 0)
# O_NONBLOCK: a FIFO planted in place of an entry must not block the open; the regular-file
# check that follows then rejects it.
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class BadEntry(Exception):
    """The entry cannot be used; ``reason`` completes "cache entry NAME in DIR ...".

    ``level`` is how loudly to report it: an entry of an older format after an upgrade is
    expected (INFO), a planted or damaged one is not (WARNING). ``remove`` is False when the
    entry is fine but this process cannot map it now (out of descriptors or mappings).
    """

    def __init__(self, reason: str, *, level: int = logging.WARNING, remove: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.level = level
        self.remove = remove


def open_entry(dirfd: int, name: str) -> int:
    """An fd on the entry ``name`` in the directory open at ``dirfd``.

    Raises FileNotFoundError when absent, BadEntry for a symbolic link (never followed),
    OSError otherwise. O_NOATIME where allowed: listing or verifying an entry is not a use
    (``stamp`` records one).
    """
    try:
        try:
            return os.open(name, _FLAGS | _O_NOATIME, dir_fd=dirfd)
        except PermissionError:  # O_NOATIME needs ownership; a foreign file can still be read
            return os.open(name, _FLAGS, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadEntry("is a symbolic link (never followed)") from exc
        raise


def load_verified(fd: int, key_hex: str, *, secret: bytes, seed: int, path: str) -> Any:
    """The value in the entry open at ``fd``, once authenticated; raises BadEntry otherwise.

    ``path`` only names mapped arrays (their ``filename``); nothing is opened by it.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise BadEntry("is not a regular file")
    header = read_header(fd, st, secret, key_hex)
    if header is None:
        version = other_format(fd, st, secret)
        if version is not None:  # expected once after an upgrade: not a warning
            raise BadEntry(f"is in entry format {version} (now {FORMAT})", level=logging.INFO)
        raise BadEntry("fails authentication (planted, altered or from another user)")
    if not pickle_intact(fd, header, secret):
        raise BadEntry("pickle stream fails authentication (altered or corrupted)")
    if not _payload_intact(key_hex, fd, st, header, seed):
        raise BadEntry("data does not match its checksum (corrupted)")
    value = _unpickle(fd, path)
    stamp(fd, st)
    return value


def stamp(fd: int, st: os.stat_result) -> None:
    """Record a use in the file's atime (mtime untouched, so signatures stay valid)."""
    try:
        os.utime(fd, ns=(time.time_ns(), st.st_mtime_ns))
    except OSError as exc:
        logging.getLogger(__name__).debug("cannot stamp last use of %s: %s", st.st_ino, exc)


def _unpickle(fd: int, path: str) -> Any:
    try:
        return load(fd, path=path)
    except MemoryError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            # Out of descriptors or mappings: the entry is fine, this process is not.
            raise BadEntry(f"cannot be mapped now ({exc})", remove=False) from exc
        raise BadEntry(f"cannot be loaded ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # a damaged stream can raise any type; all mean "bad entry"
        raise BadEntry(f"cannot be loaded ({type(exc).__name__}: {exc})") from exc


def _payload_intact(
    key_hex: str, fd: int, st: os.stat_result, header: dict[str, Any], seed: int
) -> bool:
    """True when the array payloads are what the writer checksummed.

    O(1) for the very file the writer made, untouched since: same device and inode, and
    the mtime the writer set (any write through the OS moves it). Otherwise (a copied,
    restored, touched or rewritten file) the payloads are hashed, once per process.
    """
    if not header["payload"]:
        return True
    if [st.st_dev, st.st_ino, st.st_mtime_ns] == header["bound"]:
        return True
    sig = (key_hex, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, str(header["payload_xxh3"]))
    if sig in _VERIFIED:
        return True
    if not payload_matches(fd, header, seed):
        return False
    _VERIFIED.add(sig)
    return True


class _Verified:
    """Signatures of entry files whose data matched their checksum in this process."""

    def __init__(self, capacity: int = 65536) -> None:
        self._sigs: OrderedDict[tuple[object, ...], None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def __contains__(self, sig: tuple[object, ...]) -> bool:
        with self._lock:
            return sig in self._sigs

    def add(self, sig: tuple[object, ...]) -> None:
        with self._lock:
            self._sigs[sig] = None
            while len(self._sigs) > self._capacity:
                self._sigs.popitem(last=False)


# Process-wide: a second Session over the same directory need not re-hash what the first
# verified, and the signature includes device and inode, so directories never collide.
_VERIFIED = _Verified()
