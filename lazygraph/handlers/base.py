"""What a library's handler module gives the walks, and what the walks give it.

Covers: :class:`TypeHandler` (how to hash, size, freeze, describe and ship the values of one
type, and where they live), the two walk protocols a handler is called with (hashing's and
sizing's: a handler gets the walk instead of importing the module that owns it, so the
handler modules stay leaves) and the tagged byte encodings shared by ``hashing`` and the
handlers (one definition of the hashed stream's framing). Imports nothing of lazygraph.
Does not cover: finding a type's handler (``handlers.registry``) or any library's knowledge
(``handlers.numpy``, ``handlers.pandas``, ``handlers.torch``).

>>> header(b"s", 3) + b"abc" == text("abc")
True
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["HashWalk", "Part", "SizeWalk", "TypeHandler", "header", "text", "type_token"]

Part = tuple[Hashable | None, int, str]
"""``(buffer_id, nbytes, device)``: ``buffer_id`` is None for private memory."""

#: tag + length: every variable-size item of the hashed stream is self-delimiting.
header: Callable[[bytes, int], bytes] = struct.Struct("<cQ").pack


def text(value: str) -> bytes:
    """A string as the hashed stream writes it: header, then UTF-8 (lone surrogates kept)."""
    data = value.encode("utf-8", "surrogatepass")
    return header(b"s", len(data)) + data


def type_token(obj: Any) -> bytes:
    """The bytes naming ``obj``'s exact type (module and qualified name)."""
    return text(f"{type(obj).__module__}.{type(obj).__qualname__}")


class HashWalk(Protocol):
    """One content-hashing call, as ``hashing`` hands it to a hash handler."""

    persistable: bool

    def feed(self, h: Any, obj: Any) -> None:
        """Hash any value into ``h`` (dispatching back to the handlers)."""

    def pickled(self, h: Any, obj: Any) -> None:
        """Hash ``obj`` through pickle (the fallback for values a handler cannot read)."""

    def code(self, h: Any, obj: Any) -> None:
        """Hash a callable by its code fingerprint."""


class SizeWalk(Protocol):
    """One sizing call, as ``sizing`` hands it to a size handler."""

    private: int
    seen: set[int]

    def add_buffer(self, buffer_id: Hashable, nbytes: int, device: str) -> None:
        """Count a buffer other values may share, once per walk."""

    def visit(self, obj: object, depth: int) -> None:
        """Size any value reached from this one (bounded by the walk's budget)."""

    def visit_sample(self, items: list[Any], count: int, depth: int) -> None:
        """Visit ``items``, a sample of ``count`` values, and scale their cost up to all."""


@dataclass(frozen=True)
class TypeHandler:
    """What lazygraph knows about one library type; a None field means "as any object".

    - ``hash(walk, h, value)``: feed the value's content into the xxh3 hasher ``h``.
    - ``size(walk, value, depth)``: add the value's memory to a sizing walk.
    - ``fast_size(value)``: the value's footprint parts without a walk, or None to walk it.
    - ``freeze(value)``: make its buffers read-only (``Session(freeze=True)``).
    - ``describe(value)``: a one-line summary without the size (shape/dtype, rows, device).
    - ``holds_buffers(value)``: whether it is big-buffer data worth shipping to a worker
      process as a memory-mapped file rather than pickled.
    - ``device(value)``: where its data lives ("cpu", "cuda:0", ...).
    """

    hash: Callable[[HashWalk, Any, Any], None] | None = None
    size: Callable[[SizeWalk, Any, int], None] | None = None
    fast_size: Callable[[Any], tuple[Part, ...] | None] | None = None
    freeze: Callable[[Any], None] | None = None
    describe: Callable[[Any], str] | None = None
    holds_buffers: Callable[[Any], bool] | None = None
    device: Callable[[Any], str | None] | None = None
