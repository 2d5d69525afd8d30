"""Size options that cannot mean what they say are refused or warned about (issue 16).

- ``memory_limit=0.5`` (and any size between 0 and 1 byte) is refused with a ConfigError that
  suggests a percentage, instead of being rounded down to 0 bytes.
- ``disk_limit`` without ``cache_dir`` budgets nothing: it is accepted with a warning saying so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lazygraph.config import Config
from lazygraph.errors import ConfigError


@pytest.mark.parametrize("value", [0.5, "0.5", 0.999, "0.1 B"])
def test_a_fraction_of_a_byte_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match=r'memory_limit is a number of bytes.*"50%"'):
        Config.from_options(memory_limit=value, env={})
    with pytest.raises(ConfigError, match="disk_limit is a number of bytes"):
        Config.from_options(disk_limit=value, env={})


def test_a_fraction_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="LAZYGRAPH_MEMORY_LIMIT is a number of bytes"):
        Config.from_options(env={"LAZYGRAPH_MEMORY_LIMIT": "0.5"})


def test_zero_and_floats_of_a_byte_or_more_are_sizes() -> None:
    assert Config.from_options(memory_limit=0, env={}).memory_limit == 0
    assert Config.from_options(memory_limit=1.9, env={}).memory_limit == 1
    assert Config.from_options(memory_limit=1e9, env={}).memory_limit == 10**9


def test_disk_limit_without_cache_dir_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="lazygraph.config"):
        config = Config.from_options(disk_limit="1GB", env={})
    assert config.disk_limit == 10**9
    assert "disk_limit 954 MiB is ignored" in caplog.text and "cache_dir" in caplog.text


def test_disk_limit_with_cache_dir_is_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="lazygraph.config"):
        Config.from_options(disk_limit="1GB", cache_dir=tmp_path / "c", env={})
    assert "disk_limit" not in caplog.text
