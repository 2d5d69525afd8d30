"""Fixtures of the reliability suite; every test in this folder is marked ``reliability``.

Run the folder alone with ``pytest -m reliability`` (or ``pytest tests/reliability``); it also
runs as part of the plain ``pytest`` command.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._helpers import _IN_PROCESS, CALL_LOG_ENV, CALL_PID_ENV, FAULTS_ENV, CallLog, Faults

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CallLog]:
    """Counts node calls, in this process and in worker processes (a shared append-only file)."""
    path = tmp_path / "calls.log"
    monkeypatch.setenv(CALL_LOG_ENV, str(path))
    monkeypatch.setenv(CALL_PID_ENV, str(os.getpid()))
    yield CallLog(path)
    _IN_PROCESS.pop(str(path), None)


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    """Makes chosen nodes raise, by label, in any process (flag files in a shared folder)."""
    folder = tmp_path / "faults"
    folder.mkdir()
    monkeypatch.setenv(FAULTS_ENV, str(folder))
    yield Faults(folder)


@pytest.fixture(scope="module")
def dask_client() -> Iterator[object]:
    """An in-process Dask cluster (threads), current while the module's tests run."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture
def executor_name(request: pytest.FixtureRequest) -> str:
    """The parametrized executor; starts the module's Dask cluster when it is "dask"."""
    name: str = request.param
    if name == "dask":
        request.getfixturevalue("dask_client")
        request.getfixturevalue("leak_baseline").retake()  # the cluster outlives this test
    return name


class Mounts:
    """Small tmpfs filesystems (real ENOSPC, real EROFS), unmounted when the test ends."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mounted: list[Path] = []

    def tmpfs(self, name: str, size: str) -> Path:
        where = self.base / name
        where.mkdir()
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size},mode=700", "tmpfs", str(where)],
                capture_output=True,
                text=True,
            )
        except FileNotFoundError:  # no mount command at all
            pytest.skip("no mount command here; the RLIMIT_FSIZE tests fail real writes instead")
        if done.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({done.stderr.strip()}); the "
                "RLIMIT_FSIZE tests fail real writes instead"
            )
        self.mounted.append(where)
        return where

    def read_only(self, where: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)

    def unmount_all(self) -> None:
        for where in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    found = Mounts(tmp_path)
    try:
        yield found
    finally:
        found.unmount_all()
