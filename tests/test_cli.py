"""The ``lazygraph`` command: help, version, cache info|ls|clear, usage errors (SPEC S9)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


# -- any file in a cache directory --------------------------------------------------------------

ODD = "ab" * 16 + ".joblib"  # names like an entry's, for things that are not entries
LINK = "cd" * 16 + ".joblib"
FIFO = "ef" * 16 + ".joblib"
GARBAGE = "12" * 16 + ".joblib"
FOREIGN = ["abc.joblib", "ABCD.joblib", "notes.txt", "dangling.txt"]


def add_odd_files(cache):
    """Everything but an entry: odd-length hex (bytes.fromhex raised on it), foreign files,
    a directory, links and a FIFO named like entries, garbage under an entry's name, an
    unsafe subdirectory."""
    (cache / "abc.joblib").write_bytes(b"odd-length hex")
    (cache / "ABCD.joblib").write_bytes(b"upper case: not an entry name")
    (cache / "notes.txt").write_text("a user's own file")
    (cache / "dangling.txt").symlink_to(cache / "nowhere")
    (cache / ODD).mkdir()
    (cache / LINK).symlink_to(cache / "notes.txt")
    os.mkfifo(cache / FIFO)
    (cache / GARBAGE).write_bytes(os.urandom(100))
    (cache / "sub").mkdir()
    os.chmod(cache / "sub", 0o777)


def assert_one_line_messages(err):
    assert "Traceback" not in err
    assert all(line.startswith("lazygraph: warning: ") for line in err.splitlines()), err


@pytest.mark.parametrize("command", ["info", "ls", "clear"])
def test_every_cache_command_handles_any_file(capsys, cache, command):
    add_odd_files(cache)
    code, out, err = run(capsys, "cache", command, "--dir", str(cache))
    assert code == EXIT_OK, err
    assert_one_line_messages(err)
    assert f"{ODD} in {cache} is a directory, not an entry; left alone" in err
    if command == "info":
        assert out.startswith(f"{cache}: 5 entries") and "1 failing authentication" in out
        assert out.splitlines()[-1] == "also 4 files that are not entries (left alone)"
    elif command == "ls":
        assert len(out.splitlines()) == 6 and "(unauthenticated" in out
    else:
        assert out == f"removed 5 entries from {cache}\n"
    code, out, err = run(capsys, "cache", "clear", "--dir", str(cache))  # a later clear works
    assert code == EXIT_OK and out.startswith("removed ")
    assert_one_line_messages(err)
    _, out, _ = run(capsys, "cache", "info", "--dir", str(cache))
    assert out.startswith(f"{cache}: 0 entries")
    assert all((cache / name).exists() or (cache / name).is_symlink() for name in FOREIGN)
    assert (cache / ODD).is_dir() and not (cache / LINK).is_symlink() and (cache / "sub").is_dir()


def main_as_nobody(argv, env):
    """``main(argv)`` in a forked child running as uid/gid 65534: (exit code, out, err)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        status = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.environ.update(env)
            sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
            code = main(argv)
            result = [code, sys.stdout.getvalue(), sys.stderr.getvalue()]
            os.write(write_end, json.dumps(result).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the child failed"
    return tuple(json.loads(data))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_cache_commands_with_an_entry_this_user_cannot_read():
    shared = Path(tempfile.mkdtemp(prefix="lgtest-cli-", dir=tempfile.gettempdir()))
    try:
        os.chmod(shared, 0o755)
        cache = shared / "cache"
        with Session(progress=False, cache_dir=cache):
            load_rows(1000).compute()
        (cache / GARBAGE).write_bytes(b"root's own file")  # 0644 root: readable
        unreadable = cache / ("34" * 16 + ".joblib")
        unreadable.write_bytes(b"root's secret file")
        os.chmod(unreadable, 0o600)
        for path in [cache, *cache.iterdir()]:
            if path != unreadable:
                os.chown(path, 65534, 65534)
        env = {"LAZYGRAPH_SECRET_FILE": str(shared / "none")}  # nobody has no secret yet
        for command in ("info", "ls", "clear"):
            code, out, err = main_as_nobody(["cache", command, "--dir", str(cache)], env)
            assert code == EXIT_OK, err
            assert "Traceback" not in err and len(err.splitlines()) <= 1, err
        assert out == f"removed 3 entries from {cache}\n" and not unreadable.exists()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
