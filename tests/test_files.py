"""The file tier: round trips, memory maps, authentication, faults (SPEC S5.5, S5.7, S5.8, S7.4).

Hostile files are real pickles that would create a marker file if they were ever unpickled;
disk faults are real (RLIMIT_FSIZE in a child process, a size-limited tmpfs when this user
may mount one); killed writers are real processes killed with SIGKILL.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from planted import Planted, planted_payload

from lazygraph.errors import CacheSecurityError, ConfigError, LazyGraphError
from lazygraph.store.files import _TMP_PREFIX, HOST_TAG, MISSING, FileTier, UnspillableError
from lazygraph.store.secret import mac

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(32, 64))
K1, K2, K3, K4 = (bytes([i]) * 16 for i in range(1, 5))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def tier(cache: Path):
    with FileTier(cache, secret=SECRET) as opened:
        yield opened


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def entry_path(directory: Path, key: bytes) -> Path:
    return directory / f"{key.hex()}.joblib"


def temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(_TMP_PREFIX)]


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- round trips ------------------------------------------------------------------------------


def test_round_trip_keeps_values_and_types(tier: FileTier):
    frame = pd.DataFrame(
        {"a": np.arange(4.0), "b": list("wxyz")}, index=pd.Index([10, 20, 30, 40], name="i")
    )
    frame.attrs["source"] = "test"
    values = {
        K1: {"list": [1, 2.5, "s"], "set": {1, 2}, "none": None, "point": Point(1, 2)},
        K2: np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
        K3: frame,
        K4: None,
    }
    for key, value in values.items():
        assert tier.write(key, value, meta={"name": "f"}) > 0
    assert tier.get(K1) == values[K1]
    back = tier.get(K2)
    assert back.dtype == np.int32 and back.flags.f_contiguous
    np.testing.assert_array_equal(back, values[K2])
    pd.testing.assert_frame_equal(tier.get(K3), frame)
    assert tier.get(K3).attrs == {"source": "test"}
    assert tier.get(K4) is None  # None is a value, MISSING is the absence of one
    assert tier.get(b"\x09" * 16) is MISSING


def test_arrays_come_back_memory_mapped_read_only(tier: FileTier, cache: Path):
    tier.write(K1, {"arr": np.arange(1000.0)}, meta={})
    arr = tier.get(K1)["arr"]
    assert isinstance(arr, np.memmap)
    assert Path(arr.filename) == entry_path(cache, K1)
    assert not arr.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        arr[0] = 1.0


def test_dataframe_columns_come_back_memory_mapped(tier: FileTier):
    frame = pd.DataFrame({"a": np.arange(100.0), "b": np.arange(100)})
    tier.write(K1, frame, meta={})
    back = tier.get(K1)
    values = back["a"].to_numpy()
    while not isinstance(values, np.memmap) and values.base is not None:
        values = values.base
    assert isinstance(values, np.memmap) or type(values).__name__ == "mmap"
    assert not back["a"].to_numpy().flags.writeable


def test_meta_contains_discard_and_nbytes(tier: FileTier, cache: Path):
    assert tier.nbytes() == 0 and K1 not in tier and tier.meta(K1) is None
    size1 = tier.write(K1, np.zeros(1000), meta={"name": "load", "rows": 3})
    size2 = tier.write(K2, [1, 2, 3], meta={"name": "clean"})
    assert K1 in tier and "not a key" not in tier
    assert tier.meta(K1) == {"name": "load", "rows": 3}
    assert tier.nbytes() == size1 + size2 == sum(p.stat().st_size for p in cache.iterdir())
    size2b = tier.write(K2, [1, 2, 3, 4], meta={"name": "clean"})  # overwrite counts once
    assert tier.nbytes() == size1 + size2b
    tier.discard(K1)
    tier.discard(K1)  # discarding twice is fine
    assert K1 not in tier and tier.nbytes() == size2b
    assert tier.get(K2) == [1, 2, 3, 4]


def test_entries_lists_names_sizes_and_validity(tier: FileTier, cache: Path, tmp_path: Path):
    tier.write(K1, np.zeros(100), meta={"name": "load"})
    with FileTier(tmp_path / "other", secret=OTHER_SECRET) as other:
        other.write(K2, 1, meta={"name": "theirs"})
    os.replace(entry_path(tmp_path / "other", K2), entry_path(cache, K2))
    found = {info.key: info for info in tier.entries()}
    assert set(found) == {K1.hex(), K2.hex()}
    assert found[K1.hex()].function == "load" and found[K1.hex()].valid
    assert found[K1.hex()].nbytes == entry_path(cache, K1).stat().st_size
    assert found[K2.hex()].meta is None and found[K2.hex()].function is None


def test_closed_tier_refuses_work(cache: Path):
    tier = FileTier(cache, secret=SECRET)
    tier.close()
    tier.close()
    with pytest.raises(LazyGraphError, match="closed"):
        tier.get(K1)


def test_bad_arguments_are_config_errors(cache: Path):
    with pytest.raises(ConfigError, match="secret"):
        FileTier(cache, secret=b"short")
    with pytest.raises(ConfigError, match="disk_limit"):
        FileTier(cache, secret=SECRET, disk_limit=-1)


# -- torch ------------------------------------------------------------------------------------


def mapping_of(address: int) -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        low, high = (int(part, 16) for part in line.split()[0].split("-"))
        if low <= address < high:
            return line
    raise AssertionError(f"address {address:#x} is in no mapping")


def test_tensors_come_back_sharing_the_mapped_file(tier: FileTier, cache: Path):
    torch = pytest.importorskip("torch")
    weights = torch.arange(4096, dtype=torch.float32).reshape(64, 64).requires_grad_(True)
    value = {
        "w": weights,
        "t": torch.arange(10).reshape(2, 5).t(),  # not contiguous
        "bf16": torch.linspace(0, 1, 8, dtype=torch.bfloat16),
        "param": torch.nn.Parameter(torch.ones(3)),
    }
    tier.write(K1, value, meta={})
    back = tier.get(K1)
    assert back["w"].requires_grad and back["w"].dtype == torch.float32
    assert torch.equal(back["w"].detach(), weights.detach())
    assert torch.equal(back["t"], value["t"])
    assert back["bf16"].dtype == torch.bfloat16 and torch.equal(back["bf16"], value["bf16"])
    assert isinstance(back["param"], torch.nn.Parameter) and back["param"].requires_grad
    # Shares the file's pages (a private mapping of the entry file), no copy into the heap.
    line = mapping_of(back["w"].data_ptr())
    assert line.endswith(str(entry_path(cache, K1))) and line.split()[1].startswith("rw-p")
    # In-place ops work and stay private to the process: the file is unchanged.
    back["w"].detach().add_(1)
    again = tier.get(K1)
    assert torch.equal(again["w"].detach(), weights.detach())


def test_numpy_entries_never_import_torch(tmp_path: Path):
    result = run_child(
        """
        import sys
        import numpy as np, pandas as pd
        from pathlib import Path
        from lazygraph.store.files import FileTier
        with FileTier(Path(sys.argv[1]), secret=bytes(32)) as tier:
            tier.write(b"k" * 16, {"a": np.ones(3), "f": pd.DataFrame({"x": [1]})}, meta={})
            assert tier.get(b"k" * 16)["a"].sum() == 3
        print("torch" in sys.modules)
        """,
        str(tmp_path / "c"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# -- writes that fail -------------------------------------------------------------------------


def test_unpicklable_value_leaves_nothing_and_keeps_the_old_entry(tier: FileTier, cache: Path):
    tier.write(K1, "old", meta={})
    for bad in (lambda x: x, threading.Lock()):
        with pytest.raises(UnspillableError, match="cannot write"):
            tier.write(K1, bad, meta={})
    with pytest.raises(UnspillableError, match="JSON"):
        tier.write(K2, 1, meta={"when": object()})
    assert tier.get(K1) == "old"
    assert sorted(p.name for p in cache.iterdir()) == [f"{K1.hex()}.joblib"]


class Interrupting:
    def __reduce__(self):
        raise KeyboardInterrupt


def test_interrupt_mid_write_propagates_and_leaves_no_temp(tier: FileTier, cache: Path):
    with pytest.raises(KeyboardInterrupt):
        tier.write(K1, [np.zeros(10_000), Interrupting()], meta={})
    assert list(cache.iterdir()) == [] and tier.get(K1) is MISSING


def test_file_size_limit_raises_efbig_and_leaves_no_partial_entry(tmp_path: Path):
    # A real write failure: the child may not grow files past 1 MB (RLIMIT_FSIZE); with
    # SIGXFSZ ignored the kernel fails the write with EFBIG, as a full disk fails with ENOSPC.
    result = run_child(
        """
        import json, resource, signal, sys
        import numpy as np
        from pathlib import Path
        from lazygraph.store.files import FileTier
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        tier = FileTier(Path(sys.argv[1]), secret=bytes(range(32)))
        tier.write(b"s" * 16, [1, 2, 3], meta={"name": "small"})
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        codes = []
        for key in (b"b" * 16, b"s" * 16):
            try:
                tier.write(key, np.ones(1 << 20), meta={})
            except OSError as exc:
                codes.append(exc.errno)
        print(json.dumps(codes))
        """,
        str(tmp_path / "c"),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [errno.EFBIG, errno.EFBIG]
    with FileTier(tmp_path / "c", secret=SECRET) as tier:
        assert temp_files(tmp_path / "c") == []
        assert tier.get(b"b" * 16) is MISSING
        assert tier.get(b"s" * 16) == [1, 2, 3]  # the older entry under that key survived


def mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"{options},mode=700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 4 MB tmpfs, when this user may mount one (root in a container usually may).

    Where it may not, the RLIMIT_FSIZE test above still fails a real write (EFBIG).
    """
    where = tmp_path / "mnt"
    mount_tmpfs(where, "size=4m")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_full_disk_raises_enospc_and_keeps_older_entries(tmpfs: Path):
    with FileTier(tmpfs / "c", secret=SECRET) as tier:
        tier.write(K1, np.arange(100), meta={})
        with pytest.raises(OSError) as caught:
            tier.write(K2, np.ones(1 << 20), meta={})  # 8 MB into 4 MB
        assert caught.value.errno == errno.ENOSPC
        assert temp_files(tmpfs / "c") == []
        assert tier.get(K2) is MISSING
        np.testing.assert_array_equal(tier.get(K1), np.arange(100))


