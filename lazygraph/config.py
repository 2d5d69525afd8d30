"""Session options: sizes ("2GB"), machine-derived defaults, ``LAZYGRAPH_*`` overrides, checks.

Covers: :class:`Config`, the validated, immutable set of options a ``Session`` is built from
(SPEC S5.1, S7.3): one parser per option, defaults derived from the machine, the environment
variables, the error messages.  Does not cover: parsing sizes (``units``), measuring the
machine (``machine``: usable memory under cgroup limits, CPUs), the executor names
(``executors.registry``), acting on the options (the store, the memory monitor and the
executors do that) or creating ``cache_dir`` (the disk tier does, with the right permissions).

>>> Config.from_options(memory_limit="512MiB", env={}).memory_limit
536870912
"""

from __future__ import annotations

import difflib
import logging
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .executors.registry import EXECUTOR_NAMES, unknown_executor
from .machine import cpu_count, usable_memory
from .units import format_bytes, parse_size, shown

__all__ = ["Config", "OPTION_NAMES"]

logger = logging.getLogger(__name__)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

# ---------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class Config:
    """The validated options of a Session; build it with :meth:`Config.from_options`.

    Sizes are bytes.  ``cuda_limit=None`` means "a default per device" (the store asks
    ``lazygraph.cuda.default_cuda_limit``); ``disk_limit=None`` means no budget;
    ``cluster_limit=None`` means half the Dask workers' memory limits (the cluster tier,
    ``lazygraph.store.cluster``, asks the cluster when it is first used); ``executor``
    is one of :data:`EXECUTOR_NAMES` or an executor object.

    >>> config = Config.from_options(memory_limit="1GB", workers=2, env={})
    >>> config.memory_limit, config.workers, config.persist
    (1000000000, 2, False)
    """

    memory_limit: int
    rss_limit: int
    min_available: int
    cuda_limit: int | None = None
    spill: bool = True
    spill_threshold: int = 2**20
    cache_dir: Path | None = None
    persist: bool = False
    disk_limit: int | None = None
    cluster_limit: int | None = None
    executor: Any = "sync"
    workers: int = 1
    progress: bool = True
    freeze: bool = False
    redefined: str = "warn"

    @classmethod
    def from_options(cls, *, env: Mapping[str, str] | None = None, **options: Any) -> Config:
        """Validate ``options``, fill the rest from ``LAZYGRAPH_<NAME>`` variables and defaults.

        A keyword given as ``None`` counts as not given.  ``env`` defaults to ``os.environ``.
        Defaults, from the usable memory ``U`` (:func:`lazygraph.machine.usable_memory`):

        - ``memory_limit`` = 25% of U: the cache shares the process with the user's own
          working data (a node typically holds its inputs and its output at once).
        - ``rss_limit`` = 80% of U and ``min_available`` = 5% of U: shed before the kernel
          has to, leaving room for the allocation that crossed the line.  ``rss_limit`` is
          compared with ``lazygraph.pressure.process_memory()``: resident memory not backed by
          files (memory-mapped spill files do not count), system-wide available memory with
          ``min_available``.
        - ``spill`` = True; ``spill_threshold`` = 1 MiB, joblib's own memmapping threshold
          (``max_nbytes="1M"``): below that a file costs more than it saves.
        - ``persist`` = True when ``cache_dir`` is given; ``executor`` = "sync"; ``workers`` =
          the CPUs this process may run on; ``progress`` = True; ``freeze`` = False;
          ``redefined`` = "warn" (or "rebuild": see docs/guide-keys.md).

        Raises :class:`ConfigError` naming the option, what it expects and what it got.  Pure:
        nothing is created or changed (``cache_dir`` is checked, not made).

        >>> Config.from_options(memory_limt="1GB", env={})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
          ...
        lazygraph.errors.ConfigError: unknown option "memory_limt"; did you mean "memory_limit"? ...
        """
        _check_names(options)
        environ = os.environ if env is None else env
        usable = usable_memory()
        values = {name: _pick(name, options, environ, usable) for name in OPTION_NAMES}
        _fill_defaults(values, usable)
        if values["persist"] and values["cache_dir"] is None:
            raise ConfigError(
                "persist=True needs a cache_dir to persist to (got cache_dir=None); "
                'pass cache_dir="path/to/cache" or persist=False'
            )
        config = cls(**values)
        _warn_odd_limits(config, usable)
        return config


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Config))


def _check_names(options: Mapping[str, Any]) -> None:
    for name in options:
        if name not in OPTION_NAMES:
            close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
            guess = f'; did you mean "{close[0]}"?' if close else ";"
            raise ConfigError(
                f'unknown option "{name}"{guess} valid options: {", ".join(OPTION_NAMES)}'
            )


def _pick(name: str, options: Mapping[str, Any], env: Mapping[str, str], usable: int) -> Any:
    """The parsed value of one option: the keyword, else the environment, else None."""
    value = options.get(name)
    label = name
    if value is None:
        label = "LAZYGRAPH_" + name.upper()
        value = env.get(label) or None  # an empty variable counts as unset
        if value is None:
            return None
        optional = name in ("cuda_limit", "disk_limit", "cluster_limit")
        if optional and value.strip().lower() == "none":
            return None
    return _PARSERS[name](value, label, usable)


