"""Redefined helpers said out loud (SPEC S3.9): a node keyed with a helper (or a global) that
a later cell redefines warns once when computed and explain() says so; a node that has to
run then is re-keyed first (never a result of the new helper under the old key);
``redefined="rebuild"`` rebuilds such nodes against the current definitions. Also in a real
Jupyter kernel."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import pytest
from kernels import cell_text, run_cells

import lazygraph
from lazygraph import OutdatedDefinitionWarning
from lazygraph.keys import current_definition

HELPER = "def helper(x):\n    return x + 1\n"
NEW_HELPER = "def helper(x):\n    return x + 2\n"


def _cell(ns: dict[str, Any], code: str) -> None:
    exec(code, ns)  # a notebook cell: module-level code in one namespace


def _notebook() -> dict[str, Any]:
    ns: dict[str, Any] = {"lazygraph": lazygraph, "__name__": "__main__", "calls": []}
    _cell(ns, HELPER)
    _cell(ns, "@lazygraph.node\ndef f(x):\n    calls.append(x)\n    return helper(x)\n")
    _cell(ns, "n = f(1)")
    return ns


def _computed(ns: dict[str, Any], expr: str) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = eval(expr, ns)
    return value, [str(w.message) for w in caught if w.category is OutdatedDefinitionWarning]


def test_a_redefined_helper_warns_once_and_explain_says_so() -> None:
    ns = _notebook()
    with lazygraph.Session(progress=False):
        assert ns["n"].compute() == 2
        _cell(ns, NEW_HELPER)
        value, said = _computed(ns, "n.compute()")
        assert value == 2 and ns["calls"] == [1]  # the stored result of what it was built from
        assert len(said) == 1 and "older definition of `helper`" in said[0]
        assert "rebuild the graph" in said[0]
        assert _computed(ns, "n.compute()") == (2, [])  # once per node
        assert "older definition of `helper`" in str(ns["n"].explain())
        fresh, said = _computed(ns, "f(1).compute()")  # the graph rebuilt: the new helper
        assert fresh == 3 and said == []


def test_a_rebound_global_is_named_too() -> None:
    ns: dict[str, Any] = {"lazygraph": lazygraph, "__name__": "__main__"}
    _cell(ns, 'CONFIG = {"scale": 2}\n@lazygraph.node\ndef g(x):\n    return x * CONFIG["scale"]')
    _cell(ns, "m = g(5)")
    with lazygraph.Session(progress=False):
        assert ns["m"].compute() == 10
        _cell(ns, 'CONFIG = {"scale": 3}')
        value, said = _computed(ns, "m.compute()")
        assert value == 10 and len(said) == 1 and "`CONFIG`" in said[0]


def test_an_uncached_node_is_rekeyed_never_stored_under_its_old_key() -> None:
    """It runs the current helper (a global is looked up when called): under its old key
    that result would later pass for the old helper's."""
    ns = _notebook()
    with lazygraph.Session(progress=False) as session:
        old_key = ns["n"].key  # keyed with the first helper, never computed
        _cell(ns, NEW_HELPER)
        value, said = _computed(ns, "n.compute()")
        assert value == 3 and len(said) == 1 and "ran with the current one" in said[0]
        assert ns["n"].key != old_key
        assert session.store.location(bytes.fromhex(old_key)) == "absent"
        assert "older definition of `helper`" in str(ns["n"].explain())
        _cell(ns, HELPER)  # back to the first helper: its key must not find the 3
        assert _computed(ns, "f(1).compute()")[0] == 2


def test_above_a_rekeyed_node_the_graph_is_rekeyed_too() -> None:
    ns = _notebook()
    _cell(ns, "@lazygraph.node\ndef total(a):\n    return a * 10\n\nt = total(n)")
    with lazygraph.Session(progress=False):
        old_key = ns["t"].key
        _cell(ns, NEW_HELPER)
        value, said = _computed(ns, "t.compute()")
        assert value == 30 and ns["t"].key != old_key and len(said) == 1
        _cell(ns, HELPER)
        assert _computed(ns, "total(f(1)).compute()")[0] == 20


