"""The bytes of one entry file: the joblib stream, split into pickle stream and payload.

Covers: pickling a value the way joblib maps it back (``dump``; CPU tensors as arrays,
restored sharing the mapped pages), marking the raw bytes of large arrays as *payload* while
the rest (the *pickle stream*) feeds a MAC, writing the authenticated trailer
(``write_entry``), reading and checking it back (``read_header``, which also checks the
payload regions it names, then ``pickle_intact`` and ``payload_matches``). ``files.py``
explains the format and the trust model.

Does not cover: files and directories (names, atomic renames, eviction: ``files.py``) or when
a payload must be hashed rather than trusted (``FileTier._payload_intact``).

>>> import io
>>> sink = EntrySink(io.BytesIO(), mac_stream(b"s" * 32, b"pickle"), xxhash.xxh3_128())
>>> dump({"big": np.zeros(10_000), "small": np.ones(3)}, sink)
>>> [length for _, length in sink.regions]  # only the large array's raw bytes
[80000]
"""

from __future__ import annotations

import hmac
import json
import os
import pickle
import struct
import sys
import time
from typing import Any, BinaryIO

import numpy as np
import xxhash

from ..errors import LazyGraphError
from .secret import mac, mac_stream, verify_mac

__all__ = [
    "EntrySink",
    "UnspillableError",
    "bind",
    "dump",
    "encode_header",
    "hash_ranges",
    "other_format",
    "payload_matches",
    "pickle_intact",
    "read_header",
    "write_entry",
]

MAGIC = b"LGENTRY1"
FOOTER = struct.Struct("<Q8s")  # header length, magic
TAG_BYTES = 32
FORMAT = 2
PAYLOAD_MIN = 64 * 1024  # arrays this big are payload (checksummed); smaller ones are MAC'd
MAX_REGIONS = 16_384  # payload regions per entry (keeps the header well under MAX_HEADER)
MAX_HEADER = 1 << 20
_READ_CHUNK = 1 << 20  # small enough to stay in cache between the read and the hash


class UnspillableError(LazyGraphError, TypeError):
    """A value (or its metadata) cannot be written to a file; nothing was written."""


def write_entry(
    fd: int, key: bytes, value: object, meta: dict[str, object], *, secret: bytes, seed: int
) -> tuple[int, list[int]]:
    """Write ``value`` and its authenticated trailer at ``fd``; (size in bytes, bound).

    ``bound`` is ``[device, inode, mtime_ns]`` as the header records it: the caller sets the
    mtime back to ``bound[2]`` once done writing (and before anything else touches it).
    """
    with os.fdopen(fd, "wb", closefd=False) as raw:
        sink = EntrySink(raw, mac_stream(secret, b"pickle"), xxhash.xxh3_128(seed=seed))
        dump(value, sink)
        data_len = raw.tell()
        raw.flush()
        bound = bind(fd)
        header = encode_header(
            key,
            data_len,
            meta,
            pickle_mac=sink.pickle_mac.hexdigest(),
            payload=sink.regions,
            payload_xxh3=sink.payload_hash.hexdigest(),
            bound=bound,
        )
        raw.write(header + mac(secret, b"entry", header) + FOOTER.pack(len(header), MAGIC))
        return raw.tell(), bound


def pickle_intact(fd: int, header: dict[str, Any], secret: bytes) -> bool:
    """True when every byte but the payloads matches the header's MAC (checked every load).

    That is every byte unpickling interprets: opcodes, small values, padding; a few
    kilobytes for an entry of large arrays.
    """
    stream = mac_stream(secret, b"pickle")
    if not hash_ranges(fd, _complement(header["payload"], header["data_len"]), stream):
        return False
    stored = header["pickle_mac"]
    return isinstance(stored, str) and hmac.compare_digest(stream.hexdigest(), stored)


def payload_matches(fd: int, header: dict[str, Any], seed: int) -> bool:
    """True when the payload regions hash to the header's checksum (reads them all)."""
    hasher = xxhash.xxh3_128(seed=seed)
    if not hash_ranges(fd, header["payload"], hasher):
        return False
    return hasher.hexdigest() == header["payload_xxh3"]


