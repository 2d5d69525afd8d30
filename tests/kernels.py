"""Jupyter kernels of this interpreter (this venv) for the notebook tests: cells run as a
user runs them, through nbclient. Callers ``pytest.importorskip`` nbformat, nbclient and
ipykernel first (the test extras install them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def kernel_manager(tmp_path: Path) -> Any:
    """A KernelManager for a kernelspec of ``sys.executable`` written under ``tmp_path``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / "lazygraph-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "lazygraph test", "language": "python"})
    )
    specs = KernelSpecManager(kernel_dirs=[str(spec.parent)])
    return KernelManager(kernel_name="lazygraph-test", kernel_spec_manager=specs)


def run_cells(cells: list[str], tmp_path: Path, client_class: Any = None) -> tuple[Any, Any]:
    """Run ``cells`` in one new kernel; the executed notebook and its client.

    Run it from a module-scoped fixture: the client's threads and sockets outlive the run,
    which a test's leak check would count.
    """
    import nbclient
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = (client_class or nbclient.NotebookClient)(
        notebook, km=kernel_manager(tmp_path), timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    return notebook, client


def cell_text(notebook: Any, index: int, stream: str) -> str:
    """What cell ``index`` printed on ``stream`` ("stdout" or "stderr")."""
    return "".join(o.get("text", "") for o in notebook.cells[index].outputs
                   if o.get("name") == stream)
