"""The cache directory's trust boundary: what another user can do to its parents (SPEC S5.8).

"Another user" is real: a forked child that drops to uid/gid 65534 (``nobody``) before it
touches anything, so the kernel's permission checks are the ones an attacker meets. Planted
files are real pickles that create a marker file if they are ever unpickled. The tests run
as root here and in CI (only root can switch users); elsewhere they are skipped.
"""

from __future__ import annotations

import gc
import grp
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from planted import planted_payload

import lazygraph
from lazygraph import CacheSecurityError, Session

from ._helpers import Spec, block, build, entry_files, evaluate

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root"),
]

NOBODY = 65534
SPEC = Spec([f"s{i}" for i in range(8)], [[] for _ in range(8)], [[0]] * 8)


def as_nobody(action: Callable[[], None]) -> None:
    """Run ``action`` in a forked child as uid/gid 65534; fail the test if it failed there."""
    pid = os.fork()
    if pid == 0:  # the child: drop privileges for good, act, leave without cleanup handlers
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the other user's actions failed"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory ``nobody`` can reach (pytest's own temp tree is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="lgtest-shared-", dir=tempfile.gettempdir()))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _nodes() -> list[lazygraph.Node]:
    return build(SPEC, [lazygraph.Input(5, name="x")], func=block)


def _check_all(nodes: list[lazygraph.Node]) -> None:
    values = lazygraph.compute(*nodes)
    for node, value, want in zip(nodes, values, evaluate(SPEC, [5]), strict=True):
        assert isinstance(value, np.ndarray) and (value == want).all(), node.name


# -- a parent swapped mid-session ----------------------------------------------------------


def test_parent_swap_by_another_user_never_loads_their_pickle(shared, tmp_path, caplog, calls):
    """The issue's reproduction: ``project`` becomes 0777 (no sticky bit) while a session
    uses ``project/cache``; nobody renames the real cache away and puts a directory of planted
    pickles, named like every entry, in its place. The next pull must not unpickle one."""
    marker = tmp_path / "UNPICKLED"
    payload = planted_payload(marker, tmp_path)
    project = shared / "project"
    project.mkdir(mode=0o755)
    cache = project / "cache"
    nodes = _nodes()
    with Session(cache_dir=cache, memory_limit="20kB", spill_threshold="1kB", progress=False) as s:
        _check_all(nodes)
        s.store.flush()
        gc.collect()  # no mapped copy stays alive: the next pull reads the files
        names = [p.name for p in entry_files(cache)]
        on_disk = [n for n in nodes if n.info().location in ("spilled", "disk")]
        assert len(names) == len(nodes) and len(on_disk) >= 4, "too little on disk to test"
        os.chmod(project, 0o777)  # shared with others, without the sticky bit

        def swap() -> None:
            os.rename(cache, project / "cache.real")
            os.mkdir(cache, 0o755)
            for name in names:
                (cache / name).write_bytes(payload)

        as_nobody(swap)
        assert cache.stat().st_uid == NOBODY
        before = calls.counts()
        caplog.set_level(logging.WARNING, logger="lazygraph")
        _check_all(nodes)
        assert not marker.exists(), "a pickle planted by another user was unpickled"
        ran = {label for label, count in calls.counts().items() if count > before[label]}
        assert ran >= {n.name for n in on_disk}, "what was on disk must be recomputed"
        assert any("was moved or replaced" in r.getMessage() for r in caplog.records)
        s.store.flush()
    assert sorted(p.name for p in cache.iterdir()) == sorted(names), "we wrote into theirs"
    with pytest.raises(CacheSecurityError, match="may write to"):
        Session(cache_dir=cache)  # the next session refuses the shared parent outright
    assert not marker.exists()


# -- parents a new session refuses ----------------------------------------------------------


def test_cache_dir_below_a_world_writable_parent_without_sticky_bit(shared):
    project = shared / "project"
    project.mkdir()
    os.chmod(project, 0o777)
    cache = project / "sub" / "cache"
    with pytest.raises(CacheSecurityError) as caught:
        Session(cache_dir=cache)
    message = str(caught.value)
    assert f"below {project}" in message and "other users may write to" in message
    assert f"chmod go-w {project}" in message and f"chmod +t {project}" in message
    assert isinstance(caught.value, PermissionError)
    assert os.listdir(project) == [], "nothing may be created below an unsafe directory"


def test_cache_dir_below_a_parent_writable_by_another_group(shared):
    project = shared / "project"
    project.mkdir()
    os.chown(project, 0, NOBODY)
    os.chmod(project, 0o775)
    with pytest.raises(CacheSecurityError, match=f"members of group .* chmod g-w {project}"):
        Session(cache_dir=project / "cache")


def test_group_writable_parent_of_ones_own_private_group_is_fine(shared):
    """A user-private group (only this user in it) writing is this user writing."""
    if grp.getgrgid(os.getegid()).gr_mem:
        pytest.skip("this user's group lists other members here")
    project = shared / "project"
    project.mkdir()
    os.chmod(project, 0o775)
    with Session(cache_dir=project / "cache", progress=False):
        assert lazygraph.compute(*_nodes()[:1])


def test_cache_dir_below_a_parent_another_user_owns(shared):
    theirs = shared / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(CacheSecurityError, match=f"below {theirs}, which belongs to nobody"):
        Session(cache_dir=theirs / "cache")
    assert os.listdir(theirs) == []


def test_sticky_shared_parents_are_fine(shared):
    """As /tmp: others may write to it, but cannot rename what is not theirs."""
    public = shared / "public"
    public.mkdir()
    os.chmod(public, 0o1777)
    with Session(cache_dir=public / "mine" / "cache", progress=False):
        assert lazygraph.compute(*_nodes()[:2])
    assert stat.S_IMODE((public / "mine").stat().st_mode) == 0o700


def test_symlinked_ancestor_another_user_controls(shared):
    """A link in a sticky shared directory belongs to whoever made it: they can repoint it."""
    public = shared / "public"
    public.mkdir()
    os.chmod(public, 0o1777)
    mine = shared / "mine"
    mine.mkdir(mode=0o700)
    link = public / "project"
    as_nobody(lambda: os.symlink(mine, link))
    assert link.lstat().st_uid == NOBODY
    with pytest.raises(CacheSecurityError) as caught:
        Session(cache_dir=link / "cache")
    message = str(caught.value)
    assert f"symbolic link {link}" in message and "belongs to nobody" in message
    assert os.listdir(mine) == []


def test_symlink_of_ours_into_a_directory_another_user_owns(shared):
    theirs = shared / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    link = shared / "link"
    link.symlink_to(theirs)
    with pytest.raises(CacheSecurityError, match=f"below {theirs}, which belongs to nobody"):
        Session(cache_dir=link / "cache")


def test_symlinks_of_ours_to_safe_directories_are_followed(shared):
    """A link this user owns, to a directory only this user can change, is as good as the path
    itself (macOS reaches /tmp through /private: such links must keep working)."""
    real = shared / "real"
    real.mkdir(mode=0o700)
    (shared / "link").symlink_to("real")  # relative, resolved from the link's directory
    with Session(cache_dir=shared / "link" / "cache", progress=False):
        assert lazygraph.compute(*_nodes()[:2])
    assert (real / "cache").is_dir() and entry_files(real / "cache")
