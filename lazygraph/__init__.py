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

# The views register their functions in ``display`` when imported; everything below them
# (Node.info(), Session.report(), Stats' text...) finds them there, so they load here.
from . import explain as _explain  # noqa: F401
from . import inspection as _inspection  # noqa: F401
from . import keyview as _keyview  # noqa: F401
from . import picture as _picture  # noqa: F401
from . import report as _report  # noqa: F401
from .errors import CacheSecurityError, ConfigError, CycleError, LazyGraphError, NodeError
from .memo import Memory
from .node import Input, Node, node
from .redefinitions import OutdatedDefinitionWarning
from .session import Session, compute, configure, current_session
from .sources import file

__all__ = [
    "node",
    "Node",
    "Input",
    "Memory",
    "file",
    "Session",
    "compute",
    "configure",
    "current_session",
    "LazyGraphError",
    "ConfigError",
    "NodeError",
    "CycleError",
    "CacheSecurityError",
    "OutdatedDefinitionWarning",
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
