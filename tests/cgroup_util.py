"""A child memory cgroup for tests: run a command under a hard memory limit, then clean up.

Covers: finding this process's memory cgroup (cgroup v1's memory controller, or cgroup v2 where
the memory controller can be delegated to a child), creating a child cgroup under it with a
memory limit and no swap, starting a command inside it, reading its peak usage and its OOM
kills, and removing it. Does not cover: CPU or I/O limits, or anything a non-root user cannot
do: when cgroups cannot be written, ``MemoryCgroup.create`` raises ``CgroupUnavailable`` with
the reason, for the test to skip with.

Independent of ``lazygraph.machine`` on purpose: the test checks lazygraph's reading of cgroup
limits against a cgroup made by other code.

    with MemoryCgroup.create(400 * 10**6) as group:
        done = group.run([sys.executable, "-c", "print(1)"], timeout=30)
        done.returncode, done.peak_bytes, done.oom_kills
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CgroupRun", "CgroupUnavailable", "MemoryCgroup"]

# The launcher moves itself into the cgroup, then becomes the command: the command's first
# byte of memory is already charged to the child cgroup.
_LAUNCHER = 'echo $$ > "$0" && exec "$@"'


class CgroupUnavailable(RuntimeError):
    """No child memory cgroup can be made here; the message says why."""


@dataclass(frozen=True)
class CgroupRun:
    """How a command run in the cgroup ended, and what the cgroup recorded about it."""

    returncode: int
    stdout: str
    stderr: str
    limit_bytes: int  # the limit as the kernel stored it (rounded down to whole pages)
    peak_bytes: int | None  # peak usage, page cache included; None if the kernel has no counter
    oom_kills: int | None  # processes the OOM killer ended in the cgroup; None if unreadable

    @property
    def killed(self) -> bool:
        """True when the command died of SIGKILL (what the OOM killer sends)."""
        return self.returncode in (-9, 137)


@dataclass(frozen=True)
class _Layout:
    version: str  # "v1" or "v2"
    parent: Path  # the cgroup directory the child is made in


class MemoryCgroup:
    """A child memory cgroup; ``create`` makes it, ``remove`` (or leaving ``with``) deletes it."""

    def __init__(self, path: Path, version: str, limit_bytes: int) -> None:
        self.path = path
        self.version = version
        self.limit_bytes = limit_bytes

    @classmethod
    def create(cls, limit_bytes: int, *, prefix: str = "lazygraph-test-") -> MemoryCgroup:
        """Make a child of this process's memory cgroup limited to ``limit_bytes``, no swap.

        Raises CgroupUnavailable (with the reason) when that cannot be done here.
        """
        if os.geteuid() != 0:
            raise CgroupUnavailable(f"creating a memory cgroup needs root (euid {os.geteuid()})")
        layout = _find_layout()
        path = layout.parent / f"{prefix}{os.getpid()}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except OSError as exc:
            raise CgroupUnavailable(f"cannot create a cgroup in {layout.parent}: {exc}") from exc
        group = cls(path, layout.version, limit_bytes)
        try:
            group._limit(limit_bytes)
        except OSError as exc:
            group.remove()
            raise CgroupUnavailable(f"cannot set a memory limit on {path}: {exc}") from exc
        return group

    def _limit(self, limit_bytes: int) -> None:
        if self.version == "v1":
            _write(self.path / "memory.limit_in_bytes", limit_bytes)
            self.limit_bytes = int(_read(self.path / "memory.limit_in_bytes"))
            swap = self.path / "memory.memsw.limit_in_bytes"  # memory + swap: no swapping
            if swap.exists():
                _write(swap, self.limit_bytes)
        else:
            _write(self.path / "memory.max", limit_bytes)
            self.limit_bytes = int(_read(self.path / "memory.max"))
            swap = self.path / "memory.swap.max"
            if swap.exists():
                _write(swap, 0)

    def run(
        self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
    ) -> CgroupRun:
        """Run ``argv`` inside the cgroup, wait for it (at most ``timeout`` s), and report."""
        launcher = ["sh", "-c", _LAUNCHER, str(self.path / "cgroup.procs"), *argv]
        done = subprocess.run(
            launcher, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        return CgroupRun(
            done.returncode,
            done.stdout,
            done.stderr,
            self.limit_bytes,
            self.peak_bytes(),
            self.oom_kills(),
        )

    def peak_bytes(self) -> int | None:
        """The cgroup's peak memory usage (page cache included), if the kernel keeps one."""
        name = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        with contextlib.suppress(OSError, ValueError):
            return int(_read(self.path / name))
        return None

    def oom_kills(self) -> int | None:
        """How many processes the OOM killer ended in this cgroup (None if not counted)."""
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        with contextlib.suppress(OSError):
            match = re.search(r"^oom_kill (\d+)$", _read(self.path / name), re.MULTILINE)
            return int(match.group(1)) if match else None
        return None

    def remove(self) -> None:
        """Delete the cgroup; waits briefly for its processes to be gone. Idempotent."""
        deadline = time.monotonic() + 5.0
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:  # EBUSY while a killed process is still being torn down
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def _find_layout() -> _Layout:
    """Where a child memory cgroup can go: v1's memory hierarchy first, else v2 if delegable."""
    memberships = _memberships()
    mounts = _mounts()
    if "v1" in memberships and "v1" in mounts:
        mount_root, mount_point = mounts["v1"]
        return _Layout("v1", _cgroup_dir(mount_point, mount_root, memberships["v1"]))
    if "v2" in memberships and "v2" in mounts:
        mount_root, mount_point = mounts["v2"]
        own = _cgroup_dir(mount_point, mount_root, memberships["v2"])
        return _Layout("v2", _v2_parent(own, Path(mount_point)))
    raise CgroupUnavailable("no cgroup memory controller is mounted for this process")


