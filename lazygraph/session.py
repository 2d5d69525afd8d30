"""Sessions: the store, the executor and the memory monitor a pull runs with.

Covers: ``Session`` (options, context manager, ``compute``, ``stats``, ``report``,
``close``), the process-wide current session (``configure``, ``current_session``) and the
module-level ``compute``. Does not cover: what runs (``scheduler``) or tiers (``store``).

>>> import lazygraph
>>> @lazygraph.node
... def total(xs):
...     return sum(xs)
>>> with lazygraph.Session(memory_limit="64MB") as s:
...     s.compute(total([1, 2, 3]))
(6,)
"""

from __future__ import annotations

import atexit
import sys
import threading
import weakref
from typing import Any

from .config import Config
from .errors import LazyGraphError
from .executors import make_executor
from .node import Node
from .pressure import MemoryMonitor
from .scheduler import Pull, key_one
from .store.base import MISSING
from .store.store import Stats, Store

__all__ = ["Session", "configure", "current_session", "compute"]

_lock = threading.RLock()
_stack: list[Session] = []
_default: Session | None = None
_open: weakref.WeakSet[Session] = weakref.WeakSet()


class Session:
    """Owns a store and a scheduler; ``with Session(...)`` makes it the current one.

    Options (all optional, also from ``LAZYGRAPH_<NAME>`` environment variables):
    ``memory_limit``, ``rss_limit``, ``min_available``, ``cuda_limit``, ``spill``,
    ``spill_threshold``, ``cache_dir``, ``persist``, ``disk_limit``, ``executor``,
    ``workers``, ``progress``, ``freeze``. See ``lazygraph.config.Config``.

    >>> import lazygraph
    >>> with lazygraph.Session(memory_limit="1GB", progress=False) as session:
    ...     session.config.memory_limit
    1000000000
    """

    def __init__(self, **options: Any) -> None:
        self.config = Config.from_options(**options)
        self.store = Store(self.config)
        self._executors: dict[str, Any] = {}
        self._monitor: MemoryMonitor | None = None
        self._inflight: dict[bytes, Pull] = {}
        self._cond = threading.Condition()
        self._waiting = 0
        self._active = 0
        self._pulls_started = 0
        self.closed = False
        self.history: list[Pull] = []  # the last few pulls, for explain() and reports
        _open.add(self)

    # -- pulling -------------------------------------------------------------------------

    def compute(self, *nodes: Node, executor: Any = None) -> tuple[Any, ...]:
        """Pull ``nodes`` and return their values as a tuple, in argument order."""
        if len(nodes) == 1 and executor is None:
            hit = self._memory_hit(nodes[0])
            if hit is not MISSING:
                return (hit,)
        if self.closed:
            raise LazyGraphError("this Session is closed; create a new one")
        for n in nodes:
            if not isinstance(n, Node):
                raise TypeError(f"compute() expects Nodes (got {type(n).__name__}: {n!r:.60})")
        self._ensure_monitor()
        pull = Pull(self, nodes)
        try:
            if pull.order:
                self._executor(executor).run(pull)
            results = pull.results()
        except BaseException:
            pull.release_all_claims()
            raise
        finally:
            if pull.progress is not None:
                pull.progress.close()
            self._pull_ended(pull)
        return results

    def _memory_hit(self, n: Any) -> Any:
        """The fast path of a re-pull: a clean node whose value is in the memory tier.

        It plans nothing, so the node's last-pull record becomes "memory" (for explain()).
        """
        if not isinstance(n, Node) or n._prev_key is not None or self.closed:
            return MISSING
        key = n._key
        if key is None:
            for dep in n.deps:
                if dep._key is None:
                    return MISSING  # a stale region: the full pull resolves it
            key_one(n)
            key = n._key
            assert key is not None
        value = self.store.memory_hit(key)
        if value is not MISSING:
            n._last_pull = "memory"
        return value

    def _executor(self, choice: Any) -> Any:
        choice = self.config.executor if choice is None else choice
        if not isinstance(choice, str):
            if not callable(getattr(choice, "run", None)):
                raise TypeError(
                    "executor must be a name like 'threads' or an object with run(pull) "
                    f"(got {type(choice).__name__})"
                )
            return choice
        executor = self._executors.get(choice)
        if executor is None:
            executor = self._executors[choice] = make_executor(choice, workers=self.config.workers)
        return executor

    def _pull_started(self, pull: Pull) -> int:
        """Count a starting pull; the count if no other pull is running, else -1."""
        with _lock:
            self._active += 1
            self._pulls_started += 1
            return self._pulls_started if self._active == 1 else -1

    @property
    def pulls(self) -> int:
        """How many pulls this session planned (re-pulls served from memory not counted)."""
        return self._pulls_started

    def _pull_ended(self, pull: Pull, *, ran: bool = True) -> None:
        with _lock:
            self._active -= 1
            if not ran:
                return
            self.history.append(pull)
            del self.history[:-8]
        for root in pull.roots:
            root._last_pull = pull

    def _ensure_monitor(self) -> None:
        if self._monitor is None:
            with _lock:
                if self._monitor is None:
                    self._monitor = MemoryMonitor(
                        self.store.evict,
                        rss_limit=self.config.rss_limit,
                        min_available=self.config.min_available,
                    )
        self._monitor.ensure_started()

    # -- seeing what happened ------------------------------------------------------------

    def stats(self) -> Stats:
        """Counters and byte totals of this session's store (see ``Stats``)."""
        return self.store.stats()

    def report(self) -> Any:
        """A per-function table of calls, time, sizes and locations (``str`` or pandas)."""
        from .inspection import session_report

        return session_report(self)

    # -- lifetime ------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every spill and persist file queued so far is complete on disk."""
        self.store.flush()

    def close(self) -> None:
        """Stop the monitor, close executors and release the store (temp spill files too)."""
        if self.closed:
            return
        self.closed = True
        if self._monitor is not None:
            self._monitor.stop()
        for executor in self._executors.values():
            executor.close()
        self._executors.clear()
        self.store.close()
        self.history.clear()

    def __enter__(self) -> Session:
        with _lock:
            _stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            if self in _stack:
                _stack.reverse()
                _stack.remove(self)
                _stack.reverse()
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.store._memory)} entries in memory"
        return f"<lazygraph.Session {state}, executor={self.config.executor!r}>"


