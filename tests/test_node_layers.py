"""The graph's modules import only downward (issue 13): no view, no session, no loop.

Every import counts, also one inside a function or under ``TYPE_CHECKING``: an import that
points up is a loop waiting to happen. The whole package is checked by
``shared/tools/import_loops.py``; this test pins the floors of the graph's own modules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import lazygraph

PACKAGE = Path(lazygraph.__file__).parent
VIEWS = {"inspection", "explain", "report", "picture", "demo", "cli"}
ABOVE_NODE = {"session", "scheduler", "claims", "progress", "store", "executors", "pressure"}

# module -> lazygraph modules (first dotted part) it must never import
FORBIDDEN = {
    "arguments": {"*"},  # floor 2, imports nothing of lazygraph
    "context": {"*"},
    "incremental": VIEWS | ABOVE_NODE - {"store"} | {"node", "keys", "session"},
    "fingerprint": VIEWS | ABOVE_NODE | {"node", "keys"},
    "keys": VIEWS | ABOVE_NODE | {"node"},
    "node": VIEWS | ABOVE_NODE - {"store"},
    "claims": VIEWS | {"session", "scheduler", "executors"},
    "scheduler": VIEWS | {"session", "executors"},
}


def lazygraph_imports(module: str) -> set[str]:
    """The lazygraph modules (first part after the package) ``module`` imports anywhere."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for item in ast.walk(tree):
        if isinstance(item, ast.ImportFrom) and item.level >= 1:
            if item.module:
                found.add(item.module.split(".")[0])
            else:  # from . import a, b
                found.update(alias.name.split(".")[0] for alias in item.names)
        elif isinstance(item, ast.ImportFrom) and (item.module or "").startswith("lazygraph"):
            parts = (item.module or "").split(".")
            found.add(parts[1] if len(parts) > 1 else "*")
        elif isinstance(item, ast.Import):
            for alias in item.names:
                parts = alias.name.split(".")
                if parts[0] == "lazygraph":
                    found.add(parts[1] if len(parts) > 1 else "*")
    return found


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_imports_point_down(module):
    imported = lazygraph_imports(module)
    forbidden = FORBIDDEN[module]
    if "*" in forbidden:
        assert imported <= set(), f"{module} imports {sorted(imported)}"
    else:
        assert not imported & forbidden, f"{module} imports {sorted(imported & forbidden)}"


def test_no_module_patches_node_at_import():
    """The current session is found through ``context``; session.py sets nothing on node."""
    import lazygraph.session  # noqa: F401 - importing it must leave node untouched

    node_module = sys.modules["lazygraph.node"]  # the attribute is the @node decorator

    assert node_module._current_session is lazygraph.context.current_session
