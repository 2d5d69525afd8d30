"""Hostile files: nothing planted, copied or linked into a cache is unpickled or followed
(SPEC S5.8, S5.7).

Every planted file is a real pickle that creates a marker file when unpickled (checked live
before each test relies on it). Files go under every name the store might load: the real
keys of the pipeline in ``cache_dir``, spill files of a running session, temp-file names,
names that only look like entries. "Another user" is a child process with its own secret
(``LAZYGRAPH_SECRET_FILE``), writing entries in the real format.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from planted import planted_payload

import lazygraph
from lazygraph import Session
from lazygraph.store import cachedir
from lazygraph.store.files import HOST_TAG

from ._helpers import Spec, block, build, entry_files, evaluate, run_child

pytestmark = pytest.mark.timeout(120)

SPEC = Spec([f"h{i}" for i in range(12)], [[] for _ in range(12)], [[0]] * 12)
FOOTER = struct.Struct("<Q8s")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "UNPICKLED"


@pytest.fixture
def payload(tmp_path: Path, marker: Path) -> bytes:
    return planted_payload(marker, tmp_path)


def _pipeline(x: int = 11) -> tuple[lazygraph.Input, list[lazygraph.Node]]:
    inp = lazygraph.Input(x, name="x")
    return inp, build(SPEC, [inp], func=block)


def _check_all(nodes: list[lazygraph.Node], x: int = 11) -> None:
    expected = evaluate(SPEC, [x])
    for node, value, want in zip(nodes, lazygraph.compute(*nodes), expected, strict=True):
        assert isinstance(value, np.ndarray) and (value == want).all(), node.name


def _trailer(entry: Path) -> tuple[bytes, int]:
    """The authenticated trailer of a real entry and the length of its data part."""
    raw = entry.read_bytes()
    header_len, _ = FOOTER.unpack(raw[-FOOTER.size :])
    trailer_len = header_len + 32 + FOOTER.size
    return raw[-trailer_len:], len(raw) - trailer_len


def _valid_entries(tmp_path: Path, nodes: list[lazygraph.Node], name: str = "real") -> Path:
    """A cache directory holding this user's own valid entries for ``nodes``."""
    real = tmp_path / name
    with Session(cache_dir=real, progress=False):
        lazygraph.compute(*nodes)
    return real


def _forms(payload: bytes, real_entry: Path) -> dict[str, bytes]:
    """A planted pickle in three disguises, the last with a genuine (copied) trailer."""
    trailer, data_len = _trailer(real_entry)
    header = json.dumps(
        {
            "format": 1,
            "key": real_entry.stem,
            "data_len": len(payload),
            "xxh3_128": "0" * 32,
            "created": 0.0,
            "meta": {},
        }
    ).encode()
    forged = payload + header + os.urandom(32) + FOOTER.pack(len(header), b"LGENTRY1")
    assert len(payload) <= data_len
    copied = payload + b"\0" * (data_len - len(payload)) + trailer
    return {"raw-pickle": payload, "forged-trailer": forged, "copied-trailer": copied}


# -- planted pickles in cache_dir -------------------------------------------------------------


@pytest.mark.parametrize("form", ["raw-pickle", "forged-trailer", "copied-trailer"])
def test_planted_pickles_named_like_real_keys(tmp_path, payload, marker, calls, caplog, form):
    _, nodes = _pipeline()
    real = _valid_entries(tmp_path, nodes)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    for node in nodes[::2]:
        name = f"{node.key}.joblib"
        (cache / name).write_bytes(_forms(payload, real / name)[form])
    before = calls.counts()
    caplog.set_level(logging.WARNING, logger="lazygraph")
    with Session(cache_dir=cache, progress=False):
        _check_all(nodes)
    assert not marker.exists(), "a planted pickle was unpickled"
    ran = {label for label, n in calls.counts().items() if n > before[label]}
    assert ran == set(SPEC.labels), "every node had to be recomputed: no planted file is valid"
    assert any("will be recomputed" in r.getMessage() for r in caplog.records)
    for node in nodes[::2]:  # the planted file is gone: replaced by a real entry
        assert (cache / f"{node.key}.joblib").read_bytes() != _forms(
            payload, real / f"{node.key}.joblib"
        )[form]


