"""The file tier: one authenticated joblib file per key, read back memory-mapped.

Covers: writing an entry atomically (temp file, fsync, rename), reading it back with
``joblib.load(mmap_mode="r")`` (numpy arrays, also inside DataFrames and containers, come back
memory-mapped and read-only; torch CPU tensors come back sharing the mapped pages,
copy-on-write), authenticating entries before anything is unpickled, a last-use stamp and
LRU eviction under a byte budget, and cleaning temp files left by killed writers.

Does not cover: deciding what to spill or persist and keeping entries in memory when a write
fails (the store does that), the directory's ownership checks (``cachedir.py``) or the
secret itself (``secret.py``).

Format. ``<key hex>.joblib`` holds the joblib stream (uncompressed, so arrays can be mapped)
followed by a trailer: a JSON header (format, key, data length, xxh3-128 of the data, the
store's metadata), a 32-byte MAC over the header, and a 16-byte footer (header length and a
magic). One file per entry means one ``rename`` publishes it: a reader sees the old entry or
the new one, never a data file paired with another writer's metadata.

Why a planted or altered file is never unpickled. The MAC is blake2b keyed with the
per-user secret, kept outside the cache directory, so only a holder of the secret can make a
header that verifies, and the header names its key (an entry renamed to another key fails).
The data is bound to the header by its checksum: before the first load in a process, the
whole data part is hashed and compared (xxh3 runs at memory speed: ~50 ms per GB from the
page cache; from a cold cache, as fast as the disk reads). An entry this process wrote, or
already verified, is recognised by its (key, device, inode, size, mtime, checksum) signature
and loaded in O(1) (a memory map, no read).

The honest limit: xxh3 is not a cryptographic hash, even seeded from the secret. It detects
corruption (truncation, garbage, a restored or half-copied file), and the header MAC stops
every file made without the secret; it would not stop someone who can already write into the
0700 directory *and* crafts an xxh3 collision against a valid header, which is why
directories that others can write to are refused outright. Symbolic links are never
followed (``O_NOFOLLOW``). An in-place change that keeps inode, size and mtime (same
timestamp tick as the write) is not seen by the writing process: that is the price of the
O(1) reload.

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
import json
import logging
import os
import pickle
import re
import secrets
import socket
import stat
import struct
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import xxhash

from ..errors import ConfigError, LazyGraphError
from .base import MISSING
from .cachedir import check_private_stat, ensure_private_dir
from .secret import mac, verify_mac

log = logging.getLogger(__name__)

__all__ = ["MISSING", "EntryInfo", "FileTier", "UnspillableError"]

_SUFFIX = ".joblib"
_ENTRY_NAME = re.compile(r"[0-9a-f]{2,128}\.joblib")
_TMP_PREFIX = ".lgtmp-"
_MAGIC = b"LGENTRY1"
_FOOTER = struct.Struct("<Q8s")
_TAG_BYTES = 32
_FORMAT = 1
_MAX_HEADER = 1 << 20
_STALE_TEMP_SECONDS = 60.0
_RESCAN_SECONDS = 5.0
_HOST_TAG = xxhash.xxh3_64_hexdigest(socket.gethostname().encode())[:8]
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_READ_CHUNK = 1 << 20  # small enough to stay in cache between the read and the hash


class UnspillableError(LazyGraphError, TypeError):
    """A value (or its metadata) cannot be written to a file; nothing was written."""


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
        _encode_header(key, 0, "", meta)  # a bad meta fails now, not after writing the data
        name = key.hex() + _SUFFIX
        tmp = f"{_TMP_PREFIX}{_HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}-{key.hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=self._dirfd)
        try:
            size, digest = self._write(fd, key, value, meta)
            st = os.fstat(fd)
            with self._lock:  # the byte count must see replacements in the order they happen
                old = self._lstat(name)
                os.rename(tmp, name, src_dir_fd=self._dirfd, dst_dir_fd=self._dirfd)
                self._nbytes += size - (old.st_size if old and stat.S_ISREG(old.st_mode) else 0)
        except BaseException:
            self._unlink(tmp)
            raise
        finally:
            os.close(fd)
        self._sync_dir()
        _VERIFIED.add((key.hex(), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, digest))
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
            header = _read_header(fd, os.fstat(fd), self._secret, key.hex())
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

    def _write(
        self, fd: int, key: bytes, value: object, meta: dict[str, object]
    ) -> tuple[int, str]:
        """Dump ``value`` and the authenticated trailer into ``fd``, fsync; (size, digest)."""
        with os.fdopen(fd, "wb", closefd=False) as raw:
            sink = _HashingSink(raw, xxhash.xxh3_128(seed=self._seed))
            _dump(value, sink)
            data_len = raw.tell()
            header = _encode_header(key, data_len, sink.hasher.hexdigest(), meta)
            tag = mac(self._secret, b"entry", header)
            raw.write(header + tag + _FOOTER.pack(len(header), _MAGIC))
            size = raw.tell()
        if self.disk_limit is not None and size > self.disk_limit:
            raise OSError(
                errno.EFBIG,
                f"entry of {size} bytes is larger than disk_limit ({self.disk_limit} bytes)",
            )
        os.utime(fd, ns=(time.time_ns(), os.fstat(fd).st_mtime_ns))  # last use = now
        os.fsync(fd)
        return size, sink.hasher.hexdigest()

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
        header = _read_header(fd, st, self._secret, key.hex())
        if header is None:
            self._reject(name, "fails authentication (planted, altered or from another user)")
            return MISSING
        sig = (key.hex(), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, header["xxh3_128"])
        if sig not in _VERIFIED:
            if _checksum(fd, header["data_len"], self._seed) != header["xxh3_128"]:
                self._reject(name, "data does not match its checksum (corrupted)")
                return MISSING
            _VERIFIED.add(sig)
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
                header = _read_header(fd, os.fstat(fd), self._secret, key_hex)
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

    def _reject(self, name: str, reason: str) -> None:
        """Log a bad entry once, then delete it (a symlink itself, never its target)."""
        with self._lock:
            first = name not in self._warned
            self._warned.add(name)
        level = logging.WARNING if first else logging.DEBUG
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


class _HashingSink:
    """A write-only file wrapper that hashes what passes through (joblib needs tell())."""

    def __init__(self, raw: BinaryIO, hasher: Any) -> None:
        self.raw = raw
        self.hasher = hasher

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()


def _dump(value: object, sink: _HashingSink) -> None:
    """joblib's pickler (arrays written raw, so they can be mapped back), tensors as arrays."""
    from joblib.numpy_pickle import NumpyPickler

    pickler_class = _tensor_pickler_class() if "torch" in sys.modules else NumpyPickler
    try:
        pickler_class(sink, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # pickling fails with many types: TypeError, PicklingError, ...
        raise UnspillableError(
            f"cannot write a {type(value).__name__} to a file: {type(exc).__name__}: {exc}"
        ) from exc


_TENSOR_PICKLER: list[type] = []


def _tensor_pickler_class() -> type:
    """NumpyPickler that stores CPU tensors as arrays (so they are mapped back, not read)."""
    if not _TENSOR_PICKLER:
        from joblib.numpy_pickle import NumpyPickler

        class TensorPickler(NumpyPickler):
            def reducer_override(self, obj: object) -> Any:
                torch = sys.modules["torch"]
                if isinstance(obj, torch.Tensor):
                    return _reduce_tensor(obj)
                return NotImplemented

        _TENSOR_PICKLER.append(TensorPickler)
    return _TENSOR_PICKLER[0]


_INT_OF_SIZE = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def _reduce_tensor(tensor: Any) -> Any:
    """(restore, args) storing a CPU tensor's data as a numpy array; NotImplemented otherwise."""
    torch = sys.modules["torch"]
    if tensor.device.type != "cpu" or tensor.layout != torch.strided or tensor.is_quantized:
        return NotImplemented  # torch's own pickling keeps device and layout
    base = tensor.detach().resolve_conj().resolve_neg().contiguous()
    dtype_name = None
    try:
        array = base.numpy()
    except TypeError:  # bfloat16, float8...: no numpy dtype, so store the bits as integers
        int_name = _INT_OF_SIZE.get(base.element_size())
        if int_name is None:
            return NotImplemented
        array = base.view(getattr(torch, int_name)).numpy()
        dtype_name = str(base.dtype).removeprefix("torch.")
    is_parameter = isinstance(tensor, torch.nn.Parameter)
    return _restore_tensor, (array, dtype_name, bool(tensor.requires_grad), is_parameter)


def _restore_tensor(
    array: np.ndarray, dtype_name: str | None, requires_grad: bool, is_parameter: bool
) -> Any:
    """Rebuild a tensor over the mapped pages (called by the unpickler)."""
    import torch

    tensor = torch.from_numpy(_writable_view(array))
    if dtype_name is not None:
        tensor = tensor.view(getattr(torch, dtype_name))
    if is_parameter:
        return torch.nn.Parameter(tensor, requires_grad=requires_grad)
    return tensor.requires_grad_(requires_grad)


def _writable_view(array: np.ndarray) -> np.ndarray:
    """A writable array over the same file pages: a copy-on-write (MAP_PRIVATE) mapping.

    torch has no read-only tensors: sharing a read-only mapping would turn an in-place op
    into a segfault, and a copy would read the whole file. Copy-on-write maps the same page
    cache and copies only the pages actually written, which never reach the file.
    """
    if array.flags.writeable:
        return array
    if isinstance(array, np.memmap) and array.filename is not None and array.size:
        return np.memmap(
            array.filename, dtype=array.dtype, mode="c", offset=array.offset, shape=array.shape
        )
    return array.copy()


def _encode_header(key: bytes, data_len: int, digest: str, meta: dict[str, object]) -> bytes:
    header = {
        "format": _FORMAT,
        "key": key.hex(),
        "data_len": data_len,
        "xxh3_128": digest,
        "created": time.time(),
        "meta": meta,
    }
    try:
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise UnspillableError(
            f"meta must hold JSON values (str, int, float, bool, None, lists, dicts): {exc}"
        ) from exc


def _read_header(fd: int, st: os.stat_result, secret: bytes, key_hex: str) -> dict[str, Any] | None:
    """The entry's header if its MAC verifies and it describes this file and key, else None."""
    size = st.st_size
    if size < _FOOTER.size + _TAG_BYTES:
        return None
    header_len, magic = _FOOTER.unpack(os.pread(fd, _FOOTER.size, size - _FOOTER.size))
    data_len = size - _FOOTER.size - _TAG_BYTES - header_len
    if magic != _MAGIC or header_len > _MAX_HEADER or data_len < 0:
        return None
    blob = os.pread(fd, header_len + _TAG_BYTES, data_len)
    raw, tag = blob[:header_len], blob[header_len:]
    if len(tag) != _TAG_BYTES or not verify_mac(secret, tag, b"entry", raw):
        return None
    header: dict[str, Any] = json.loads(raw)  # authenticated: we wrote this JSON
    if header.get("format") != _FORMAT or header.get("key") != key_hex:
        return None
    return header if header.get("data_len") == data_len else None


def _checksum(fd: int, length: int, seed: int) -> str:
    """xxh3-128 of the first ``length`` bytes, read with pread.

    pread rather than mmap: a file truncated while we hash gives a short read (a mismatch)
    instead of SIGBUS killing the process.
    """
    hasher = xxhash.xxh3_128(seed=seed)
    buffer = bytearray(_READ_CHUNK)
    view = memoryview(buffer)
    offset = 0
    while offset < length:
        got = os.preadv(fd, [view[: min(_READ_CHUNK, length - offset)]], offset)
        if got == 0:
            break
        hasher.update(view[:got])
        offset += got
    return hasher.hexdigest()


def _writer_gone(temp_name: str) -> bool:
    """True when a temp file's writer ran on this host and its pid no longer exists."""
    parts = temp_name[len(_TMP_PREFIX) :].split("-")
    if len(parts) < 2 or parts[0] != _HOST_TAG or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
