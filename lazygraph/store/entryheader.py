"""The authenticated trailer of an entry file: header, MACs, payload regions, checksums.

Covers: encoding the JSON header (``encode_header``), binding it to the file as written
(``bind``), reading it back only when its MAC verifies and it describes this file and key
(``read_header``, which also checks the payload regions it names), telling an authentic
entry of another format apart (``other_format``), and checking the data against it:
``pickle_intact`` (the keyed MAC over every byte unpickling interprets) and
``payload_matches`` (the fast checksum of the raw array bytes). ``files.py`` explains the
trust model.

Does not cover: producing or unpickling the joblib stream (``entryfile``), files and
directories (``files``), when a payload must be hashed rather than trusted (``entryload``).

``<key hex>.joblib`` holds the joblib stream (uncompressed, so arrays can be mapped)
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

>>> header = encode_header(b"k", 0, {"name": "f"})
>>> json.loads(header)["key"], json.loads(header)["format"]
('6b', 2)
"""

from __future__ import annotations

import hmac
import json
import os
import struct
import time
from typing import Any

import xxhash

from ..errors import LazyGraphError
from .secret import mac_stream, verify_mac

__all__ = [
    "FOOTER",
    "FORMAT",
    "MAGIC",
    "MAX_HEADER",
    "TAG_BYTES",
    "UnspillableError",
    "bind",
    "encode_header",
    "hash_ranges",
    "other_format",
    "payload_matches",
    "pickle_intact",
    "read_header",
]

MAGIC = b"LGENTRY1"
FOOTER = struct.Struct("<Q8s")  # header length, magic
TAG_BYTES = 32
FORMAT = 2
MAX_HEADER = 1 << 20
_READ_CHUNK = 1 << 20  # small enough to stay in cache between the read and the hash


class UnspillableError(LazyGraphError, TypeError):
    """A value (or its metadata) cannot be written to a file; nothing was written."""


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
