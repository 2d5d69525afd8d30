"""The file tier: one authenticated joblib file per key, read back memory-mapped.

Covers: writing an entry atomically (temp file, fsync, rename), reading it back with
``joblib.load(mmap_mode="r")`` (numpy arrays, also inside DataFrames and containers, come back
memory-mapped and read-only; torch CPU tensors come back sharing the mapped pages,
copy-on-write), authenticating entries before anything is unpickled, a last-use stamp and
LRU eviction under a byte budget, and cleaning temp files left by killed writers.

Does not cover: deciding what to spill or persist and keeping entries in memory when a write
fails (the store does that), the directory's ownership checks (``cachedir.py``), the
secret itself (``secret.py``) or the bytes of an entry (``entryfile.py``: the format below).

Format. ``<key hex>.joblib`` holds the joblib stream (uncompressed, so arrays can be mapped)
followed by a trailer: a JSON header, a 32-byte MAC over the header, and a 16-byte footer
(header length and a magic). One file per entry means one ``rename`` publishes it: a reader
sees the old entry or the new one, never a data file paired with another writer's metadata.
The header holds the key, the data length, the store's metadata and what binds the data:

- ``pickle_mac``: a keyed blake2b MAC over the *pickle stream*, every byte of the data but
  the raw bytes of arrays of 64 KiB or more (``payload``: their ``[offset, length]``
  regions). That is every byte unpickling interprets: opcodes, small values, padding, the
  shape and dtype of each array. It is checked on every load, before anything is
  unpickled; it costs a few kilobytes of reading for an entry of large arrays.
- ``payload_xxh3``: a fast checksum (xxh3-128, seeded from the secret) of the payload
  regions, and ``bound``: the device, inode and mtime (set by the writer) of the file as
  written. A reader whose ``fstat`` shows exactly ``bound`` has the very file the writer
  checksummed, untouched since (any write through the OS moves the mtime), and maps it in
  O(1), in any process. Any other file with this header (copied, restored, touched,
  rewritten in place) has its payload hashed before its first use in a process (~50 ms
  per GB from the page cache) and is then remembered for that process.

Why a planted or altered file is never unpickled. The MACs are keyed with the per-user
secret, kept outside the cache directory, so only a holder of the secret can make a header
or a pickle stream that verifies, and the header names its key (an entry renamed to another
key fails). The payload is raw numbers whose layout the authenticated stream fixes: altered
payload bytes can change values, never what is executed.

The honest limits: xxh3 is not a cryptographic hash, and the O(1) path trusts the mtime. A
payload altered in place by someone who can write into the 0700 directory *and* puts the
mtime back (``os.utime``) is not seen; nor is an in-place write within the same timestamp
tick as the writer's (the store's writers never write in place: they replace by rename).
Directories that others can write to are refused outright, so that someone is this user
(or root). Symbolic links are never followed (``O_NOFOLLOW``). How payloads are found:
joblib asks its pickler's ``np.nditer`` for an array's bytes right before writing them; a
joblib that stopped doing so would leave every byte in the MAC'd stream (slower to verify,
never less safe).

Read-only mappings: arrays come back read-only, and the pages stay backed by the file, so a
file truncated underneath a live mapping makes the next access fault (SIGBUS), as with any
``np.memmap``. The store's own writers never truncate: they replace by rename.

>>> import tempfile
>>> import numpy as np
>>> tier = FileTier(Path(tempfile.mkdtemp()) / "cache", secret=b"s" * 32)
>>> tier.put(b"k" * 16, np.arange(4.0), meta={"name": "f"}) > 0
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
import re
import secrets
import socket
import stat
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from ..errors import ConfigError, LazyGraphError
from .base import MISSING
from .cachedir import check_private_stat, ensure_private_dir
from .entryfile import (
    FORMAT,
    UnspillableError,
    encode_header,
    other_format,
    payload_matches,
    pickle_intact,
    read_header,
    write_entry,
)
from .secret import mac

log = logging.getLogger(__name__)

__all__ = ["HOST_TAG", "MISSING", "EntryInfo", "FileTier", "UnspillableError", "process_gone"]

_SUFFIX = ".joblib"
_ENTRY_NAME = re.compile(r"[0-9a-f]{2,128}\.joblib")
_TMP_PREFIX = ".lgtmp-"
_STALE_TEMP_SECONDS = 60.0
_RESCAN_SECONDS = 5.0



def _host_tag() -> str:
    """8 hex digits naming this host *and* pid namespace: a pid means one process under it.

    Two containers may share a hostname and a directory; their pids are not comparable.
    """
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:  # no procfs: the hostname alone
        namespace = ""
    return xxhash.xxh3_64_hexdigest(f"{socket.gethostname()}\0{namespace}".encode())[:8]


HOST_TAG = _host_tag()
_O_NOATIME = getattr(os, "O_NOATIME", 0)


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


class FileTier:
    """Entries on disk, one per key, written with joblib (uncompressed), read back mmap_mode='r'.

    ``secret`` authenticates entries (see ``secret.load_or_create_secret``; a private temporary
    spill directory can use ``os.urandom(32)``). ``disk_limit`` (bytes) bounds the directory:
    ``put`` evicts least-recently-used entries past it and refuses an entry bigger than it.

    >>> import tempfile
    >>> with FileTier(Path(tempfile.mkdtemp()), secret=b"s" * 32) as tier:
    ...     _ = tier.put(b"\\x01" * 16, {"rows": [1, 2]}, meta={"name": "load"})
    ...     tier.get(b"\\x01" * 16), b"\\x01" * 16 in tier, tier.get(b"\\x02" * 16)
    ({'rows': [1, 2]}, True, MISSING)
    """

    def __init__(self, directory: Path, *, secret: bytes, disk_limit: int | None = None) -> None:
        if not isinstance(secret, bytes) or not 16 <= len(secret) <= 64:
            raise ConfigError(f"secret must be 16 to 64 bytes (got {type(secret).__name__})")
        if disk_limit is not None and disk_limit < 0:
            raise ConfigError(f"disk_limit must be a size >= 0 in bytes (got {disk_limit})")
        self.directory = ensure_private_dir(directory)
        self.disk_limit = disk_limit
        self._secret = secret
        self._seed = int.from_bytes(mac(secret, b"xxh3-seed")[:8], "little")
        dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._dirfd = dirfd
        self._finalizer = weakref.finalize(self, os.close, dirfd)
        check_private_stat(self.directory, os.fstat(dirfd))  # the directory we hold, not a swap
        self._lock = threading.RLock()  # _evict -> _scan -> _reject -> _remove re-enters
        self._warned: set[str] = set()
        self._clean_temps()
        self._nbytes = sum(st.st_size for _, st in self._scan())
        self._scanned_at = time.monotonic()

    # -- the mapping-like interface --------------------------------------------------------

    def put(self, key: bytes, value: object, *, meta: dict[str, object]) -> int:
        """Write ``value`` under ``key`` atomically; returns the bytes written.

        Raises OSError on a disk fault (ENOSPC, EFBIG also when the entry alone exceeds
        ``disk_limit``, EROFS...) and UnspillableError when the value cannot be pickled; either
        way no partial entry is left behind and an older entry under ``key`` stays intact.
        """
        self._check_open()
        encode_header(key, 0, meta)  # a bad meta fails now, not after writing the data
        name = key.hex() + _SUFFIX
        tmp = f"{_TMP_PREFIX}{HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}-{key.hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=self._dirfd)
        try:
            size = self._write(fd, key, value, meta)
            with self._lock:  # the byte count must see replacements in the order they happen
                old = self._lstat(name)
                os.rename(tmp, name, src_dir_fd=self._dirfd, dst_dir_fd=self._dirfd)
                self._nbytes += size - (old.st_size if old and stat.S_ISREG(old.st_mode) else 0)
        except BaseException:
            self._unlink(tmp)
            raise
        finally:
            os.close(fd)
        self._sync_dir()  # the header binds this very file: any process maps it in O(1)
        self._maybe_evict(keep=name)
        return size

    def get(self, key: bytes) -> object:
        """The value stored under ``key``, or MISSING when absent, corrupt or unauthenticated.

        Never raises for a bad file: it is logged once, deleted, and MISSING returned.
        """
        self._check_open()
        name = key.hex() + _SUFFIX
        fd = self._open_entry(name)
        if fd is None:
            return MISSING
        try:
            return self._load(key, name, fd)
        finally:
            os.close(fd)

    def __contains__(self, key: object) -> bool:
        """True when a regular file exists for ``key`` (a stat; its content is not verified)."""
        if not isinstance(key, bytes):
            return False
        self._check_open()
        st = self._lstat(key.hex() + _SUFFIX)
        return st is not None and stat.S_ISREG(st.st_mode)

    def discard(self, key: bytes) -> None:
        """Remove the entry for ``key`` if there is one."""
        self._check_open()
        self._remove(key.hex() + _SUFFIX)

    def meta(self, key: bytes) -> dict[str, Any] | None:
        """The metadata stored with ``key`` (authenticated), or None when absent or bad."""
        self._check_open()
        name = key.hex() + _SUFFIX
        fd = self._open_entry(name)
        if fd is None:
            return None
        try:
            header = read_header(fd, os.fstat(fd), self._secret, key.hex())
        finally:
            os.close(fd)
        if header is None:
            self._reject(name, "fails authentication")
            return None
        return dict(header["meta"])

    def nbytes(self) -> int:
        """Bytes of entries on disk, as last counted (no directory walk).

        This instance's writes and removals update it at once; other processes' changes are
        picked up at the next eviction scan (``evict_to``, or a ``put`` under ``disk_limit``).
        """
        return self._nbytes

    def entries(self) -> Iterator[EntryInfo]:
        """Every entry in the directory, authenticated headers only (data not verified)."""
        self._check_open()
        for name, st in self._scan():
            yield self._entry_info(name, st)

    def evict_to(self, limit: int) -> int:
        """Delete least-recently-used entries until at most ``limit`` bytes remain.

        Returns the bytes freed. Never raises OSError: a file that cannot be removed is logged
        and skipped.
        """
        self._check_open()
        return self._evict(limit, keep=None)

    def close(self) -> None:
        """Release the directory handle; the entries stay on disk. Idempotent."""
        self._finalizer()

    def __enter__(self) -> FileTier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FileTier {self.directory} {self._nbytes} B>"

    # -- writing ---------------------------------------------------------------------------

    def _write(self, fd: int, key: bytes, value: object, meta: dict[str, object]) -> int:
        """Write the entry into ``fd`` and fsync it; its size in bytes."""
        size, bound = write_entry(
            fd, key, value, meta, secret=self._secret, seed=self._seed
        )
        if self.disk_limit is not None and size > self.disk_limit:
            raise OSError(
                errno.EFBIG,
                f"entry of {size} bytes is larger than disk_limit ({self.disk_limit} bytes)",
            )
        os.utime(fd, ns=(bound[2], bound[2]))  # the bound mtime again; last use = now
        os.fsync(fd)
        return size

    def _sync_dir(self) -> None:
        try:
            os.fsync(self._dirfd)
        except OSError as exc:  # some filesystems refuse fsync on directories; rename is done
            log.debug("fsync of %s failed: %s", self.directory, exc)

    # -- reading ---------------------------------------------------------------------------

    def _open_entry(self, name: str) -> int | None:
        """An fd on the entry file, or None if absent; symlinks are reported and removed."""
        # O_NONBLOCK: a FIFO planted in place of an entry must not block the open; the
        # regular-file check that follows then rejects it.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            # O_NOATIME: listing or verifying an entry is not a use; only _stamp records one.
            return os.open(name, flags | _O_NOATIME, dir_fd=self._dirfd)
        except PermissionError:  # O_NOATIME needs ownership; a foreign file can still be read
            return self._open_plain(name, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._open_failed(name, exc)
            return None

    def _open_plain(self, name: str, flags: int) -> int | None:
        try:
            return os.open(name, flags, dir_fd=self._dirfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._open_failed(name, exc)
            return None

    def _open_failed(self, name: str, exc: OSError) -> None:
        if exc.errno == errno.ELOOP:
            self._reject(name, "is a symbolic link (never followed)")
        else:
            log.warning("cannot open cache entry %s in %s: %s", name, self.directory, exc)
        return None

    def _load(self, key: bytes, name: str, fd: int) -> object:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self._reject(name, "is not a regular file")
            return MISSING
        header = read_header(fd, st, self._secret, key.hex())
        if header is None:
            version = other_format(fd, st, self._secret)
            if version is not None:  # expected once after an upgrade: not a warning
                self._reject(name, f"is in entry format {version} (now {FORMAT})", logging.INFO)
            else:
                self._reject(name, "fails authentication (planted, altered or from another user)")
            return MISSING
        if not pickle_intact(fd, header, self._secret):
            self._reject(name, "pickle stream fails authentication (altered or corrupted)")
            return MISSING
        if not self._payload_intact(key, fd, st, header):
            self._reject(name, "data does not match its checksum (corrupted)")
            return MISSING
        value = self._unpickle(name)
        if value is MISSING:
            return MISSING
        after = self._lstat(name)
        if after is None or (after.st_dev, after.st_ino) != (st.st_dev, st.st_ino):
            # Replaced by another writer while loading: what was mapped may be the newcomer,
            # which we have not verified. Report a miss; the next pull sees a settled file.
            return MISSING
        self._stamp(fd, st)
        return value

    def _payload_intact(self, key: bytes, fd: int, st: os.stat_result, header: dict) -> bool:
        """True when the array payloads are what the writer checksummed.

        O(1) for the very file the writer made, untouched since: same device and inode, and
        the mtime the writer set (any write through the OS moves it). Otherwise (a copied,
        restored, touched or rewritten file) the payloads are hashed, once per process.
        """
        if not header["payload"]:
            return True
        if [st.st_dev, st.st_ino, st.st_mtime_ns] == header["bound"]:
            return True
        digest = str(header["payload_xxh3"])
        sig = (key.hex(), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, digest)
        if sig in _VERIFIED:
            return True
        if not payload_matches(fd, header, self._seed):
            return False
        _VERIFIED.add(sig)
        return True

    def _unpickle(self, name: str) -> object:
        import joblib

        try:
            return joblib.load(os.path.join(self.directory, name), mmap_mode="r")
        except MemoryError:
            raise
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                # Out of descriptors or mappings: the entry is fine, this process is not.
                log.warning("cannot map %s now (%s); it will be recomputed", name, exc)
                return MISSING
            self._reject(name, f"cannot be loaded ({type(exc).__name__}: {exc})")
            return MISSING
        except Exception as exc:  # a damaged stream can raise any type; all mean "bad entry"
            self._reject(name, f"cannot be loaded ({type(exc).__name__}: {exc})")
            return MISSING

    def _stamp(self, fd: int, st: os.stat_result) -> None:
        """Record a use in the file's atime (mtime untouched, so signatures stay valid)."""
        try:
            os.utime(fd, ns=(time.time_ns(), st.st_mtime_ns))
        except OSError as exc:
            log.debug("cannot stamp last use of %s: %s", st.st_ino, exc)

    def _entry_info(self, name: str, st: os.stat_result) -> EntryInfo:
        key_hex = name[: -len(_SUFFIX)]
        header = None
        fd = self._open_entry(name)
        if fd is not None:
            try:
                header = read_header(fd, os.fstat(fd), self._secret, key_hex)
            finally:
                os.close(fd)
        created = float(header["created"]) if header else st.st_mtime
        meta = dict(header["meta"]) if header else None
        return EntryInfo(key_hex, st.st_size, created, st.st_atime_ns / 1e9, meta)

    # -- housekeeping ----------------------------------------------------------------------

    def _scan(self) -> list[tuple[str, os.stat_result]]:
        """(name, lstat) of every entry file; symlinks and other oddities are reported."""
        found = []
        with os.scandir(self._dirfd) as listing:
            for item in listing:
                if not _ENTRY_NAME.fullmatch(item.name):
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed by another process meanwhile
                if stat.S_ISREG(st.st_mode):
                    found.append((item.name, st))
                else:
                    self._reject(item.name, "is not a regular file (symlinks are never followed)")
        return found

    def _maybe_evict(self, *, keep: str) -> None:
        if self.disk_limit is None:
            return
        stale = time.monotonic() - self._scanned_at > _RESCAN_SECONDS
        if self._nbytes > self.disk_limit or stale:
            self._evict(self.disk_limit, keep=keep)

    def _evict(self, limit: int, *, keep: str | None) -> int:
        with self._lock:  # a put landing mid-scan would otherwise vanish from the count
            try:
                found = self._scan()
            except OSError as exc:
                log.warning("cannot list cache directory %s: %s", self.directory, exc)
                return 0
            total = sum(st.st_size for _, st in found)
            freed = 0
            for name, st in sorted(found, key=lambda item: item[1].st_atime_ns):
                if total <= limit:
                    break
                if name != keep and self._unlink(name):
                    total -= st.st_size
                    freed += st.st_size
            self._nbytes = total
            self._scanned_at = time.monotonic()
        return freed

    def _clean_temps(self) -> None:
        """Remove temp files of writers that died (pid gone) or stalled (untouched > 1 min)."""
        now = time.time()
        with os.scandir(self._dirfd) as listing:
            for item in listing:
                if not item.name.startswith(_TMP_PREFIX):
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if _writer_gone(item.name) or now - st.st_mtime > _STALE_TEMP_SECONDS:
                    log.info("removing temp file %s left by an interrupted writer", item.name)
                    self._unlink(item.name)

    def _reject(self, name: str, reason: str, level: int = logging.WARNING) -> None:
        """Log a bad entry once, then delete it (a symlink itself, never its target)."""
        with self._lock:
            first = name not in self._warned
            self._warned.add(name)
        level = level if first else logging.DEBUG
        log.log(
            level,
            "cache entry %s in %s %s; deleted, it will be recomputed",
            name,
            self.directory,
            reason,
        )
        self._remove(name)

    def _remove(self, name: str) -> None:
        with self._lock:
            st = self._lstat(name)
            if st is not None and self._unlink(name) and stat.S_ISREG(st.st_mode):
                self._nbytes = max(0, self._nbytes - st.st_size)

    def _unlink(self, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=self._dirfd)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot remove %s from %s: %s", name, self.directory, exc)
            return False

    def _lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self._dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise LazyGraphError(f"the file tier over {self.directory} is closed")


def _writer_gone(temp_name: str) -> bool:
    """True when a temp file's writer ran on this host and its pid no longer exists."""
    parts = temp_name[len(_TMP_PREFIX) :].split("-")
    return len(parts) >= 2 and process_gone(parts[0], parts[1])


def process_gone(host_tag: str, pid: str) -> bool:
    """True when ``pid`` (a decimal string) named a process of this ``HOST_TAG`` that is gone.

    False whenever unsure: another host or namespace, a pid that exists (maybe reused), or
    one we may not signal.
    """
    if host_tag != HOST_TAG or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False
