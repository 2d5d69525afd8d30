"""Seeing what happened: info, stats, report, progress, dot pictures, HTML (SPEC S8)."""

from __future__ import annotations

import ast
import gc
import html.parser
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import lazygraph
from lazygraph import Input, LazyGraphError, Session, display, node
from lazygraph.describe import summarize
from lazygraph.errors import ConfigError
from lazygraph.inspection import LOCATION_COLORS, NodeInfo, node_html, node_info, plural
from lazygraph.picture import Picture, to_dot, visualize
from lazygraph.report import stats_html, stats_text
from lazygraph.store.stats import Stats
from lazygraph.units import format_bytes


@pytest.fixture
def session():
    with Session(progress=False) as s:
        yield s


class Point:
    """A plain custom object (weak-referenceable, picklable)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


# -- a well-formedness check for the HTML views ------------------------------------------

_VOID = {"br", "hr", "img", "input", "meta", "link", "col", "wbr"}


class _Balance(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(markup: str) -> _Balance:
    """Parse ``markup`` and fail unless every tag is closed in order."""
    parser = _Balance()
    parser.feed(markup)
    parser.close()
    assert not parser.errors, parser.errors
    assert not parser.stack, f"unclosed tags: {parser.stack}"
    return parser


# -- summaries -----------------------------------------------------------------------------


def test_sizes_read_in_three_significant_digits():
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(10_000 * 3 * 4) == "117 KiB"
    assert format_bytes(5 * 2**20) == "5.0 MiB"
    assert format_bytes(1.9 * 2**30) == "1.9 GiB"


def test_summary_numpy():
    assert summarize(np.zeros((10_000, 3), dtype="float32")) == "float32[10000, 3] 117 KiB"
    assert summarize(np.arange(5)[::2]).startswith("int64[3] ")
    assert summarize(np.float32(1.5)).startswith("float32 1.5 ")


def test_summary_pandas():
    frame = pd.DataFrame(
        {"x": np.zeros(1000, "float32"), "y": np.zeros(1000), "name": ["a"] * 1000}
    )
    text = summarize(frame)
    assert text.startswith("DataFrame 1,000 rows × 3 cols (x: float32, y: float64, name: ")
    wide = pd.DataFrame({f"column_{i}": np.zeros(2) for i in range(30)})
    assert "30 cols (column_0: float64" in summarize(wide)
    assert summarize(wide).count(":") < 30 and "…" in summarize(wide)
    series = pd.Series(np.arange(1000.0), name="price")
    assert summarize(series).startswith("Series 'price' 1,000 × float64 ")


def test_summary_torch_device_and_dtype():
    assert summarize(torch.zeros(3, dtype=torch.float16)) == "Tensor float16[3] on cpu 6 B"
    on_meta = summarize(torch.empty(2, 4, dtype=torch.bfloat16, device="meta"))
    assert on_meta.startswith("Tensor bfloat16[2, 4] on meta")
    assert "requires_grad" in summarize(torch.ones(2, requires_grad=True))


def test_summary_builtins_and_custom_objects():
    assert summarize([1, 2, 3]).startswith("list of 3 items ")
    assert summarize({"a": 1}).startswith("dict of 1 key ")
    assert summarize("hello").startswith("str of 5 chars ")
    assert summarize(None).startswith("None ")
    assert summarize(42).startswith("int 42 ")
    assert re.fullmatch(r"Point \d+ B", summarize(Point(1, 2)))


def test_summary_never_raises():
    class Broken:
        @property
        def shape(self):
            raise RuntimeError("no shape")

        def __sizeof__(self):
            raise RuntimeError("no size")

    assert summarize(Broken()).startswith("Broken")


# -- node.info() ---------------------------------------------------------------------------


def test_info_numpy_in_memory(session):
    @node
    def ones(n):
        return np.ones((n, 3), dtype="float32")

    n = ones(10_000)
    assert n.info().location == "absent"
    assert n.info().summary == "not in the cache (runs on the next pull)"
    value = n.compute()
    info = n.info()
    assert isinstance(info, NodeInfo)
    assert (info.name, info.key, info.location) == ("ones", n.key, "memory")
    assert (info.type, info.nbytes) == ("ndarray", value.nbytes)
    assert info.summary == "float32[10000, 3] 117 KiB"
    assert info.compute_seconds is not None and info.compute_seconds >= 0
    assert info.hits == 0 and info.persistable
    n.compute()
    n.compute()
    assert n.info().hits == 2
    text = str(n.info())
    assert text.splitlines()[0].startswith("ones  key ")
    for label in ("location", "type", "summary", "size", "computed in", "hits", "persistable"):
        assert re.search(rf"^  {label} +\S", text, re.M), label


def test_info_pandas_frame(session):
    @node
    def frame(rows):
        return pd.DataFrame({"x": np.arange(rows, dtype="float32"), "y": np.ones(rows)})

    n = frame(1000)
    n.compute()
    info = n.info()
    assert info.type == "DataFrame"
    assert info.summary.startswith("DataFrame 1,000 rows × 2 cols (x: float32, y: float64)")
    assert info.nbytes >= 1000 * 12


def test_info_torch_tensor(session):
    @node
    def tensor():
        return torch.zeros(3, 4, dtype=torch.float16)

    n = tensor()
    n.compute()
    info = n.info()
    assert info.type == "Tensor"
    assert info.summary == "Tensor float16[3, 4] on cpu 24 B"
    assert info.nbytes == 24


def test_info_custom_object_and_identity_keyed_argument(session):
    @node
    def make(lock):
        return Point(1, 2)

    n = make(threading.Lock())  # no content hash and not picklable: an identity key
    n.compute()
    info = n.info()
    assert info.type == "Point" and info.summary.startswith("Point ")
    assert info.persistable is False
    assert "persistable  no" in str(info)


def test_info_of_an_input_shows_its_value(session):
    x = Input(np.arange(4), name="x")
    info = x.info()
    assert info.name == "x" and info.type == "ndarray"
    assert info.summary.startswith("int64[4] ")
    assert info.location == "memory"  # held by the Input itself: nothing would run


def test_inputs_holding_a_value_are_not_drawn_absent(session):
    @node
    def double(v):
        return 2 * v

    x = Input(3, name="x")
    colors = [color for _, color in _dot_nodes(to_dot(double(x))).values()]
    assert colors == [LOCATION_COLORS["absent"], LOCATION_COLORS["memory"]]  # double, x
    assert "absent" not in node_html(x).split("<table>")[0]


def test_info_of_an_uncached_node(session):
    @node(cache=False)
    def now():
        return 1

    n = now()
    assert n.compute() == 1
    info = n.info()
    assert (info.location, info.type, info.nbytes) == ("absent", None, None)
    assert info.summary == "not cached (cache=False)"


def test_info_weak_location_while_user_holds_the_value():
    @node
    def big(i):
        return np.full(1000, i, dtype=np.float64)  # 8,000 bytes each

    with Session(progress=False, memory_limit=10_000, spill=False):
        first = big(1)
        held = first.compute()
        big(2).compute()  # pushes the first out of memory; the user still holds it
        info = first.info()
        assert info.location == "weak"
        assert info.summary.startswith("float64[1000] ")
        assert f'fillcolor="{LOCATION_COLORS["weak"]}"' in to_dot(first)
        assert info.type == "ndarray"
        del held
        gc.collect()
        assert first.info().location == "absent"
        assert first.info().summary == "not in the cache (runs on the next pull)"


def test_info_spilled_and_disk_locations(tmp_path):
    @node
    def big(i):
        return np.full(50_000, i, dtype=np.float64)  # 400 KB each

    cache = tmp_path / "cache"
    with Session(progress=False, memory_limit="500KB", cache_dir=cache, spill_threshold=1000):
        first = big(1)
        first.compute()
        big(2).compute()
        big(3).compute()
        lazygraph.current_session().store.flush()
        gc.collect()
        info = first.info()
        # evicted, its file is the one in cache_dir: the disk tier (docs/concepts.md; the
        # spilled tier is the private spill directory of a session without cache_dir)
        assert info.location == "disk"
        assert f'fillcolor="{LOCATION_COLORS["disk"]}"' in to_dot(first)
        assert info.nbytes == 400_000
        assert info.summary in (
            "persisted 391 KiB (loaded from the cache directory on the next pull)",
            "float64[50000] 391 KiB",
        )
    with Session(progress=False, cache_dir=cache):  # a new session: only the files are left
        info = big(1).info()
        assert info.location == "disk"
        assert f'fillcolor="{LOCATION_COLORS["disk"]}"' in to_dot(big(1))
        assert info.compute_seconds is None or info.compute_seconds >= 0
        assert info.summary in (
            "persisted (loaded from the cache directory on the next pull)",
            "float64[50000] 391 KiB",
        )
        assert big(1).compute()[0] == 1
        assert lazygraph.current_session().stats().computes == 0


def test_info_html_escapes_and_is_well_formed(session):
    @node(name="<b>odd & name</b>")
    def odd():
        return "<script>alert(1)</script>"

    n = odd()
    n.compute()
    markup = n.info()._repr_html_()
    parsed = parse_html(markup)
    assert "script" not in parsed.tags and "b" not in parsed.tags
    assert "<b>odd & name</b>" in "".join(parsed.text)
    assert "memory" in "".join(parsed.text)


# -- stats -----------------------------------------------------------------------------------


def test_stats_fields_and_text(session):
    @node
    def f(x):
        return np.arange(x)

    f(100).compute()
    f(100).compute()  # a second Node with the same key: a hit
    f(200).compute()
    stats = session.stats()
    for name in (
        "hits",
        "misses",
        "computes",
        "evictions",
        "spills",
        "reloads",
        "bytes_in_memory",
        "bytes_spilled",
        "bytes_on_disk",
        "peak_bytes_in_memory",
    ):
        assert isinstance(getattr(stats, name), int), name
    assert stats.computes == 2 and stats.hits >= 1
    text = str(stats)
    hits, misses = plural(stats.hits, "hit"), plural(stats.misses, "miss", "misses")
    assert text.startswith(f"lazygraph stats: {hits}, {misses}")
    assert f"{stats.computes} computes" in text
    assert f"memory   {format_bytes(stats.bytes_in_memory)} in 2 entries" in text
    assert text == stats_text(stats)


def test_stats_html_lists_every_field():
    stats = Stats(3, 1, 1, 0, 2, 1, 2048, 4096, 0, 8192, entries_in_memory=1)
    parsed = parse_html(stats_html(stats))
    text = "".join(parsed.text)
    for name in ("hits", "misses", "computes", "spills", "reloads", "bytes_spilled"):
        assert name in text
    assert "4.0 KiB (4,096 B)" in text
    assert "8.0 KiB (8,192 B)" in text  # peak_bytes_in_memory is a size too, not a raw count
    assert stats._repr_html_() == stats_html(stats)


# -- report ----------------------------------------------------------------------------------


def _report_session():
    @node
    def load(i):
        time.sleep(0.01)
        return np.full(1000, i, dtype=np.float64)

    @node
    def total(parts):
        return float(sum(p.sum() for p in parts))

    return load, total


def test_report_counts_calls_hits_times_and_places(session):
    load, total = _report_session()
    top = total([load(i) for i in range(3)])
    top.compute()
    top.compute()  # served from memory: a hit on total, nothing runs
    total([load(0), load(1)]).compute()  # a new total over cached loads
    report = session.report()
    assert report.functions() == ["load", "total"]
    loads, totals = report["load"], report["total"]
    assert (loads.calls, loads.hits) == (3, 2)
    assert (totals.calls, totals.hits) == (2, 1)
    assert loads.total_seconds >= 3 * 0.01
    assert loads.mean_seconds == pytest.approx(loads.total_seconds / 3)
    assert loads.nbytes == 3 * 8000 and loads.where == (("memory", 3),)
    with pytest.raises(KeyError, match="no function 'nope'"):
        report["nope"]


def test_report_text_is_an_aligned_table(session):
    load, total = _report_session()
    total([load(i) for i in range(2)]).compute()
    lines = str(session.report()).splitlines()
    header = lines[0].split()
    assert header == ["function", "calls", "hits", "total", "mean", "results", "where"]
    rows = [line for line in lines if line and not line.startswith("-")]
    assert [r.split()[0] for r in rows] == ["function", "load", "total", "total"]
    # right-aligned numeric columns end at the same position on every line
    ends = {line.index(" " + line.split()[1]) + len(line.split()[1]) + 1 for line in rows[1:]}
    assert len(ends) == 1
    assert lines[1] == "-" * len(lines[1]) and lines[-2].startswith("---")
    assert "15.6 KiB" in lines[-1]  # 2 x 8,000 bytes of loads, plus the float


def test_report_to_pandas(session):
    load, total = _report_session()
    total([load(i) for i in range(2)]).compute()
    frame = session.report().to_pandas()
    assert frame.index.name == "function"
    assert list(frame.columns) == [
        "calls",
        "hits",
        "total_seconds",
        "mean_seconds",
        "nbytes",
        "where",
    ]
    assert frame.loc["load", "calls"] == 2 and frame.loc["load", "nbytes"] == 16_000
    assert frame.loc["load", "where"] == "memory 2"


def test_report_html_is_well_formed(session):
    load, total = _report_session()
    total([load(1)]).compute()
    parsed = parse_html(session.report()._repr_html_())
    assert parsed.tags.count("tr") == 4  # header, two functions, total
    assert "load" in parsed.text


def test_empty_report(session):
    assert str(session.report()) == "lazygraph report: no function ran in this session"
    assert len(session.report()) == 0
    assert session.report().to_pandas().empty


# -- progress --------------------------------------------------------------------------------


def _chain(slow_seconds: float):
    @node
    def step(x, delay):
        time.sleep(delay)
        return x + 1

    n = step(0, 0.0)
    for i in range(5):
        n = step(n, slow_seconds if i == 2 else 0.0)
    return n


def test_progress_bar_appears_for_a_slow_pull(capsys):
    with Session(progress=True):
        assert _chain(1.2).compute() == 6
    err = capsys.readouterr().err
    assert "lazygraph" in err
    assert re.search(r"6/6 \[", err), err


def test_no_progress_bar_for_a_fast_pull(capsys):
    with Session(progress=True):
        assert _chain(0.0).compute() == 6
    assert capsys.readouterr().err == ""


def test_no_progress_bar_when_turned_off(capsys):
    with Session(progress=False):
        assert _chain(1.2).compute() == 6
    assert capsys.readouterr().err == ""


# -- pictures --------------------------------------------------------------------------------


def _dot_nodes(dot: str) -> dict[str, tuple[str, str]]:
    """id -> (label, fillcolor) of the graph's nodes (the legend excluded)."""
    found = {}
    for match in re.finditer(
        r'^  (n\d+) \[label="((?:[^"\\]|\\.)*)", fillcolor="([^"]+)"', dot, re.M
    ):
        found[match.group(1)] = (match.group(2), match.group(3))
    return found


