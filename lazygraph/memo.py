"""joblib.Memory's interface on a lazygraph Session: ``Memory`` and its memoized functions.

Covers: :class:`Memory` (``cache()`` as a decorator or a call, ``clear()``, ``location``)
and :class:`MemorizedFunc` (``f(x)`` returns the value, ``f.call``, ``f.clear``,
``f.check_call_in_cache``, ``f.func``), enough for scikit-learn's ``Pipeline(memory=...)``
(its ``check_memory`` asks for a ``cache`` method; ``clone`` deep-copies the memory, which
here returns the same object so every clone shares one cache). Each call builds a Node
(``@node(ignore=...)`` keys it, arguments bound to the signature) and pulls it in the
Session the Memory owns: on the in-memory path the value returned is the very object the
function returned, never a pickled copy. Does not cover: keys, storing or persisting
(``keys``, ``store``: ``location`` is the Session's ``cache_dir``), nor joblib's
``mmap_mode``, ``compress`` or ``verbose`` (accepted for compatibility, without effect).

Why a memory-only Memory's ``location`` is ``":memory:"``, not None: scikit-learn reads
``memory.location is None`` as "caching disabled" and then fits the Pipeline's own step
objects instead of clones. Here the cached value is the very object (S2.1), so a Pipeline
fitted again, or whose steps' parameters were set after a fit, would change the cached
estimator in place and a later hit would return it: wrong results without a word.

>>> import lazygraph
>>> memory = lazygraph.Memory()
>>> @memory.cache
... def square(x):
...     return x * x
>>> square(3), square(3)
(9, 9)
>>> memory.close()
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .node import Node, NodeFactory, node
from .session import Session

__all__ = ["MEMORY_ONLY", "Memory", "MemorizedFunc"]

#: ``Memory.location`` of a memory-only Memory.
MEMORY_ONLY = ":memory:"

# joblib.Memory arguments that have no meaning here (lazygraph neither prints per call nor
# compresses nor memory-maps on demand); accepted so that ported code keeps running.
_JOBLIB_ONLY = ("verbose", "mmap_mode", "compress", "backend", "backend_options",
                "bytes_limit", "cache_validation_callback")

#: Node factories a Memory keeps for reuse (each holds its function alive): the oldest goes.
MAX_FACTORIES = 128


class Memory:
    """A joblib.Memory work-alike backed by a lazygraph Session it owns.

    ``location=None`` keeps results in memory only (``.location`` is then ``":memory:"``);
    a path persists them there
    (``Session(cache_dir=location)``: authenticated entries other processes reuse). Other
    keyword arguments are Session options (``memory_limit="2GB"``, ...).

    >>> import lazygraph
    >>> memory = lazygraph.Memory(memory_limit="256MB")
    >>> double = memory.cache(lambda x: 2 * x)
    >>> double(21), memory.location
    (42, ':memory:')
    >>> memory.close()
    """

    def __init__(self, location: str | os.PathLike[str] | None = None, **options: Any) -> None:
        self._options = {k: v for k, v in options.items() if k not in _JOBLIB_ONLY}
        self._path = None if location is None else os.fspath(location)
        #: The cache directory, or ":memory:" (see the module docstring for why not None).
        self.location = MEMORY_ONLY if self._path is None else self._path
        session_options: dict[str, Any] = {"progress": False, **self._options}
        if self._path is not None:
            session_options["cache_dir"] = self._path
        self.session = Session(**session_options)
        self._factories: dict[tuple[int, tuple[str, ...]], NodeFactory[..., Any]] = {}
        self._factories_lock = threading.Lock()

    def cache(
        self,
        func: Callable[..., Any] | None = None,
        ignore: Iterable[str] | None = None,
        **joblib_options: Any,
    ) -> Any:
        """Memoize ``func`` (``@memory.cache``, ``@memory.cache(ignore=["verbose"])`` or
        ``memory.cache(func)``); returns a :class:`MemorizedFunc`.

        ``verbose``, ``mmap_mode`` and ``cache_validation_callback`` are accepted as joblib
        does, without effect.
        """
        unknown = set(joblib_options) - set(_JOBLIB_ONLY)
        if unknown:
            raise TypeError(f"cache() got unexpected keyword arguments {sorted(unknown)}")
        if func is None:
            return functools.partial(self.cache, ignore=ignore, **joblib_options)
        if isinstance(func, MemorizedFunc):  # joblib: caching a cached function is a no-op
            return func
        return MemorizedFunc(func, memory=self, ignore=() if ignore is None else ignore)

    def _factory(self, func: Callable[..., Any], ignore: tuple[str, ...]) -> NodeFactory[..., Any]:
        """The node factory of ``func`` with ``ignore``, built once and reused.

        scikit-learn's ``Pipeline`` calls ``cache()`` on every fit: reading the signature and
        checking the options each time would cost more than a cache hit itself. Entries are
        keyed by the function's identity (held alive by the factory, so the id stays its
        own), at most ``MAX_FACTORIES`` of them.
        """
        key = (id(func), ignore)
        made = self._factories.get(key)
        if made is not None and made.func is func:
            return made
        made = node(ignore=ignore)(func)
        with self._factories_lock:
            if len(self._factories) >= MAX_FACTORIES:
                del self._factories[next(iter(self._factories))]
            self._factories[key] = made
        return made

    def clear(self, warn: bool = True) -> None:
        """Drop every cached result, in memory and under ``location``."""
        self.session.clear(disk=self._path is not None)

    def close(self) -> None:
        """Close the Session (waits for files being persisted); later calls raise."""
        self.session.close()

    # scikit-learn's clone() deep-copies a Pipeline's memory: all clones share one cache.
    def __copy__(self) -> Memory:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Memory:
        return self

    def __reduce__(self) -> Any:
        # A worker process (GridSearchCV(n_jobs=...)) gets a Memory of its own on the same
        # location: results persisted there are shared, memory-only ones are not.
        return functools.partial(Memory, self._path, **self._options), ()

    def __repr__(self) -> str:
        return f"Memory(location={self.location})"


class MemorizedFunc:
    """What ``Memory.cache`` returns: calling it returns the (cached) value.

    >>> import lazygraph
    >>> memory = lazygraph.Memory()
    >>> calls = []
    >>> @memory.cache(ignore=["verbose"])
    ... def inc(x, verbose=False):
    ...     calls.append(x)
    ...     return x + 1
    >>> inc(1), inc(1, verbose=True), inc(x=1), len(calls)
    (2, 2, 2, 1)
    >>> memory.close()
    """

    def __init__(self, func: Callable[..., Any], *, memory: Memory, ignore: Iterable[str]) -> None:
        self.func = func
        self.memory = memory
        self.ignore = list(ignore)
        self._factory = memory._factory(func, tuple(self.ignore))
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        session = self.memory.session
        n = self._factory(*args, **kwargs)
        if self.memory._path is None:
            return session.compute(n)[0]
        pulls = session.pulls  # a memory hit plans no pull and writes nothing
        value = session.compute(n)[0]
        if session.pulls != pulls:
            # joblib's promise: once the call returns, its result is on disk for any
            # process (persist writes are queued; one still queued at exit can be lost).
            session.flush()
        return value

    def call(self, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Run the function whatever the cache holds, store the result and return
        ``(value, metadata)`` as joblib's ``MemorizedFunc.call`` does."""
        n = self._factory(*args, **kwargs)
        self.memory.session.store.forget([_key(n)])
        start = time.time()
        value = self(*args, **kwargs)
        return value, {"duration": time.time() - start, "time": start}

    def check_call_in_cache(self, *args: Any, **kwargs: Any) -> bool:
        """Whether a result for these arguments is cached (in memory or under location)."""
        key = _key(self._factory(*args, **kwargs))
        return self.memory.session.store.location(key) != "absent"

    def clear(self, warn: bool = True) -> None:
        """Drop every cached result of this function, whatever its arguments."""
        store = self.memory.session.store
        store.forget(store.keys_of(self._factory.options.name))

    def __reduce__(self) -> Any:
        return _rebuild, (self.memory, self.func, self.ignore)

    def __repr__(self) -> str:
        return f"MemorizedFunc(func={self.func!r}, location={self.memory.location})"


def _key(n: Node) -> bytes:
    return bytes.fromhex(n.key)


def _rebuild(memory: Memory, func: Callable[..., Any], ignore: list[str]) -> MemorizedFunc:
    return MemorizedFunc(func, memory=memory, ignore=ignore)