def _fill_defaults(values: dict[str, Any], usable: int) -> None:
    defaults = {
        "memory_limit": usable // 4,
        "rss_limit": usable * 4 // 5,
        "min_available": usable // 20,
        "spill": True,
        "spill_threshold": 2**20,
        "persist": values["cache_dir"] is not None,
        "executor": "sync",
        "workers": cpu_count(),
        "progress": True,
        "freeze": False,
        "redefined": "warn",
    }
    for name, default in defaults.items():
        if values[name] is None:
            values[name] = default


def _warn_odd_limits(config: Config, usable: int) -> None:
    if config.disk_limit is not None and config.cache_dir is None:
        # A warning, not an error: LAZYGRAPH_DISK_LIMIT may be set for every session while
        # only some of them persist.
        logger.warning(
            "disk_limit %s is ignored: it budgets cache_dir, and cache_dir is not set "
            "(spill files live in a private temporary directory, removed on close)",
            format_bytes(config.disk_limit),
        )
    if config.rss_limit > usable:
        logger.warning(
            "rss_limit %s is above the %s this process can use: the kernel may stop the "
            "process before lazygraph sheds memory",
            format_bytes(config.rss_limit),
            format_bytes(usable),
        )
    if config.memory_limit > config.rss_limit:
        logger.warning(
            "memory_limit %s is above rss_limit %s: memory pressure will evict entries "
            "before the memory tier is full",
            format_bytes(config.memory_limit),
            format_bytes(config.rss_limit),
        )


# ---------------------------------------------------------------------------------------------
# One parser per kind of option; each takes (value, label for messages, usable memory).


def _size(value: Any, label: str, usable: int) -> int:
    return parse_size(value, name=label)


def _size_or_percent(value: Any, label: str, usable: int) -> int:
    return parse_size(value, name=label, total=usable)


def _flag(value: Any, label: str, usable: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(
        f"{label} must be True or False (got {shown(value)}); "
        "in the environment use 1/0, true/false, yes/no or on/off"
    )


def _workers(value: Any, label: str, usable: int) -> int:
    number = None
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if whole or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
    if number is None or number < 1:
        raise ConfigError(f"{label} must be a whole number of at least 1 (got {shown(value)})")
    return number


def _executor(value: Any, label: str, usable: int) -> Any:
    if isinstance(value, str):
        if value in EXECUTOR_NAMES:
            return value
        raise unknown_executor(value, label=label)
    if isinstance(value, numbers.Number):
        raise ConfigError(
            f"{label} must be one of {', '.join(EXECUTOR_NAMES)} or an executor object "
            f"(got {shown(value)}); to set the pool size pass workers={value!r}"
        )
    if not callable(getattr(value, "run", None)):
        raise ConfigError(
            f"{label} must be one of {', '.join(EXECUTOR_NAMES)} or an executor object with "
            f"run(pull) and close() (got a {type(value).__name__} without run())"
        )
    return value


def _cache_dir(value: Any, label: str, usable: int) -> Path:
    if not isinstance(value, (str, os.PathLike)) or os.fspath(value) in ("", b""):
        raise ConfigError(f"{label} must be a directory path (got {shown(value)})")
    raw = os.fspath(value)
    if isinstance(raw, bytes):
        raise ConfigError(f"{label} must be a str or pathlib.Path (got {shown(value)})")
    path = Path(raw).expanduser().absolute()
    try:
        _check_writable_dir(path, label)
    except OSError as exc:
        raise ConfigError(f"{label} {path} cannot be checked ({exc}); choose another") from exc
    return path


def _check_writable_dir(path: Path, label: str) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{label} {path} exists and is not a directory; "
            "pass a directory path (or move the file away)"
        )
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{label} {path} cannot be created: {existing} is a file, not a folder")
    if not _writable(existing):
        where = "it" if existing == path else f"its parent {existing}"
        raise ConfigError(
            f"{label} {path} is not writable: {where} does not let this user create files; "
            "fix the permissions (chmod u+rwx) or choose a directory you can write to"
        )


def _writable(directory: Path) -> bool:
    # Effective ids, because they are what creating a file will be checked against.
    effective = os.access in os.supports_effective_ids
    return os.access(directory, os.W_OK | os.X_OK, effective_ids=effective)


def _redefined(value: Any, label: str, usable: int) -> str:
    """What a pull does with a node built from a since redefined definition (SPEC S3.9)."""
    if value not in ("warn", "rebuild"):
        raise ConfigError(f'{label} must be "warn" or "rebuild" (got {shown(value)})')
    return str(value)


_PARSERS = {
    "memory_limit": _size_or_percent,
    "rss_limit": _size_or_percent,
    "min_available": _size_or_percent,
    "cuda_limit": _size,
    "spill": _flag,
    "spill_threshold": _size,
    "cache_dir": _cache_dir,
    "persist": _flag,
    "disk_limit": _size,
    "cluster_limit": _size,
    "executor": _executor,
    "workers": _workers,
    "progress": _flag,
    "freeze": _flag,
    "redefined": _redefined,
}