def test_dot_names_timings_and_colours(session):
    @node
    def base():
        return np.zeros(10)

    @node(name='say "hi"')
    def quoted(a):
        return a + 1

    @node
    def top(a, b):
        return a.sum() + b.sum()

    root = base()
    out = top(quoted(root), root)
    out.compute()
    later = top(quoted(root), base())  # the same keys: all in memory
    dot = to_dot(later)
    assert dot.startswith("digraph lazygraph {") and dot.rstrip().endswith("}")
    nodes = _dot_nodes(dot)
    labels = [label for label, _ in nodes.values()]
    assert [label.split("\\n")[0] for label in labels] == ["top", 'say \\"hi\\"', "base"]
    assert all(color == LOCATION_COLORS["memory"] for _, color in nodes.values())
    assert any("float64[10] 80 B" in label for label in labels)
    assert all(re.search(r"\d (µs|ms|s) · memory", label) for label in labels)
    assert dot.count(" -> ") == 3  # base -> quoted, quoted -> top, base -> top
    for location, color in LOCATION_COLORS.items():  # the legend names every colour
        assert f'legend_{location} [label="{location}", fillcolor="{color}"' in dot


def test_dot_colours_absent_and_memory(session):
    @node
    def value(i):
        return np.arange(i)

    @node
    def uncomputed(a):
        return a

    held = value(3).compute()
    dot = to_dot(uncomputed(value(3)))
    colors = [color for _, color in _dot_nodes(dot).values()]
    assert colors == [LOCATION_COLORS["absent"], LOCATION_COLORS["memory"]]
    assert held.shape == (3,)


