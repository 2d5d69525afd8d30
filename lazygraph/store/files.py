"""The file tier: one authenticated joblib file per key, read back memory-mapped.

Covers: the ``Tier`` protocol over a directory of entries: writing an entry atomically (temp
file, fsync, rename), reading it back memory-mapped and read-only (numpy arrays, also inside
DataFrames and containers; torch CPU tensors share the mapped pages, copy-on-write) once it
authenticates, an in-memory index of the entries (``entryindex``), a last-use stamp and LRU
eviction under a byte budget, and cleaning temp files left by killed writers.

Does not cover: deciding what to spill or persist and keeping entries in memory when a write
fails (the store does that), the directory's checks and the handle held on it
(``dirtrust``), verifying and unpickling one entry (``entryload``), the bytes of an entry
(``entryfile``) or the secret itself (``secret``).

The format is ``entryheader``'s (trailer) and ``entryfile``'s (stream).

Why a planted or altered file is never unpickled. The MACs are keyed with the per-user
secret, kept outside the cache directory, so only a holder of the secret can make a header
or a pickle stream that verifies, and the header names its key (an entry renamed to another
key fails). The payload is raw numbers whose layout the authenticated stream fixes: altered
payload bytes can change values, never what is executed. What is unpickled is what was
verified: the entry is opened once (``O_NOFOLLOW``) relative to the directory's descriptor,
checked and mapped through that one descriptor, and the directory itself was checked (owner,
mode, and every parent: ``dirtrust``) when it was opened and is held open since. A
``cache_dir`` moved or replaced while in use (someone swapping a parent) is detected on the
next load: the tier then stops reading and writing it, with a warning, and results are
recomputed.

The honest limits: xxh3 is not a cryptographic hash, and the O(1) path trusts the mtime. A
payload altered in place by someone who can write into the 0700 directory *and* puts the
mtime back (``os.utime``) is not seen; nor is an in-place write within the same timestamp
tick as the writer's (the store's writers never write in place: they replace by rename).
Directories that others can write to are refused outright, so that someone is this user
(or root). The directory checks read owners and mode bits only (not ACLs), and are made when
the tier opens: a parent made unsafe later is caught at the next load, as a move, and by the
next session. How payloads are found: joblib asks its pickler's ``np.nditer`` for an array's
bytes right before writing them; a joblib that stopped doing so would leave every byte in
the MAC'd stream (slower to verify, never less safe).

Read-only mappings: arrays come back read-only, and the pages stay backed by the file, so a
file truncated underneath a live mapping makes the next access fault (SIGBUS), as with any
``np.memmap``. The store's own writers never truncate: they replace by rename.

>>> import tempfile
>>> import numpy as np
>>> tier = FileTier(Path(tempfile.mkdtemp()) / "cache", secret=b"s" * 32)
>>> tier.write(b"k" * 16, np.arange(4.0), meta={"name": "f"}) > 0
True
>>> back = tier.get(b"k" * 16)
>>> back.tolist(), back.flags.writeable, tier.meta(b"k" * 16)
([0.0, 1.0, 2.0, 3.0], False, {'name': 'f'})
>>> tier.close()
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import CacheSecurityError, ConfigError
from . import entryfile
from .base import MISSING, Entry
from .descriptors import guarded
from .dirtrust import DirHandle, ensure_private_dir
from .entryfile import write_entry
from .entryheader import UnspillableError, encode_header, read_header
from .entryindex import EntryIndex, EntryInfo, entry_key, entry_name, scan
from .entryload import BadEntry, load_verified, open_entry
from .liveness import HOST_TAG, process_gone
from .secret import mac

log = logging.getLogger(__name__)

__all__ = ["HOST_TAG", "MISSING", "EntryInfo", "FileTier", "UnspillableError", "process_gone"]

_TMP_PREFIX = ".lgtmp-"
_STALE_TEMP_SECONDS = 60.0
_EVICT_SCAN_SECONDS = 5.0  # under disk_limit, a put re-counts the directory this often


class FileTier:
    """Entries on disk, one per key, written with joblib (uncompressed), read back mmap_mode='r'.

    ``secret`` authenticates entries (see ``secret.load_or_create_secret``; a private temporary
    spill directory can use ``os.urandom(32)``). ``disk_limit`` (bytes) bounds the directory:
    ``write`` evicts least-recently-used entries past it and refuses an entry bigger than it.
    ``name`` is where its values live for ``info().location`` ("disk", or "spilled").

    >>> import tempfile
    >>> with FileTier(Path(tempfile.mkdtemp()), secret=b"s" * 32) as tier:
    ...     _ = tier.write(b"\\x01" * 16, {"rows": [1, 2]}, meta={"name": "load"})
    ...     tier.get(b"\\x01" * 16), b"\\x01" * 16 in tier, tier.get(b"\\x02" * 16)
    ({'rows': [1, 2]}, True, MISSING)
    """

    def __init__(
        self,
        directory: Path,
        *,
        secret: bytes,
        disk_limit: int | None = None,
        name: str = "disk",
    ) -> None:
        if not isinstance(secret, bytes) or not 16 <= len(secret) <= 64:
            raise ConfigError(f"secret must be 16 to 64 bytes (got {type(secret).__name__})")
        if disk_limit is not None and disk_limit < 0:
            raise ConfigError(f"disk_limit must be a size >= 0 in bytes (got {disk_limit})")
        self.directory = ensure_private_dir(directory)
        entryfile.prepare()  # not at exit, in the writer thread: see entryfile.prepare
        self.name = name
        self.disk_limit = disk_limit
        self._secret = secret
        self._seed = int.from_bytes(mac(secret, b"xxh3-seed")[:8], "little")
        self._lock = threading.RLock()  # _evict -> _scan -> _reject -> _remove re-enters
        self._warned: set[str] = set()
        self._index = EntryIndex()
        self._detached = False
        self._dir = DirHandle(self.directory)
        try:
            with self._dir as dirfd:
                self._clean_temps(dirfd)
                self._scan(dirfd)
        except BaseException:
            self._dir.close()
            raise
        self._scanned_at = time.monotonic()

    # -- the Tier protocol -----------------------------------------------------------------

    def get(self, key: bytes) -> Any:
        """The value stored under ``key``, or MISSING when absent, corrupt or unauthenticated.

        Never raises for a bad file: it is logged once, deleted, and MISSING returned.
        """
        name = entry_name(key)
        with self._dir as dirfd:
            if self._moved():
                return MISSING
            # guarded: a Ctrl-C right after the open must not leak the fd (issue 17)
            with guarded(lambda: self._open(dirfd, key, name)) as fd:
                if fd is None:
                    return MISSING
                try:
                    path = os.path.join(self.directory, name)  # names the arrays; never opened
                    value = load_verified(fd, key.hex(), secret=self._secret, seed=self._seed,
                                          path=path)
                    if key not in self._index:  # another process wrote it: index it now
                        self._note(key, fd)
                except BadEntry as bad:
                    self._bad_entry(dirfd, name, bad)
                    return MISSING
        return value

    def __contains__(self, key: object) -> bool:
        """True when the index lists ``key`` (no syscall; content not verified).

        A key it does not list makes it look at the directory again at most every
        ``entryindex.RESCAN_SECONDS``, for entries other processes wrote meanwhile.
        """
        if key in self._index.sizes:
            return True
        if not isinstance(key, bytes) or not self._index.due():
            return False
        self._refresh()
        return key in self._index.sizes

    def put(self, entry: Entry) -> None:
        """Write ``entry.value`` with its metadata (``Entry.meta``); raises as ``write`` does."""
        self.write(entry.key, entry.value, meta=entry.meta())

    def discard(self, key: bytes) -> None:
        """Remove the entry for ``key`` if there is one."""
        with self._dir as dirfd:
            self._remove(dirfd, entry_name(key))

    def evict(self) -> int:
        """Remove the least recently used entry: bytes freed, 0 when there was none, -1 when
        none could be removed. Never raises. (``write`` keeps ``disk_limit`` by itself.)"""
        try:
            if self._dir.closed:
                return 0
            with self._dir as dirfd:
                freed, left = self._evict(dirfd, 0, keep=None, most=1)
            return freed if freed or not left else -1
        except Exception:  # the memory monitor relies on this never raising
            log.exception("evicting from the file tier over %s failed", self.directory)
            return -1

    def sizes(self) -> tuple[int, int]:
        """``(entries, bytes)`` as the index counts them (see ``nbytes``)."""
        index = self._index
        return len(index), index.nbytes

    def close(self) -> None:
        """Release the directory (once a write in flight is done); entries stay. Idempotent."""
        self._dir.close()
        with self._lock:
            self._index.clear()

    # -- more than a tier ------------------------------------------------------------------

    def write(self, key: bytes, value: object, *, meta: dict[str, object]) -> int:
        """Write ``value`` under ``key`` atomically; returns the bytes written.

        Raises OSError on a disk fault (ENOSPC, EFBIG also when the entry alone exceeds
        ``disk_limit``, EROFS...) and UnspillableError when the value cannot be pickled; either
        way no partial entry is left behind and an older entry under ``key`` stays intact.
        """
        encode_header(key, 0, meta)  # a bad meta fails now, not after writing the data
        name = entry_name(key)
        tmp = f"{_TMP_PREFIX}{HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}-{key.hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._dir as dirfd:
            if self._detached:
                raise CacheSecurityError(f"cache directory {self.directory} was moved or "
                                         "replaced while in use; this session no longer writes it")
            fd = os.open(tmp, flags, 0o600, dir_fd=dirfd)
            try:
                size = self._write(fd, key, value, meta)
                with self._lock:  # the index must see replacements in the order they happen
                    os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
                    self._index.add(key, size)
            except BaseException:
                self._unlink(dirfd, tmp)
                raise
            finally:
                os.close(fd)
            self._sync_dir(dirfd)  # the header binds this very file: any process maps it in O(1)
            self._maybe_evict(dirfd, keep=name)
        return size

    def meta(self, key: bytes) -> dict[str, Any] | None:
        """The metadata stored with ``key`` (authenticated), or None when absent or bad."""
        name = entry_name(key)
        with self._dir as dirfd:
            if self._moved():
                return None
            with guarded(lambda: self._open(dirfd, key, name)) as fd:
                if fd is None:
                    return None
                header = read_header(fd, os.fstat(fd), self._secret, key.hex())
            if header is None:
                self._reject(dirfd, name, "fails authentication")
                return None
        return dict(header["meta"])

    def nbytes(self) -> int:
        """Bytes of entries on disk, as last counted (no directory walk).

        This instance's writes and removals update it at once; other processes' changes are
        picked up when the index looks at the directory again, exactly at the next eviction
        scan (``evict_to``, or a ``write`` under ``disk_limit``).
        """
        return self._index.nbytes

    def entries(self) -> Iterator[EntryInfo]:
        """Every entry in the directory, authenticated headers only (data not verified)."""
        with self._dir as dirfd:
            found = [self._entry_info(dirfd, name, st) for name, st in self._scan(dirfd)]
        return iter(found)

    def evict_to(self, limit: int) -> int:
        """Delete least-recently-used entries until at most ``limit`` bytes remain.

        Returns the bytes freed. Never raises OSError: a file that cannot be removed is logged
        and skipped.
        """
        with self._dir as dirfd:
            return self._evict(dirfd, limit, keep=None)[0]

    def __enter__(self) -> FileTier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FileTier {self.name} {self.directory} {self._index.nbytes} B>"

    # -- writing ---------------------------------------------------------------------------

    def _write(self, fd: int, key: bytes, value: object, meta: dict[str, object]) -> int:
        """Write the entry into ``fd`` and fsync it; its size in bytes."""
        size, bound = write_entry(fd, key, value, meta, secret=self._secret, seed=self._seed)
        if self.disk_limit is not None and size > self.disk_limit:
            raise OSError(
                errno.EFBIG,
                f"entry of {size} bytes is larger than disk_limit ({self.disk_limit} bytes)",
            )
        os.utime(fd, ns=(bound[2], bound[2]))  # the bound mtime again; last use = now
        os.fsync(fd)
        return size

    def _sync_dir(self, dirfd: int) -> None:
        try:
            os.fsync(dirfd)
        except OSError as exc:  # some filesystems refuse fsync on directories; rename is done
            log.debug("fsync of %s failed: %s", self.directory, exc)

    # -- reading ---------------------------------------------------------------------------

    def _open(self, dirfd: int, key: bytes, name: str) -> int | None:
        """An fd on the entry, or None (absent, a symlink: reported and removed, unopenable)."""
        try:
            return open_entry(dirfd, name)
        except FileNotFoundError:
            if key in self._index:
                with self._lock:
                    self._index.remove(key)  # removed by another process
            return None
        except BadEntry as bad:
            self._bad_entry(dirfd, name, bad)
        except OSError as exc:
            log.warning("cannot open cache entry %s in %s: %s", name, self.directory, exc)
        return None

    def _bad_entry(self, dirfd: int, name: str, bad: BadEntry) -> None:
        if bad.remove:
            self._reject(dirfd, name, bad.reason, bad.level)
        else:
            log.warning("cache entry %s in %s %s; it will be recomputed", name, self.directory,
                        bad.reason)

    def _note(self, key: bytes, fd: int) -> None:
        try:
            st = os.fstat(fd)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            with self._lock:
                self._index.add(key, st.st_size)

    def _entry_info(self, dirfd: int, name: str, st: os.stat_result) -> EntryInfo:
        key_hex = name[: -len(".joblib")]
        header = None
        try:
            fd: int | None = open_entry(dirfd, name)
        except (OSError, BadEntry):  # gone, unreadable or a link since the listing
            fd = None
        if fd is not None:
            try:
                header = read_header(fd, os.fstat(fd), self._secret, key_hex)
            finally:
                os.close(fd)
        created = float(header["created"]) if header else st.st_mtime
        meta = dict(header["meta"]) if header else None
        return EntryInfo(key_hex, st.st_size, created, st.st_atime_ns / 1e9, meta)

    # -- the directory ---------------------------------------------------------------------

    def _moved(self) -> bool:
        """True (and the tier detached, with a warning once) when ``directory`` now leads
        elsewhere: someone moved or replaced it, or a parent, while this tier held it."""
        if self._detached:
            return True
        if not self._dir.moved():
            return False
        with self._lock:
            if self._detached:
                return True
            self._detached = True
            self._index.clear()
        log.warning(
            "cache directory %s was moved or replaced while in use; this session no longer "
            "reads or writes it (its results are recomputed). Someone who may write to a "
            "parent directory could have swapped it: check the parents' permissions. A new "
            "session checks the directory again.",
            self.directory,
        )
        return True

    def _refresh(self) -> None:
        """Let the index look at the directory again (a miss, once per rescan interval)."""
        with self._lock:
            if self._dir.closed or not self._index.due():
                return
            with self._dir as dirfd:
                if self._moved():
                    return
                try:
                    self._index.refresh(dirfd)
                except OSError as exc:
                    log.warning("cannot list cache directory %s: %s", self.directory, exc)

    def _scan(self, dirfd: int) -> list[tuple[str, os.stat_result]]:
        """(name, lstat) of every entry file, and the index rebuilt from them; symlinks and
        other oddities named like entries are reported and removed (directories left alone).
        """
        with self._lock:
            dir_st = os.fstat(dirfd)
            found, odd = scan(dirfd)
            for name, st in odd:
                if stat.S_ISDIR(st.st_mode):
                    self._warn_once(name, "is a directory, not an entry; left alone")
                else:
                    self._reject(dirfd, name, "is not a regular file (symlinks are never "
                                 "followed)")
            self._index.rebuild(found, dir_st)
        return found

    def _maybe_evict(self, dirfd: int, *, keep: str) -> None:
        if self.disk_limit is None:
            return
        stale = time.monotonic() - self._scanned_at > _EVICT_SCAN_SECONDS
        if self._index.nbytes > self.disk_limit or stale:
            self._evict(dirfd, self.disk_limit, keep=keep)

    def _evict(
        self, dirfd: int, limit: int, *, keep: str | None, most: int | None = None
    ) -> tuple[int, bool]:
        """Remove LRU entries (at most ``most``) until ``limit``; (bytes freed, still over)."""
        with self._lock:  # a put landing mid-scan would otherwise vanish from the count
            try:
                found = self._scan(dirfd)
            except OSError as exc:
                log.warning("cannot list cache directory %s: %s", self.directory, exc)
                return 0, True
            total = self._index.nbytes
            freed = removed = 0
            for name, st in sorted(found, key=lambda item: item[1].st_atime_ns):
                if total <= limit or removed == most:
                    break
                if name != keep and self._unlink(dirfd, name):
                    self._index.remove(entry_key(name) or b"")
                    total -= st.st_size
                    freed += st.st_size
                    removed += 1
            self._scanned_at = time.monotonic()
        return freed, total > limit

    def _clean_temps(self, dirfd: int) -> None:
        """Remove temp files of writers that died (pid gone) or stalled (untouched > 1 min)."""
        now = time.time()
        with os.scandir(dirfd) as listing:
            for item in listing:
                if not item.name.startswith(_TMP_PREFIX):
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if _writer_gone(item.name) or now - st.st_mtime > _STALE_TEMP_SECONDS:
                    log.info("removing temp file %s left by an interrupted writer", item.name)
                    self._unlink(dirfd, item.name)

    def _warn_once(self, name: str, reason: str, level: int = logging.WARNING) -> None:
        with self._lock:
            first = name not in self._warned
            self._warned.add(name)
        log.log(level if first else logging.DEBUG, "cache entry %s in %s %s", name,
                self.directory, reason)

    def _reject(self, dirfd: int, name: str, reason: str, level: int = logging.WARNING) -> None:
        """Log a bad entry once, then delete it (a symlink itself, never its target)."""
        self._warn_once(name, f"{reason}; deleted, it will be recomputed", level)
        self._remove(dirfd, name)

    def _remove(self, dirfd: int, name: str) -> None:
        with self._lock:
            if self._unlink(dirfd, name):
                key = entry_key(name)
                if key is not None:
                    self._index.remove(key)

    def _unlink(self, dirfd: int, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=dirfd)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot remove %s from %s: %s", name, self.directory, exc)
            return False


def _writer_gone(temp_name: str) -> bool:
    """True when a temp file's writer ran on this host and its pid no longer exists."""
    parts = temp_name[len(_TMP_PREFIX) :].split("-")
    return len(parts) >= 2 and process_gone(parts[0], parts[1])
