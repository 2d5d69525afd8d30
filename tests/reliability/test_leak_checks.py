"""The suite-wide leak checks (tests/conftest.py) catch what they claim to, and nothing else.

A small test file with one deliberate leak per test runs under a copy of the suite's
conftest in a separate pytest process; each leaky test must error at teardown with a message
naming what leaked, and the clean ones must pass.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ._helpers import TESTS_DIR

INNER_TESTS = """
import os, subprocess, sys, tempfile, threading
import lazygraph

KEEP = []

def test_thread():
    stop = threading.Event()
    KEEP.append(stop)
    threading.Thread(target=stop.wait, name="leaky-thread", daemon=True).start()

def test_fd():
    KEEP.append(open(os.path.join(tempfile.gettempdir(), "kept-open.txt"), "w"))

def test_child():
    KEEP.append(subprocess.Popen([sys.executable, "-c", "pass"]))  # never waited for

def test_temp():
    tempfile.mkdtemp(prefix="lazygraph-spill-")

def test_session():
    session = lazygraph.Session(progress=False)
    KEEP.append(session)

def test_default_session_is_fine():
    @lazygraph.node
    def one():
        return 1
    assert one().compute() == 1  # the default session lives across tests: closed for us

def test_closed_session_is_fine(tmp_path):
    with lazygraph.Session(cache_dir=tmp_path / "c", spill_threshold=0, memory_limit=0,
                           progress=False):
        import numpy as np
        @lazygraph.node
        def arr(i):
            return np.arange(1000) + i
        assert [int(v[1]) for v in lazygraph.compute(arr(1), arr(2))] == [2, 3]

def test_hermetic_environment():
    assert os.environ["LAZYGRAPH_SECRET_FILE"].startswith(os.environ["XDG_CONFIG_HOME"])
    assert not any(k.startswith("LAZYGRAPH_") and k != "LAZYGRAPH_SECRET_FILE"
                   for k in os.environ)
    assert tempfile.gettempdir() == os.environ["TMPDIR"] != "/tmp"
"""


def test_leak_checks_name_what_leaked(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text((TESTS_DIR / "conftest.py").read_text())
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    shutil.copy(TESTS_DIR.parent / "pyproject.toml", tmp_path / "pyproject.toml")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rE",
            str(tmp_path / "test_inner.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "LAZYGRAPH_CACHE_DIR": str(tmp_path / "shell-cache")},
    )
    out = done.stdout
    assert "8 passed, 5 errors" in out, out  # the five leaky tests pass, then error
    for test, words in {
        "test_thread": "threads still running: 'leaky-thread'",
        "test_fd": "kept-open.txt",
        "test_child": "(zombie: never waited for)",
        "test_temp": "temporary files left in",
        "test_session": "1 lazygraph Session(s) left open",
    }.items():
        line = next(line for line in out.splitlines() if f"test_inner.py::{test} leaked" in line)
        assert line, test
        assert words in out.split(f"test_inner.py::{test} leaked", 1)[1][:400], (test, out)