class EntrySink:
    """The file joblib writes an entry into, split into the pickle stream and array payloads.

    The pickle stream (opcodes, small values, padding: every byte unpickling interprets)
    feeds a keyed MAC; the raw bytes of large arrays feed a fast checksum and are recorded
    as ``[offset, length]`` regions. joblib writes an array's bytes right after asking its
    pickler's ``np.nditer`` for them, which ``_PayloadNumpy`` turns into ``begin_payload``.
    Were joblib to write arrays some other way, no region would be recorded and the whole
    stream would be MAC'd: slower to verify, never less safe.
    """

    def __init__(self, raw: BinaryIO, pickle_mac: Any, payload_hash: Any) -> None:
        self.raw = raw
        self.pickle_mac = pickle_mac
        self.payload_hash = payload_hash
        self.regions: list[list[int]] = []
        self._start: int | None = None

    def write(self, data: Any) -> int:
        if self._start is None:
            self.pickle_mac.update(data)
        else:
            self.payload_hash.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()

    def takes_payload(self) -> bool:
        return len(self.regions) < MAX_REGIONS

    def begin_payload(self) -> None:
        self._start = self.raw.tell()

    def end_payload(self) -> None:
        if self._start is not None:
            length = self.raw.tell() - self._start
            if length:
                self.regions.append([self._start, length])
            self._start = None


class _PayloadNumpy:
    """numpy, except that ``nditer`` first tells the sink that an array's raw bytes follow."""

    def __init__(self, module: Any, sink: EntrySink) -> None:
        self._module = module
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def nditer(self, *args: Any, **kwargs: Any) -> Any:
        self._sink.begin_payload()
        return self._module.nditer(*args, **kwargs)


class _PayloadMixin:
    """A joblib pickler whose large arrays' raw bytes are marked as payload in the sink."""

    np: Any
    file_handle: Any

    def save(self, obj: Any) -> Any:
        sink = self.file_handle
        if (
            isinstance(sink, EntrySink)
            and type(obj) in (np.ndarray, np.memmap)
            and not obj.dtype.hasobject  # pickled inside: part of the pickle stream
            and obj.nbytes >= PAYLOAD_MIN
            and sink.takes_payload()
        ):
            numpy_module = self.np
            self.np = _PayloadNumpy(numpy_module, sink)
            try:
                return super().save(obj)  # type: ignore[misc]
            finally:
                self.np = numpy_module
                sink.end_payload()
        return super().save(obj)  # type: ignore[misc]


