"""Tests for lazygraph.machine: cgroup v1/v2 memory limits read from sample file trees."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from lazygraph.machine import cgroup_memory_limit, cpu_count, usable_memory

GiB = 2**30

# ---------------------------------------------------------------------------------------------
# cgroup limits from sample files


def _write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


V1_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
NO_LIMIT_V1 = "9223372036854771712\n"


def test_cgroup_v1_limit_of_own_cgroup(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "4:memory:/jobs/job1\n1:cpu:/\n0::/\n")
    _write(tmp_path, "/proc/self/mountinfo", V1_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/memory/memory.limit_in_bytes", NO_LIMIT_V1)
    _write(tmp_path, "/sys/fs/cgroup/memory/jobs/memory.limit_in_bytes", NO_LIMIT_V1)
    _write(tmp_path, "/sys/fs/cgroup/memory/jobs/job1/memory.limit_in_bytes", "536870912\n")
    assert cgroup_memory_limit(root=str(tmp_path)) == 512 * 2**20
    assert usable_memory(root=str(tmp_path)) == 512 * 2**20


def test_cgroup_v1_limit_of_a_parent_counts(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "4:memory:/jobs/job1\n")
    _write(tmp_path, "/proc/self/mountinfo", V1_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/memory/jobs/memory.limit_in_bytes", "1073741824\n")
    _write(tmp_path, "/sys/fs/cgroup/memory/jobs/job1/memory.limit_in_bytes", NO_LIMIT_V1)
    assert cgroup_memory_limit(root=str(tmp_path)) == GiB


def test_cgroup_v1_unlimited_is_none(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "4:memory:/\n")
    _write(tmp_path, "/proc/self/mountinfo", V1_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/memory/memory.limit_in_bytes", NO_LIMIT_V1)
    assert cgroup_memory_limit(root=str(tmp_path)) is None
    assert usable_memory(root=str(tmp_path)) == psutil.virtual_memory().total


def test_cgroup_v2_max_and_high(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "0::/user.slice/session.scope\n")
    _write(tmp_path, "/proc/self/mountinfo", V2_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/user.slice/memory.max", "max\n")
    _write(tmp_path, "/sys/fs/cgroup/user.slice/session.scope/memory.max", "2147483648\n")
    _write(tmp_path, "/sys/fs/cgroup/user.slice/session.scope/memory.high", "max\n")
    assert cgroup_memory_limit(root=str(tmp_path)) == 2 * GiB
    _write(tmp_path, "/sys/fs/cgroup/user.slice/memory.high", "1073741824\n")
    assert cgroup_memory_limit(root=str(tmp_path)) == GiB


def test_cgroup_v2_unlimited_is_none(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "0::/a\n")
    _write(tmp_path, "/proc/self/mountinfo", V2_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/a/memory.max", "max\n")
    assert cgroup_memory_limit(root=str(tmp_path)) is None


def test_cgroup_container_sees_its_cgroup_as_mount_root(tmp_path: Path) -> None:
    # Docker without a cgroup namespace: the mount's root is the container's own cgroup.
    _write(tmp_path, "/proc/self/cgroup", "9:memory:/docker/abc\n")
    _write(
        tmp_path,
        "/proc/self/mountinfo",
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
    )
    _write(tmp_path, "/sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n")
    assert cgroup_memory_limit(root=str(tmp_path)) == 256 * 2**20


def test_cgroup_hybrid_takes_the_tighter_limit(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "4:memory:/j\n0::/j\n")
    _write(tmp_path, "/proc/self/mountinfo", V1_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/memory/j/memory.limit_in_bytes", str(3 * GiB))
    _write(tmp_path, "/sys/fs/cgroup/unified/j/memory.max", str(2 * GiB))
    assert cgroup_memory_limit(root=str(tmp_path)) == 2 * GiB


def test_cgroup_without_mountinfo_uses_conventional_paths(tmp_path: Path) -> None:
    _write(tmp_path, "/proc/self/cgroup", "0::/svc\n")
    _write(tmp_path, "/sys/fs/cgroup/svc/memory.max", str(3 * GiB))
    assert cgroup_memory_limit(root=str(tmp_path)) == 3 * GiB


def test_cgroup_missing_or_garbled_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(root=str(tmp_path)) is None
    _write(tmp_path, "/proc/self/cgroup", "0::/svc\n")
    _write(tmp_path, "/proc/self/mountinfo", V2_MOUNTINFO)
    _write(tmp_path, "/sys/fs/cgroup/svc/memory.max", "lots\n")
    assert cgroup_memory_limit(root=str(tmp_path)) is None
    assert usable_memory(root=str(tmp_path)) == psutil.virtual_memory().total


def test_usable_memory_of_this_process() -> None:
    usable = usable_memory()
    limit = cgroup_memory_limit()
    assert 0 < usable <= psutil.virtual_memory().total
    if limit is not None:
        assert usable <= limit


def test_cpu_count_is_what_this_process_may_use() -> None:
    count = cpu_count()
    assert 1 <= count <= (os.cpu_count() or 1)
