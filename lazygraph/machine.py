"""The machine this process runs on: the memory it can really use, and the CPUs it may run on.

Covers: :func:`usable_memory` (psutil's total capped by the cgroup v1/v2 limits on this
process), :func:`cgroup_memory_limit` (reading ``/proc/self/cgroup``, ``mountinfo`` and the
limit files, also in containers and hybrid hierarchies) and :func:`cpu_count` (the CPUs this
process may run on). Does not cover: turning them into option defaults (``config``) or
watching memory while pulls run (``pressure``).

>>> 0 < usable_memory() <= psutil.virtual_memory().total
True
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psutil

__all__ = ["cgroup_memory_limit", "cpu_count", "usable_memory"]

logger = logging.getLogger(__name__)

# A cgroup v1 "no limit" is PAGE_COUNTER_MAX * page size (~2**63); anything this big is no limit.
_NO_LIMIT = 2**60


def cpu_count() -> int:
    """The CPUs this process may run on (at least 1).

    >>> cpu_count() >= 1
    True
    """
    # sched_getaffinity honours taskset and cpusets; cpu_count() is the machine's.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_memory(*, root: str = "/") -> int:
    """Return the bytes of RAM this process can really use.

    That is the machine's total memory (psutil) capped by the memory limit of the process's
    cgroup and every cgroup above it, v1 (``memory.limit_in_bytes``) or v2 (``memory.max`` and
    ``memory.high``), so that defaults derived from it keep a process in a container or under a
    job scheduler clear of the OOM killer.  ``root`` points the cgroup lookup at another file
    tree (tests use sample files); psutil's total always comes from the running machine.

    >>> 0 < usable_memory() <= psutil.virtual_memory().total
    True
    """
    total = _total_memory()
    limit = cgroup_memory_limit(root=root)
    return total if limit is None else min(total, limit)


def _total_memory() -> int:
    """The machine's RAM: psutil's ``total`` (MemTotal), read without parsing /proc/meminfo."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system that reports it
        return int(psutil.virtual_memory().total)


def _read_text(path: Path | str) -> str:
    # Binary, then decoded: a text-mode open looks up the locale's encoding first (this
    # runs in every new process's first Session).
    with open(path, "rb") as f:
        return f.read().decode()


def cgroup_memory_limit(*, root: str = "/") -> int | None:
    """Return the tightest cgroup memory limit on this process in bytes, or None if unlimited.

    Reads ``/proc/self/cgroup`` and ``/proc/self/mountinfo`` under ``root`` to find the
    process's memory cgroup (v1 and v2, also hybrid hierarchies), then walks from it up to
    the mount point.  Never raises: unreadable files count as "no limit".

    >>> limit = cgroup_memory_limit()
    >>> limit is None or limit > 0
    True
    """
    limits: list[int] = []
    try:
        memberships = _read_memberships(root)
        for version, mount_root, mount_point in _cgroup_mounts(root):
            path = memberships.get(version)
            if path is not None:
                start = _cgroup_dir(root, mount_root, mount_point, path)
                limits.extend(_limits_up_to(start, _join(root, mount_point), version))
    except (OSError, ValueError) as exc:  # a cgroup tree we cannot read is not a limit
        logger.debug("cgroup memory limit unreadable under %s: %s", root, exc)
    return min(limits) if limits else None


def _join(root: str, absolute: str) -> Path:
    return Path(root) / absolute.lstrip("/")


def _read_memberships(root: str) -> dict[str, str]:
    """Map "v1"/"v2" to the process's memory cgroup path, from /proc/self/cgroup."""
    found: dict[str, str] = {}
    text = _read_text(_join(root, "/proc/self/cgroup"))
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            found["v2"] = path
        elif "memory" in controllers.split(","):
            found["v1"] = path
    return found


def _cgroup_mounts(root: str) -> Iterator[tuple[str, str, str]]:
    """Yield (version, mount root, mount point) of cgroup mounts; conventional ones if unknown."""
    try:
        lines = _read_text(_join(root, "/proc/self/mountinfo")).splitlines()
    except OSError:
        yield "v1", "/", "/sys/fs/cgroup/memory"
        yield "v2", "/", "/sys/fs/cgroup"
        yield "v2", "/", "/sys/fs/cgroup/unified"
        return
    for line in lines:
        before, _, after = line.partition(" - ")
        head, tail = before.split(), after.split()
        if len(head) < 5 or len(tail) < 3:
            continue
        mount_root, mount_point = _unescape(head[3]), _unescape(head[4])
        if tail[0] == "cgroup2":
            yield "v2", mount_root, mount_point
        elif tail[0] == "cgroup" and "memory" in tail[2].split(","):
            yield "v1", mount_root, mount_point


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040).
    if "\\" not in field:  # the common case: no regex per field
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _cgroup_dir(root: str, mount_root: str, mount_point: str, path: str) -> Path:
    """The directory of cgroup ``path`` under a mount of the hierarchy at ``mount_root``."""
    base = _join(root, mount_point)
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :]  # a container sees its own cgroup as the mount's root
    candidate = base / path.lstrip("/")
    return candidate if candidate.is_dir() else base


def _limits_up_to(start: Path, top: Path, version: str) -> Iterator[int]:
    names = ("memory.limit_in_bytes",) if version == "v1" else ("memory.max", "memory.high")
    directory = start
    while True:
        for name in names:
            limit = _read_limit(directory / name)
            if limit is not None:
                yield limit
        if directory == top or directory.parent == directory or top not in directory.parents:
            return
        directory = directory.parent


def _read_limit(path: Path) -> int | None:
    try:
        text = _read_text(path).strip()
    except OSError:
        return None
    if text in ("", "max"):
        return None
    value = int(text)
    return value if 0 < value < _NO_LIMIT else None
