"""The executor registry: executor names, the module and class of each, and making one.

Adding an executor is one new module in ``lazygraph/executors/`` (a class with ``run(pull)``
and ``close()``, see :class:`Executor`) and one line in :data:`EXECUTORS`. The classes are
imported by module path only when one is made, so this module imports nothing of lazygraph
above ``errors``: ``config`` validates executor names from :data:`EXECUTOR_NAMES` without
importing any executor (and ``import lazygraph`` never imports dask or joblib's pool).

Covers: the names, making an executor by name (``Session`` calls :func:`make_executor`).
Does not cover: running a pull (the executor modules) or validating options (``config``).

>>> EXECUTOR_NAMES
('sync', 'threads', 'processes', 'dask')
>>> make_executor("threads", workers=3)
ThreadExecutor(workers=3)
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, NamedTuple, Protocol

from ..errors import ConfigError
from ..units import shown

__all__ = ["EXECUTORS", "EXECUTOR_NAMES", "Executor", "ExecutorSpec", "make_executor"]


class Executor(Protocol):
    """Runs the planned nodes of a pull.

    ``run`` must leave every node of ``pull.order`` finished (``pull.run_node`` or
    ``pull.finish``) or raise; ``close`` releases pools and is idempotent. ``pull`` is a
    ``lazygraph.scheduler.Pull``, typed ``Any`` here because this module sits below it.
    """

    def run(self, pull: Any) -> None: ...

    def close(self) -> None: ...


class ExecutorSpec(NamedTuple):
    """Where an executor class lives, and whether it takes the session's ``workers``."""

    module: str
    cls: str
    sized: bool


#: Name -> where its class lives. One line per executor.
EXECUTORS: dict[str, ExecutorSpec] = {
    "sync": ExecutorSpec("lazygraph.executors.sync", "SyncExecutor", sized=False),
    "threads": ExecutorSpec("lazygraph.executors.threads", "ThreadExecutor", sized=True),
    "processes": ExecutorSpec("lazygraph.executors.processes", "ProcessExecutor", sized=True),
    "dask": ExecutorSpec("lazygraph.executors.dask", "DaskExecutor", sized=False),
}
EXECUTOR_NAMES: tuple[str, ...] = tuple(EXECUTORS)


def unknown_executor(name: object, *, label: str = "executor") -> ConfigError:
    """The error for an executor name that is not registered, with a guess when one is close.

    >>> str(unknown_executor("thread"))  # doctest: +ELLIPSIS
    'executor must be one of sync, threads, processes, dask or an executor object (got "thread")...
    """
    guess = ""
    if isinstance(name, str):
        close = difflib.get_close_matches(name, EXECUTOR_NAMES, n=1)
        guess = f' (did you mean "{close[0]}"?)' if close else ""
    return ConfigError(
        f"{label} must be one of {', '.join(EXECUTOR_NAMES)} or an executor object "
        f"(got {shown(name)}){guess}"
    )


def make_executor(name: str, *, workers: int) -> Executor:
    """A new executor registered as ``name``; pools get ``workers`` workers.

    >>> make_executor("sync", workers=4)
    SyncExecutor()
    """
    spec = EXECUTORS.get(name)
    if spec is None:
        raise unknown_executor(name)
    cls = getattr(importlib.import_module(spec.module), spec.cls)
    executor: Executor = cls(workers=workers) if spec.sized else cls()
    return executor
