"""Sessions: the store, the executor and the memory monitor a pull runs with.

Covers: ``Session`` (options, context manager, ``compute``, ``stats``, ``report``,
``close``), ``configure`` (the default session) and the module-level ``compute``. Does not
cover: the current-session stack (``context``, which this module gives the ``Session``
class to build the default one), what runs (``scheduler``), run-once claims (``claims``)
or tiers (``store``).

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
import threading
import weakref
from typing import Any

from . import context
from .arguments import find_deps, substitute
from .claims import Claims
from .config import Config
from .display import show
from .errors import LazyGraphError
from .executors import make_executor
from .incremental import refresh_watched, watched
from .keys import key_one, needs_refresh
from .node import Node
from .pressure import MemoryMonitor
from .redefinitions import outdated, warn_outdated
from .repull import attention
from .scheduler import Pull
from .store.base import MISSING
from .store.store import Stats, Store

__all__ = ["Session", "configure", "current_session", "compute"]

current_session = context.current_session  # the public name, re-exported

# Guards the executors and the history of every session (neither is on a per-node path).
_lock = threading.RLock()
# Open sessions, closed at interpreter exit (weak: a dropped session is not kept alive).
_open: weakref.WeakSet[Session] = weakref.WeakSet()


class Session:
    """Owns a store and a scheduler; ``with Session(...)`` makes it the current one.

    Options (all optional, also from ``LAZYGRAPH_<NAME>`` environment variables):
    ``memory_limit``, ``rss_limit``, ``min_available``, ``cuda_limit``, ``spill``,
    ``spill_threshold``, ``cache_dir``, ``persist``, ``disk_limit``, ``cluster_limit``,
    ``executor``, ``workers``, ``progress``, ``freeze``, ``redefined``. See
    ``lazygraph.config.Config``.

    >>> import lazygraph
    >>> with lazygraph.Session(memory_limit="1GB", progress=False) as session:
    ...     session.config.memory_limit
    1000000000
    """

    def __init__(self, **options: Any) -> None:
        self.config = Config.from_options(**options)
        self.store = Store(self.config)
        self._reads = self.store.reads  # the re-pull fast path calls its memory_hit directly
        self._executors: dict[str, Any] = {}
        self._monitor: MemoryMonitor | None = None
        self.claims = Claims()  # run-once across this session's pulls
        self.closed = False
        self._close_lock = threading.Lock()
        self.history: list[Pull] = []  # the last few pulls, for explain() and reports
        _open.add(self)

    # -- pulling -------------------------------------------------------------------------

    def compute(self, *nodes: Node, executor: Any = None) -> tuple[Any, ...]:
        """Pull ``nodes`` and return their values as a tuple, in argument order."""
        single = len(nodes) == 1 and executor is None
        if not attention:  # see repull: nothing to check but the memory hit
            if single:
                hit = self._memory_hit(nodes[0])
                if hit is not MISSING:
                    return (hit,)
        else:
            if watched:  # file sources: a stat each, and a set() for those that changed
                refresh_watched()
            if single and self._may_reuse(nodes[0]):
                hit = self._memory_hit(nodes[0])
                if hit is not MISSING:
                    if outdated:  # S3.9: a node of a replaced definition says so
                        warn_outdated(nodes)
                    return (hit,)
        if self.closed:
            raise LazyGraphError("this Session is closed; create a new one")
        for n in nodes:
            if not isinstance(n, Node):
                raise TypeError(f"compute() expects Nodes (got {type(n).__name__}: {n!r:.60})")
        pull = Pull(self, nodes, find=self._plan_lookup(executor, nodes))
        try:
            if pull.order or not _loaded_from_files(pull):
                self._ensure_monitor()
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
        if outdated:
            warn_outdated([*nodes, *(n for n, _, _ in pull.record)])
        return results

    def _may_reuse(self, n: Any) -> bool:
        """Whether the re-pull fast path may serve ``n`` while ``attention`` is not empty:
        not when it is keyed with a definition that changed since (S3.9: the full pull
        warns or re-keys)."""
        return not ("suspect" in attention and isinstance(n, Node) and needs_refresh(n))

    def _memory_hit(self, n: Any) -> Any:
        """The fast path of a re-pull: a clean node whose value is in the memory tier.

        It plans nothing, so the node's last-pull record becomes "memory" (for explain()).
        """
        if not isinstance(n, Node) or n._verified_key is not None or self.closed:
            return MISSING
        key = n._key
        if key is None:
            for dep in n.deps:
                if dep._key is None:
                    return MISSING  # a stale region: the full pull resolves it
            key_one(n)
            key = n._key
            assert key is not None
        value = self._reads.memory_hit(key)
        if value is not MISSING:
            n._last_pull = "memory"
        return value

    def _plan_lookup(self, choice: Any, nodes: tuple[Node, ...]) -> Any:
        """The executor's lookup for the plan (Dask: results held there stay there), or None
        for the store's own. Only asked once a cluster holds results for this session."""
        if self.store.cluster is None:
            return None
        finder = getattr(self._executor(choice), "finder", None)
        return finder(self.store, nodes) if finder is not None else None

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
            with _lock:  # one executor per name, and none made for a closed session
                if self.closed:
                    raise LazyGraphError("this Session is closed; create a new one")
                executor = self._executors.get(choice)
                if executor is None:
                    executor = make_executor(choice, workers=self.config.workers)
                    self._executors[choice] = executor
        return executor

    @property
    def pulls(self) -> int:
        """How many pulls this session planned (re-pulls served from memory not counted)."""
        return self.claims.started

    def _pull_ended(self, pull: Pull) -> None:
        with _lock:
            self.history.append(pull)
            del self.history[:-8]
        for root in pull.roots:
            root._last_pull = pull

    def _ensure_monitor(self) -> None:
        """Start the memory monitor (S5.4), at the first pull that may leave the store
        holding memory it could shed: one that runs nodes, or finds results in memory.

        A pull whose every result was loaded from a file (spill or ``cache_dir``) adds only
        weak references to the store, nothing the monitor could evict, so it starts no
        thread: a new process's first hit then costs as much as joblib.Memory's (issue 17).
        """
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
        return show("session_report", self)

    # -- forgetting ----------------------------------------------------------------------

    def clear(self, *, disk: bool = False) -> None:
        """Drop every result this session holds (memory, weak, spill files); with ``disk``,
        every entry of its ``cache_dir`` too (without it they stay, and later pulls load them).
        """
        self.store.forget(self.store.all_keys(disk=disk), disk=disk)

    # -- lifetime ------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every spill and persist file queued so far is complete on disk."""
        self.store.flush()

    def close(self) -> None:
        """Stop the monitor, close executors and release the store (temp spill files too).

        Idempotent, and safe from any thread, also while others compute: the first call
        closes, any other returns at once. A pull started afterwards raises; one running
        meanwhile fails or finishes, it never hangs (the store's close sees to its side).
        """
        with self._close_lock:  # one closer: two threads must not both close the executors
            if self.closed:
                return
            self.closed = True
        with _lock:  # _ensure_monitor() makes one under this lock: none is made after this
            if self._monitor is None:
                self._monitor = MemoryMonitor(self.store.evict, rss_limit=self.config.rss_limit,
                                              min_available=self.config.min_available)
            monitor = self._monitor
        monitor.close()  # closed for good: a pull already running cannot start it again
        with _lock:  # _executor() adds under the same lock: no executor made after the copy
            executors = list(self._executors.values())
            self._executors.clear()
        for executor in executors:
            executor.close()
        self.store.close()
        self.history.clear()

    def __enter__(self) -> Session:
        context.push(self)
        return self

    def __exit__(self, *exc: object) -> None:
        context.pop(self)
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.stats().entries_in_memory} entries in memory"
        return f"<lazygraph.Session {state}, executor={self.config.executor!r}>"


