"""``node.explain_key()`` (SPEC S3.7): what a key is made of, as text and as HTML, also
rendered by a real Jupyter kernel in a notebook."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import lazygraph

CELL = '''
import functools, threading
import numpy as np

def helper(v):
    return v * 2

SCALE = {"factor": 3}
WEIGHTS = np.arange(4.0)
OPS = {"double": helper}
LOCK = threading.Lock()

def make():
    offset = 10
    def scaled(x, y=1, verbose=False):
        with LOCK:
            return OPS["double"](x) * SCALE["factor"] + float(WEIGHTS.sum()) + offset + y
    return scaled
'''


def _factory(**options):
    ns = {"__name__": "notebook_cell"}
    exec(textwrap.dedent(CELL), ns)
    return lazygraph.node(ns["make"](), **options)


@pytest.mark.filterwarnings("ignore:.*no content hash")
def test_explain_key_lists_code_helpers_globals_closure_defaults_arguments():
    x = lazygraph.Input(5, name="x")
    n = _factory(ignore=["verbose"], version=None)(x, verbose=True)
    explained = n.explain_key()
    rows = {(row.kind, row.name) for row in explained}
    assert ("code", "make.<locals>.scaled") in rows
    assert ("helper", "helper") in rows
    assert {("global", "SCALE"), ("global", "WEIGHTS"), ("global", "OPS")} <= rows
    assert ("closure", "closure offset") in rows and ("closure", "closure LOCK") not in rows
    assert ("defaults", "defaults of make.<locals>.scaled") in rows
    assert ("argument", "x") in rows and ("ignored", "verbose") in rows
    assert next(r for r in explained if r.name == "x").digest == x.key[:12]
    assert any("LOCK" in item for item in explained.unhashed)
    assert not explained.persistable and explained.key == n.key
    text = str(explained)
    assert text.startswith(f"explain_key(scaled): key {n.key} (not persistable")
    assert "SCALE" in text and "helper" in text and "keyed by identity): LOCK" in text
    html = explained._repr_html_()
    assert "<table>" in html and "<code>SCALE</code>" in html and "LOCK" in html
    assert "<script" not in html


def test_explain_key_shows_the_version_and_library_code():
    @lazygraph.node(version="2")
    def versioned(v):
        return v

    rows = {(r.kind, r.where) for r in versioned(1).explain_key()}
    assert ("version", f"{__name__}:test_explain_key_shows_the_version_and_library_code."
            "<locals>.versioned") in rows
    np_rows = lazygraph.node(len)([1]).explain_key()
    assert [r.kind for r in np_rows][0] == "code"


_NOTEBOOK = """
import json, sys
import nbclient, nbformat

nb = nbformat.v4.new_notebook()
nb.cells = [
    nbformat.v4.new_code_cell(
        "import lazygraph\\n"
        "CONFIG = {'scale': 3}\\n"
        "@lazygraph.node\\n"
        "def scaled(x):\\n"
        "    return x * CONFIG['scale']\\n"
    ),
    nbformat.v4.new_code_cell("scaled(2).explain_key()"),
]
client = nbclient.NotebookClient(
    nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": sys.argv[1]}}
)
client.execute()
print(json.dumps(nb.cells[1].outputs))
"""


def test_explain_key_renders_as_html_in_a_notebook(tmp_path):
    """A real kernel (ipykernel, driven by nbclient) in a child process: its sockets and
    threads stay there."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    out = subprocess.run(
        [sys.executable, "-c", _NOTEBOOK, str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    outputs = json.loads(out.stdout.strip().splitlines()[-1])
    assert outputs and outputs[0]["output_type"] == "execute_result", outputs
    data = outputs[0]["data"]
    html = data["text/html"]
    assert "lazygraph-explain-key" in html and "<code>CONFIG</code>" in html
    assert "<th>kind</th>" in html and "explain_key(scaled)" in html
    assert "KeyExplanation" in data["text/plain"]
