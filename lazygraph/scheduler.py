"""The pull: resolve keys, plan what is missing, run it once, record what happened.

Covers: key resolution over the stale part of a graph, the plan (missing nodes in
dependency order, pinned hits, consumer counts so values are released after their last
consumer), running one node (arguments by reference, CUDA out-of-memory retry, NodeError),
early cutoff (salsa's *backdating*: a recomputed node whose result hash did not change
lets its dependents keep their results), salsa's verified-at / changed-at bookkeeping (also
for stale nodes a pull skips: above a hit, or equal calls built twice), code changes seen
as new revisions, and run-once across threads. Does not cover: which thread or process
runs a node (``executors``) or where results are kept (``store``). docs/incremental.md
explains the algorithm.

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
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import xxhash

from . import cuda
from .errors import NodeError
from .graph import path_to, toposort
from .hashing import content_hash, encode_scalars
from .keys import _CACHE, SCHEME, _still_valid, function_fingerprint, prefixed_key
from .node import (
    Node,
    NodeOptions,
    _graph_lock,
    _input_value,
    begin_pull,
    current_revision,
    end_pull,
    new_revision,
)
from .progress import Progress
from .sizing import FAST_FOOTPRINTS, footprint
from .store.base import MISSING, Result

if TYPE_CHECKING:
    from .session import Session

__all__ = ["resolve_keys", "key_one", "Pull"]

_perf = time.perf_counter
_digest = xxhash.xxh3_128_digest
_BATCH = 64  # small results the sync loop hands to the store per call
# Results this small with no shared buffer (one private part) may wait in a batch: 64 of
# them hold at most 4 MiB outside the store's budget. No array, frame or tensor is that.
_SMALL = 64 * 1024
_RUN_NEXT = object()  # the plan's stack marker: its dependencies are planned, order it
log = logging.getLogger(__name__)
# The code fingerprint last seen per function identity (module, qualname, node name), so a
# re-run notebook cell that redefines a node function can be told apart from a new one.
_code_seen: dict[tuple[str, str, str], bytes] = {}


def resolve_keys(roots: Iterable[Node]) -> None:
    """Compute the key of every node above ``roots`` that has none, dependencies first.

    Only stale or never-keyed nodes are visited: a node with a key has keyed ancestors.
    Raises ``CycleError`` if the stale part of the graph has a cycle. Holds the graph lock,
    so an ``Input.set()`` in another thread cannot leave a key built from a mix of values.
    """
    with _graph_lock:
        _resolve(roots)


def _resolve(roots: Iterable[Node]) -> None:
    stack = [n for n in roots if n._key is None]
    expanded: set[Node] = set()  # Nodes hash by identity
    prefixes: dict[NodeOptions, bytes] = {}  # SCHEME + fingerprint, per factory
    while stack:
        n = stack[-1]
        if n._key is not None:
            stack.pop()
            continue
        if n not in expanded:
            pending = []  # a loop, not a comprehension: cheaper for a few items on 3.11
            for d in n.deps:
                if d._key is None:
                    pending.append(d)
            if pending:
                expanded.add(n)
                for d in pending:
                    if d in expanded:
                        toposort(stack)  # raises CycleError naming the cycle
                stack.extend(pending)
                continue
        stack.pop()
        prefix = prefixes.get(n.options)
        if prefix is None:
            prefix = prefixes[n.options] = _key_prefix(n)
        _set_key(n, prefix)


def key_one(n: Node) -> None:
    """Key ``n``, whose dependencies all have keys (the new-Node hit path)."""
    if n._dependents is None:  # no Input upstream: no set() can race with this key
        _set_key(n, _key_prefix(n))
        return
    with _graph_lock:
        if n._key is None:
            _set_key(n, _key_prefix(n))


def _key_prefix(n: Node) -> bytes:
    """``SCHEME`` + ``n``'s code fingerprint, from its factory while the cache entry is valid."""
    options = n.options
    entry = options._fp_entry
    if entry is not None and entry.ref() is n.func and _still_valid(entry.checks):
        return options._key_prefix
    fp = function_fingerprint(n.func, options.version)
    options._fp_entry = _CACHE.entry(n.func, options.version)
    options._key_prefix = SCHEME + fp
    if options._fingerprint != fp:
        _code_changed(n, fp)
    return options._key_prefix


