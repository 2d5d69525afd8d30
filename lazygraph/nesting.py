"""Pulls inside pulls: which pull (and node) each thread is running, for nested computes.

A node's function may call ``compute()`` (a nested pull). Each thread keeps a stack of
frames ``[pull, node]``: a pull pushes ``[pull, None]`` while it runs in the thread that
made it (the node is whichever it is running: the sync loop does not say, to stay fast),
a pool worker pushes ``[pull, node]`` while it runs ``node`` for ``pull``. A pull made
while a frame is on top of its thread's stack is nested in that frame; the scheduler
follows these links to tell a pull that would wait for itself (a cycle: ``CycleError``)
from one that waits for another thread, and the thread executor runs a pull nested in
one of its workers in that worker (a pool waiting on itself would starve). Covers: the
stacks. Does not cover: what is done with them (``scheduler``, ``executors.threads``).

>>> outer = push("pull A")
>>> current() is outer, current()[0]
(True, 'pull A')
>>> pop(outer); current() is None
True
"""

from __future__ import annotations

import threading
from typing import Any

from .errors import CycleError

__all__ = ["Frame", "check_not_waiting_on_itself", "current", "in_worker", "pop", "push"]

Frame = list[Any]  # [pull, node or None]; mutable: a loop may say which node it runs

_local = threading.local()


def _stack() -> list[Frame]:
    try:
        stack: list[Frame] = _local.stack
    except AttributeError:
        stack = _local.stack = []
        _local.workers = 0
    return stack


def current() -> Frame | None:
    """The innermost frame of this thread, or None outside any pull."""
    stack = _stack()
    return stack[-1] if stack else None


def push(pull: Any, node: Any = None, *, worker: bool = False) -> Frame:
    """Enter ``pull`` (running ``node``, if known) in this thread; ``worker``: for a pool."""
    frame: Frame = [pull, node]
    _stack().append(frame)
    if worker:
        _local.workers += 1
    return frame


def pop(frame: Frame, *, worker: bool = False) -> None:
    """Leave ``frame`` (and any frame left above it by an interrupted pull)."""
    stack = _stack()
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is frame:
            del stack[i:]
            break
    if worker:
        _local.workers -= 1


def in_worker() -> bool:
    """True while this thread runs a node for a pool (a pull made here must run here)."""
    _stack()
    return bool(_local.workers)


def check_not_waiting_on_itself(pull: Any, n: Any, owner: Any) -> None:
    """Raise ``CycleError`` if ``owner``, which holds ``n``'s key, runs it in a node that
    ``pull`` is nested in: waiting would be waiting for itself (S7.2).

    Follows ``pull.parent`` frames up. A frame naming its node holds that node's key in
    this chain; a frame without one is a pull suspended in this thread, which holds no key
    but the one it runs (its batch was stored when the pull below it started). An owner
    met with another node runs ``n`` in another thread: waiting for it is fine.
    """
    running: list[Any] = []
    frame = pull.parent
    while frame is not None:
        above, node = frame
        here = node if node is not None else _running_node(above)
        if here is not None:
            running.append(here)
        if above is owner:
            if node is None or node._key == n._key:
                cycle = [*reversed(running), n]
                raise CycleError(
                    [m.name for m in cycle],
                    cycle,
                    reason="a node's function computes itself, directly or through others",
                )
            return
        frame = above.parent


def _running_node(pull: Any) -> Any:
    """The node ``pull`` runs in its own thread now: it holds its key and has no value yet."""
    for m in reversed(pull.order):
        if m._key not in pull.values and pull.claims.owner(m._key) is pull:
            return m
    return None