def test_planted_pickle_with_a_copied_trailer_in_a_fresh_process(tmp_path, payload, marker, calls):
    """A process that never saw the file verifies its data before unpickling anything."""
    _, nodes = _pipeline()
    real = _valid_entries(tmp_path, nodes)
    victim = real / f"{nodes[3].key}.joblib"
    victim.write_bytes(_forms(payload, victim)["copied-trailer"])
    code = """
    import sys, lazygraph
    from reliability._helpers import Spec, block, build, evaluate
    spec = Spec([f"h{i}" for i in range(12)], [[] for _ in range(12)], [[0]] * 12)
    nodes = build(spec, [lazygraph.Input(11, name="x")], func=block)
    with lazygraph.Session(cache_dir=sys.argv[1], progress=False) as s:
        values = lazygraph.compute(*nodes)
        assert all((v == e).all() for v, e in zip(values, evaluate(spec, [11])))
    """
    before = calls.counts()
    run_child(code, str(real))
    assert calls.counts() - before == {"h3": 1}  # only the planted one was recomputed
    assert not marker.exists()


def test_files_that_only_look_like_entries_are_never_loaded(tmp_path, payload, marker):
    _, nodes = _pipeline()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    key = nodes[0].key
    dead_pid = 4_000_000  # above pid_max: no such process
    odd = [
        f"{key.upper()}.joblib",
        f"{key}.joblib.bak",
        f"{key}.pkl",
        key,
        f"{key}.JOBLIB",
        f".lgtmp-{HOST_TAG}-{dead_pid}-0000-{key}",
        f"{key}_01.npy",
    ]
    for name in odd:
        (cache / name).write_bytes(payload)
    with Session(cache_dir=cache, progress=False):
        _check_all(nodes)
    assert not marker.exists()
    assert not (cache / odd[5]).exists(), "a dead writer's temp file is removed, never read"
    assert cachedir.cache_info(cache)["entries"] == len(nodes)
    cachedir.cache_ls(cache)
    cachedir.cache_clear(cache)
    assert not marker.exists(), "cache commands must not unpickle anything either"


def test_cache_commands_never_unpickle(tmp_path, payload, marker):
    _, nodes = _pipeline()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    for node in nodes:
        (cache / f"{node.key}.joblib").write_bytes(payload)
    info = cachedir.cache_info(cache)
    assert info["entries"] == len(nodes) and info["invalid"] == len(nodes)
    assert all(not entry.valid for entry in cachedir.cache_ls(cache))
    assert cachedir.cache_clear(cache, function="h*") == 0  # unauthenticated: no name
    assert cachedir.cache_clear(cache) == len(nodes)
    assert not marker.exists() and entry_files(cache) == []


# -- planted pickles in the spill directory of a running session --------------------------------


@pytest.mark.parametrize("form", ["raw-pickle", "copied-trailer"])
def test_spill_files_replaced_by_planted_pickles(tmp_path, payload, marker, calls, form):
    _, nodes = _pipeline()
    with Session(memory_limit="20kB", spill_threshold="1kB", progress=False) as session:
        _check_all(nodes)
        session.store.flush()
        gc.collect()
        spilled = [n for n in nodes if session.store.location(n._key) == "spilled"]
        assert len(spilled) >= 6
        for node in spilled:
            path = Path(session.store._spill_dir) / f"{node.key}.joblib"
            planted = _forms(payload, path)[form]
            tmp = path.with_name("planting")
            tmp.write_bytes(planted)
            os.replace(tmp, path)  # a new file: what another program writing there does
        before = calls.counts()
        _check_all(nodes)
        ran = {label for label, n in calls.counts().items() if n > before[label]}
        assert ran == {n.name for n in spilled}
    assert not marker.exists()


# -- another user's entries -------------------------------------------------------------------


OTHER_USER = """
import sys
from pathlib import Path
import lazygraph
from lazygraph.store.files import FileTier
from lazygraph.store.secret import load_or_create_secret
from reliability._helpers import Spec, block, build
from planted import Planted
spec = Spec([f"h{i}" for i in range(12)], [[] for _ in range(12)], [[0]] * 12)
nodes = build(spec, [lazygraph.Input(11, name="x")], func=block)
with lazygraph.Session(cache_dir=sys.argv[1], progress=False):
    lazygraph.compute(*nodes)  # honest entries, under the other user's secret
with FileTier(Path(sys.argv[1]), secret=load_or_create_secret()) as tier:
    for node in nodes[::3]:  # and hostile ones, in the real format, properly authenticated
        tier.write(bytes.fromhex(node.key), Planted(Path(sys.argv[2])), meta={"name": node.name})
"""


