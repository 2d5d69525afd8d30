"""A persisted entry holds what the function returned (SPEC S2.5, issue 16).

A result changed in place (here by a downstream node) before the background writer got to
it is never written to ``cache_dir``: a second, real process finds no entry for it (it runs
the node again) or the original, never the changed values. A value changed in place after
its file is complete is no concern of the file: the file holds the original.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lazygraph

# The pipeline, as both processes build it. ``ballast`` keeps the writer busy (its file is
# queued first), so the downstream node changes ``values`` before its write starts.
_PIPELINE = textwrap.dedent(
    """
    import numpy as np
    import lazygraph

    @lazygraph.node
    def ballast():
        return np.ones(40_000_000)          # 320 MB: its write takes a while

    @lazygraph.node
    def values():
        return np.arange(1_000_000, dtype=np.float64)

    @lazygraph.node
    def vandal(ignored, v):
        v *= -1                             # in place: a bug, but one users write
        return float(v[1])
    """
)

_WRITE = _PIPELINE + textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    with lazygraph.Session(cache_dir=sys.argv[1], progress=False):
        assert vandal(ballast(), values()).compute() == -1.0
    """
)

_LOAD = _PIPELINE + textwrap.dedent(
    """
    import json, sys
    with lazygraph.Session(cache_dir=sys.argv[1], progress=False) as session:
        where = values().info().location
        v = values().compute()
        computes = session.stats().computes
        print(json.dumps({"where": where, "second": float(v[1]), "computes": computes}))
    """
)


def _run(tmp_path: Path, name: str, code: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as the script ``name`` in a new process (both get one module name)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "pipeline.py").write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAZYGRAPH_")}
    env["LAZYGRAPH_SECRET_FILE"] = str(tmp_path / "secret")
    return subprocess.run(
        [sys.executable, "pipeline.py", str(cache)],
        cwd=folder, capture_output=True, text=True, env=env, timeout=120, check=True,
    )


def test_a_result_changed_before_its_write_is_not_persisted(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wrote = _run(tmp_path, "first", _WRITE, cache)
    assert len(list(cache.glob("*.joblib"))) >= 2  # ballast and vandal's result were written
    loaded = _run(tmp_path, "second", _LOAD, cache)
    seen = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert seen["second"] == 1.0, seen  # the function's result, not the vandalized one
    assert (seen["where"], seen["computes"]) == ("absent", 1), seen  # it was not written
    assert "lazygraph.store.writer not persisting values" in wrote.stderr  # said, at INFO


def test_a_change_after_the_write_leaves_the_file_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAZYGRAPH_SECRET_FILE", str(tmp_path / "secret"))
    cache = tmp_path / "cache"

    @lazygraph.node
    def values() -> np.ndarray:
        return np.arange(1_000_000, dtype=np.float64)

    with lazygraph.Session(cache_dir=cache, progress=False) as session:
        v = values().compute()
        session.store.flush()  # the file is complete
        v *= -1
    with lazygraph.Session(cache_dir=cache, progress=False) as later:
        assert values().info().location == "disk"
        assert values().compute()[1] == 1.0 and later.stats().computes == 0
