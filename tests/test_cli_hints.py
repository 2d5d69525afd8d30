"""``lazygraph cache clear`` says where the caches it did not clear are (issue 16).

After ``lazygraph demo`` (which keeps its cache in ``demo/`` below the default directory),
``lazygraph cache clear`` used to say "removed 0 entries" and nothing else while the demo's
files stayed. It now names each cache one level below, with the command that clears it, and
that command does clear it. The CLI guide's ``--function`` example names a function the demo
persists.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lazygraph import Session, node
from lazygraph.cli import EXIT_OK, main
from lazygraph.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent


@node(name="rows")
def rows(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


def test_cache_clear_of_the_default_dir_points_at_the_demo_cache(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LAZYGRAPH_CACHE_DIR", str(home))
    monkeypatch.setenv("LAZYGRAPH_SECRET_FILE", str(tmp_path / "secret"))
    with Session(progress=False, cache_dir=home / "demo"):
        rows(10).compute()
        rows(20).compute()
    assert main(["cache", "clear"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"removed 0 entries from {home}"
    hint = f"not cleared: {home / 'demo'} holds 2 entries ("
    assert hint in out and f"lazygraph cache clear --dir {home / 'demo'}" in out
    assert main(["cache", "clear", "--dir", str(home / "demo")]) == EXIT_OK
    assert capsys.readouterr().out == f"removed 2 entries from {home / 'demo'}\n"


def test_the_guides_function_example_clears_something(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAZYGRAPH_SECRET_FILE", str(tmp_path / "secret"))
    guide = (ROOT / "docs" / "guide-cli.md").read_text(encoding="utf-8")
    example = re.search(r"lazygraph cache clear --dir \S+ --function (\S+)", guide)
    assert example is not None
    cache = tmp_path / "demo-cache"
    run_demo(cache_dir=cache, size="1MB", memory_limit="256KB", progress=False)
    assert main(["cache", "clear", "--dir", str(cache), "--function", example.group(1)]) == 0
    removed = int(capsys.readouterr().out.split()[1])
    assert removed >= 4, f"`--function {example.group(1)}` removes {removed} demo entries"