def test_visualize_writes_dot(session, tmp_path):
    @node
    def one():
        return 1

    path = visualize(one(), tmp_path / "graph.dot")
    assert path == str(tmp_path / "graph.dot")
    with open(path) as written:
        assert written.read() == to_dot(one())
    assert one().visualize(str(tmp_path / "again.dot")).endswith("again.dot")


def test_visualize_rejects_unknown_formats(session, tmp_path):
    @node
    def one():
        return 1

    with pytest.raises(ConfigError, match=r"\.dot, \.svg, \.png or \.pdf files \(got .*graph\.txt"):
        visualize(one(), tmp_path / "graph.txt")


def test_visualize_svg_without_graphviz_says_how_to_get_it(session, tmp_path, monkeypatch):
    @node
    def one():
        return 1

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(LazyGraphError, match="needs Graphviz's 'dot' program.*apt install"):
        visualize(one(), tmp_path / "graph.svg")
    assert not (tmp_path / "graph.svg").exists()


def test_visualize_without_a_path_returns_a_picture(session, tmp_path, monkeypatch):
    @node
    def one():
        return 1

    n = one()
    picture = n.visualize()  # no path: nothing written, a picture to show or save
    assert isinstance(picture, Picture)
    assert picture.dot == str(picture) == to_dot(n)
    assert picture.save(tmp_path / "later.dot") == str(tmp_path / "later.dot")
    assert (tmp_path / "later.dot").read_text() == picture.dot
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert picture._repr_svg_() is None  # a notebook falls back to the text view
    with pytest.raises(LazyGraphError, match="needs Graphviz's 'dot' program"):
        picture.svg()