def _memberships() -> dict[str, str]:
    """Map "v1"/"v2" to this process's cgroup path (lazygraph.machine reads it the same way)."""
    from lazygraph.machine import _read_memberships

    return _read_memberships("/")


def _mounts() -> dict[str, tuple[str, str]]:
    """Map "v1"/"v2" to (mount root, mount point) of the memory hierarchy, from mountinfo."""
    found: dict[str, tuple[str, str]] = {}
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        before, _, after = line.partition(" - ")
        head, tail = before.split(), after.split()
        if len(head) < 5 or len(tail) < 3:
            continue
        if "ro" in head[5].split(","):
            continue  # a read-only cgroupfs cannot take a child
        if tail[0] == "cgroup2":
            found.setdefault("v2", (head[3], head[4]))
        elif tail[0] == "cgroup" and "memory" in tail[2].split(","):
            found.setdefault("v1", (head[3], head[4]))
    return found


def _cgroup_dir(mount_point: str, mount_root: str, path: str) -> Path:
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :]  # a container sees its own cgroup as the mount's root
    directory = Path(mount_point) / path.lstrip("/")
    if not directory.is_dir():
        raise CgroupUnavailable(f"this process's memory cgroup {directory} is not visible")
    return directory


def _v2_parent(own: Path, top: Path) -> Path:
    """A v2 cgroup that already delegates the memory controller: our own, or our parent.

    v2 forbids enabling controllers for the children of a cgroup that has processes of its
    own (except the root), so a busy leaf usually cannot take a child; its parent may
    delegate memory to its children, which makes a sibling of ours possible. Nothing is
    enabled here: changing ``cgroup.subtree_control`` would affect other processes.
    """
    candidates = [own] if own == top else [own, own.parent]
    for candidate in candidates:
        with contextlib.suppress(OSError):
            if "memory" in _read(candidate / "cgroup.subtree_control").split():
                return candidate
    raise CgroupUnavailable(
        f"cgroup v2 at {own}: neither it nor its parent delegates the memory controller "
        "to children (cgroup.subtree_control has no 'memory')"
    )


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")
