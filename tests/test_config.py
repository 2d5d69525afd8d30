"""Tests for lazygraph.config: Config.from_options, its defaults and its errors (and sizes)."""

from __future__ import annotations

import dataclasses
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lazygraph.config import OPTION_NAMES, Config
from lazygraph.errors import ConfigError, LazyGraphError
from lazygraph.executors.registry import EXECUTOR_NAMES
from lazygraph.machine import usable_memory
from lazygraph.units import format_bytes, parse_size

GiB = 2**30

# ---------------------------------------------------------------------------------------------
# parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GB", 2 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1.5 GB", 1_500_000_000),
        ("100kb", 100_000),
        ("100 KiB", 102_400),
        ("7", 7),
        ("7B", 7),
        ("1e9", 10**9),
        ("2.5e3 KB", 2_500_000),
        (" 3 tib ", 3 * 2**40),
        ("4G", 4 * 10**9),
        ("4Gi", 4 * 2**30),
        (".5MB", 500_000),
        (0, 0),
        (12345, 12345),
        (np.int64(2048), 2048),
        (1e9, 10**9),
        (2.9, 2),
    ],
)
def test_parse_size_accepts(text: object, expected: int) -> None:
    assert parse_size(text, name="memory_limit") == expected


def test_parse_size_error_names_the_option_and_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse_size("2XB", name="memory_limit")
    message = str(info.value)
    assert message.startswith('memory_limit must be a size like "2GB" (got "2XB")')
    assert "MiB" in message  # says how to fix it
    assert isinstance(info.value, ValueError) and isinstance(info.value, LazyGraphError)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("-1GB", '(got "-1GB")'),
        (-5, "(got -5)"),
        (float("nan"), "(got nan)"),
        (float("inf"), "(got inf)"),
        ("nan", '(got "nan")'),
        (True, "(got True)"),
        ([1, 2], "(got list [1, 2])"),
        (None, "(got NoneType None)"),
        ("", '(got "")'),
        ("GB", '(got "GB")'),
        ("1 2 GB", '(got "1 2 GB")'),
        ("10%", '(got "10%")'),  # no percentages without a total
    ],
)
def test_parse_size_rejects(value: object, shown: str) -> None:
    with pytest.raises(ConfigError, match=r"^rss_limit must be a (non-negative )?size") as info:
        parse_size(value, name="rss_limit")
    assert shown in str(info.value)


def test_negative_sizes_say_so() -> None:
    with pytest.raises(ConfigError, match="non-negative"):
        parse_size("-1GB", name="memory_limit")


def test_percentages_of_a_total() -> None:
    assert parse_size("10%", name="min_available", total=5000) == 500
    assert parse_size(" 2.5 % ", name="min_available", total=1000) == 25
    assert parse_size("1GB", name="min_available", total=5000) == 10**9
    with pytest.raises(ConfigError, match=r"percentage from 0% to 100% \(got \"150%\"\)"):
        parse_size("150%", name="min_available", total=5000)
    with pytest.raises(ConfigError, match='or a percentage such as "10%"'):
        parse_size("ten%", name="min_available", total=5000)


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(2 * GiB) == "2.0 GiB"
    assert format_bytes(1536 * 2**20) == "1.5 GiB"


# ---------------------------------------------------------------------------------------------
# Config.from_options


def test_defaults_derive_from_usable_memory() -> None:
    usable = usable_memory()
    config = Config.from_options(env={})
    assert config.memory_limit == usable // 4
    assert config.rss_limit == usable * 4 // 5
    assert config.min_available == usable // 20
    assert config.spill is True and config.spill_threshold == 2**20
    assert config.cache_dir is None and config.persist is False
    assert config.cuda_limit is None and config.disk_limit is None
    assert config.executor == "sync" and config.workers >= 1
    assert config.progress is True and config.freeze is False


def test_explicit_options_are_parsed() -> None:
    config = Config.from_options(
        memory_limit="2GB",
        rss_limit="3GiB",
        min_available="10%",
        cuda_limit="1GB",
        spill=False,
        spill_threshold="64KiB",
        disk_limit="10GB",
        executor="threads",
        workers=3,
        progress=False,
        freeze=True,
        env={},
    )
    assert config.memory_limit == 2 * 10**9
    assert config.rss_limit == 3 * GiB
    assert config.min_available == usable_memory() // 10
    assert (config.cuda_limit, config.disk_limit) == (10**9, 10 * 10**9)
    assert config.spill_threshold == 64 * 1024
    assert (config.spill, config.progress, config.freeze) == (False, False, True)
    assert (config.executor, config.workers) == ("threads", 3)


def test_config_is_frozen() -> None:
    config = Config.from_options(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.memory_limit = 1  # type: ignore[misc]


def test_environment_fills_options() -> None:
    env = {
        "LAZYGRAPH_MEMORY_LIMIT": "1.5 GB",
        "LAZYGRAPH_SPILL": "off",
        "LAZYGRAPH_FREEZE": "YES",
        "LAZYGRAPH_WORKERS": "5",
        "LAZYGRAPH_EXECUTOR": "processes",
        "LAZYGRAPH_MIN_AVAILABLE": "1%",
        "LAZYGRAPH_DISK_LIMIT": "none",
        "LAZYGRAPH_PROGRESS": "",  # empty counts as unset
    }
    config = Config.from_options(env=env)
    assert config.memory_limit == 1_500_000_000
    assert (config.spill, config.freeze, config.progress) == (False, True, True)
    assert (config.workers, config.executor) == (5, "processes")
    assert config.min_available == usable_memory() // 100
    assert config.disk_limit is None


def test_keywords_win_over_environment_and_none_means_not_given() -> None:
    env = {"LAZYGRAPH_MEMORY_LIMIT": "1GB", "LAZYGRAPH_WORKERS": "4"}
    config = Config.from_options(memory_limit="2GB", workers=None, env=env)
    assert config.memory_limit == 2 * 10**9
    assert config.workers == 4


def test_os_environ_is_the_default_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAZYGRAPH_SPILL_THRESHOLD", "3MB")
    assert Config.from_options().spill_threshold == 3 * 10**6


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r'^LAZYGRAPH_MEMORY_LIMIT must be a size like "2GB" '):
        Config.from_options(env={"LAZYGRAPH_MEMORY_LIMIT": "2XB"})
    with pytest.raises(ConfigError, match=r'LAZYGRAPH_SPILL must be True or False \(got "maybe"\)'):
        Config.from_options(env={"LAZYGRAPH_SPILL": "maybe"})