def test_dot_labels_are_cut_between_words(session):
    @node
    def wide():
        return pd.DataFrame({f"column_number_{i}": [1.0] for i in range(12)})

    n = wide()
    n.compute()
    (label, _), *_ = _dot_nodes(to_dot(n)).values()
    summary = label.split("\\n")[1]
    assert summary.endswith("…") and len(summary) <= 48
    full = node_info(n).summary
    kept = summary[:-1]
    assert full.startswith(kept) and full[len(kept)] in " ,;:(", (kept, full)  # at a word's end


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_visualize_svg_with_graphviz(session, tmp_path):
    @node
    def one():
        return 1

    @node
    def two(a):
        return a + 1

    n = two(one())
    n.compute()
    path = visualize(n, tmp_path / "graph.svg")
    with open(path) as written:
        svg = written.read()
    assert "<svg" in svg and ">two<" in svg and ">one<" in svg
    assert LOCATION_COLORS["memory"].lower() in svg.lower()


# -- node HTML -------------------------------------------------------------------------------


def test_node_html_lists_the_graph_and_escapes(session):
    @node(name="<load>")
    def load(i):
        return pd.DataFrame({"a&b": [i]})

    @node
    def combine(parts):
        return len(parts)

    top = combine([load(i) for i in range(3)])
    top.compute()
    markup = top._repr_html_()
    assert markup == node_html(top)
    parsed = parse_html(markup)
    text = "".join(parsed.text)
    assert "3 nodes above it" in text
    assert text.count("<load>") == 3 and "load" not in parsed.tags
    assert "DataFrame 1 rows × 1 cols (a&b: int64)" in text


