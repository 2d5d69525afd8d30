"""Bad input to every public function: a clear error naming what was expected and what was
received, raised before anything is half-built (SPEC S7, S7.3, S5.1).

Each case gives the call, the exception type a caller would catch, and words the message must
contain: the name of the offending parameter and the value received.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lazygraph
from lazygraph import ConfigError, Session
from lazygraph.store import cachedir

from ._helpers import lazygraph_threads


def _identity(x: Any) -> Any:
    return x


@lazygraph.node
def double(x: int) -> int:
    return 2 * x


NODE_OPTIONS = [
    ({"name": 3}, "name", "int"),
    ({"version": 2}, "version", "int"),
    ({"cache": "no"}, "cache", "'no'"),
    ({"spill": 1}, "spill", "1"),
    ({"persist": "false"}, "persist", "'false'"),
    ({"cutoff": None}, "cutoff", "None"),
    ({"local": []}, "local", "[]"),
]


@pytest.mark.parametrize(
    ("options", "word", "got"), NODE_OPTIONS, ids=[next(iter(o)) for o, _, _ in NODE_OPTIONS]
)
def test_node_options_of_the_wrong_type(options, word, got):
    with pytest.raises(TypeError) as caught:
        lazygraph.node(**options)(_identity)
    message = str(caught.value)
    assert word in message and got in message, message


def test_node_of_something_not_callable():
    with pytest.raises(TypeError, match=r"expects a function \(got int\)"):
        lazygraph.node(42)


def test_input_name_of_the_wrong_type():
    with pytest.raises(TypeError, match="name"):
        lazygraph.Input(1, name=5)  # type: ignore[arg-type]


SESSION_OPTIONS: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"memory_limit": -1}, ("memory_limit", "-1")),
    ({"memory_limit": "2XB"}, ("memory_limit", '"2XB"')),
    ({"memory_limit": [1]}, ("memory_limit", "list")),
    ({"memory_limit": float("nan")}, ("memory_limit", "nan")),
    ({"rss_limit": "-5GB"}, ("rss_limit", '"-5GB"')),
    ({"min_available": "150%"}, ("min_available", '"150%"')),
    ({"min_available": "ten percent"}, ("min_available", '"ten percent"')),
    ({"cuda_limit": "lots"}, ("cuda_limit", '"lots"')),
    ({"spill": "maybe"}, ("spill", '"maybe"')),
    ({"spill_threshold": -1}, ("spill_threshold", "-1")),
    ({"cache_dir": 123}, ("cache_dir", "123")),
    ({"cache_dir": ""}, ("cache_dir", '""')),
    ({"persist": True}, ("persist", "cache_dir")),
    ({"persist": "x"}, ("persist", '"x"')),
    ({"disk_limit": "-1GB"}, ("disk_limit", '"-1GB"')),
    ({"executor": "thread"}, ("executor", '"thread"', "threads")),
    ({"executor": 3}, ("executor", "3", "workers")),
    ({"executor": object()}, ("executor", "object")),
    ({"workers": 0}, ("workers", "0")),
    ({"workers": 2.5}, ("workers", "2.5")),
    ({"freeze": 2}, ("freeze", "2")),
    ({"memory_limt": "1GB"}, ("memory_limt", "memory_limit")),
]


def _option_id(options: dict[str, Any]) -> str:
    (name, value), *_ = options.items()
    shown = repr(value) if isinstance(value, (int, float, str, list)) else type(value).__name__
    return f"{name}={shown}"[:30]


@pytest.mark.parametrize(
    ("options", "words"),
    SESSION_OPTIONS,
    ids=[_option_id(o) for o, _ in SESSION_OPTIONS],
)
def test_session_options_that_are_wrong(options, words, tmp_path):
    with pytest.raises(ConfigError) as caught:
        Session(**options)
    message = str(caught.value)
    assert all(word in message for word in words), message
    assert isinstance(caught.value, ValueError)
    assert lazygraph_threads() == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LAZYGRAPH_MEMORY_LIMIT", "lots"),
        ("LAZYGRAPH_SPILL", "perhaps"),
        ("LAZYGRAPH_WORKERS", "-2"),
        ("LAZYGRAPH_EXECUTOR", "gpu"),
    ],
)
def test_environment_variables_that_are_wrong(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        Session()
    assert variable in str(caught.value) and value in str(caught.value)


def test_cache_dir_that_is_a_file_or_under_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        Session(cache_dir=afile)
    with pytest.raises(ConfigError, match=f"{afile} is a file"):
        Session(cache_dir=afile / "sub")


def test_missing_cache_dir_is_created_private(tmp_path):
    cache = tmp_path / "not" / "yet" / "there"
    with Session(cache_dir=cache, progress=False):
        assert double(4).compute() == 8
    assert oct(cache.stat().st_mode & 0o777) == "0o700"


def test_a_bad_option_creates_nothing(tmp_path):
    cache = tmp_path / "cache"
    for bad in ({"memory_limit": "2XB"}, {"executor": "gpu"}, {"workers": -1}):
        with pytest.raises(ConfigError):
            Session(cache_dir=cache, **bad)
    assert not cache.exists(), "a failed Session must not create its cache directory"


def test_unsafe_cache_dir_leaves_no_thread_file_or_session(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o777)
    fds = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    with pytest.raises(lazygraph.CacheSecurityError):
        Session(cache_dir=cache)
    assert lazygraph_threads() == [] and os.listdir(cache) == []
    if fds:
        assert set(os.listdir("/proc/self/fd")) <= fds | {str(max(map(int, fds)) + 1)}


# -- compute -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "kind", "words"),
    [
        ((1,), {}, TypeError, ("Nodes", "int")),
        (("x",), {}, TypeError, ("Nodes", "str")),
        ((double,), {}, TypeError, ("Nodes", "NodeFactory")),
        ((double(1),), {"executor": "nope"}, ConfigError, ("executor", "nope")),
        ((double(1),), {"executor": 5}, TypeError, ("executor", "int")),
        ((double(1),), {"executor": []}, TypeError, ("executor", "list")),
    ],
)
def test_compute_with_bad_arguments_leaves_the_session_working(args, kwargs, kind, words):
    with Session(progress=False) as session:
        assert session.compute(double(20)) == (40,)
        with pytest.raises(kind) as caught:
            session.compute(*args, **kwargs)
        assert all(word in str(caught.value) for word in words), str(caught.value)
        assert not session.claims and session.claims.active == 0
        assert session.compute(double(21)) == (42,)
        assert lazygraph.compute(double(21), double(20)) == (42, 40)


def test_compute_of_nothing_is_an_empty_tuple():
    with Session(progress=False):
        assert lazygraph.compute() == ()


def test_setting_an_input_to_a_node_that_depends_on_it():
    x = lazygraph.Input(1, name="x")
    with pytest.raises(lazygraph.CycleError, match="x -> double -> x"):
        x.set(double(x))
    with Session(progress=False):
        assert double(x).compute() == 2  # the failed set() changed nothing


# -- configure: a bad call keeps the old default session -----------------------------------------


@pytest.mark.parametrize(
    "bad", [{"memory_limit": "2XB"}, {"bogus": 1}, {"executor": "gpu"}, {"cache_dir": 42}]
)
def test_configure_with_a_bad_option_keeps_the_old_default_session(bad):
    old = lazygraph.configure(memory_limit="64MB", progress=False)
    try:
        assert double(5).compute() == 10
        with pytest.raises(ConfigError):
            lazygraph.configure(**bad)
        assert lazygraph.current_session() is old and not old.closed
        assert old.config.memory_limit == 64_000_000
        assert double(6).compute() == 12
    finally:
        old.close()


# -- the cache commands' functions ------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    directory = tmp_path / "cache"
    with Session(cache_dir=directory, progress=False):
        lazygraph.compute(double(1), double(2))
    return directory


CACHE_CALLS: list[tuple[str, Callable[[Path], Any], type, tuple[str, ...]]] = [
    (
        "info-of-a-file",
        lambda c: cachedir.cache_info(c / ".." / "afile"),
        ConfigError,
        ("afile", "directory"),
    ),
    (
        "ls-of-a-file",
        lambda c: cachedir.cache_ls(c / ".." / "afile"),
        ConfigError,
        ("afile", "directory"),
    ),
    (
        "clear-of-a-file",
        lambda c: cachedir.cache_clear(c / ".." / "afile"),
        ConfigError,
        ("afile", "directory"),
    ),
    ("info-of-a-number", lambda c: cachedir.cache_info(123), TypeError, ("int",)),
    (
        "clear-negative-age",
        lambda c: cachedir.cache_clear(c, older_than=-5),
        ValueError,
        ("older_than", "-5"),
    ),
    (
        "clear-age-as-text",
        lambda c: cachedir.cache_clear(c, older_than="1d"),
        TypeError,
        ("older_than", "str"),
    ),
    (
        "clear-function-not-text",
        lambda c: cachedir.cache_clear(c, function=3),
        TypeError,
        ("function", "int"),
    ),
    (
        "info-largest-negative",
        lambda c: cachedir.cache_info(c, largest=-1),
        ValueError,
        ("largest", "-1"),
    ),
    (
        "info-largest-text",
        lambda c: cachedir.cache_info(c, largest="2"),
        TypeError,
        ("largest", "str"),
    ),
    (
        "short-secret",
        lambda c: cachedir.cache_info(c, secret=b"x"),
        ConfigError,
        ("secret", "bytes"),
    ),
    ("parse-age-garbage", lambda c: cachedir.parse_age("abc"), ConfigError, ("age", "abc")),
    ("parse-age-negative", lambda c: cachedir.parse_age("-5d"), ConfigError, ("age", "-5d")),
    ("parse-age-not-text", lambda c: cachedir.parse_age(5), TypeError, ("age", "int")),
]


@pytest.mark.parametrize(
    ("call", "kind", "words"), [c[1:] for c in CACHE_CALLS], ids=[c[0] for c in CACHE_CALLS]
)
def test_cache_functions_with_bad_arguments(cache, call, kind, words):
    (cache.parent / "afile").write_text("x")
    before = sorted(p.name for p in cache.iterdir())
    with pytest.raises(kind) as caught:
        call(cache)
    message = str(caught.value)
    assert all(word in message for word in words), message
    assert sorted(p.name for p in cache.iterdir()) == before, "a failed call changed the cache"


def test_cache_functions_on_a_missing_directory(tmp_path):
    missing = tmp_path / "never-made"
    assert cachedir.cache_ls(missing) == []
    assert cachedir.cache_info(missing)["exists"] is False
    assert cachedir.cache_clear(missing) == 0
    assert not missing.exists(), "looking at a cache must not create it"