def dump(value: object, file: Any) -> None:
    """Pickle ``value`` into ``file`` with joblib's pickler: arrays raw, so they map back.

    CPU tensors go as arrays. Into an ``EntrySink``, large arrays' bytes are marked payload.
    Raises OSError (disk full...) or UnspillableError (the value cannot be pickled).
    """
    pickler_class = _pickler_class("torch" in sys.modules)
    try:
        pickler_class(file, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # pickling fails with many types: TypeError, PicklingError, ...
        raise UnspillableError(
            f"cannot write a {type(value).__name__} to a file: {type(exc).__name__}: {exc}"
        ) from exc


_PICKLERS: dict[bool, type] = {}


def _pickler_class(tensors: bool) -> type:
    """joblib's NumpyPickler marking payloads; with ``tensors``, CPU tensors go as arrays."""
    if tensors not in _PICKLERS:
        from joblib.numpy_pickle import NumpyPickler

        class ArrayPickler(_PayloadMixin, NumpyPickler):
            pass

        class TensorPickler(ArrayPickler):
            def reducer_override(self, obj: object) -> Any:
                torch = sys.modules["torch"]
                if isinstance(obj, torch.Tensor):
                    return _reduce_tensor(obj)
                return NotImplemented

        _PICKLERS[False], _PICKLERS[True] = ArrayPickler, TensorPickler
    return _PICKLERS[tensors]


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


def encode_header(
    key: bytes,
    data_len: int,
    meta: dict[str, object],
    *,
    pickle_mac: str = "",
    payload: list[list[int]] | None = None,
    payload_xxh3: str = "",
    bound: list[int] | None = None,
) -> bytes:
    header = {
        "format": FORMAT,
        "key": key.hex(),
        "data_len": data_len,
        "pickle_mac": pickle_mac,
        "payload": payload or [],
        "payload_xxh3": payload_xxh3,
        "bound": bound or [],
        "created": time.time(),
        "meta": meta,
    }
    try:
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise UnspillableError(
            f"meta must hold JSON values (str, int, float, bool, None, lists, dicts): {exc}"
        ) from exc


def bind(fd: int) -> list[int]:
    """Set the file's mtime to now and return ``[device, inode, mtime_ns]`` as stored.

    Read back rather than assumed, so a filesystem with coarse timestamps binds the value it
    keeps.
    """
    now = time.time_ns()
    os.utime(fd, ns=(now, now))
    st = os.fstat(fd)
    return [st.st_dev, st.st_ino, st.st_mtime_ns]


def read_header(fd: int, st: os.stat_result, secret: bytes, key_hex: str) -> dict[str, Any] | None:
    """The entry's header if its MAC verifies and it describes this file and key, else None."""
    found = _authenticated_header(fd, st, secret)
    if found is None:
        return None
    header, data_len = found
    if header.get("format") != FORMAT or header.get("key") != key_hex:
        return None
    if header.get("data_len") != data_len:
        return None
    regions = _payload_regions(header)
    if regions is None:
        return None
    header["payload"] = regions  # checked once here: sorted (offset, length) inside the data
    return header


def other_format(fd: int, st: os.stat_result, secret: bytes) -> object:
    """The format of an authentic entry another lazygraph version wrote, else None."""
    found = _authenticated_header(fd, st, secret)
    if found is None or found[0].get("format") == FORMAT:
        return None
    return found[0].get("format")


def _authenticated_header(
    fd: int, st: os.stat_result, secret: bytes
) -> tuple[dict[str, Any], int] | None:
    """(header, data length) when the trailer is well formed and its MAC verifies."""
    size = st.st_size
    if size < FOOTER.size + TAG_BYTES:
        return None
    header_len, magic = FOOTER.unpack(os.pread(fd, FOOTER.size, size - FOOTER.size))
    data_len = size - FOOTER.size - TAG_BYTES - header_len
    if magic != MAGIC or header_len > MAX_HEADER or data_len < 0:
        return None
    blob = os.pread(fd, header_len + TAG_BYTES, data_len)
    raw, tag = blob[:header_len], blob[header_len:]
    if len(tag) != TAG_BYTES or not verify_mac(secret, tag, b"entry", raw):
        return None
    header = json.loads(raw)  # authenticated: a lazygraph with this secret wrote this JSON
    return (header, data_len) if isinstance(header, dict) else None


def _payload_regions(header: dict[str, Any]) -> list[tuple[int, int]] | None:
    """The header's payload regions, sorted and inside the data; None if they are not."""
    regions, end = [], 0
    try:
        for offset, length in header["payload"]:
            if not (isinstance(offset, int) and isinstance(length, int)):
                return None
            if offset < end or length <= 0 or offset + length > header["data_len"]:
                return None
            regions.append((offset, length))
            end = offset + length
    except (TypeError, ValueError, KeyError):
        return None
    return regions


def _complement(regions: list[tuple[int, int]], data_len: int) -> list[tuple[int, int]]:
    """The ``(offset, length)`` ranges of ``[0, data_len)`` outside ``regions`` (sorted)."""
    outside, position = [], 0
    for offset, length in regions:
        if offset > position:
            outside.append((position, offset - position))
        position = offset + length
    if data_len > position:
        outside.append((position, data_len - position))
    return outside


def hash_ranges(fd: int, ranges: list[tuple[int, int]], hasher: Any) -> bool:
    """Feed the file's bytes in ``ranges`` to ``hasher``; False on a short read (truncated).

    pread rather than mmap: a file truncated while we hash gives a short read instead of
    SIGBUS killing the process.
    """
    buffer = bytearray(min(_READ_CHUNK, max((length for _, length in ranges), default=0)))
    view = memoryview(buffer)
    for offset, length in ranges:
        end = offset + length
        while offset < end:
            got = os.preadv(fd, [view[: min(len(buffer), end - offset)]], offset)
            if got == 0:
                return False
            hasher.update(view[:got])
            offset += got
    return True


