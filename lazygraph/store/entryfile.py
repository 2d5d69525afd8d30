"""The joblib stream of one entry file: written split into pickle stream and payload,
unpickled from the descriptor it was verified through.

Covers: pickling a value the way joblib maps it back (``dump``; CPU tensors as arrays,
restored sharing the mapped pages), marking the raw bytes of large arrays as *payload* while
the rest (the *pickle stream*) feeds a MAC, writing a whole entry with its authenticated
trailer (``write_entry``), and unpickling an entry from an open descriptor, its arrays
memory-mapped through that same descriptor, never by path (``load``). numpy and joblib are
imported on first use, not with lazygraph.

Does not cover: the trailer and the checks against it (``entryheader``), files and
directories (names, atomic renames, eviction: ``files``) or when a payload must be hashed
rather than trusted (``entryload``). ``files`` explains the trust model.

>>> import io
>>> import numpy as np
>>> sink = EntrySink(io.BytesIO(), mac_stream(b"s" * 32, b"pickle"), xxhash.xxh3_128())
>>> dump({"big": np.zeros(10_000), "small": np.ones(3)}, sink)
>>> [length for _, length in sink.regions]  # only the large array's raw bytes
[80000]
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import sys
from typing import TYPE_CHECKING, Any, BinaryIO

import xxhash

from .entryheader import FOOTER, MAGIC, UnspillableError, bind, encode_header
from .secret import mac, mac_stream

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EntrySink", "MapSource", "UnspillableError", "dump", "load", "prepare", "write_entry"]

PAYLOAD_MIN = 64 * 1024  # arrays this big are payload (checksummed); smaller ones are MAC'd
MAX_REGIONS = 16_384  # payload regions per entry (keeps the header well under MAX_HEADER)


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
        np = self.np  # joblib's pickler holds numpy: no import here
        if (
            isinstance(sink, EntrySink)
            and np is not None
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


def prepare() -> None:
    """Import what writing and reading entries needs (joblib), now, in the caller's thread.

    A file tier calls it when it opens: its first write may otherwise run in the writer
    thread while the interpreter exits (a result queued just before the end), when importing
    joblib fails ("can't register atexit after shutdown") and the result would be lost. The
    import is what fails then; the classes built on it are made on first use, as making a
    class needs nothing the end of the interpreter takes away.
    """
    import joblib.numpy_pickle  # noqa: F401  (imported for its side effect: loaded now)


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
    array: np.ndarray,
    dtype_name: str | None,
    requires_grad: bool,
    is_parameter: bool,
    source: MapSource | None = None,
) -> Any:
    """Rebuild a tensor over the mapped pages (called by the unpickler, which adds ``source``)."""
    import torch

    tensor = torch.from_numpy(_writable_view(array, source))
    if dtype_name is not None:
        tensor = tensor.view(getattr(torch, dtype_name))
    if is_parameter:
        return torch.nn.Parameter(tensor, requires_grad=requires_grad)
    return tensor.requires_grad_(requires_grad)


def _writable_view(array: np.ndarray, source: MapSource | None) -> np.ndarray:
    """A writable array over the same file pages: a copy-on-write (MAP_PRIVATE) mapping.

    torch has no read-only tensors: sharing a read-only mapping would turn an in-place op
    into a segfault, and a copy would read the whole file. Copy-on-write maps the same page
    cache, through the descriptor being loaded (never the path), and copies only the pages
    actually written, which never reach the file.
    """
    import numpy as np

    if array.flags.writeable:
        return array
    if isinstance(array, np.memmap) and source is not None and array.size:
        return np.memmap(
            source, dtype=array.dtype, mode="c", offset=array.offset, shape=array.shape
        )
    return array.copy()


class MapSource(os.PathLike):
    """An open entry file as ``np.memmap`` takes it: mapped through ``fd``, never by path.

    np.memmap maps an object with ``read`` through its ``fileno()`` and records
    ``resolve()`` as the array's ``filename``; joblib names it in a debug line
    (``os.fspath``). Seeking moves a private position only: the descriptor's own offset, which
    the unpickler reads the stream through, is never touched.
    """

    def __init__(self, fd: int, path: str, size: int) -> None:
        self._fd = fd
        self._path = path
        self._size = size
        self._position = 0

    def __fspath__(self) -> str:
        return self._path

    def resolve(self) -> str:
        return self._path

    def fileno(self) -> int:
        return self._fd

    def read(self, *_: object) -> bytes:
        raise io.UnsupportedOperation("an entry's arrays are mapped, not read")

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass


def load(fd: int, *, path: str) -> Any:
    """Unpickle the entry open at ``fd`` (at offset 0), arrays mapped read-only from ``fd``.

    ``path`` only names the mapped arrays' ``filename``; nothing is opened by it. Call it
    after the checks (``read_header``, ``pickle_intact``, ``payload_matches``) on the same
    ``fd``: what is unpickled is then exactly what was authenticated.
    """
    source = MapSource(fd, path, os.fstat(fd).st_size)
    os.lseek(fd, 0, os.SEEK_SET)
    with open(fd, "rb", closefd=False) as stream:
        return _unpickler_class()(source, stream).load()


@functools.lru_cache(maxsize=1)
def _unpickler_class() -> type:
    """joblib's NumpyUnpickler, memory-mapping from a ``MapSource``, tensors through it too."""
    from joblib.numpy_pickle import NumpyUnpickler

    # joblib >= 1.4 takes ensure_native_byte_order (mapped arrays keep their byte order).
    # Read from the code object: inspect.signature costs ~0.1 ms, paid by every new process.
    code = NumpyUnpickler.__init__.__code__
    byte_order = "ensure_native_byte_order" in code.co_varnames[: code.co_argcount]

    class EntryUnpickler(NumpyUnpickler):
        def __init__(self, source: MapSource, stream: BinaryIO) -> None:
            if byte_order:
                super().__init__(source, stream, False, mmap_mode="r")
            else:
                super().__init__(source, stream, mmap_mode="r")

        def find_class(self, module: str, name: str) -> Any:
            if module == __name__ and name == "_restore_tensor":
                return functools.partial(_restore_tensor, source=self.filename)
            return super().find_class(module, name)

    return EntryUnpickler


