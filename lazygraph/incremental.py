"""The incremental runtime, in salsa's words: revisions, staleness, verification, backdating.

Covers: the process-wide *revision* and the graph lock; the quiet gate between
``Input.set()`` and running pulls (a set waits for other threads' pulls, new pulls wait for
a pending set); pushing staleness down the weak reverse edges (``mark_stale``); each pull's
*verified at* / *changed at* bookkeeping (``Verifier``), also for stale nodes it skips; the
decisions a pull makes about a stale node: may it be *backdated* (``backdate``), did
its recomputed result change (``same_as_before``: early cutoff), and the reason
``explain()`` shows (``why``). Does not cover: keys (``keys``), running or storing (the pull
in ``scheduler`` acts on these decisions), or nodes themselves (``node``: duck-typed here).
docs/incremental.md explains the algorithm.

Why the revision is process-wide and lives here, not in a Session: Nodes and Inputs belong
to no session. One ``Input.set()`` makes nodes stale for every session that later pulls
them, and a node's *verified at* / *changed at* are compared by whichever session pulls it
next, so they must be read on one clock. The graph lock that guards keys and reverse edges
is process-wide for the same reason.

>>> start = current_revision()
>>> new_revision() == start + 1 == current_revision()
True
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .hashing import content_hash
from .redefinitions import kept_old_result
from .repull import attention
from .store.base import MISSING

__all__ = [
    "BACKDATED",
    "Verifier",
    "backdate",
    "begin_pull",
    "changed_since",
    "current_revision",
    "end_pull",
    "graph_lock",
    "input_value",
    "mark_stale",
    "new_revision",
    "same_as_before",
    "refresh_watched",
    "wait_for_pulls",
    "watch",
    "watched",
    "why",
]

#: The record's outcome for a stale node whose last verified result was reused (backdated).
BACKDATED = "backdated"

# Input.set() and node construction both touch reverse edges; the lock keeps a set() from
# racing another set() on an overlapping graph. Building plain nodes never takes it.
graph_lock = threading.RLock()
_revision = 0
# Pulls read node keys and write salsa bookkeeping while they run; Input.set() rewrites
# both. So set() waits until no pull of another thread is running, and new pulls wait
# while a set() is pending (it would starve otherwise). A pull's own thread may set().
_quiet = threading.Condition(graph_lock)
_pulls: dict[int, int] = {}  # thread id -> running pulls
_setters_waiting = 0


# -- sources re-checked by every pull (lazygraph.file) ------------------------------------

# Process-wide like the revision: a source belongs to no session. id -> weak reference, so a
# dropped source stops being checked; a dict, so "none watched" is one truth test per pull.
watched: dict[int, Any] = {}


def watch(source: Any) -> None:
    """Have every pull of this process call ``source.refresh()`` first (weakly held)."""
    key = id(source)

    def drop(ref: Any) -> None:
        if watched.get(key) is ref:  # not a newer source that reuses the id
            del watched[key]
            if not watched:
                attention.discard("watched")

    watched[key] = weakref.ref(source, drop)
    attention.add("watched")


def refresh_watched() -> None:
    """Let each watched source check itself (a ``stat``) and ``set()`` itself if it changed.

    Skipped inside a pull of this thread (a node calling ``compute()``): the outer pull's
    keys stand until it ends.
    """
    if threading.get_ident() in _pulls:
        return
    for ref in list(watched.values()):
        source = ref()
        if source is not None:
            source.refresh()


def input_value(value: Any) -> Any:
    """The function behind every Input: its value, as given (salsa's *input*)."""
    return value


def current_revision() -> int:
    """The number of Input (and code) changes so far in this process (salsa's *revision*)."""
    return _revision


def new_revision() -> int:
    """Start a new revision (an Input or a function's code changed) and return its number."""
    global _revision
    with graph_lock:
        _revision += 1
        return _revision


# -- the quiet gate between Input.set() and running pulls ---------------------------------


def begin_pull() -> None:
    """Register a running pull of this thread (``Input.set`` waits for it)."""
    me = threading.get_ident()
    with _quiet:
        while _setters_waiting and me not in _pulls:
            _quiet.wait()
        _pulls[me] = _pulls.get(me, 0) + 1


def end_pull() -> None:
    """Unregister a pull started by ``begin_pull`` in this thread."""
    me = threading.get_ident()
    with _quiet:
        left = _pulls.get(me, 0) - 1
        if left > 0:
            _pulls[me] = left
        else:
            _pulls.pop(me, None)
        _quiet.notify_all()


def wait_for_pulls() -> None:
    """Wait until only this thread pulls; the caller holds ``graph_lock`` (held on return)."""
    global _setters_waiting
    me = threading.get_ident()
    if not _pulls or list(_pulls) == [me]:
        return
    _setters_waiting += 1
    try:
        while any(thread != me for thread in _pulls):
            _quiet.wait()
    finally:
        _setters_waiting -= 1
        _quiet.notify_all()


# -- push: staleness ------------------------------------------------------------------------


def mark_stale(start: Any) -> None:
    """Push a change from Input ``start`` downstream: forget keys, keep the verified one.

    A node without a key is already stale and so are its dependents (a dependent's key
    needs its dependencies' keys), so the walk stops there: it touches each node once.
    """
    stack: list[Any] = [start]
    while stack:
        node = stack.pop()
        if node._key is None and node is not start:
            continue
        if node._key is not None and node._verified_key is None:
            node._verified_key = node._key
        node._key = None
        node._cause = start
        if node._dependents:
            for edge in list(node._dependents.values()):  # a copy: the GC may drop edges
                dependent = edge()
                if dependent is not None:
                    stack.append(dependent)


def changed_since(d: Any, revision: int) -> bool:
    """True when dependency ``d``'s result may differ from the one it had at ``revision``.

    ``d`` was verified by this pull unless another node with the same key stood in for it
    (equal calls built twice, e.g. a re-run cell): then ``d`` itself still has its last
    verified key in ``_verified_key``, and a different current key counts as a change.
    """
    if d._changed_at > revision:
        return True
    verified = d._verified_key
    return verified is not None and verified != d._key


# -- pull: verification ---------------------------------------------------------------------


class Verifier:
    """One pull's salsa bookkeeping: which revision it verifies at, and the twins it skips.

    ``visited`` maps a key to the node the pull's plan visited for it (the plan fills it);
    ``twins`` maps ``id(visited node)`` to the stale nodes with the same key the plan did
    not visit (equal calls built twice): they are verified with their visited twin.
    """

    __slots__ = ("revision", "visited", "twins")

    def __init__(self, revision: int) -> None:
        self.revision = revision
        self.visited: dict[bytes, Any] = {}
        self.twins: dict[int, list[Any]] = {}

    def verified(self, n: Any, *, changed: bool) -> None:
        """Salsa's bookkeeping for a node that may go stale: verified now, changed when."""
        previous = n._verified_key
        n._verified_at = self.revision
        if changed or previous is None and n._changed_at < 0:
            n._changed_at = self.revision
            n._result_hash = None
        n._verified_key = None
        n._cause = None
        if self.twins:
            twins = self.twins.pop(id(n), None)
            if twins:
                self._verify_twins(twins, previous, changed=changed)

    def _verify_twins(self, twins: list[Any], previous: bytes | None, *, changed: bool) -> None:
        """Verify the unvisited twins of a node just verified: same key, so same result.

        A twin whose last verified key was the visited node's shares its history, so it
        changed exactly when that node did; any other changed unless its key came back.
        """
        for t in twins:
            last = t._verified_key
            if last is None:
                continue
            self.verified(t, changed=last != t._key and (changed or last != previous))
            self.verify_unvisited(list(t.deps))

    def verify_unvisited(self, candidates: list[Any]) -> None:
        """Verify the stale nodes whose keys were re-resolved but that this pull skips.

        They sit above a hit, or are twins of a node the pull visits. A dependent verified
        now has them as its baseline; left with bookkeeping from an older revision, a later
        backdate of that dependent would compare against the wrong one (an Input set away
        and back with the result in between evicted). Their result is the one under their
        current key, so they changed unless that key is the last verified one.
        """
        visited = self.visited
        stack = candidates
        while stack:
            n = stack.pop()
            if n._verified_key is None or n._key is None or visited.get(n._key) is n:
                continue  # clean, not resolved, or visited (the pull verifies it)
            self.verified(n, changed=n._verified_key != n._key)
            stack.extend(n.deps)

    def settle_hits(self, hits: set[int]) -> list[Any]:
        """Take the twins of nodes already verified as hits: they need no waiting."""
        done = [h for h in self.twins if h in hits]
        return [t for h in done for t in self.twins.pop(h)]

    def close(self) -> None:
        """At the end of a pull: verify twins whose visited node never finished (an error)."""
        if self.twins:
            rest = [t for twins in self.twins.values() for t in twins]
            self.twins.clear()
            self.verify_unvisited(rest)
        self.visited = {}


# -- pull: decisions about a stale node -----------------------------------------------------


def backdate(n: Any, store: Any) -> Any:
    """Stale ``n``'s last verified result if nothing it reads changed since, else MISSING.

    The result found is also put in ``store`` under ``n``'s new key (the same object, no
    run). No result is hashed here, so this holds for ``cutoff=False`` nodes too
    (``cutoff`` is about hashing a node's own result, see ``same_as_before``).
    """
    verified_at = n._verified_at
    if verified_at < 0 or n.options._code_changed_at > verified_at:
        return MISSING  # never verified (no baseline to compare with), or code changed
    if kept_old_result(n):
        return MISSING  # its last result was kept from replaced code (S3.9): not a baseline
    for d in n.deps:  # noqa: SIM110 - a loop: cheaper than any(genexpr), once per stale node
        if changed_since(d, verified_at):
            return MISSING
    verified_key = n._verified_key
    old = store.find(verified_key)[0]  # a reuse counts as a hit; not finding it, as no miss
    options = n.options
    if old is not MISSING and options.cache:
        previous = store.entry(verified_key)
        store.put(
            n._key,
            old,
            name=options.name,
            seconds=previous.seconds if previous is not None else 0.0,
            persistable=n._persistable,
            spill=options.spill,
            persist=options.persist,
        )
    return old


def same_as_before(
    n: Any, value: Any, *, load: Any, digest: bytes | None = None
) -> tuple[bool, bytes | None]:
    """Whether ``value`` has the content of ``n``'s last verified result; its hash.

    ``load(key)`` fetches an earlier result (or ``MISSING``). The hash of the new result is
    kept on the node by the caller, so the next recomputation hashes only its own result
    (not the old one again, possibly read back from disk). ``digest``: that hash, when it
    was computed where the value lives (a Dask worker); it is then not computed here.
    """
    previous = n._verified_key
    if previous is None:  # computed again after an eviction (or the first time)
        return n._changed_at >= 0, digest
    if n.func is input_value:
        if previous == n._key:
            return True, None
        # An Input holding a node passes that node's result on: unchanged if it was not
        # set since (its _cause would be itself) and the node's result did not change.
        verified_at = n._verified_at
        same = (
            n._cause is not n
            and bool(n.deps)
            and not any(changed_since(d, verified_at) for d in n.deps)
        )
        return same, None
    if not n.options.cutoff or not n._dependents:
        # Nothing depends on it (dead edges remove themselves): hashing would be wasted.
        return False, None
    if digest is None:
        digest = content_hash(value)[0]
    old = n._result_hash
    if old is None:
        old_value = load(previous)
        if old_value is MISSING:
            return False, digest
        old = content_hash(old_value)[0]
    return old == digest, digest


def why(n: Any, changed: bool) -> str:
    """Why a node that may go stale ran, and whether its result changed (for explain)."""
    if n._verified_key is None:
        new = n._changed_at < 0
        if n.func is input_value:
            return "new" if new else "unchanged"
        return "new" if new else "not cached"
    if n.func is input_value:
        return "changed" if changed else "unchanged"
    verified_at = n._verified_at
    if n.options._code_changed_at > verified_at or kept_old_result(n):
        reason = "code changed"
    else:
        names = [d.name for d in n.deps if changed_since(d, verified_at)]
        # nothing it reads changed, yet it ran: its earlier result was evicted
        reason = "changed: " + ", ".join(dict.fromkeys(names)) if names else "not cached"
    return reason if changed else reason + "; result unchanged"
