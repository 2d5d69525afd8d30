"""The process-pool executor: node functions run in worker processes, big data by file.

Covers: ``ProcessExecutor`` (a pool of ``workers`` processes driven by the shared
``PoolRun`` loop), what a worker runs, and argument templates (a node's arguments with each
dependency replaced by a ``Slot``), which the Dask executor uses too. Does not cover:
readiness and error order (``pool``), or how big values travel as files (``transport``).

Why loky (joblib's process pool) rather than ``concurrent.futures`` with a spawn context:
it ships with joblib, already a dependency; its workers do not re-import ``__main__``, so
scripts without an ``if __name__ == "__main__"`` guard and notebooks work; it detects a
worker that died (segfault, out-of-memory kill) and fails its jobs instead of hanging; and it
can kill its workers (``shutdown(kill_workers=True)``), which is how an interrupt stops work
already running. Like spawn, it never forks a parent that runs threads (our memory monitor
and spill writer), so no lock is inherited in a held state. We use a private
``loky.ProcessPoolExecutor``, not joblib's process-wide reusable one, so closing ours never
shuts down a pool that user code shares.

What travels how. Functions and small values: pickled with cloudpickle (which joblib
requires), so lambdas, closures and functions of ``__main__`` work. Large numpy arrays, pandas
objects and torch CPU tensors (or lists, tuples and dicts of them) of at least the session's
``spill_threshold`` bytes: written once to a file in a private temporary directory and
mapped back on the other side (``transport`` says how). A result's file lives as long as the
value does (it is the value's memory), so passing it to another node later costs nothing;
argument files written for one pull are removed when the pull ends; everything is removed by
``close()``. Nodes marked ``@node(local=True)``, and ``Input`` values, run in this process.
Something that cannot be pickled fails with a ``NodeError`` naming the node and what could
not travel.

>>> import lazygraph
>>> @lazygraph.node
... def square(x):
...     return x * x
>>> ex = ProcessExecutor(workers=1)
>>> with lazygraph.Session(progress=False) as s:
...     s.compute(square(7), executor=ex)
(49,)
>>> ex.close()
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..arguments import substitute
from ..errors import NodeError, iterator_result
from ..incremental import input_value
from ..node import Node
from .pool import PoolRun, checked_workers
from .transport import (
    LOCAL_HINT,
    FileRef,
    MappedFiles,
    TransportError,
    bulky,
    pack,
    pickled,
    read_file,
    transport_dir,
    unlink_quiet,
    write_file,
)

if TYPE_CHECKING:
    from ..scheduler import Pull

__all__ = ["ProcessExecutor", "Slot", "fill", "runs_here", "template"]

log = logging.getLogger(__name__)
_perf = time.perf_counter


# -- argument templates (shared with the Dask executor) ----------------------------------


class Slot:
    """Stands for a dependency's value inside a node's arguments while they travel."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return Slot, (self.key,)

    def __repr__(self) -> str:
        return f"Slot({self.key!r})"