def test_bad_keyword_value_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r'^memory_limit must be a size like "2GB" \(got "2XB"\)'):
        Config.from_options(memory_limit="2XB", env={})
    with pytest.raises(ConfigError, match="disk_limit must be a non-negative size"):
        Config.from_options(disk_limit=-1, env={})


def test_unknown_option_suggests_a_close_name() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_options(memory_limt="1GB", env={})
    message = str(info.value)
    assert 'unknown option "memory_limt"; did you mean "memory_limit"?' in message
    assert all(name in message for name in OPTION_NAMES)
    with pytest.raises(ConfigError, match='unknown option "zzz"; valid options: memory_limit'):
        Config.from_options(zzz=1, env={})


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"spill": "sometimes"}, r'spill must be True or False \(got "sometimes"\)'),
        ({"freeze": 1}, r"freeze must be True or False \(got 1\)"),
        ({"workers": 0}, r"workers must be a whole number of at least 1 \(got 0\)"),
        ({"workers": 2.5}, r"workers must be a whole number of at least 1 \(got 2.5\)"),
        ({"workers": True}, r"workers must be a whole number"),
        ({"executor": "thread"}, r'\(got "thread"\) \(did you mean "threads"\?\)'),
        ({"executor": 4}, r"to set the pool size pass workers=4"),
        ({"cache_dir": ""}, r'cache_dir must be a directory path \(got ""\)'),
        ({"cache_dir": 42}, r"cache_dir must be a directory path \(got 42\)"),
        ({"min_available": "200%"}, r"min_available must be a percentage from 0% to 100%"),
    ],
)
def test_bad_values(options: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        Config.from_options(env={}, **options)


def test_executor_objects_are_accepted() -> None:
    class MyExecutor:
        def run(self, pull: object) -> None:
            pass

        def close(self) -> None:
            pass

    executor = MyExecutor()
    assert Config.from_options(executor=executor, env={}).executor is executor
    assert set(EXECUTOR_NAMES) == {"sync", "threads", "processes", "dask"}


def test_cache_dir_sets_persist_by_default_and_is_not_created(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "cache"
    config = Config.from_options(cache_dir=target, env={})
    assert config.cache_dir == target and config.persist is True
    assert not target.exists() and not target.parent.exists()
    assert Config.from_options(cache_dir=str(target), persist=False, env={}).persist is False


def test_cache_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Config.from_options(cache_dir="c", env={}).cache_dir == tmp_path / "c"


def test_persist_without_cache_dir() -> None:
    with pytest.raises(ConfigError, match=r"persist=True needs a cache_dir .* pass cache_dir="):
        Config.from_options(persist=True, env={})


def test_cache_dir_that_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "data.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"exists and is not a directory; pass a directory"):
        Config.from_options(cache_dir=a_file, env={})
    with pytest.raises(ConfigError, match=rf"cannot be created: {a_file} is a file"):
        Config.from_options(cache_dir=a_file / "cache", env={})


def test_cache_dir_not_writable() -> None:
    # A real permission check needs a user the permissions apply to: as root, switch the
    # effective user to "nobody" around the call (root ignores directory modes).
    with tempfile.TemporaryDirectory() as base:
        os.chmod(base, 0o755)
        locked = Path(base) / "locked"
        locked.mkdir(mode=0o555)
        open_dir = Path(base) / "open"
        open_dir.mkdir(mode=0o777)
        os.chmod(open_dir, 0o777)
        try:
            with _as_unprivileged_user():
                with pytest.raises(ConfigError, match=r"is not writable: it does not let"):
                    Config.from_options(cache_dir=locked, env={})
                with pytest.raises(ConfigError, match=rf"its parent {locked} does not let"):
                    Config.from_options(cache_dir=locked / "cache", env={})
                assert Config.from_options(cache_dir=open_dir / "c", env={}).persist
        finally:
            os.chmod(locked, stat.S_IRWXU)


class _as_unprivileged_user:
    def __enter__(self) -> None:
        self.was_root = os.geteuid() == 0
        if self.was_root:
            os.setegid(65534)
            os.seteuid(65534)

    def __exit__(self, *exc: object) -> None:
        if self.was_root:
            os.seteuid(0)
            os.setegid(0)


def test_errors_leave_nothing_behind(tmp_path: Path) -> None:
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ConfigError):
        Config.from_options(cache_dir=tmp_path / "c", memory_limit="2XB", env={})
    assert sorted(tmp_path.iterdir()) == before


def test_odd_limits_are_allowed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    usable = usable_memory()
    with caplog.at_level("WARNING", logger="lazygraph.config"):
        config = Config.from_options(rss_limit=usable * 2, memory_limit=usable * 3, env={})
    assert config.rss_limit == usable * 2
    assert "above the" in caplog.text and "memory_limit" in caplog.text
