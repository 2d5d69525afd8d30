"""Content hashing (lazygraph.hashing): equal content, equal digest; any change, a new one."""

from __future__ import annotations

import copy
import dataclasses
import enum
import pickle
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lazygraph.hashing import content_hash, encode_scalars, hash_into


def digest(obj):
    return content_hash(obj)[0]


class Token:
    """A stand-in for lazygraph's Node: contributes its key through ``__lazygraph_token__``."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __lazygraph_token__(self) -> bytes:
        return self.key


class Unpicklable:
    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        raise TypeError("no pickling here")


class Slotted:
    __slots__ = ("value",)  # no __weakref__: the identity token cannot be memoized

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        raise TypeError("no pickling here")


class Plain:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


@dataclasses.dataclass
class Point:
    x: int
    y: list


class Color(enum.Enum):
    RED = 1
    BLUE = 2


# -- builtins and containers ------------------------------------------------------------------


def test_digest_is_16_bytes_and_persistable_for_plain_values():
    d, persistable = content_hash({"a": [1, 2.5, None, ("x", b"y")]})
    assert len(d) == 16 and persistable


def test_type_tags_keep_lookalike_values_apart():
    values = [
        1,
        1.0,
        True,
        "1",
        b"1",
        bytearray(b"1"),
        (1,),
        [1],
        {1},
        frozenset({1}),
        {1: None},
        None,
        0,
        False,
        "",
        b"",
        (),
        [],
        1 + 0j,
        Ellipsis,
    ]
    assert len({digest(v) for v in values}) == len(values)


def test_equal_content_in_different_objects_hashes_equal():
    value = {"a": [1, 2, {"b": (3.5, "c")}], "d": {4, 5}, "e": b"raw"}
    assert digest(value) == digest(copy.deepcopy(value))
    assert digest(value) == digest(pickle.loads(pickle.dumps(value)))


def test_dicts_and_sets_ignore_order_but_not_content():
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})
    assert digest({3, 1, 2}) == digest({2, 3, 1})
    assert digest({"a": 1, "b": 2}) != digest({"a": 2, "b": 1})
    assert digest({1, 2}) != digest({1, 3})


def test_sequences_keep_order_and_nesting():
    assert digest([1, 2]) != digest([2, 1])
    assert digest([[1], 2]) != digest([1, [2]])
    assert digest(("ab", "c")) != digest(("a", "bc"))


def test_big_ints_and_floats_are_exact():
    assert digest(2**100) != digest(2**100 + 1)
    assert digest(-(2**70)) != digest(2**70)
    assert digest(0.1 + 0.2) != digest(0.3)
    assert digest(0.0) != digest(-0.0)  # documented: their bytes differ


def test_cycles_terminate_and_hash_by_structure():
    a = [1]
    a.append(a)
    b = [1]
    b.append(b)
    assert digest(a) == digest(b)
    c = [2]
    c.append(c)
    assert digest(a) != digest(c)
    d = {"k": 1}
    d["self"] = d
    assert content_hash(d)[1]
    obj = Plain(v=1)
    obj.me = obj
    other = Plain(v=1)
    other.me = other
    assert digest(obj) == digest(other)


def test_shared_references_hash_like_copies():
    shared = [1, 2]
    assert digest([shared, shared]) == digest([[1, 2], [1, 2]])
    s = "x" * 50
    assert digest(Plain(a=s, b=s)) == digest(Plain(a="x" * 50, b="".join(["x"] * 50)))


def test_hash_into_feeds_the_same_stream_as_content_hash():
    h1, h2 = xxhash.xxh3_128(), xxhash.xxh3_128()
    assert hash_into(h1, (1, "a", [2.0]))
    assert hash_into(h2, (1, "a", [2.0]))
    assert h1.digest() == h2.digest()
    h3 = xxhash.xxh3_128()
    hash_into(h3, (1, "a", [2.5]))
    assert h3.digest() != h1.digest()


def test_encode_scalars_matches_hash_into():
    for value in [7, "s", (1, 2.5, None, "t"), (2**80,)]:
        h = xxhash.xxh3_128()
        hash_into(h, value)
        assert xxhash.xxh3_128_digest(encode_scalars(value)) == h.digest()
    assert encode_scalars(([1],)) is None


# -- objects: tokens, dataclasses, enums, functions, pickle, identity --------------------------


def test_tokens_stand_for_their_object_also_inside_containers():
    a, a2, b = Token(b"a" * 16), Token(b"a" * 16), Token(b"b" * 16)
    assert digest(a) == digest(a2) != digest(b)
    assert digest([a, {"k": a}, (a,)]) == digest([a2, {"k": a2}, (a2,)])
    assert digest({"k": a}) != digest({"k": b})
    assert digest(a) != digest(b"a" * 16)


def test_token_must_be_bytes():
    class Bad:
        def __lazygraph_token__(self):
            return "not bytes"

    with pytest.raises(TypeError, match="must return bytes"):
        content_hash(Bad())


def test_dataclasses_and_enums_hash_by_content():
    assert digest(Point(1, [2])) == digest(Point(1, [2]))
    assert digest(Point(1, [2])) != digest(Point(1, [3]))
    assert digest(Color.RED) == digest(Color(1)) != digest(Color.BLUE)


def test_lambdas_hash_by_code_not_identity():
    assert digest(lambda x: x + 1) == digest(lambda x: x + 1)
    assert digest(lambda x: x + 1) != digest(lambda x: x + 2)
    assert content_hash(lambda x: x)[1]


def test_picklable_objects_hash_by_state():
    assert digest(Plain(a=1, b=[2])) == digest(Plain(a=1, b=[2]))
    assert digest(Plain(a=1, b=[2])) != digest(Plain(a=1, b=[3]))
    assert digest(Plain(a=1, b=2)) == digest(Plain(b=2, a=1))  # attribute order is not content
    arr = np.arange(10)
    holder, persistable = content_hash(Plain(data=arr, tags={"x", "y"}))
    assert persistable
    assert holder == digest(Plain(data=arr.copy(), tags={"y", "x"}))
    assert holder != digest(Plain(data=arr + 1, tags={"x", "y"}))


def test_unpicklable_objects_get_identity_keys_not_persistable():
    one, two = Unpicklable(1), Unpicklable(1)
    d1, persistable = content_hash(one)
    assert not persistable
    assert d1 == digest(one)  # memoized per live object
    assert d1 != digest(two)
    assert not content_hash([1, {"k": one}])[1]
    assert not content_hash(threading.Lock())[1]


def test_identity_keys_are_never_reused_after_an_object_dies():
    seen, ids = set(), set()
    for _ in range(50):
        obj = Unpicklable(0)
        seen.add(digest(obj))
        ids.add(id(obj))
        del obj  # freed at once (no cycle): its id is free for the next object
    assert len(ids) < 50  # ids were reused...
    assert len(seen) == 50  # ...keys were not


def test_objects_without_weakrefs_get_a_fresh_identity_each_time():
    obj = Slotted(1)
    assert digest(obj) != digest(obj)
    assert not content_hash(obj)[1]


def test_object_hash_is_stable_across_processes_and_hash_seeds():
    code = (
        "from lazygraph.hashing import content_hash\n"
        "import numpy as np, pandas as pd\n"
        "value = [{'b', 'a', 'c'}, {'z': 1, 'y': (2, 'w')}, np.arange(5.0),\n"
        "         pd.DataFrame({'s': ['p', 'q'], 'n': [1, 2]}), frozenset({'m', 'n'})]\n"
        "print(content_hash(value)[0].hex())\n"
    )
    outputs = set()
    for seed in ("1", "2", "random"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        run = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        outputs.add(run.stdout.strip())
    assert len(outputs) == 1


def test_importing_lazygraph_hashing_imports_no_heavy_library():
    code = (
        "import sys, lazygraph.hashing, lazygraph.keys\n"
        "import numpy as np\n"
        "lazygraph.hashing.content_hash([np.arange(3), {'a': 1}])\n"
        "print(sorted(m for m in ('torch', 'pandas', 'dask') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


# -- numpy ------------------------------------------------------------------------------------


def test_numpy_equal_content_equal_digest():
    a = np.arange(24, dtype=np.float64).reshape(4, 6)
    assert digest(a) == digest(a.copy()) == digest(np.array(a.tolist()))
    ro = a.copy()
    ro.flags.writeable = False
    assert digest(ro) == digest(a)


@pytest.mark.parametrize(
    "change",
    [
        lambda a: a.astype(np.float32),
        lambda a: a.reshape(6, 4),
        lambda a: a.reshape(24),
        lambda a: np.where(np.arange(24).reshape(4, 6) == 13, -1.0, a),
        lambda a: a.view(np.int64),
        lambda a: a.astype(">f8"),
    ],
)
def test_numpy_any_change_in_values_dtype_or_shape_changes_digest(change):
    a = np.arange(24, dtype=np.float64).reshape(4, 6)
    assert digest(change(a)) != digest(a)


def test_numpy_layout_is_part_of_the_digest():
    a = np.arange(12.0).reshape(3, 4)
    f = np.asfortranarray(a)
    assert digest(f) == digest(np.asfortranarray(a.copy()))
    assert digest(f) != digest(a)  # same values, different memory order


def test_numpy_noncontiguous_views_hash_by_content_and_strides_not_base():
    base1 = np.arange(60.0).reshape(6, 10)
    base2 = np.zeros((6, 20))
    base2[:, :10] = base1
    v1, v2 = base1[:, 2:7], base2[:, 2:7]
    assert v1.strides != v2.strides
    # S3.6: strides are observable (v.strides, np.lib.stride_tricks), so they count
    assert digest(v1) != digest(v2)
    base3 = np.arange(60.0).reshape(6, 10) + 0.0  # another base, same strides
    assert digest(base1[:, 2:7]) == digest(base3[:, 2:7])
    assert digest(base1[::2]) == digest(base3[::2])
    assert digest(base1[:, 2:7]) != digest(base1[:, 3:8])
    # documented decision: a strided view and its contiguous copy differ (layout counts)
    assert digest(v1) != digest(np.ascontiguousarray(v1))


def test_numpy_large_strided_view_is_hashed_in_blocks_without_a_full_copy():
    base = np.arange(4_000_000, dtype=np.float64).reshape(2000, 2000)
    view = base[:, ::2]  # 16 MB of strided data, blocks of ~1 MB
    other = np.empty((2000, 2000))
    other[:, ::2] = view
    tracemalloc.start()
    try:
        d = digest(view)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * 2**20
    assert d == digest(other[:, ::2])
    changed = base.copy()
    changed[1999, 1998] = -1
    assert d != digest(changed[:, ::2])


def test_numpy_big_rows_are_walked_row_by_row():
    a = np.arange(3 * 300_000, dtype=np.float64).reshape(3, 300_000)
    view = a[:, ::2]  # each row ~1.2 MB, over the block size
    assert digest(view) == digest(a.copy()[:, ::2])
    b = a.copy()
    b[2, 4] = 0.5
    assert digest(view) != digest(b[:, ::2])


def test_numpy_memmap_hashes_like_the_array(tmp_path):
    a = np.arange(100, dtype=np.int32)
    path = tmp_path / "a.dat"
    mm = np.memmap(path, dtype=np.int32, mode="w+", shape=(100,))
    mm[:] = a
    mm.flush()
    assert digest(np.memmap(path, dtype=np.int32, mode="r", shape=(100,))) == digest(a)


def test_numpy_object_and_string_arrays_hash_by_value():
    a = np.array(["a", "bb", None, 3], dtype=object)
    assert digest(a) == digest(np.array(["a", "bb", None, 3], dtype=object))
    assert digest(a) != digest(np.array(["a", "bb", None, 4], dtype=object))
    assert digest(np.array(["a\x00b", "c"], dtype=object)) != digest(
        np.array(["a", "b\x00c"], dtype=object)
    )
    assert digest(np.array(["ab", "c"], dtype=object)) != digest(
        np.array(["a", "bc"], dtype=object)
    )
    big = np.array([f"s{i}" for i in range(10_000)], dtype=object)
    changed = big.copy()
    changed[9_999] = "s"
    assert digest(big) == digest(big.copy()) != digest(changed)
    sdt = np.dtypes.StringDType()
    assert digest(np.array(["x", "yy"], dtype=sdt)) == digest(np.array(["x", "yy"], dtype=sdt))
    assert digest(np.array(["x", "yy"], dtype=sdt)) != digest(np.array(["x", "yz"], dtype=sdt))
    assert digest(np.array(["x", "yy"])) != digest(np.array(["x", "yz"]))


def test_numpy_special_arrays():
    assert digest(np.zeros((0, 3))) != digest(np.zeros((3, 0)))
    assert digest(np.array(5)) != digest(np.array([5]))
    rec = np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])
    rec2 = np.array([(1, 2.0)], dtype=[("a", "i4"), ("c", "f8")])
    assert digest(rec) != digest(rec2)
    m1 = np.ma.array([1, 2, 3], mask=[0, 1, 0])
    assert digest(m1) == digest(np.ma.array([1, 2, 3], mask=[0, 1, 0]))
    assert digest(m1) != digest(np.ma.array([1, 2, 3], mask=[0, 0, 0]))
    assert digest(np.array(["2020-01-01"], "M8[D]")) != digest(np.array(["2020-01-01"], "M8[s]"))


def test_numpy_scalars_dtypes_and_ufuncs():
    assert digest(np.float64(1.5)) == digest(np.float64(1.5))
    assert digest(np.float64(1.5)) != digest(1.5)
    assert digest(np.float32(1.5)) != digest(np.float64(1.5))
    assert digest(np.dtype("f8")) != digest(np.dtype("f4"))
    assert digest(np.add) != digest(np.multiply)


# -- pandas -----------------------------------------------------------------------------------


def frame():
    return pd.DataFrame(
        {
            "i": [1, 2, 3],
            "f": [0.5, None, 2.5],
            "s": ["x", None, "z"],
            "c": pd.Categorical(["u", "v", "u"]),
            "t": pd.date_range("2024-01-01", periods=3, tz="UTC"),
            "n": pd.array([1, None, 3], dtype="Int64"),
        },
        index=pd.Index([10, 20, 30], name="row"),
    )


def test_pandas_equal_frames_hash_equal():
    df = frame()
    assert digest(df) == digest(frame()) == digest(df.copy(deep=True))
    assert content_hash(df)[1]


def test_pandas_block_layout_does_not_matter():
    values = np.arange(12.0).reshape(4, 3)
    one_block = pd.DataFrame(values, columns=["a", "b", "c"])
    separate = pd.DataFrame(
        {"a": values[:, 0].copy(), "b": values[:, 1].copy(), "c": values[:, 2].copy()}
    )
    assert digest(one_block) == digest(separate)


@pytest.mark.parametrize(
    "change",
    [
        lambda df: df.rename(columns={"i": "I"}),
        lambda df: df.set_axis([10, 20, 31]),
        lambda df: df.rename_axis("other"),
        lambda df: df.astype({"i": "float64"}),
        lambda df: df.assign(i=[1, 2, 4]),
        lambda df: df.assign(s=["x", None, "y"]),
        lambda df: df.assign(s=["x", "", "z"]),
        lambda df: df.assign(c=pd.Categorical(["u", "v", "u"], categories=["v", "u"])),
        lambda df: df.assign(t=pd.date_range("2024-01-01", periods=3, tz="Europe/Paris")),
        lambda df: df.assign(n=pd.array([1, 2, 3], dtype="Int64")),
        lambda df: df[["f", "i", "s", "c", "t", "n"]],
        lambda df: df.iloc[:2],
    ],
)
def test_pandas_any_change_changes_the_digest(change):
    df = frame()
    assert digest(change(df)) != digest(df)


def test_pandas_attrs_and_series_names_count():
    df = frame()
    with_attrs = frame()
    with_attrs.attrs["source"] = "survey"
    assert digest(with_attrs) != digest(df)
    s = pd.Series([1, 2], name="a")
    assert digest(s) == digest(pd.Series([1, 2], name="a"))
    assert digest(s) != digest(s.rename("b"))
    assert digest(s) != digest(s.astype("int32"))


def test_pandas_masked_values_ignore_what_is_under_the_mask():
    a = pd.array([1, 2, 3], dtype="Int64")
    b = pd.array([1, 99, 3], dtype="Int64")
    a[1] = pd.NA
    b[1] = pd.NA
    assert digest(a) == digest(b)


def test_pandas_indexes():
    mi = pd.MultiIndex.from_product([[1, 2], ["a", "b"]], names=["n", "l"])
    assert digest(mi) == digest(pd.MultiIndex.from_product([[1, 2], ["a", "b"]], names=["n", "l"]))
    assert digest(mi) != digest(mi.set_names(["n", "m"]))
    assert digest(pd.RangeIndex(5)) != digest(pd.RangeIndex(6))
    assert digest(pd.Index(["a", "b"])) != digest(pd.Index(["a", "c"]))


def test_pandas_string_columns_with_separators_and_nulls():
    a = pd.Series(["a\x00", "b"])
    b = pd.Series(["a", "\x00b"])
    assert digest(a) != digest(b)
    long = pd.Series([f"v{i}" if i % 7 else None for i in range(20_000)])
    changed = long.copy()
    changed.iloc[19_999] = "other"
    assert digest(long) == digest(long.copy()) != digest(changed)


# -- torch ------------------------------------------------------------------------------------


def test_torch_equal_content_equal_digest():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert digest(t) == digest(t.clone()) == digest(torch.tensor(t.tolist()))


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.double(),
        lambda t: t.reshape(4, 3),
        lambda t: t + torch.eye(3, 4) * 0.5,
        lambda t: t.clone().requires_grad_(True),
        lambda t: t.to(torch.bfloat16),
    ],
)
def test_torch_any_change_changes_the_digest(change):
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert digest(change(t)) != digest(t)


def test_torch_contiguity_strides_and_subclass_count_and_content_not_base():
    t = torch.arange(12.0).reshape(3, 4)
    # S3.6: is_contiguous(), .stride() and .view() tell these apart, so the digest does
    assert digest(t.t()) != digest(t.t().contiguous())
    assert digest(t[:, ::2]) != digest(t[:, ::2].contiguous())
    other = torch.arange(12.0).reshape(3, 4) + 0.0
    assert digest(t.t()) == digest(other.t()) and digest(t[:, ::2]) == digest(other[:, ::2])
    wide = torch.zeros(3, 8)
    wide[:, :4] = t
    assert t[:, ::2].tolist() == wide[:, :4:2].tolist()
    assert digest(t[:, ::2]) != digest(wide[:, :4:2])  # same values, other strides
    big = torch.arange(600_000.0).reshape(2, 300_000)[:, ::2]  # rows over the block size
    assert digest(big) == digest(torch.arange(600_000.0).reshape(2, 300_000)[:, ::2])
    assert digest(big) != digest(big.contiguous())
    w = torch.zeros(2)
    assert digest(torch.nn.Parameter(w.clone())) != digest(w.clone().requires_grad_(True))


def test_pandas_index_freq_and_flags_count():
    with_freq = pd.date_range("2020-01-01", periods=4, freq="D")
    without = pd.DatetimeIndex(list(with_freq))
    assert with_freq.equals(without) and without.freq is None
    assert digest(with_freq) != digest(without)
    assert digest(pd.Series(1, index=with_freq)) != digest(pd.Series(1, index=without))
    df = pd.DataFrame({"a": [1, 2]})
    strict = df.set_flags(allows_duplicate_labels=False)
    assert digest(df) != digest(strict)
    assert digest(df) == digest(pd.DataFrame({"a": [1, 2]}))
    assert digest(df["a"]) != digest(df["a"].set_flags(allows_duplicate_labels=False))


def test_dataclass_attributes_beyond_fields_count():
    @dataclasses.dataclass
    class Config:
        scale: int

    a, b = Config(2), Config(2)
    assert digest(a) == digest(b)
    b.cache_dir = "/tmp/x"  # read by a method, not a field
    assert digest(a) != digest(b)
    a.cache_dir = "/tmp/x"
    assert digest(a) == digest(b)


def test_torch_special_tensors():
    assert digest(torch.tensor(3)) != digest(torch.tensor([3]))
    assert digest(torch.zeros(0)) != digest(torch.zeros(0, dtype=torch.int64))
    z = torch.tensor([1 + 2j])
    assert digest(z.conj()) != digest(z)
    sparse = torch.tensor([[0.0, 1.0], [2.0, 0.0]]).to_sparse()
    d, persistable = content_hash(sparse)
    assert persistable and d == digest(torch.tensor([[0.0, 1.0], [2.0, 0.0]]).to_sparse())
    assert d != digest(torch.tensor([[0.0, 1.0], [3.0, 0.0]]).to_sparse())
    assert digest(torch.nn.Parameter(torch.ones(2))) == digest(torch.nn.Parameter(torch.ones(2)))


# -- property tests -----------------------------------------------------------------------------

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=4)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(values)
def test_property_equal_values_give_equal_digests(value):
    assert digest(value) == digest(copy.deepcopy(value))
    assert digest(value) == digest(pickle.loads(pickle.dumps(value)))


@settings(max_examples=150, deadline=None)
@given(values, scalars)
def test_property_wrapping_or_extending_changes_the_digest(value, extra):
    assert digest([value]) != digest(value)
    assert digest([value, extra]) != digest([value])
    assert digest((value, extra)) != digest((extra, value)) or repr(value) == repr(extra)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.int8, np.int64, np.float32, np.float64, np.bool_]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
    ),
    st.data(),
)
def test_property_arrays_equal_copies_equal_and_one_flip_differs(arr, data):
    assert digest(arr) == digest(arr.copy())
    flat = arr.reshape(-1).copy()
    i = data.draw(st.integers(0, flat.size - 1))
    raw = flat.view(np.uint8).reshape(flat.size, -1)
    raw[i, 0] ^= 1  # flip one bit of one element
    changed = flat.reshape(arr.shape)
    assert digest(changed) != digest(arr)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=5) | st.none(), min_size=1, max_size=30), st.data())
def test_property_string_columns_one_change_differs(items, data):
    s = pd.Series(items, dtype=object)
    assert digest(s) == digest(pd.Series(list(items), dtype=object))
    i = data.draw(st.integers(0, len(items) - 1))
    new = data.draw(st.text(max_size=5).filter(lambda v: v != items[i]))
    changed = list(items)
    changed[i] = new
    assert digest(pd.Series(changed, dtype=object)) != digest(s)


def test_hashing_from_many_threads_agrees():
    shared = Unpicklable(5)
    values = [np.arange(1000.0), frame(), {"a": [1, 2]}, shared, Plain(x={1, 2})]
    expected = [digest(v) for v in values]
    results: list[list[bytes]] = []

    def work():
        for _ in range(20):
            results.append([digest(v) for v in values])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80 and all(r == expected for r in results)


def test_hashing_keeps_nothing_alive():
    import weakref

    for make in (lambda: Plain(a=[1, 2]), lambda: Unpicklable(1), lambda: Point(1, [2])):
        obj = make()
        ref = weakref.ref(obj)
        content_hash([obj, {"k": obj}])
        del obj
        assert ref() is None  # freed by reference counting alone, no garbage collection