def template(n: Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``n``'s arguments with every dependency Node replaced by ``Slot(its key)``.

    >>> import lazygraph
    >>> @lazygraph.node
    ... def f(*xs):
    ...     return xs
    >>> a, b = f(1), f(2)
    >>> n = f(a, [b, 2])
    >>> _ = n.key  # a pull resolves keys before it builds templates
    >>> args, kwargs = template(n)
    >>> args[0].key == bytes.fromhex(a.key), args[1][0].key == bytes.fromhex(b.key), args[1][1]
    (True, True, 2)
    """
    if not n.deps:
        return n.args, n.kwargs
    if n._nested:
        return substitute(n.args, _slot_of, kind=Node), substitute(n.kwargs, _slot_of, kind=Node)
    args = tuple([Slot(a._key) if isinstance(a, Node) else a for a in n.args])
    kwargs = {k: Slot(v._key) if isinstance(v, Node) else v for k, v in n.kwargs.items()}
    return args, kwargs


def fill(obj: Any, values: dict[Any, Any]) -> Any:
    """``obj`` with every ``Slot`` (also inside list/tuple/dict/set) replaced by its value.

    >>> fill((Slot("a"), [Slot("b"), 3]), {"a": 1, "b": 2})
    (1, [2, 3])
    """
    return substitute(obj, lambda slot: values[slot.key], kind=Slot)


def runs_here(n: Node) -> bool:
    """True for nodes that run in this process under every out-of-process executor.

    Those marked ``@node(local=True)``, and Inputs (their value is already here).
    """
    return n.options.local or n.func is input_value


def _slot_of(n: Node) -> Slot:
    return Slot(n._key)


def _remote_call(
    func_bytes: bytes, args_bytes: bytes, directory: str, threshold: int
) -> tuple[bytes | FileRef, float]:
    """Run in a worker: unpack the node, call it, pack its result; (result, seconds)."""
    try:
        func = pickle.loads(func_bytes)
        args_t, kwargs_t, shipped = pickle.loads(args_bytes)
        values = {
            k: read_file(v, mmap_mode="c") if isinstance(v, FileRef) else v
            for k, v in shipped.items()
        }
    except Exception as exc:
        raise TransportError(
            f"its function or arguments could not be loaded in a worker process "
            f"({type(exc).__name__}: {exc})" + LOCAL_HINT
        ) from None
    args, kwargs = fill(args_t, values), fill(kwargs_t, values)
    start = _perf()
    value = func(*args, **kwargs)
    seconds = _perf() - start
    refused = iterator_result(value)
    if refused is not None:
        raise refused
    return pack(value, directory, threshold), seconds


# -- the executor ------------------------------------------------------------------------


class ProcessExecutor:
    """Runs node functions in a pool of ``workers`` processes (loky); big data goes by file.

    ``temp_dir`` is where the private transport directory is made (default: ``/dev/shm``
    when it has room, else the system's temporary directory). The pool starts on first
    use; ``close()`` stops it and removes every transport file (idempotent).

    >>> ex = ProcessExecutor(workers=2)
    >>> ex.workers
    2
    >>> ex.close()
    """

    def __init__(self, workers: int = 2, *, temp_dir: str | None = None) -> None:
        self.workers = checked_workers(workers)
        self._temp_root = temp_dir
        self._pool: Any = None
        self._dir: str | None = None
        self._remove_dir: weakref.finalize | None = None
        self.mapped = MappedFiles()  # results whose file is still their memory
        self._lock = threading.Lock()

    @property
    def directory(self) -> str | None:
        """The private transport directory (None until the first run, and after close)."""
        return self._dir

    def run(self, pull: Pull) -> None:
        """Run every node of ``pull.order``; raise the first ``NodeError``."""
        pool, directory = self._start()
        backend = _ProcessBackend(self, pool, directory, pull)
        try:
            PoolRun(pull, backend).run()
        finally:
            backend.cleanup()

    def _start(self) -> tuple[Any, str]:
        with self._lock:
            if self._dir is None:
                root = self._temp_root or transport_dir()
                self._dir = tempfile.mkdtemp(prefix="lazygraph-proc-", dir=root)  # 0700
                self._remove_dir = weakref.finalize(
                    self, shutil.rmtree, self._dir, ignore_errors=True
                )
            if self._pool is None:
                from joblib.externals.loky import ProcessPoolExecutor

                self._pool = ProcessPoolExecutor(max_workers=self.workers)
            return self._pool, self._dir

    def _stop_pool(self, pool: Any, *, kill: bool) -> None:
        """Shut ``pool`` down (if still ours); the next run starts a new one."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        if pool is None:
            return
        if kill:
            # Kill the workers before loky's shutdown: cancelling work in flight first makes
            # its manager thread die (KeyError / InvalidStateError) and leave them running.
            for process in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(OSError, TypeError):  # gone, or never started
                    os.kill(process.pid, signal.SIGKILL)
        queue = getattr(pool, "_call_queue", None)  # shutdown() forgets it
        pool.shutdown(wait=True, kill_workers=kill)
        if kill and queue is not None:  # its feeder thread and pipes outlive a dead manager
            queue.close()
            queue.join_thread()

    def _sweep(self) -> None:
        """Remove transport files no live value maps (left by killed or failed workers)."""
        directory = self._dir
        if directory is not None:
            self.mapped.sweep(directory)

    def close(self) -> None:
        """Stop the pool and remove the transport directory; idempotent."""
        with self._lock:
            pool, self._pool = self._pool, None
            remove, self._remove_dir = self._remove_dir, None
            self._dir = None
        if pool is not None:
            pool.shutdown(wait=True)
        self.mapped.clear()
        if remove is not None:
            remove()  # mapped values stay readable: unlinking a file keeps its mappings

    def __repr__(self) -> str:
        return f"ProcessExecutor(workers={self.workers})"


class _ProcessBackend:
    """One pull's traffic with the pool: payloads out, results back, files to remove."""

    def __init__(self, executor: ProcessExecutor, pool: Any, directory: str, pull: Pull):
        self.executor = executor
        self.pool = pool
        self.directory = directory
        self.pull = pull
        self.threshold = pull.session.config.spill_threshold
        self.functions: dict[int, bytes] = {}
        self.written: dict[int, tuple[Any, FileRef]] = {}  # value pinned: ids stay unique
        self.run_files: list[str] = []

    def local(self, n: Node) -> bool:
        return runs_here(n)

    def submit(self, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        func_bytes = self._function(n)
        try:
            args_bytes = pickled(self._arguments(n))
        except Exception as exc:
            raise self._unsendable(n, "its arguments", exc) from exc
        try:
            future: Future[Any] = self.pool.submit(
                _remote_call, func_bytes, args_bytes, self.directory, self.threshold
            )
        except RuntimeError as exc:  # the pool was shut down (by close, or an interrupt)
            detail = f"its worker pool was shut down before it could start ({exc})"
            raise self.pull.node_error(n, exc, detail=detail) from exc
        return future

    def _function(self, n: Node) -> bytes:
        func_bytes = self.functions.get(id(n.func))
        if func_bytes is None:
            try:
                func_bytes = self.functions[id(n.func)] = pickled(n.func)
            except Exception as exc:
                raise self._unsendable(n, f"its function {n.name}", exc) from exc
        return func_bytes

    def _unsendable(self, n: Node, what: str, exc: Exception) -> NodeError:
        detail = (
            f"{what} cannot be sent to a worker process ({type(exc).__name__}: {exc})" + LOCAL_HINT
        )
        return self.pull.node_error(n, exc, detail=detail)

    def _arguments(self, n: Node) -> tuple[Any, Any, dict[Any, Any]]:
        """(args template, kwargs template, slot key -> value or FileRef)."""
        args_t, kwargs_t = template(n)
        values = self.pull.values
        shipped: dict[Any, Any] = {}
        for d in n.deps:
            k: bytes = d._key  # type: ignore[assignment]
            shipped[k] = self._ship(values[k])
        top: list[Any] = list(args_t)
        for i, value in enumerate(top):
            if not isinstance(value, Slot) and bulky(value, self.threshold):
                shipped[("arg", i)] = self._ship(value)
                top[i] = Slot(("arg", i))
        kwargs_t = dict(kwargs_t)
        for name, value in kwargs_t.items():
            if not isinstance(value, Slot) and bulky(value, self.threshold):
                shipped[("kw", name)] = self._ship(value)
                kwargs_t[name] = Slot(("kw", name))
        return tuple(top), kwargs_t, shipped

    def _ship(self, value: Any) -> Any:
        """The value itself, or a FileRef to a file holding it (written once per pull)."""
        path = self.executor.mapped.file_of(value)
        if path is not None:
            # Hold the value until the pull ends: its file is removed when it dies, and the
            # pull may drop it first (e.g. the store swaps it for its spilled copy) while a
            # worker has yet to open the file.
            ref = FileRef(path)
            self.written[id(value)] = (value, ref)
            return ref
        if not bulky(value, self.threshold):
            return value
        written = self.written.get(id(value))
        if written is not None:
            return written[1]
        try:
            ref = write_file(value, self.directory)
        except Exception as exc:  # disk full or unpicklable parts: pickling decides
            log.warning(
                "writing a %s argument to %s failed (%s); pickling it instead",
                type(value).__name__,
                self.directory,
                exc,
            )
            return value
        self.written[id(value)] = (value, ref)
        self.run_files.append(ref.path)
        return ref

    def receive(self, n: Node, future: Future[Any]) -> tuple[Any, float]:
        from joblib.externals.loky.process_executor import (
            BrokenProcessPool,
            ShutdownExecutorError,
        )

        pull = self.pull
        try:
            packed, seconds = future.result()
        except TransportError as exc:
            raise pull.node_error(n, exc, detail=str(exc)) from exc
        except (BrokenProcessPool, ShutdownExecutorError) as exc:
            self.executor._stop_pool(self.pool, kill=True)
            detail = f"its worker process died or was stopped ({type(exc).__name__}: {exc})"
            raise pull.node_error(n, exc, detail=detail) from exc
        except Exception as exc:
            raise pull.node_error(n, exc) from exc
        return self._unpack(n, packed), seconds

    def _unpack(self, n: Node, packed: bytes | FileRef) -> Any:
        try:
            if not isinstance(packed, FileRef):
                return pickle.loads(packed)
            value = read_file(packed, mmap_mode="r")
        except Exception as exc:
            what = packed.path if isinstance(packed, FileRef) else "its pickled result"
            detail = f"its result could not be read back from {what} ({type(exc).__name__}: {exc})"
            raise self.pull.node_error(n, exc, detail=detail) from exc
        if not self.executor.mapped.track(value, packed.path):
            self.run_files.append(packed.path)  # its arrays stay mapped after the unlink
        return value

    def interrupted(self) -> None:
        """Kill the workers (nodes running there stop now) and the files they left."""
        self.executor._stop_pool(self.pool, kill=True)
        self.executor._sweep()

    def cleanup(self) -> None:
        """The pull is over: remove argument files and results' files nobody maps by name."""
        for path in self.run_files:
            unlink_quiet(path)
        self.run_files.clear()
        self.written.clear()