def test_entries_copied_from_another_users_cache(tmp_path, marker, calls):
    theirs = tmp_path / "theirs"
    run_child(
        OTHER_USER,
        str(theirs),
        str(marker),
        LAZYGRAPH_SECRET_FILE=str(tmp_path / "other-user" / "secret"),
    )
    assert not marker.exists()
    ours = tmp_path / "ours"
    shutil.copytree(theirs, ours)  # e.g. a shared or restored cache directory
    _, nodes = _pipeline()
    before = calls.total()
    with Session(cache_dir=ours, progress=False):
        _check_all(nodes)
    assert not marker.exists(), "another user's entry was unpickled"
    assert calls.total() - before == len(nodes), "their entries must not be used, valid or not"


# -- symbolic links ---------------------------------------------------------------------------


def test_symlinks_in_the_cache_dir_are_never_followed(tmp_path, payload, marker, calls):
    _, nodes = _pipeline()
    real = _valid_entries(tmp_path, nodes)  # valid under our own secret: would load if followed
    outside = tmp_path / "outside.joblib"
    outside.write_bytes(payload)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    targets = {}
    for i, node in enumerate(nodes):
        target = outside if i % 2 else real / f"{node.key}.joblib"
        targets[node.key] = (target, target.read_bytes())
        (cache / f"{node.key}.joblib").symlink_to(target)
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    (cache / f".lgtmp-{HOST_TAG}-4000000-0000-{nodes[0].key}").symlink_to(victim)
    before = calls.total()
    with Session(cache_dir=cache, progress=False):
        _check_all(nodes)
    assert calls.total() - before == len(nodes), "a link was followed to a valid entry"
    assert not marker.exists()
    for target, content in targets.values():  # targets untouched: not read, not removed
        assert target.read_bytes() == content
    assert victim.read_text() == "keep me"
    assert not any(p.is_symlink() for p in cache.iterdir())


def test_symlink_replacing_a_spill_file(tmp_path, payload, marker, calls):
    _, nodes = _pipeline()
    outside = tmp_path / "outside.joblib"
    outside.write_bytes(payload)
    with Session(memory_limit="20kB", spill_threshold="1kB", progress=False) as session:
        _check_all(nodes)
        session.store.flush()
        gc.collect()
        spilled = [n for n in nodes if session.store.location(n._key) == "spilled"]
        assert spilled
        for node in spilled:
            path = Path(session.store._spill_dir) / f"{node.key}.joblib"
            path.unlink()
            path.symlink_to(outside)
        before = calls.total()
        _check_all(nodes)
        assert calls.total() - before == len(spilled)
    assert not marker.exists() and outside.read_bytes() == payload


def test_directory_named_like_an_entry(tmp_path, calls):
    _, nodes = _pipeline()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / f"{nodes[0].key}.joblib").mkdir()
    with Session(cache_dir=cache, progress=False):
        _check_all(nodes)
        _check_all(nodes)


FIFO_CHILD = """
import gc, os, sys
from pathlib import Path
import lazygraph
from reliability._helpers import Spec, block, build, evaluate
spec = Spec([f"h{i}" for i in range(12)], [[] for _ in range(12)], [[0]] * 12)
nodes = build(spec, [lazygraph.Input(11, name="x")], func=block)
with lazygraph.Session(memory_limit="20kB", spill_threshold="1kB", progress=False) as s:
    lazygraph.compute(*nodes)
    s.store.flush()
    gc.collect()
    for node in nodes:
        if s.store.location(node._key) == "spilled":
            path = Path(s.store._spill_dir) / f"{node.key}.joblib"
            path.unlink()
            os.mkfifo(path)  # opening it for reading would wait for a writer forever
    values = lazygraph.compute(*nodes)
    assert all((v == e).all() for v, e in zip(values, evaluate(spec, [11])))
print("ok")
"""


def test_fifo_in_place_of_a_spill_file_does_not_hang_the_pull(tmp_path):
    assert run_child(FIFO_CHILD, timeout=20).stdout.strip() == "ok"