def configure(**options: Any) -> Session:
    """Replace the default session with one made from ``options``; returns it.

    >>> import lazygraph
    >>> lazygraph.configure(memory_limit="256MB", progress=False).config.memory_limit
    256000000
    """
    session = Session(**options)  # built first: a bad option leaves the old one in place
    old = context.replace_default(session)
    if old is not None:
        old.close()
    return session


def compute(*args: Any, executor: Any = None) -> tuple[Any, ...]:
    """Pull several nodes at once (shared ancestors run once); a tuple in argument order.

    As ``dask.compute``: Nodes may sit in lists, tuples, dicts and sets; each item of the
    tuple is its argument with values in place of Nodes (other values pass through).

    >>> import lazygraph
    >>> @lazygraph.node
    ... def square(x):
    ...     return x * x
    >>> with lazygraph.Session():
    ...     lazygraph.compute(square(2), {"b": [square(3), 1]})
    (4, {'b': [9, 1]})
    """
    session = current_session()
    if all(isinstance(a, Node) for a in args):
        return session.compute(*args, executor=executor)
    nodes, _ = find_deps(args, {}, kind=Node)
    values = dict(zip(nodes, session.compute(*nodes, executor=executor), strict=True))
    return tuple(substitute(a, values.__getitem__, kind=Node) for a in args)


def _loaded_from_files(pull: Any) -> bool:
    """True when ``pull`` (planned, nothing run) found every node in a file tier.

    >>> from types import SimpleNamespace as Planned
    >>> loaded = Planned(record=Planned(log=[(None, "hit", "disk"), (None, "hit", "spilled")]))
    >>> _loaded_from_files(loaded)
    True
    >>> _loaded_from_files(Planned(record=Planned(log=[(None, "hit", "weak")])))
    False
    """
    return all(type(item) is tuple and item[2] in _FILE_HITS for item in pull.record.log)


# Where Store.find says a result it loaded from a file came from (store.demote.reload): the
# store then holds it weakly only.
_FILE_HITS = frozenset({"disk", "spilled"})


context.set_session_factory(Session)


@atexit.register
def _close_all() -> None:
    for session in list(_open):
        session.close()
