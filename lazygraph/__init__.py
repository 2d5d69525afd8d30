"""lazygraph: lazy, cached computation graphs that keep native Python objects.

>>> import lazygraph
>>> @lazygraph.node
... def add(a, b):
...     return a + b
>>> x = lazygraph.Input(1, name="x")
>>> total = add(x, 10)            # nothing runs yet
>>> with lazygraph.Session():
...     total.compute()
11
"""

from typing import Any

from .errors import CacheSecurityError, ConfigError, CycleError, LazyGraphError, NodeError
from .node import Input, Node, node
from .session import Session, compute, configure, current_session

__all__ = [
    "node",
    "Node",
    "Input",
    "Session",
    "compute",
    "configure",
    "current_session",
    "LazyGraphError",
    "ConfigError",
    "NodeError",
    "CycleError",
    "CacheSecurityError",
    "DaskExecutor",
    "__version__",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # DaskExecutor is looked up lazily so that `import lazygraph` never imports dask.
    if name == "DaskExecutor":
        from .executors.dask import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module 'lazygraph' has no attribute {name!r}")