def _set_key(n: Node, prefix: bytes) -> None:
    data = None if n.kwargs else encode_scalars(n.args)
    if data is not None:  # prefixed_key's one-shot path, without its call: once per node
        key, persistable = _digest(prefix + data), True
    else:
        key, persistable = prefixed_key(prefix, n.args, n.kwargs)
    if persistable:
        for dep in n.deps:
            if not dep._persistable:
                persistable = False
                break
    n._persistable = persistable
    n._key = key


def _code_changed(n: Node, fp: bytes) -> None:
    """Note a fingerprint that differs from the one ``n``'s factory used before.

    A factory keying for the first time is compared with the last factory of the same name
    (a re-run cell: explain() says "code changed"). A factory whose own fingerprint changed
    (a helper it calls was redefined) starts a new revision, so stale nodes built from it
    are not backdated to results of the old code.
    """
    options = n.options
    module = getattr(n.func, "__module__", None) or ""
    ident = (module, getattr(n.func, "__qualname__", ""), options.name)
    if options._fingerprint is None:
        seen = _code_seen.get(ident)
        options._replaced = seen is not None and seen != fp
    else:
        options._code_changed_at = new_revision()
    options._fingerprint = fp
    _code_seen[ident] = fp


Outcome = tuple[Node, str, str]  # (node, "hit" | "ran" | "cutoff", detail)


class Record(Sequence[Outcome]):
    """What a pull did to each node it visited, in order: ``(node, outcome, detail)``.

    The sync loop logs a node that ran for the first time as the Node alone, the most
    common line, so it allocates nothing per node for it; reading expands it.
    """

    __slots__ = ("log",)

    def __init__(self) -> None:
        self.log: list[Node | Outcome] = []

    def __len__(self) -> int:
        return len(self.log)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [_outcome(item) for item in self.log[index]]
        return _outcome(self.log[index])

    def __iter__(self) -> Iterator[Outcome]:
        return map(_outcome, self.log)


