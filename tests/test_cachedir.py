"""Cache directory checks, the per-user secret, and the ``cache info|ls|clear`` functions
(SPEC S5.8, S7.3, S9.2)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lazygraph.errors import CacheSecurityError, ConfigError
from lazygraph.store.cachedir import (
    cache_clear,
    cache_info,
    cache_ls,
    default_cache_dir,
    format_info,
    format_ls,
    parse_age,
)
from lazygraph.store.dirtrust import ensure_private_dir
from lazygraph.store.files import FileTier
from lazygraph.store.secret import load_or_create_secret, load_secret, mac, verify_mac

SECRET = bytes(range(32))
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# -- directories ------------------------------------------------------------------------------


def test_ensure_private_dir_creates_it_and_missing_parents_0700(tmp_path: Path):
    old_umask = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        made = ensure_private_dir(tmp_path / "a" / "b" / "cache")
    finally:
        os.umask(old_umask)
    assert made == tmp_path / "a" / "b" / "cache" and made.is_dir()
    assert [mode(p) for p in (made, made.parent, made.parent.parent)] == [0o700] * 3
    assert ensure_private_dir(made) == made  # an existing private directory is fine


def test_relative_and_home_paths_are_made_absolute(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ensure_private_dir("rel") == tmp_path / "rel"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ensure_private_dir("~/under-home") == tmp_path / "under-home"


@pytest.mark.parametrize(
    "bits, who", [(0o777, "group and others"), (0o770, "its group"), (0o703, "others")]
)
def test_directory_writable_by_others_is_refused_with_the_fix(tmp_path: Path, bits, who):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(bits)
    with pytest.raises(CacheSecurityError) as caught:
        ensure_private_dir(shared)
    message = str(caught.value)
    assert f"writable by {who}" in message and f"chmod 700 {shared}" in message
    assert isinstance(caught.value, PermissionError)


@as_root
def test_directory_owned_by_another_user_is_refused(tmp_path: Path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(CacheSecurityError, match="not by you") as caught:
        FileTier(theirs, secret=SECRET)
    assert "chown" in str(caught.value)


def test_links_with_dot_and_dotdot_are_walked_as_the_kernel_walks_them(tmp_path: Path):
    """The ancestor walk follows "." and ".." inside link targets: a link whose target
    climbs back through a world-writable directory (no sticky bit) is refused; one that
    only passes through private directories is followed."""
    (tmp_path / "private").mkdir(mode=0o700)
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "private" / "real").mkdir(mode=0o700)
    (tmp_path / "safe").symlink_to("./private/../private/./real/")
    (tmp_path / "unsafe").symlink_to("private/../open/.")
    assert ensure_private_dir(tmp_path / "safe" / "cache") == tmp_path / "safe" / "cache"
    assert (tmp_path / "private" / "real" / "cache").is_dir()
    with pytest.raises(CacheSecurityError, match=f"below {tmp_path / 'open'}, which other"):
        ensure_private_dir(tmp_path / "unsafe" / "cache")
    assert os.listdir(tmp_path / "open") == []


def test_a_file_is_not_a_cache_directory(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="must be a directory"):
        ensure_private_dir(tmp_path / "file")
    with pytest.raises(ConfigError, match="could not be created"):
        ensure_private_dir(tmp_path / "file" / "below")


def test_default_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("LAZYGRAPH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lazygraph"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "lazygraph"
    monkeypatch.setenv("LAZYGRAPH_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


# -- the secret -------------------------------------------------------------------------------


def test_secret_is_created_once_private_and_kept(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("LAZYGRAPH_SECRET_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert load_secret() is None
    secret = load_or_create_secret()
    path = tmp_path / "config" / "lazygraph" / "secret"
    assert len(secret) == 32 and path.read_bytes() == secret
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert load_or_create_secret() == secret == load_secret()
    monkeypatch.setenv("LAZYGRAPH_SECRET_FILE", str(tmp_path / "elsewhere" / "key"))
    other = load_or_create_secret()
    assert other != secret and (tmp_path / "elsewhere" / "key").read_bytes() == other


def test_processes_racing_to_create_the_secret_agree(tmp_path: Path):
    path = tmp_path / "cfg" / "secret"
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from lazygraph.store.secret import load_or_create_secret
        print(load_or_create_secret(Path(sys.argv[1])).hex())
        """
    )
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = {child.communicate(timeout=60)[0].strip() for child in children}
    assert outputs == {path.read_bytes().hex()}
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temp files left


