"""lazygraph in a real Jupyter kernel (nbclient + ipykernel), as a notebook user meets it.

One notebook: define nodes, compute with the progress bar on (eight 0.3 s nodes), redefine a
cell's function and compute again, then show a Node, ``info()``, ``explain()`` and
``stats()``. Checked (SPEC S8.4, S8.6, issue 16):

- the bar moves: its frames reach the notebook in several messages spread over the compute,
  not in one burst at the end;
- without ipywidgets (this venv has none) the bar is text, with no "IProgress not found" or
  any other warning on stderr;
- the Node, ``info()``, ``explain()`` and ``stats()`` render as HTML.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from kernels import run_cells  # noqa: E402

DEFINE = """
import time
import lazygraph

lazygraph.configure(progress=True)

@lazygraph.node
def slow(i):
    time.sleep(0.3)
    return i

@lazygraph.node
def total(parts):
    return sum(parts)

result = total([slow(i) for i in range(8)])
"""

COMPUTE = "assert result.compute() == 28"

REDEFINE = """
@lazygraph.node
def slow(i):
    time.sleep(0.3)
    return 2 * i

result = total([slow(i) for i in range(8)])
assert result.compute() == 56
"""


class Recording(nbclient.NotebookClient):  # type: ignore[misc]
    """A notebook client that notes when each kernel message of each cell arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[tuple[float, int, dict[str, Any]]] = []

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.arrivals.append((time.monotonic(), cell_index, msg))
        return super().process_message(msg, cell, cell_index)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Recording]:
    tmp_path = tmp_path_factory.mktemp("notebook")
    cells = [DEFINE, COMPUTE, REDEFINE, "result", "result.info()", "result.explain()",
             "lazygraph.current_session().stats()"]
    notebook, client = run_cells(cells, tmp_path, Recording)
    return notebook, client


def _stderr(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")


@pytest.mark.parametrize("index", [1, 2])
def test_the_bar_moves_while_the_cell_runs(executed: tuple[Any, Recording], index: int) -> None:
    notebook, client = executed
    frames = [
        (at, msg["content"]["text"])
        for at, cell, msg in client.arrivals
        if cell == index and msg["msg_type"] == "stream" and msg["content"]["name"] == "stderr"
    ]
    end = max(at for at, cell, _ in client.arrivals if cell == index)  # the cell's last word
    counts = {int(m) for _, text in frames for m in re.findall(r"\| *(\d+)/9 ", text)}
    assert len(counts) >= 3, frames  # several states of the bar, not only the last one
    early = [at for at, _ in frames if at < end - 0.5]
    assert len(early) >= 2, (frames, end)  # reached the notebook while the nodes ran
    assert "9/9" in _stderr(notebook.cells[index])


def test_no_warning_without_ipywidgets(executed: tuple[Any, Recording]) -> None:
    notebook, _ = executed
    text = "".join(_stderr(cell) for cell in notebook.cells)
    assert "IProgress" not in text and "Warning" not in text, text
    assert not any(o.get("output_type") == "error" for c in notebook.cells for o in c.outputs)


@pytest.mark.parametrize(("index", "marker"), [
    (3, "total"), (4, "location"), (5, "explain"), (6, "hits"),
])
def test_views_render_as_html(executed: tuple[Any, Recording], index: int, marker: str) -> None:
    notebook, _ = executed
    html = [o["data"]["text/html"] for o in notebook.cells[index].outputs
            if "text/html" in o.get("data", {})]
    assert html and "<table" in html[0] and marker in html[0], notebook.cells[index].outputs