def test_node_html_truncates_long_graphs(session):
    @node
    def inc(x):
        return x + 1

    n = 0
    for _ in range(80):
        n = inc(n)
    parsed = parse_html(node_html(n))
    assert "… and 29 more" in "".join(parsed.text)


def test_info_of_node_uses_the_session_that_pulled_it():
    @node
    def word():
        return "w"

    with Session(progress=False) as first:
        n = word()
        n.compute()
        with Session(progress=False):
            assert node_info(n).location == "memory"  # the session that pulled it
            assert node_info(n, first).location == "memory"


# -- the views sit on top: registered in display, imported by nothing below them ---------


def test_every_view_is_registered_when_lazygraph_is_imported():
    from lazygraph import explain, inspection, picture, report

    expected = {
        "node_info": inspection.node_info,
        "node_html": inspection.node_html,
        "explain": explain.explain,
        "to_dot": picture.to_dot,
        "visualize": picture.visualize,
        "stats_text": report.stats_text,
        "stats_html": report.stats_html,
        "session_report": report.session_report,
    }
    for name, func in expected.items():
        assert display.view(name) is func, name


VIEWS = {"inspection", "report", "picture", "explain"}
ABOVE_VIEWS = {"demo", "cli", "__init__", "__main__"}


def test_nothing_below_the_views_imports_them():
    """Counting imports inside functions and under TYPE_CHECKING, as the floor plan does."""
    package = Path(lazygraph.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).with_suffix("").as_posix().replace("/", ".")
        if module in VIEWS or module in ABOVE_VIEWS:
            continue
        for found in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(found, ast.ImportFrom):
                names = [found.module or "", *(a.name for a in found.names)]
            elif isinstance(found, ast.Import):
                names = [a.name for a in found.names]
            hit = {part for name in names for part in name.split(".")} & VIEWS
            if hit:
                offenders.append(f"{module} imports {sorted(hit)}")
    assert not offenders