def test_nothing_redefined_says_nothing() -> None:
    ns: dict[str, Any] = {"lazygraph": lazygraph, "__name__": "__main__"}
    _cell(ns, HELPER + "@lazygraph.node\ndef f(x):\n    return helper(x)\n\nn = f(1)")
    with lazygraph.Session(progress=False):
        assert ns["n"].compute() == 2
        _cell(ns, HELPER)  # the same cell run again: a new function, equal code
        assert _computed(ns, "n.compute()") == (2, [])
        assert "older definition" not in str(ns["n"].explain())


def test_rebuild_makes_old_nodes_use_the_current_definitions() -> None:
    ns = _notebook()
    with lazygraph.Session(progress=False, redefined="rebuild"):
        assert ns["n"].compute() == 2
        _cell(ns, NEW_HELPER)
        value, said = _computed(ns, "n.compute()")
        assert value == 3 and said == []  # asked for: no warning
        assert "rebuilt against the current definition of `helper`" in str(ns["n"].explain())
        # its own function redefined: the node now calls the current one
        _cell(ns, "@lazygraph.node\ndef f(x):\n    calls.append(x)\n    return helper(x) * 100\n")
        assert _computed(ns, "n.compute()") == (300, [])


def test_rebuild_never_swaps_what_has_no_global_name() -> None:
    ns = _notebook()
    _cell(ns, "def make(k):\n    return lambda x: helper(x) * k\n")
    _cell(ns, "h = lazygraph.node(make(10), name='h')\nm = h(1)")
    with lazygraph.Session(progress=False, redefined="rebuild"):
        assert ns["m"].compute() == 20
        closure = ns["m"].func
        _cell(ns, NEW_HELPER)
        assert ns["m"].compute() == 30  # re-keyed: it calls the current helper
        assert ns["m"].func is closure  # a lambda in a closure: never swapped
    assert current_definition(closure) is None


def test_a_bad_redefined_option_is_refused() -> None:
    with pytest.raises(lazygraph.ConfigError, match='"warn" or "rebuild"'):
        lazygraph.Session(redefined="sometimes")


# -- in a real kernel ---------------------------------------------------------------------

CELLS = [
    "import lazygraph\nlazygraph.configure(progress=False)\n" + HELPER,
    "@lazygraph.node\ndef clean(x):\n    return helper(x)\n\nn = clean(1)\nprint(n.compute())",
    NEW_HELPER,
    "print(n.compute())",
    "print(n.compute())",
    "print(n.explain())",
    # the old helper stays referenced: nothing is collected, the kernel checks anyway
    "m = clean(5)\nprint(m.compute())\nkeep = [helper]",
    "def helper(x):\n    return x + 3\n",
    "print(m.compute())",
]


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """CELLS run in a kernel of this venv (module-scoped: see ``kernels.run_cells``)."""
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    return run_cells(CELLS, tmp_path_factory.mktemp("redefined_helper"))[0]

def test_the_helper_warning_in_a_jupyter_kernel(notebook: Any) -> None:
    def text(i: int, stream: str) -> str:
        return cell_text(notebook, i, stream)

    assert text(1, "stdout").strip() == "2"
    assert text(3, "stdout").strip() == "2"  # the result it was built from, said out loud
    assert "older definition of `helper`" in text(3, "stderr")
    assert "older definition" not in text(4, "stderr")  # once
    assert "older definition of `helper`" in text(5, "stdout")
    assert text(6, "stdout").strip() == "7"
    assert text(8, "stdout").strip() == "7" and "older definition of `helper`" in text(8, "stderr")


SCRIPT = """
import warnings, lazygraph
from lazygraph.repull import attention
warnings.simplefilter("always")
def helper(x):
    return x + 1
@lazygraph.node
def f(x):
    return helper(x)
n = f(1)
with lazygraph.Session(progress=False):
    first = n.compute()
    print("suspect before:", "suspect" in attention)
    def helper(x):  # the old helper is collected here
        return x + 2
    print("suspect after:", "suspect" in attention)
    with warnings.catch_warnings(record=True) as caught:
        again = n.compute()  # the re-pull fast path
    print(first, again, [str(w.message) for w in caught])
"""


def test_in_a_script_the_repull_fast_path_notices_a_redefined_helper(tmp_path: Any) -> None:
    import subprocess

    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "suspect before: False" in out  # a script pays no check until something changes
    assert "suspect after: True" in out
    assert "2 2 [" in out and "older definition of `helper`" in out