def _outcome(item: Node | Outcome) -> Outcome:
    return (item, "ran", "new") if isinstance(item, Node) else item


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
        self.record = Record()
        self._state: dict[bytes, Node] = {}  # key -> the node planning visited for it
        self._twins: dict[int, list[Node]] = {}  # id(visited node) -> its unvisited twins
        self._running = True
        begin_pull()  # until results() or release_all_claims(): Input.set() waits
        self._started_alone = session._pull_started(self)
        try:
            resolve_keys(roots)
            self.revision = current_revision()  # after resolve_keys: a code change bumps it
            self.keep = {r._key for r in roots}
            # Values this pull holds are swapped for their memory maps once spilled, so a
            # node reading many large inputs at once does not hold them all in RAM.
            self.store.pin(self.values)
            self._plan()
        except BaseException:  # e.g. a CycleError: this pull never ran
            self._end()
            session._pull_ended(self, ran=False)
            raise
        self.progress = Progress(len(self.order)) if session.config.progress else None

    def _end(self) -> None:
        if self._running:
            self._running = False
            self.store.unpin(self.values)
            if self._twins:  # their visited twin never finished (an error): be conservative
                rest = [t for twins in self._twins.values() for t in twins]
                self._twins.clear()
                self._verify_unvisited(rest)
            self._state = {}
            end_pull()

    # -- planning ------------------------------------------------------------------------

    def _plan(self) -> None:
        find = self.store.find
        misses = 0
        values, order, consumers = self.values, self.order, self.consumers
        record = self.record.log
        state = self._state
        unvisited: list[Node] = []  # may hold stale bookkeeping: see _verify_unvisited
        hits: set[int] = set()
        for root in self.roots:
            stack: list[Any] = [root]  # Nodes to visit; _RUN_NEXT: the Node below it is ready
            while stack:
                n = stack.pop()
                if n is _RUN_NEXT:
                    order.append(stack.pop())
                    continue
                k: bytes = n._key
                seen = state.get(k)
                if seen is not None:
                    if seen is not n and n._prev_key is not None:
                        self._twins.setdefault(id(seen), []).append(n)
                    continue
                state[k] = n
                value, where = find(k)
                if value is not MISSING:
                    values[k] = value
                    record.append((n, "hit", where))
                    if n._dependents is not None:
                        last = n._prev_key
                        if last is not None or n._changed_at < 0:
                            # stale or first verified: its dependencies may be stale too (a
                            # clean node's are not: marking them would have marked it)
                            unvisited.extend(n.deps)
                        self._verified(n, changed=last not in (None, k))
                        hits.add(id(n))
                    continue
                misses += 1
                stack.append(n)
                stack.append(_RUN_NEXT)
                for d in reversed(n.deps):  # reversed: the first argument runs first
                    dk: bytes = d._key
                    consumers[dk] = consumers.get(dk, 0) + 1
                    seen = state.get(dk)
                    if seen is None:
                        stack.append(d)
                    elif seen is not d and d._prev_key is not None:
                        self._twins.setdefault(id(seen), []).append(d)
        self.store.count_misses(misses)
        for visited in [h for h in self._twins if h in hits]:  # already verified: no waiting
            unvisited.extend(self._twins.pop(visited))
        if unvisited:
            self._verify_unvisited(unvisited)

    def _verify_unvisited(self, candidates: list[Node]) -> None:
        """Verify the stale nodes whose keys were re-resolved but that this pull skips.

        They sit above a hit, or are equal calls built twice (twins) of a node the pull
        visits. A dependent verified now has them as its baseline; left with bookkeeping
        from an older revision, a later backdate of that dependent would compare against
        the wrong one (an Input set away and back with the result in between evicted).
        Their result is the one under their current key, so they changed unless that key
        is the last verified one.
        """
        state = self._state
        stack = candidates
        while stack:
            n = stack.pop()
            if n._prev_key is None or n._key is None or state.get(n._key) is n:
                continue  # clean, not resolved, or visited (the pull verifies it)
            self._verified(n, changed=n._prev_key != n._key)
            stack.extend(n.deps)

    def _verified(self, n: Node, *, changed: bool) -> None:
        """Salsa's bookkeeping for a node that may go stale: verified now, changed when."""
        previous = n._prev_key
        n._verified_at = self.revision
        if changed or previous is None and n._changed_at < 0:
            n._changed_at = self.revision
            n._result_hash = None
        n._prev_key = None
        n._cause = None
        if self._twins:
            twins = self._twins.pop(id(n), None)
            if twins:
                self._verify_twins(twins, previous, changed=changed)

    def _verify_twins(self, twins: list[Node], previous: bytes | None, *, changed: bool) -> None:
        """Verify the unvisited twins of a node just verified: same key, so same result.

        A twin whose last verified key was the visited node's shares its history, so it
        changed exactly when that node did; any other changed unless its key came back.
        """
        for t in twins:
            last = t._prev_key
            if last is None:
                continue
            self._verified(t, changed=last != t._key and (changed or last != previous))
            self._verify_unvisited(list(t.deps))

    # -- running -------------------------------------------------------------------------

    def run_all(self) -> None:
        """Run the whole plan in this thread, dependencies first (the sync executor).

        The common node (cached, never stale, plain positional arguments, claimed at once
        while no other pull started) is run and finished inline: ``run_node`` and ``finish``
        are layers of calls that cost more than the rest of its per-node work. Its result
        joins a batch that goes to the store in one call when it holds ``_BATCH`` small
        results, before any other node runs, at the end, and on an error. A result that is
        not small goes at once (the store's byte budget must see it). Claims on batched
        keys are held until they are stored, so a pull waiting for one finds it.
        """
        values, session, alone = self.values, self.session, self._started_alone
        inflight = session._inflight
        record, revision = self.record.log, self.revision
        consumers, keep = self.consumers, self.keep
        batch: list[Result] = []
        fast_footprint = FAST_FOOTPRINTS.get
        try:
            for n in self.order:
                k: bytes = n._key  # type: ignore[assignment]
                options = n.options
                if (
                    n._dependents is not None
                    or n._nested
                    or n.kwargs
                    or not options.cache
                    or session._pulls_started != alone
                    or inflight.setdefault(k, self) is not self
                ):
                    if batch:
                        self._store_batch(batch)
                    self.run_node(n)
                    continue
                deps = n.deps
                args = n.args
                if not deps:
                    pass
                elif deps is not args:  # scalars among the Nodes
                    args = tuple([values[a._key] if isinstance(a, Node) else a for a in args])  # type: ignore[index]
                elif len(args) == 1:  # every argument is a Node (Node shares the tuple)
                    args = (values[args[0]._key],)
                elif len(args) == 2:
                    args = (values[args[0]._key], values[args[1]._key])
                else:
                    args = tuple([values[a._key] for a in args])
                start = _perf()
                try:
                    value = n.func(*args)
                except Exception as exc:
                    value = self._failed(n, args, {}, exc)
                except BaseException:
                    self.release_claim(n)
                    raise
                seconds = _perf() - start
                values[k] = value
                sizer = fast_footprint(type(value))
                parts = sizer(value) if sizer is not None else footprint(value)
                batch.append((k, value, parts, seconds, options, n._persistable))
                if n._verified_at < 0:
                    record.append(n)  # (n, "ran", "new") in the record's short form
                else:
                    record.append((n, "ran", "not cached"))
                n._verified_at = revision
                for d in deps:  # _release, inline
                    dk: bytes = d._key  # type: ignore[assignment]
                    left = consumers[dk] - 1
                    if left or dk in keep:
                        consumers[dk] = left
                    else:
                        del consumers[dk]
                        values.pop(dk, None)
                part = parts[0]
                small = len(parts) == 1 and part[0] is None and part[1] < _SMALL  # may wait
                if not small or len(batch) == _BATCH:
                    self._store_batch(batch)
                del args, value  # the next node must not keep this one's inputs alive
        finally:
            if batch:
                self._store_batch(batch)

    def _store_batch(self, batch: list[Result]) -> None:
        """Hand ``batch`` to the store, release its keys' claims and empty it."""
        try:
            self.store.insert_many(batch)
        finally:
            inflight = self.session._inflight
            for result in batch:
                if inflight.get(result[0]) is self:
                    del inflight[result[0]]
            if self.session._waiting:
                with self.session._cond:
                    self.session._cond.notify_all()
            if self.progress is not None:
                self.progress.tick(len(batch))
            batch.clear()

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
                self.record.log.append((n, "hit", "memory"))
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
        self._end()

    def arguments(self, n: Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``n``'s arguments with every dependency Node replaced by its value (by reference)."""
        if not n.deps:
            return n.args, n.kwargs
        values = self.values
        if n._nested:
            return _substitute(n.args, values), _substitute(n.kwargs, values)
        args = tuple([values[a._key] if isinstance(a, Node) else a for a in n.args])  # type: ignore[index]
        if not n.kwargs:
            return args, n.kwargs
        kwargs = {
            k: values[v._key] if isinstance(v, Node) else v  # type: ignore[index]
            for k, v in n.kwargs.items()
        }
        return args, kwargs

    def call(self, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``n``'s function; a CUDA out-of-memory error frees GPU entries and retries once."""
        try:
            return n.func(*args, **kwargs)
        except Exception as exc:
            return self._failed(n, args, kwargs, exc)

    def _failed(
        self, n: Node, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> Any:
        """After ``n`` raised ``exc``: retry once if it was a CUDA OOM, else raise NodeError.

        The caller's claim on ``n`` is released when this raises.
        """
        try:
            if not cuda.is_cuda_oom(exc):
                raise self.node_error(n, exc) from exc
            freed = self.store.release_cuda()
            log.warning(
                "node %s ran out of GPU memory; released %d bytes of cached tensors, "
                "retrying once",
                n.name,
                freed,
            )
            try:
                return n.func(*args, **kwargs)
            except Exception as again:
                raise self.node_error(n, again) from again
        except BaseException:
            self.release_claim(n)
            raise

    def finish(self, n: Node, value: Any, seconds: float) -> None:
        """Take ``n``'s value: cache it, decide early cutoff, release finished inputs."""
        k: bytes = n._key  # type: ignore[assignment]
        self.values[k] = value
        options = n.options
        if options.cache:
            self.store.insert_many([(k, value, footprint(value), seconds, options, n._persistable)])
            self.release_claim(n)
        elif n.func is not _input_value:  # an Input's value is not a computation
            self.store.note_compute(options.name, seconds)
        if n._dependents is not None:
            same, digest = self._same_as_before(n, value)
            self.record.log.append((n, "ran", self._why(n, not same)))
            self._verified(n, changed=not same)
            if digest is not None:
                n._result_hash = digest
        else:
            # _verified_at is otherwise unused on a node that never goes stale: here it
            # tells a first computation from a recomputation after eviction.
            self.record.log.append((n, "ran", "new" if n._verified_at < 0 else "not cached"))
            n._verified_at = self.revision
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
        """Reuse the result under ``n``'s last verified key if no dependency changed since.

        No result is hashed here, so this holds for ``cutoff=False`` nodes too (``cutoff``
        is about hashing a node's own result, see ``_same_as_before``).
        """
        verified_at = n._verified_at
        if verified_at < 0 or n.options._code_changed_at > verified_at:
            return False  # never verified (no baseline to compare with), or code changed
        for d in n.deps:
            if _changed_since(d, verified_at):
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
        self.record.log.append((n, "cutoff", ""))
        self._verified(n, changed=False)
        self._release(n)
        return True

    def _same_as_before(self, n: Node, value: Any) -> tuple[bool, bytes | None]:
        """Whether ``value`` has the content of ``n``'s last verified result; its hash.

        The hash of the new result is kept on the node, so the next recomputation hashes
        only its own result (not the old one again, possibly read back from disk).
        """
        previous = n._prev_key
        if previous is None:  # computed again after an eviction (or the first time)
            return n._changed_at >= 0, None
        if n.func is _input_value:
            if previous == n._key:
                return True, None
            # An Input holding a node passes that node's result on: unchanged if it was not
            # set since (its _cause would be itself) and the node's result did not change.
            verified_at = n._verified_at
            same = (
                n._cause is not n
                and bool(n.deps)
                and not any(_changed_since(d, verified_at) for d in n.deps)
            )
            return same, None
        if not n.options.cutoff or not _has_dependents(n):
            return False, None  # nothing to save: hashing the result would be wasted work
        digest: bytes = content_hash(value)[0]
        old = n._result_hash
        if old is None:
            old_value = self.store.get(previous)
            if old_value is MISSING:
                return False, digest
            old = content_hash(old_value)[0]
        return old == digest, digest

    def _why(self, n: Node, changed: bool) -> str:
        """Why a node that may go stale ran, and whether its result changed (for explain)."""
        if n._prev_key is None:
            new = n._changed_at < 0
            if n.func is _input_value:
                return "new" if new else "unchanged"
            return "new" if new else "not cached"
        if n.func is _input_value:
            return "changed" if changed else "unchanged"
        verified_at = n._verified_at
        if n.options._code_changed_at > verified_at:
            why = "code changed"
        else:
            names = [d.name for d in n.deps if _changed_since(d, verified_at)]
            # nothing it reads changed, yet it ran: its earlier result was evicted
            why = "changed: " + ", ".join(dict.fromkeys(names)) if names else "not cached"
        return why if changed else why + "; result unchanged"

    # -- errors --------------------------------------------------------------------------

    def node_error(self, n: Node, exc: BaseException, *, detail: str | None = None) -> NodeError:
        """A NodeError naming ``n`` and the path from the pulled node down to it."""
        path = [p.name for p in path_to(self.roots, n)]
        key = n._key.hex() if n._key is not None else None
        return NodeError(n.name, path, exc, key=key, detail=detail)

    def results(self) -> tuple[Any, ...]:
        """The values of the roots, in pull order; the pull lets go of every value."""
        try:
            results = tuple(self.values[r._key] for r in self.roots)  # type: ignore[index]
        finally:
            self._end()
        self.values.clear()
        self.consumers.clear()
        return results


def _has_dependents(n: Node) -> bool:
    """True when some node built on ``n`` is still alive (dead edges remove themselves)."""
    return bool(n._dependents)


def _changed_since(d: Node, revision: int) -> bool:
    """True when dependency ``d``'s result may differ from the one it had at ``revision``.

    ``d`` was verified by this pull unless another node with the same key stood in for it
    (equal calls built twice, e.g. a re-run cell): then ``d`` itself still has its last
    verified key in ``_prev_key``, and a different current key counts as a change.
    """
    if d._changed_at > revision:
        return True
    previous = d._prev_key
    return previous is not None and previous != d._key


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