def current_session() -> Session:
    """The innermost ``with Session()``, else the default one (made on first use)."""
    global _default
    try:
        return _stack[-1]  # lock-free on the hot path; a concurrent pop falls through
    except IndexError:
        pass
    session = _default
    if session is not None and not session.closed:
        return session
    with _lock:
        if _stack:
            return _stack[-1]
        if _default is None or _default.closed:
            _default = Session()
        return _default


def configure(**options: Any) -> Session:
    """Replace the default session with one made from ``options``; returns it.

    >>> import lazygraph
    >>> lazygraph.configure(memory_limit="256MB", progress=False).config.memory_limit
    256000000
    """
    global _default
    session = Session(**options)  # built first: a bad option leaves the old one in place
    with _lock:
        old, _default = _default, session
    if old is not None:
        old.close()
    return session


def compute(*nodes: Node, executor: Any = None) -> tuple[Any, ...]:
    """Pull several nodes at once (shared ancestors run once); a tuple in argument order.

    >>> import lazygraph
    >>> @lazygraph.node
    ... def square(x):
    ...     return x * x
    >>> with lazygraph.Session():
    ...     lazygraph.compute(square(2), square(3))
    (4, 9)
    """
    return current_session().compute(*nodes, executor=executor)


# Node.compute calls this without an import per call. ``from . import node`` would give the
# @node decorator (the package attribute shadows the module), hence sys.modules.
sys.modules[__package__ + ".node"]._current_session = current_session  # type: ignore[attr-defined]


@atexit.register
def _close_all() -> None:
    for session in list(_open):
        session.close()
