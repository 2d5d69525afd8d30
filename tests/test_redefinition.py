"""Redefinitions said out loud (SPEC S3.9): a node built before its function was redefined
warns once when computed, and explain() says so. Also in a real Jupyter kernel."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from kernels import cell_text, run_cells

import lazygraph
from lazygraph import OutdatedDefinitionWarning


def _cell(ns: dict[str, Any], code: str) -> None:
    exec(code, ns)  # a notebook cell: module-level code in one namespace


def _notebook() -> dict[str, Any]:
    ns: dict[str, Any] = {"lazygraph": lazygraph, "__name__": "__main__"}
    _cell(ns, "@lazygraph.node\ndef clean(x):\n    return x + 1\n")
    _cell(ns, "n = clean(1)")
    return ns


def _computed(ns: dict[str, Any], expr: str) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = eval(expr, ns)
    return value, [str(w.message) for w in caught if w.category is OutdatedDefinitionWarning]


def test_an_old_node_warns_once_and_explain_says_so() -> None:
    ns = _notebook()
    with lazygraph.Session(progress=False):
        assert ns["n"].compute() == 2
        _cell(ns, "@lazygraph.node\ndef clean(x):\n    return x + 2\n")
        value, said = _computed(ns, "n.compute()")
        assert value == 2 and len(said) == 1 and "older definition of `clean`" in said[0]
        assert _computed(ns, "n.compute()")[1] == []  # once per node
        assert "older definition of `clean`" in str(ns["n"].explain())
        fresh, said = _computed(ns, "clean(1).compute()")
        assert fresh == 3 and said == []


def test_an_old_node_in_a_graph_warns_when_pulled_first_time() -> None:
    ns = _notebook()
    _cell(ns, "@lazygraph.node\ndef total(a):\n    return a * 10\n\nt = total(n)")
    _cell(ns, "@lazygraph.node\ndef clean(x):\n    return x + 2\n")
    with lazygraph.Session(progress=False):
        value, said = _computed(ns, "t.compute()")
        assert value == 20 and len(said) == 1
        assert "older definition of `clean`" in str(ns["t"].explain())


def test_a_cell_run_again_unchanged_says_nothing() -> None:
    ns = _notebook()
    _cell(ns, "@lazygraph.node\ndef clean(x):\n    return x + 1\n")
    with lazygraph.Session(progress=False):
        assert _computed(ns, "n.compute()") == (2, [])


# -- in a real kernel ---------------------------------------------------------------------

CELLS = [
    "import lazygraph\nlazygraph.configure(progress=False)\n"
    "@lazygraph.node\ndef clean(x):\n    return x + 1\n",
    "n = clean(1)\nprint(n.compute())",
    "@lazygraph.node\ndef clean(x):\n    return x + 2\n",
    "print(n.compute())",
    "print(n.compute())",
    "print(n.explain())",
]


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """CELLS run in a kernel of this venv (module-scoped: see ``kernels.run_cells``)."""
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    return run_cells(CELLS, tmp_path_factory.mktemp("redefinition"))[0]

def test_the_warning_in_a_jupyter_kernel(notebook: Any) -> None:
    def text(i: int, stream: str) -> str:
        return cell_text(notebook, i, stream)

    assert text(3, "stdout").strip() == "2"
    assert "older definition of `clean`" in text(3, "stderr")
    assert "older definition" not in text(4, "stderr")  # once
    assert "older definition of `clean`" in text(5, "stdout")