def test_read_only_filesystem(tmpfs: Path):
    tier = FileTier(tmpfs / "c", secret=SECRET)
    try:
        tier.write(K1, [1], meta={})
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
        with pytest.raises(OSError) as caught:
            tier.write(K2, [2], meta={})
        assert caught.value.errno == errno.EROFS
        assert tier.get(K1) == [1]  # reading still works
    finally:
        tier.close()
    with pytest.raises(ConfigError, match="not writable"):
        FileTier(tmpfs / "c", secret=SECRET)


# -- damaged entries --------------------------------------------------------------------------


def test_deleted_entry_is_missing(tier: FileTier, cache: Path):
    tier.write(K1, np.arange(10), meta={})
    entry_path(cache, K1).unlink()
    assert tier.get(K1) is MISSING and tier.meta(K1) is None


def test_truncated_entry_is_missing_removed_and_logged_once(tier, cache, caplog):
    tier.write(K1, np.arange(10_000), meta={})
    path = entry_path(cache, K1)
    os.truncate(path, path.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="lazygraph.store.files"):
        assert tier.get(K1) is MISSING
        assert tier.get(K1) is MISSING
    assert not path.exists()
    warnings = [r for r in caplog.records if K1.hex() in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


@pytest.mark.parametrize("where", ["data", "trailer"])
def test_garbage_written_in_place_is_detected(tier: FileTier, cache: Path, where: str):
    tier.write(K1, np.arange(100_000, dtype=np.int64), meta={})
    path = entry_path(cache, K1)
    # Cross the filesystem's timestamp tick, so the in-place write changes the mtime (the
    # writing process trusts its own unchanged file in O(1), by signature).
    time.sleep(0.05)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2 if where == "data" else size - 40)
        f.write(os.urandom(16))
    assert tier.get(K1) is MISSING
    assert not path.exists()