def test_unsafe_secret_files_are_refused(tmp_path: Path):
    path = tmp_path / "secret"
    load_or_create_secret(path)
    path.chmod(0o640)
    with pytest.raises(CacheSecurityError, match=f"chmod 600 {path}"):
        load_or_create_secret(path)
    path.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(CacheSecurityError, match="symbolic link"):
        load_secret(link)
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    short.chmod(0o600)
    with pytest.raises(CacheSecurityError, match="exactly 32 bytes"):
        load_or_create_secret(short)


@as_root
def test_secret_owned_by_another_user_is_refused(tmp_path: Path):
    path = tmp_path / "secret"
    load_or_create_secret(path)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(CacheSecurityError, match="owned by uid 65534"):
        load_secret(path)


def test_mac_depends_on_secret_and_every_part():
    tag = mac(SECRET, b"a", b"bc")
    assert len(tag) == 32 and verify_mac(SECRET, tag, b"a", b"bc")
    assert not verify_mac(SECRET, tag, b"ab", b"c")
    assert not verify_mac(bytes(32), tag, b"a", b"bc")
    assert not verify_mac(SECRET, tag[:-1] + bytes([tag[-1] ^ 1]), b"a", b"bc")


# -- cache info | ls | clear ------------------------------------------------------------------


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """Three entries by two functions; 'load' entries last used a week ago."""
    cache = tmp_path / "cache"
    week_ago = time.time() - 7 * 86400
    with FileTier(cache, secret=SECRET) as tier:
        tier.write(b"\x01" * 16, np.zeros(1000), meta={"name": "load"})
        tier.write(b"\x02" * 16, np.zeros(50_000), meta={"name": "load"})
        tier.write(b"\x03" * 16, [1, 2], meta={"name": "clean"})
    for key in (b"\x01" * 16, b"\x02" * 16):
        path = cache / f"{key.hex()}.joblib"
        os.utime(path, (week_ago, path.stat().st_mtime))
    return cache


def test_cache_ls_and_info(filled: Path):
    listed = cache_ls(filled, secret=SECRET)
    assert [info.function for info in listed] == ["clean", "load", "load"]  # recent first
    info = cache_info(filled, secret=SECRET, largest=2)
    assert info["exists"] and info["entries"] == 3 and info["invalid"] == 0
    assert info["bytes"] == sum(p.stat().st_size for p in filled.iterdir())
    assert [entry.key for entry in info["largest"]] == ["02" * 16, "01" * 16]
    text = format_info(info)
    assert "3 entries" in text and "load" in text and "02" * 8 in text
    table = format_ls(listed).splitlines()
    assert len(table) == 4 and table[1].endswith("clean") and "7.0d" in table[2]


def test_entries_under_another_secret_show_as_unauthenticated(filled: Path):
    info = cache_info(filled, secret=bytes(32))
    assert info["entries"] == 3 and info["invalid"] == 3
    assert "unauthenticated" in format_ls(cache_ls(filled, secret=bytes(32)))


def test_cache_clear_filters(filled: Path):
    assert cache_clear(filled, function="nope", secret=SECRET) == 0
    assert cache_clear(filled, older_than=parse_age("1d"), function="cl*", secret=SECRET) == 0
    assert cache_clear(filled, older_than=parse_age("1d"), secret=SECRET) == 2
    assert [info.function for info in cache_ls(filled, secret=SECRET)] == ["clean"]
    assert cache_clear(filled, secret=SECRET) == 1
    assert list(filled.iterdir()) == []


def test_cache_commands_on_a_missing_directory_create_nothing(tmp_path: Path):
    absent = tmp_path / "absent"
    assert cache_ls(absent) == [] and cache_clear(absent) == 0
    info = cache_info(absent)
    assert not info["exists"] and "no cache here yet" in format_info(info)
    assert not absent.exists()


def test_cache_commands_refuse_an_unsafe_directory(filled: Path):
    filled.chmod(0o777)
    with pytest.raises(CacheSecurityError, match="chmod 700"):
        cache_ls(filled, secret=SECRET)


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("15m", 900.0), ("2w", 1209600.0)])
def test_parse_age(text: str, seconds: float):
    assert parse_age(text) == seconds


def test_parse_age_says_what_it_expected():
    with pytest.raises(ConfigError, match=r'"7d".*got \'7 days\''):
        parse_age("7 days")
