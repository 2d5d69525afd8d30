"""The pull: resolve keys, plan what is missing, run it once, record what happened.

Covers: key resolution over the stale part of a graph, the plan (missing nodes in
dependency order, pinned hits, consumer counts so values are released after their last
consumer), running one node (arguments by reference, CUDA out-of-memory retry, NodeError),
early cutoff (salsa's *backdating*: a recomputed node whose result hash did not change
lets its dependents keep their results) and run-once across threads. Does not cover: which
thread or process runs a node (``executors``) or where results are kept (``store``).

>>> import lazygraph
>>> @lazygraph.node
... def inc(x):
...     return x + 1
>>> with lazygraph.Session() as session:
...     session.compute(inc(inc(1)))
(3,)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import cuda

from .errors import NodeError
from .graph import path_to, toposort
from .hashing import content_hash
from .keys import function_fingerprint, node_key
from .node import Node, NodeOptions, _input_value, current_revision
from .progress import Progress
from .store.base import MISSING

if TYPE_CHECKING:
    from .session import Session

__all__ = ["resolve_keys", "Pull"]

_perf = time.perf_counter
log = logging.getLogger(__name__)


def resolve_keys(roots: Iterable[Node], fingerprints: dict[NodeOptions, bytes] | None = None) -> None:
    """Compute the key of every node above ``roots`` that has none, dependencies first.

    Only stale or never-keyed nodes are visited: a node with a key has keyed ancestors.
    Raises ``CycleError`` if the stale part of the graph has a cycle.
    """
    fps: dict[NodeOptions, bytes] = {} if fingerprints is None else fingerprints
    stack = [n for n in roots if n._key is None]
    expanded: set[int] = set()
    while stack:
        n = stack[-1]
        if n._key is not None:
            stack.pop()
            continue
        if id(n) not in expanded:
            expanded.add(id(n))
            pending = [d for d in n.deps if d._key is None]
            if pending:
                if any(id(d) in expanded for d in pending):
                    toposort(stack)  # raises CycleError naming the cycle
                stack.extend(pending)
                continue
        stack.pop()
        options = n.options
        fp = fps.get(options)
        if fp is None:
            fp = fps[options] = function_fingerprint(n.func, options.version)
        key, persistable = node_key(fp, n.args, n.kwargs)
        if persistable:
            for dep in n.deps:
                if not dep._persistable:
                    persistable = False
                    break
        n._persistable = persistable
        n._key = key


class Pull:
    """One pull of ``roots``: the plan, the values in flight, and what happened to each node.

    Executors drive it: ``order`` lists the nodes to run (dependencies first); in-process
    executors call ``run_node``; others call ``arguments``, run the function elsewhere and
    hand the value to ``finish``.
    """

    def __init__(self, session: Session, roots: Sequence[Node]) -> None:
        self.session = session
        self.store = session.store
        self.roots = roots
        self.values: dict[bytes, Any] = {}
        self.order: list[Node] = []
        self.consumers: dict[bytes, int] = {}
        self.record: list[tuple[Node, str, str]] = []
        self.revision = current_revision()
        self._started_alone = session._pull_started(self)
        resolve_keys(roots)
        self.keep = {r._key for r in roots}
        self._plan()
        self.progress = Progress(len(self.order)) if session.config.progress else None

    # -- planning ------------------------------------------------------------------------

    def _plan(self) -> None:
        lookup = self.store.lookup
        values, order, consumers, record = self.values, self.order, self.consumers, self.record
        state: set[bytes] = set()
        for root in self.roots:
            stack: list[tuple[Node, bool]] = [(root, False)]
            while stack:
                n, expanded = stack.pop()
                k = n._key
                if expanded:
                    order.append(n)
                    continue
                if k in state:
                    continue
                state.add(k)  # type: ignore[arg-type]
                value, where = lookup(k)  # type: ignore[arg-type]
                if value is not MISSING:
                    values[k] = value  # type: ignore[index]
                    record.append((n, "hit", where))
                    if n._dependents is not None:
                        self._verified(n, changed=n._prev_key not in (None, k))
                    continue
                stack.append((n, True))
                for d in reversed(n.deps):  # reversed: the first argument runs first
                    dk = d._key
                    consumers[dk] = consumers.get(dk, 0) + 1  # type: ignore[index]
                    if dk not in state:
                        stack.append((d, False))

    def _verified(self, n: Node, *, changed: bool) -> None:
        """Salsa's bookkeeping for a node that may go stale: verified now, changed when."""
        n._verified_at = self.revision
        if changed or n._prev_key is None and n._changed_at < 0:
            n._changed_at = self.revision
        n._prev_key = None
        n._cause = None

    # -- running -------------------------------------------------------------------------

    def run_node(self, n: Node) -> None:
        """Run ``n`` here (or reuse a result its inputs allow, or another pull produced)."""
        prepared = self.prepare(n)
        if prepared is None:
            return
        args, kwargs = prepared
        start = _perf()
        try:
            value = self.call(n, args, kwargs)
        except BaseException:
            self.release_claim(n)
            raise
        self.finish(n, value, _perf() - start)

    def prepare(self, n: Node) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Claim ``n`` for this pull and return its arguments, or None if it needs no run.

        None means the value is already in ``values``: backdated (early cutoff), or computed
        meanwhile by another pull of the same session (run-once across threads).
        """
        if n._prev_key is not None and self._backdate(n):
            return None
        if n.options.cache:
            value = self._claim(n)
            if value is not MISSING:
                self.values[n._key] = value  # type: ignore[index]
                self.record.append((n, "hit", "memory"))
                if n._dependents is not None:
                    self._verified(n, changed=n._prev_key is not None)
                self._release(n)
                return None
        return self.arguments(n)

    def _claim(self, n: Node) -> Any:
        """Own ``n``'s key; MISSING, or the value another pull produced meanwhile."""
        k: bytes = n._key  # type: ignore[assignment]
        session = self.session
        inflight = session._inflight
        if inflight.setdefault(k, self) is self:
            if session._pulls_started == self._started_alone:
                return MISSING  # no other pull since this one planned: nothing to re-check
        else:
            with session._cond:
                session._waiting += 1
                try:
                    while inflight.setdefault(k, self) is not self:
                        session._cond.wait(0.1)
                finally:
                    session._waiting -= 1
        value = self.store.get(k)
        if value is not MISSING:
            self.release_claim(n)
        return value

    def release_claim(self, n: Node) -> None:
        """Give up ``n``'s key (finished or failed) and wake pulls waiting for it."""
        session = self.session
        if session._inflight.get(n._key) is self:  # type: ignore[arg-type]
            del session._inflight[n._key]  # type: ignore[arg-type]
            if session._waiting:
                with session._cond:
                    session._cond.notify_all()

    def release_all_claims(self) -> None:
        """Give up every key this pull still owns (after an error or an interrupt)."""
        session = self.session
        owned = [k for k, owner in list(session._inflight.items()) if owner is self]
        for k in owned:
            session._inflight.pop(k, None)
        with session._cond:
            session._cond.notify_all()

    def arguments(self, n: Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``n``'s arguments with every dependency Node replaced by its value (by reference)."""
        if not n.deps:
            return n.args, n.kwargs
        values = self.values
        if n._nested:
            return _substitute(n.args, values), _substitute(n.kwargs, values)
        args = tuple([values[a._key] if isinstance(a, Node) else a for a in n.args])
        if not n.kwargs:
            return args, n.kwargs
        kwargs = {k: values[v._key] if isinstance(v, Node) else v for k, v in n.kwargs.items()}
        return args, kwargs

    def call(self, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``n``'s function; a CUDA out-of-memory error frees GPU entries and retries once."""
        try:
            return n.func(*args, **kwargs)
        except Exception as exc:
            if not cuda.is_cuda_oom(exc):
                raise self.node_error(n, exc) from exc
        freed = self.store.release_cuda()
        log.warning(
            "node %s ran out of GPU memory; released %d bytes of cached tensors, retrying once",
            n.name,
            freed,
        )
        try:
            return n.func(*args, **kwargs)
        except Exception as exc:
            raise self.node_error(n, exc) from exc

    def finish(self, n: Node, value: Any, seconds: float) -> None:
        """Take ``n``'s value: cache it, decide early cutoff, release finished inputs."""
        k: bytes = n._key  # type: ignore[assignment]
        self.values[k] = value
        store = self.store
        store.computes += 1
        options = n.options
        if options.cache:
            store.put(
                k,
                value,
                name=options.name,
                seconds=seconds,
                persistable=n._persistable,
                spill=options.spill,
                persist=options.persist,
            )
            self.release_claim(n)
        if n._dependents is not None:
            self.record.append((n, "ran", self._why(n)))
            self._verified(n, changed=not self._same_as_before(n, value))
        else:
            self.record.append((n, "ran", ""))
        self._release(n)
        if self.progress is not None:
            self.progress.tick()

    def _release(self, n: Node) -> None:
        consumers, values, keep = self.consumers, self.values, self.keep
        for d in n.deps:
            dk = d._key
            left = consumers[dk] - 1  # type: ignore[index]
            if left or dk in keep:
                consumers[dk] = left  # type: ignore[index]
            else:
                del consumers[dk]  # type: ignore[arg-type]
                values.pop(dk, None)  # type: ignore[arg-type]

    # -- early cutoff --------------------------------------------------------------------

    def _backdate(self, n: Node) -> bool:
        """Reuse the result under ``n``'s last verified key if no dependency changed since."""
        if not n.options.cutoff:
            return False
        verified_at = n._verified_at
        if any(d._changed_at > verified_at for d in n.deps):
            return False
        old = self.store.get(n._prev_key)  # type: ignore[arg-type]
        if old is MISSING:
            return False
        k: bytes = n._key  # type: ignore[assignment]
        self.values[k] = old
        if n.options.cache:
            previous = self.store.entry(n._prev_key)  # type: ignore[arg-type]
            self.store.put(
                k,
                old,
                name=n.options.name,
                seconds=previous.seconds if previous is not None else 0.0,
                persistable=n._persistable,
                spill=n.options.spill,
                persist=n.options.persist,
            )
        self.record.append((n, "cutoff", ""))
        self._verified(n, changed=False)
        self._release(n)
        return True

    def _same_as_before(self, n: Node, value: Any) -> bool:
        """True when ``value`` has the content of the result under ``n``'s previous key."""
        previous = n._prev_key
        if previous is None:
            return n._changed_at >= 0
        if n.func is _input_value:
            return previous == n._key
        if not n.options.cutoff or not n._dependents:
            return False  # nothing to save: hashing the result would be wasted work
        old = self.store.get(previous)
        if old is MISSING:
            return False
        return content_hash(old)[0] == content_hash(value)[0]

    def _why(self, n: Node) -> str:
        if n._prev_key is None:
            return "new" if n._changed_at < 0 else "not cached"
        changed = [d.name for d in n.deps if d._changed_at > n._verified_at]
        if changed:
            return "changed: " + ", ".join(changed)
        return "input changed: " + (n._cause.name if n._cause is not None else "?")

    # -- errors --------------------------------------------------------------------------

    def node_error(self, n: Node, exc: BaseException, *, detail: str | None = None) -> NodeError:
        """A NodeError naming ``n`` and the path from the pulled node down to it."""
        path = [p.name for p in path_to(self.roots, n)]
        key = n._key.hex() if n._key is not None else None
        return NodeError(n.name, path, exc, key=key, detail=detail)

    def results(self) -> tuple[Any, ...]:
        """The values of the roots, in pull order; the pull lets go of every value."""
        results = tuple(self.values[r._key] for r in self.roots)  # type: ignore[index]
        self.values.clear()
        self.consumers.clear()
        return results


def _substitute(obj: Any, values: dict[bytes, Any]) -> Any:
    """Rebuild list/tuple/dict/set containers with Nodes replaced by their values."""
    if isinstance(obj, Node):
        return values[obj._key]  # type: ignore[index]
    if isinstance(obj, dict):
        pairs = {_substitute(k, values): _substitute(v, values) for k, v in obj.items()}
        return pairs if type(obj) is dict else _rebuild(obj, pairs)
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_substitute(item, values) for item in obj]
        if hasattr(obj, "_fields"):  # a namedtuple takes its fields as arguments
            return type(obj)(*items)
        return type(obj)(items) if type(obj) in (list, tuple, set, frozenset) else _rebuild(
            obj, items
        )
    return obj


def _rebuild(original: Any, contents: Any) -> Any:
    """A container subclass rebuilt with new contents, or the plain type when it can't be."""
    try:
        return type(original)(contents)
    except TypeError:
        return contents