def test_entry_corrupted_before_another_process_loads_it(tmp_path: Path):
    cache = tmp_path / "c"
    with FileTier(cache, secret=SECRET) as tier:
        tier.write(K1, np.arange(100_000, dtype=np.int64), meta={})
    path = entry_path(cache, K1)
    with open(path, "r+b") as f:  # flip bytes inside the array: still a loadable pickle
        f.seek(path.stat().st_size // 2)
        f.write(b"\xff" * 8)
    result = run_child(
        """
        import sys
        from pathlib import Path
        from lazygraph.store.files import FileTier
        with FileTier(Path(sys.argv[1]), secret=bytes(range(32))) as tier:
            print(repr(tier.get(bytes([1]) * 16)))
        """,
        str(cache),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MISSING"
    assert "does not match its checksum" in result.stderr
    assert not path.exists()


def test_entry_written_by_another_process_is_verified_and_loads(tmp_path: Path):
    cache = tmp_path / "c"
    result = run_child(
        """
        import sys
        import numpy as np
        from pathlib import Path
        from lazygraph.store.files import FileTier
        with FileTier(Path(sys.argv[1]), secret=bytes(range(32))) as tier:
            tier.write(bytes([1]) * 16, np.arange(50_000), meta={"name": "child"})
        """,
        str(cache),
    )
    assert result.returncode == 0, result.stderr
    with FileTier(cache, secret=SECRET) as tier:
        np.testing.assert_array_equal(tier.get(K1), np.arange(50_000))
        assert tier.meta(K1) == {"name": "child"}


def bytes_read() -> int:
    """Bytes this process has read with read()/pread() so far (mapped pages do not count)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_untouched_entries_load_in_o1_anywhere_copies_are_verified_once(tmp_path: Path):
    cache = tmp_path / "c"
    data = np.ones(4_000_000)  # 32 MB
    with FileTier(cache, secret=SECRET) as tier:
        tier.write(K1, data, meta={})
        before = bytes_read()
        assert tier.get(K1).shape == data.shape
        assert bytes_read() - before < 1_000_000  # O(1): header and pickle opcodes only
    result = run_child(
        """
        import os, shutil, sys
        from pathlib import Path
        import joblib.numpy_pickle  # imported now: its source files are reads too
        from lazygraph.store.files import FileTier

        def bytes_read():
            return int(open("/proc/self/io").read().split("rchar:")[1].split()[0])

        key = bytes([1]) * 16
        with FileTier(Path(sys.argv[1]), secret=bytes(range(32))) as tier:
            reads = []
            for step in ("untouched", "copied", "copied again"):
                if step == "copied":  # same bytes and mtime, another inode: not the bound file
                    path = Path(sys.argv[1]) / (key.hex() + ".joblib")
                    shutil.copy2(path, path.with_name("copy"))
                    os.replace(path.with_name("copy"), path)
                before = bytes_read()
                assert tier.get(key).shape == (4_000_000,)
                reads.append(bytes_read() - before)
            print(*reads)
        """,
        str(cache),
    )
    assert result.returncode == 0, result.stderr
    untouched, copied, again = map(int, result.stdout.split())
    assert untouched < 1_000_000  # the very file the writer bound: trusted in O(1)
    assert copied >= data.nbytes  # another file: its payload was hashed before first use
    assert again < 1_000_000  # then remembered for this process


def test_the_pickle_stream_is_authenticated_even_when_the_file_is_trusted(tier, cache):
    tier.write(K1, [np.ones(100_000), "label"], meta={})
    path = entry_path(cache, K1)
    st = path.stat()
    content = bytearray(path.read_bytes())
    where = content.index(b"label")  # a pickled string, outside the array payload
    content[where : where + 5] = b"LABEL"
    with open(path, "r+b") as f:  # in place: same inode
        f.write(content)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the bound mtime put back
    assert tier.get(K1) is MISSING
    assert not path.exists()


# -- hostile files ----------------------------------------------------------------------------


def test_planted_pickle_without_a_valid_header_is_never_unpickled(tier, cache, tmp_path):
    marker = tmp_path / "pwned"
    payload = planted_payload(marker, tmp_path)
    forged_trailer = os.urandom(120) + (88).to_bytes(8, "little") + b"LGENTRY1"
    for content in (payload, payload + forged_trailer):
        entry_path(cache, K1).write_bytes(content)
        with FileTier(cache, secret=SECRET) as fresh:  # a tier lists the directory at start
            assert K1 in fresh
        assert tier.get(K1) is MISSING
        assert not marker.exists()
        assert not entry_path(cache, K1).exists()


def test_planted_pickle_under_a_valid_header_is_never_unpickled(tier, cache, tmp_path):
    """The header authenticates; only the checksum binds the data to it."""
    marker = tmp_path / "pwned"
    payload = planted_payload(marker, tmp_path)
    tier.write(K1, np.zeros(1000), meta={"name": "real"})
    data, trailer = split_entry(entry_path(cache, K1))
    assert len(payload) < len(data)
    forged = payload + b"\0" * (len(data) - len(payload)) + trailer  # same length and header
    (cache / "forged").write_bytes(forged)
    os.replace(cache / "forged", entry_path(cache, K1))
    assert tier.meta(K1) == {"name": "real"}  # the header itself is genuine
    assert tier.get(K1) is MISSING
    assert not marker.exists()


def test_an_entry_of_an_older_format_is_recomputed_quietly(tier, cache, caplog):
    """After an upgrade: authentic, but laid out differently; logged at INFO, not a warning."""
    data = b"not read"
    header = json.dumps({"format": 1, "key": K1.hex(), "data_len": len(data)}).encode()
    tag = mac(SECRET, b"entry", header)
    entry_path(cache, K1).write_bytes(data + header + tag + struct.pack("<Q8s", len(header),
                                                                        b"LGENTRY1"))
    with caplog.at_level(logging.INFO, logger="lazygraph.store.files"):
        assert tier.get(K1) is MISSING
    assert not entry_path(cache, K1).exists()
    (record,) = [r for r in caplog.records if K1.hex() in r.getMessage()]
    assert record.levelno == logging.INFO and "entry format 1 (now 2)" in record.getMessage()


def split_entry(path: Path) -> tuple[bytes, bytes]:
    """(joblib data, trailer): the footer's first 8 bytes give the JSON header's length."""
    content = path.read_bytes()
    header_len = struct.unpack("<Q", content[-16:-8])[0]
    data_len = len(content) - 16 - 32 - header_len
    return content[:data_len], content[data_len:]


def test_entry_from_another_users_cache_is_rejected(tier, cache, tmp_path):
    marker = tmp_path / "pwned"
    for read in (tier.get, tier.meta):
        with FileTier(tmp_path / "theirs", secret=OTHER_SECRET) as theirs:
            theirs.write(K1, Planted(marker), meta={"name": "innocent"})
        os.replace(entry_path(tmp_path / "theirs", K1), entry_path(cache, K1))
        assert read(K1) in (MISSING, None)
        assert not marker.exists() and not entry_path(cache, K1).exists()


def test_entry_renamed_to_another_key_is_rejected(tier: FileTier, cache: Path):
    tier.write(K1, "value of K1", meta={})
    os.rename(entry_path(cache, K1), entry_path(cache, K2))
    assert tier.get(K2) is MISSING


def test_symlinks_are_never_followed(tier, cache, tmp_path):
    marker = tmp_path / "pwned"
    elsewhere = tmp_path / "elsewhere"
    with FileTier(elsewhere, secret=SECRET) as other:  # a valid entry, even same secret
        other.write(K1, Planted(marker), meta={"name": "linked"})
        other.write(K2, "keep me", meta={})
    target = entry_path(elsewhere, K1)
    entry_path(cache, K1).symlink_to(target)
    assert tier.get(K1) is MISSING and tier.meta(K1) is None
    assert not marker.exists() and target.exists()
    entry_path(cache, K2).symlink_to(entry_path(elsewhere, K2))
    assert [info.key for info in tier.entries()] == []
    assert tier.evict_to(0) == 0
    assert entry_path(elsewhere, K2).exists() and not entry_path(cache, K2).is_symlink()


# -- killed writers and concurrent processes --------------------------------------------------

WRITER = """
import sys
import numpy as np
from pathlib import Path
from lazygraph.store.files import FileTier
tier = FileTier(Path(sys.argv[1]), secret=bytes(range(32)))
block = np.arange(2_000_000, dtype=np.int64)  # 16 MB, written again and again
print("ready", flush=True)
i = 0
while True:
    tier.write((i % 3).to_bytes(16, "big"), (i, block), meta={"name": "writer"})
    i += 1
"""


def test_writer_killed_at_random_moments_leaves_only_cleanable_temp_files(tmp_path: Path):
    cache = tmp_path / "c"
    rng = random.Random(1)
    seen_temps = []
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(cache)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        seen_temps += temp_files(cache)
        with FileTier(cache, secret=SECRET) as tier:  # the writer is dead: its temps go
            assert temp_files(cache) == []
            for slot in range(3):
                value = tier.get(slot.to_bytes(16, "big"))
                if value is not MISSING:
                    count, block = value
                    assert count % 3 == slot
                    np.testing.assert_array_equal(block, np.arange(2_000_000))
    assert seen_temps, "no kill landed mid-write; the test proved nothing"


READER_WRITER = """
import json, logging, sys
import numpy as np
from pathlib import Path
from lazygraph.store.files import MISSING, FileTier
warnings = []
handler = logging.Handler()
handler.emit = warnings.append
logging.getLogger("lazygraph.store.files").addHandler(handler)
writer = int(sys.argv[2])
rng = np.random.default_rng(writer)
tier = FileTier(Path(sys.argv[1]), secret=bytes(range(32)))
hits = wrong = 0
for _ in range(300):
    k = int(rng.integers(6))
    key = k.to_bytes(16, "big")
    if rng.random() < 0.4:
        tier.write(key, (k, writer, np.full(100_000, k * 10 + writer)), meta={})
        continue
    value = tier.get(key)
    if value is MISSING:
        continue
    hits += 1
    got_k, got_writer, block = value
    wrong += not (got_k == k and (block == k * 10 + got_writer).all())
tier.close()
print(json.dumps({"hits": hits, "wrong": wrong, "warnings": len(warnings)}))
"""


def test_processes_sharing_a_directory_always_read_correct_values(tmp_path: Path):
    cache = tmp_path / "c"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", READER_WRITER, str(cache), str(writer)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for writer in range(3)
    ]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        reports.append(json.loads(out))
    assert all(report["wrong"] == 0 for report in reports), reports
    assert all(report["warnings"] == 0 for report in reports), reports
    assert sum(report["hits"] for report in reports) > 100, reports
    with FileTier(cache, secret=SECRET) as tier:
        assert temp_files(cache) == []
        for k in range(6):
            got_k, writer, block = tier.get(k.to_bytes(16, "big"))
            assert got_k == k and (block == k * 10 + writer).all()


def test_threads_sharing_one_tier(tier: FileTier):
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for step in range(40):
                k = (worker + step) % 4
                key = bytes([k + 1]) * 16
                if step % 3 == 0:
                    tier.write(key, (k, np.full(5000, k)), meta={"name": "t"})
                value = tier.get(key)
                if value is not MISSING:
                    assert value[0] == k and (value[1] == k).all()
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert tier.nbytes() == sum(info.nbytes for info in tier.entries())


# -- temp files, budget and eviction ----------------------------------------------------------


def test_stale_temp_files_are_cleaned_and_live_ones_kept(cache: Path):
    cache.mkdir(mode=0o700)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        "dead": f"{_TMP_PREFIX}{HOST_TAG}-{dead.pid}-00000000-{K1.hex()}",
        "live": f"{_TMP_PREFIX}{HOST_TAG}-{os.getpid()}-00000001-{K1.hex()}",
        "live_stalled": f"{_TMP_PREFIX}{HOST_TAG}-{os.getpid()}-00000002-{K1.hex()}",
        "other_host": f"{_TMP_PREFIX}ffffffff-{dead.pid}-00000003-{K1.hex()}",
        "other_host_old": f"{_TMP_PREFIX}ffffffff-{dead.pid}-00000004-{K1.hex()}",
        "user_file": "notes.txt",
    }
    for name in names.values():
        (cache / name).write_bytes(b"x")
    old = time.time() - 3600
    for label in ("live_stalled", "other_host_old"):
        os.utime(cache / names[label], (old, old))
    with FileTier(cache, secret=SECRET):
        left = {label for label, name in names.items() if (cache / name).exists()}
    assert left == {"live", "other_host", "user_file"}


def check_lru_eviction(cache: Path) -> None:
    with FileTier(cache, secret=SECRET) as tier:
        sizes = {key: tier.write(key, np.zeros(10_000), meta={}) for key in (K1, K2, K3)}
        tier.get(K1)  # K2 is now the least recently used, then K3
        freed = tier.evict_to(sizes[K1] + sizes[K3] + 10)
        assert freed == sizes[K2]
        assert K2 not in tier and K1 in tier and K3 in tier
        assert tier.nbytes() == sizes[K1] + sizes[K3]
        assert tier.evict_to(0) == sizes[K1] + sizes[K3] and list(cache.iterdir()) == []


def test_evict_to_removes_least_recently_used(cache: Path):
    check_lru_eviction(cache)


def test_last_use_is_stamped_even_where_reads_do_not_update_atime(tmp_path: Path):
    where = tmp_path / "noatime"
    mount_tmpfs(where, "size=16m,noatime")
    try:
        check_lru_eviction(where / "c")
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_disk_limit_is_kept_by_put(cache: Path):
    with FileTier(cache, secret=SECRET) as probe:
        one = probe.write(K4, np.zeros(10_000), meta={})
        probe.discard(K4)
    with FileTier(cache, secret=SECRET, disk_limit=2 * one + 100) as tier:
        for i in range(6):
            tier.write(bytes([i + 10]) * 16, np.zeros(10_000), meta={})
            assert tier.nbytes() <= tier.disk_limit
            assert sum(p.stat().st_size for p in cache.iterdir()) <= tier.disk_limit
        assert bytes([15]) * 16 in tier and bytes([14]) * 16 in tier  # the newest stay
        with pytest.raises(OSError) as caught:
            tier.write(K1, np.zeros(100_000), meta={})
        assert caught.value.errno == errno.EFBIG and "disk_limit" in str(caught.value)
        assert K1 not in tier and temp_files(cache) == []
        assert bytes([15]) * 16 in tier


def test_directory_safety_is_checked(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(CacheSecurityError, match="chmod 700"):
        FileTier(shared, secret=SECRET)


# -- the index: misses without syscalls, other processes' entries found ------------------------


def test_planned_misses_look_at_the_index_not_the_directory(tier, monkeypatch):
    """A miss is a dict lookup: no stat of the entry file (an lstat per miss before)."""
    tier.write(K1, [1], meta={})
    calls = []
    for name in ("stat", "lstat", "fstat", "scandir", "open"):
        real = getattr(os, name)

        def counting(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, counting)
    misses = [bytes([7]) * 8 + i.to_bytes(8, "big") for i in range(10_000)]
    assert not any(key in tier for key in misses[:1])  # may look at the directory, once
    calls.clear()
    assert not any(key in tier for key in misses)
    assert K1 in tier
    assert calls == []


def test_entries_other_processes_write_are_found(tier: FileTier, cache: Path):
    result = run_child(
        """
        import sys
        from pathlib import Path
        from lazygraph.store.files import FileTier
        with FileTier(Path(sys.argv[1]), secret=bytes(range(32))) as tier:
            tier.write(bytes([2]) * 16, "from the child", meta={})
        """,
        str(cache),
    )
    assert result.returncode == 0, result.stderr
    assert tier.get(K2) == "from the child"  # a load looks at the file itself, always
    tier.discard(K2)
    run_child(
        """
        import sys
        from pathlib import Path
        from lazygraph.store.files import FileTier
        with FileTier(Path(sys.argv[1]), secret=bytes(range(32))) as tier:
            tier.write(bytes([3]) * 16, "again", meta={})
        """,
        str(cache),
    )
    time.sleep(1.1)  # the index looks at the directory again after RESCAN_SECONDS
    assert K3 in tier and tier.sizes() == (1, entry_path(cache, K3).stat().st_size)


def test_file_tier_keeps_the_tier_protocol(tier: FileTier):
    """``put`` takes an Entry (its metadata goes with it); ``evict`` frees the LRU entry."""
    from lazygraph.store.base import Entry

    entry = Entry(K1, np.arange(3), ((None, 24, "cpu"),), "load", 0.5, True, True, True)
    entry.summary = "int64 (3,)"
    tier.put(entry)
    assert tier.get(K1).tolist() == [0, 1, 2] and tier.meta(K1)["name"] == "load"
    assert tier.meta(K1)["summary"] == "int64 (3,)" and tier.name == "disk"
    size = tier.sizes()[1]
    assert tier.evict() == size and tier.sizes() == (0, 0) and K1 not in tier
    assert tier.evict() == 0  # nothing left


def test_a_directory_moved_away_is_no_longer_read_or_written(tier, cache, tmp_path, caplog):
    """Loads go through the directory opened and checked at start, never its path again; once
    the path leads elsewhere, the tier stops serving it (what it had is recomputed)."""
    tier.write(K1, "ours", meta={})
    cache.rename(tmp_path / "moved")
    cache.mkdir(mode=0o700)
    (cache / f"{K1.hex()}.joblib").write_bytes(b"not ours")
    with caplog.at_level(logging.WARNING, logger="lazygraph.store.files"):
        assert tier.get(K1) is MISSING and K1 not in tier and tier.meta(K1) is None
    assert any("was moved or replaced" in r.getMessage() for r in caplog.records)
    with pytest.raises(CacheSecurityError, match="moved or replaced"):
        tier.write(K2, "more", meta={})
    assert sorted(p.name for p in cache.iterdir()) == [f"{K1.hex()}.joblib"]
    assert entry_path(tmp_path / "moved", K1).exists()  # ours, left where it went
