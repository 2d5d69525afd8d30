"""The ``lazygraph`` command: help, version, cache info|ls|clear, usage errors (SPEC S9)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import lazygraph
from lazygraph import Session, node
from lazygraph.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main


@node(name="load_rows")
def load_rows(n):
    return np.arange(n, dtype=np.float64)


@node(name="square_rows")
def square_rows(a):
    return a * a


@pytest.fixture
def cache(tmp_path):
    """A cache directory holding four entries: two of load_rows, two of square_rows."""
    directory = tmp_path / "cache"
    with Session(progress=False, cache_dir=directory):
        for n in (1000, 200_000):
            square_rows(load_rows(n)).compute()
    return directory


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_commands(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == EXIT_OK
    assert out.startswith("usage: lazygraph")
    assert "demo" in out and "cache" in out and "--version" in out


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == EXIT_OK and out == f"lazygraph {lazygraph.__version__}\n"


def test_no_command_prints_help_and_fails(capsys):
    code, out, err = run(capsys)
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("usage: lazygraph") and "commands:" in err


def test_unknown_command(capsys):
    code, _, err = run(capsys, "bogus")
    assert code == EXIT_USAGE
    assert "invalid choice: 'bogus'" in err and "demo" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--size", "2XB"], 'argument --size: must be a size like "2GB" (got "2XB")'),
        (["demo", "--memory-limit=-1GB"], "argument --memory-limit: must be a non-negative"),
        (["demo", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["cache"], "the following arguments are required: ACTION"),
        (["cache", "purge"], "invalid choice: 'purge'"),
        (["cache", "clear", "--older-than", "soon"], 'an age must look like "30s"'),
        (["cache", "info", "--largest", "many"], "expected a whole number like 10"),
    ],
)
def test_bad_usage_exits_2_with_a_helpful_message(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE
    assert out == ""
    assert "usage: lazygraph" in err and message in err


def test_demo_cache_dir_that_is_a_file_is_a_usage_error(capsys, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    code, out, err = run(capsys, "demo", "--size", "1MB", "--cache-dir", str(not_a_dir))
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("lazygraph: error: cache_dir") and "is not a directory" in err


def test_cache_info(capsys, cache):
    code, out, _ = run(capsys, "cache", "info", "--dir", str(cache))
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0].startswith(f"{cache}: 4 entries, ")
    assert lines[1] == "largest:"
    assert lines[2].split() == ["KEY", "SIZE", "AGE", "USED", "FUNCTION"]
    assert lines[3].split()[1:3] == ["1.5", "MiB"]  # 200,000 float64 values
    assert {line.split()[-1] for line in lines[3:]} == {"load_rows", "square_rows"}


def test_cache_info_largest_limits_the_listing(capsys, cache):
    code, out, _ = run(capsys, "cache", "info", "--dir", str(cache), "--largest", "1")
    assert code == EXIT_OK and len(out.splitlines()) == 4


def test_cache_info_of_a_missing_directory(capsys, tmp_path):
    code, out, _ = run(capsys, "cache", "info", "--dir", str(tmp_path / "none"))
    assert code == EXIT_OK and out == f"{tmp_path / 'none'}: no cache here yet\n"


def test_cache_info_default_dir_mentions_nested_caches(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYGRAPH_CACHE_DIR", str(tmp_path / "home"))
    with Session(progress=False, cache_dir=tmp_path / "home" / "demo"):
        load_rows(10).compute()
    code, out, _ = run(capsys, "cache", "info")
    assert code == EXIT_OK
    assert out.splitlines()[0] == f"{tmp_path / 'home'}: 0 entries, 0 B"
    assert f"also: {tmp_path / 'home' / 'demo'} holds 1 entry (" in out


def test_cache_ls_and_function_filter(capsys, cache):
    code, out, _ = run(capsys, "cache", "ls", "--dir", str(cache))
    assert code == EXIT_OK and len(out.splitlines()) == 5
    code, out, _ = run(capsys, "cache", "ls", "--dir", str(cache), "--function", "load_*")
    assert code == EXIT_OK
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["load_rows", "load_rows"]


def test_cache_clear_by_function_then_everything(capsys, cache):
    code, out, _ = run(capsys, "cache", "clear", "--dir", str(cache), "--function", "square_rows")
    assert code == EXIT_OK and out == f"removed 2 entries from {cache}\n"
    _, out, _ = run(capsys, "cache", "ls", "--dir", str(cache))
    assert {line.split()[-1] for line in out.splitlines()[1:]} == {"load_rows"}
    code, out, _ = run(capsys, "cache", "clear", "--dir", str(cache))
    assert code == EXIT_OK and out == f"removed 2 entries from {cache}\n"
    _, out, _ = run(capsys, "cache", "info", "--dir", str(cache))
    assert out.startswith(f"{cache}: 0 entries")


def test_cache_clear_older_than_keeps_recent_entries(capsys, cache):
    code, out, _ = run(capsys, "cache", "clear", "--dir", str(cache), "--older-than", "1h")
    assert code == EXIT_OK and out == f"removed 0 entries from {cache}\n"
    old = time.time() - 2 * 3600
    for entry in cache.iterdir():
        if entry.name.endswith(".joblib"):
            os.utime(entry, (old, old))
    code, out, _ = run(capsys, "cache", "clear", "--dir", str(cache), "--older-than", "1h")
    assert code == EXIT_OK and out == f"removed 4 entries from {cache}\n"


def test_unsafe_cache_dir_fails_with_the_fix(capsys, cache):
    os.chmod(cache, 0o777)
    try:
        code, out, err = run(capsys, "cache", "ls", "--dir", str(cache))
    finally:
        os.chmod(cache, 0o700)
    assert code == EXIT_FAILED and out == ""
    assert err.startswith("lazygraph: error: cache directory") and f"chmod 700 {cache}" in err


def test_python_dash_m_and_console_script():
    done = subprocess.run(
        [sys.executable, "-m", "lazygraph", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout == f"lazygraph {lazygraph.__version__}\n"
    done = subprocess.run(
        [sys.executable, "-m", "lazygraph.cli", "cache"], capture_output=True, text=True
    )
    assert done.returncode == EXIT_USAGE and "required: ACTION" in done.stderr
    script = os.path.join(os.path.dirname(sys.executable), "lazygraph")
    if os.path.exists(script):  # installed with pip: the entry point runs cli.main
        done = subprocess.run([script, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "usage: lazygraph" in done.stdout


def test_help_does_not_import_pandas():
    code = (
        "import sys; from lazygraph.cli import main; main(['--help']); "
        "print('pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "False"
