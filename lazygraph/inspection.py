"""Seeing what happened: node info, stats and report text and HTML, Graphviz pictures.

Covers: ``node.info()`` (:class:`NodeInfo`, SPEC S8.1), one-line summaries a person reads at
a glance (:func:`summarize`), the text and HTML of ``session.stats()`` (S8.2), the per-function
table of ``session.report()`` (:class:`Report`, S8.3), ``node.to_dot()`` / ``visualize()``
(S8.5) and the notebook views (``_repr_html_``, S8.6). Everything here only reads: no lookup
counts a hit, touches the LRU order or loads a file.

Does not cover: why a node ran (``explain``), the progress bar (``progress``), or the
counting itself (the store and the scheduler keep the numbers shown here).

>>> import lazygraph
>>> import numpy as np
>>> @lazygraph.node
... def ones(n):
...     return np.ones((n, 3), dtype="float32")
>>> with lazygraph.Session(progress=False):
...     x = ones(10_000)
...     _ = x.compute()
...     info = x.info()
>>> info.location, info.summary
('memory', 'float32[10000, 3] 117 KiB')
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, cast

from .errors import ConfigError, LazyGraphError
from .graph import walk
from .node import Input, Node
from .sizing import sizeof
from .store.base import MISSING

if TYPE_CHECKING:
    import pandas

    from .session import Session
    from .store.base import Entry
    from .store.store import Stats, Store

log = logging.getLogger(__name__)

__all__ = [
    "LOCATIONS",
    "LOCATION_COLORS",
    "NodeInfo",
    "Report",
    "ReportRow",
    "human_bytes",
    "node_html",
    "node_info",
    "session_report",
    "stats_html",
    "stats_text",
    "summarize",
    "to_dot",
    "visualize",
]

LOCATIONS = ("memory", "weak", "spilled", "disk", "absent")
LOCATION_COLORS = {
    "memory": "#66bb6a",  # green: served at once
    "weak": "#c5e1a5",  # light green: served while someone else holds it
    "spilled": "#ffd54f",  # yellow: a file of this session, memory-mapped back
    "disk": "#64b5f6",  # blue: persisted, loaded on the next use
    "absent": "#e0e0e0",  # grey: would run on the next pull
}
_PICTURE_FORMATS = ("svg", "png", "pdf")
_HTML_NODE_ROWS = 50  # ancestors listed in a node's notebook view before "and N more"


# -- sizes and summaries -----------------------------------------------------------------


def human_bytes(nbytes: float) -> str:
    """A byte count in powers of 1024 with about three significant digits.

    >>> human_bytes(512), human_bytes(120_000), human_bytes(1536), human_bytes(2.04e9)
    ('512 B', '117 KiB', '1.5 KiB', '1.9 GiB')
    """
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            break
        size /= 1024
    if unit == "B":
        return f"{int(size)} B"
    return f"{size:.0f} {unit}" if abs(size) >= 99.95 else f"{size:.1f} {unit}"


def summarize(value: Any, nbytes: int | None = None) -> str:
    """A one-line description of ``value``: shape, dtype, device, rows and columns, size.

    ``nbytes`` is the size to show (the store's estimate); measured when not given. Never
    raises: a value that cannot be described is shown by its type name.

    >>> import numpy as np
    >>> summarize(np.zeros((10_000, 3), dtype="float32"))
    'float32[10000, 3] 117 KiB'
    >>> summarize([1, 2, 3], nbytes=80)
    'list of 3 items 80 B'
    """
    try:
        size = human_bytes(sizeof(value) if nbytes is None else nbytes)
        return f"{_describe(value)} {size}"
    except Exception as exc:  # a display must not fail on an odd object; say what it is
        log.debug("summarizing a %s failed: %r", type(value).__name__, exc)
        return type(value).__name__


def _describe(value: Any) -> str:
    """The summary without its size; dispatches on libraries already imported."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return f"{value.dtype}[{', '.join(map(str, value.shape))}]"
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(value, (pd.DataFrame, pd.Series, pd.Index)):
        return _describe_pandas(pd, value)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        grad = " requires_grad" if value.requires_grad else ""
        return f"Tensor {dtype}[{', '.join(map(str, value.shape))}] on {value.device}{grad}"
    if np is not None and isinstance(value, np.generic):
        return f"{type(value).__name__} {str(value):.40}"
    return _describe_builtin(value)


def _describe_pandas(pd: Any, value: Any) -> str:
    if isinstance(value, pd.DataFrame):
        rows, cols = value.shape
        described = [f"{name}: {dtype}" for name, dtype in value.dtypes.items()]
        shown = _fit(described, limit=48)
        return (
            f"DataFrame {rows:,} rows × {cols} cols ({shown})"
            if cols
            else (f"DataFrame {rows:,} rows × 0 cols")
        )
    kind = type(value).__name__
    named = f" {value.name!r:.30}" if value.name is not None else ""
    return f"{kind}{named} {len(value):,} × {value.dtype}"


def _fit(items: list[str], *, limit: int) -> str:
    """Join ``items`` with commas, ending in "…" once the text would pass ``limit`` chars."""
    shown: list[str] = []
    length = 0
    for item in items:
        if shown and length + len(item) > limit:
            return ", ".join(shown) + ", …"
        shown.append(item)
        length += len(item) + 2
    return ", ".join(shown)


def _describe_builtin(value: Any) -> str:
    kind = type(value).__name__
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, complex)):
        return f"{kind} {value!r:.40}"
    if isinstance(value, str):
        return f"str of {len(value):,} chars"
    if isinstance(value, (bytes, bytearray)):
        return kind
    if isinstance(value, dict):
        return f"{kind} of {_plural(len(value), 'key')}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"{kind} of {_plural(len(value), 'item')}"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if isinstance(shape, tuple) and dtype is not None:  # cupy, xarray, jax, ... by duck type
        return f"{kind} {dtype}[{', '.join(map(str, shape))}]"
    return kind


# -- node.info() -------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """What is known about one node's result (``node.info()``, SPEC S8.1).

    ``location`` is one of :data:`LOCATIONS`; ``type``, ``nbytes`` and ``compute_seconds``
    are None when the store knows nothing about the result (not computed, or dropped).

    >>> info = NodeInfo("load", "ab" * 16, "memory", "list", 88, "list of 3 items 88 B",
    ...                 0.25, 2, True)
    >>> print(info)  # doctest: +NORMALIZE_WHITESPACE
    load  key ababababababababababababababab
      location     memory
      type         list
      summary      list of 3 items 88 B
      size         88 B
      computed in  250 ms
      hits         2
      persistable  yes
    """

    name: str
    key: str
    location: str
    type: str | None
    nbytes: int | None
    summary: str
    compute_seconds: float | None
    hits: int
    persistable: bool

    def rows(self) -> list[tuple[str, str]]:
        """(label, text) pairs, as ``str()`` and the HTML view show them."""
        return [
            ("location", self.location),
            ("type", self.type or "-"),
            ("summary", self.summary),
            ("size", "-" if self.nbytes is None else human_bytes(self.nbytes)),
            ("computed in", _seconds(self.compute_seconds)),
            ("hits", str(self.hits)),
            ("persistable", "yes" if self.persistable else "no (identity-keyed argument)"),
        ]

    def __str__(self) -> str:
        lines = [f"{self.name}  key {self.key[:30]}"]
        lines += [f"  {label:<12} {text}" for label, text in self.rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return _info_html(self)


def _info_html(info: NodeInfo, *, css: str = "lazygraph-info", extra: str = "") -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{_esc(label)}</th><td>{_esc(text)}</td></tr>"
        for label, text in info.rows()
    )
    return (
        f"<div class='{css}'><strong>{_esc(info.name)}</strong> "
        f"{_badge(info.location)} <code>{_esc(info.key[:16])}</code>"
        f"<table>{body}</table>{extra}</div>"
    )


def node_info(node: Node, session: Session | None = None) -> NodeInfo:
    """What the store knows about ``node``'s result, without loading or counting anything.

    ``session`` defaults to the one that last pulled ``node``, else the current one.

    >>> import lazygraph
    >>> @lazygraph.node
    ... def word():
    ...     return "hello"
    >>> with lazygraph.Session(progress=False):
    ...     w = word()
    ...     before = node_info(w).location
    ...     _ = w.compute()
    ...     after = node_info(w)
    >>> before, after.location, after.type, after.hits
    ('absent', 'memory', 'str', 0)
    """
    session = session if session is not None else _session_of(node)
    key_hex = node.key  # resolves the key (and its stale ancestors') if needed
    key: bytes = node._key  # type: ignore[assignment]
    store = session.store
    location = store.location(key)
    entry = store.entry(key)
    found, value = _peek(store, key, location, entry)
    if not found and isinstance(node, Input) and not isinstance(node.value, Node):
        found, value = True, node.value  # not cached, but the value it holds is known
    nbytes = entry.nbytes if entry is not None else (sizeof(value) if found else None)
    return NodeInfo(
        name=node.name,
        key=key_hex,
        location=location,
        type=type(value).__name__ if found else _entry_text(entry, "type"),
        nbytes=nbytes,
        summary=summarize(value, nbytes) if found else _absent_summary(node, entry, location),
        compute_seconds=entry.seconds if entry is not None else None,
        hits=entry.hits if entry is not None else 0,
        persistable=node._persistable,
    )


def _session_of(node: Node) -> Session:
    pull = node._last_pull
    if pull is not None and not isinstance(pull, str) and not pull.session.closed:
        return cast("Session", pull.session)
    from .session import current_session

    return current_session()


def _peek(store: Store, key: bytes, location: str, entry: Entry | None) -> tuple[bool, Any]:
    """``(True, value)`` when the result is in memory or weakly held, else ``(False, None)``.

    No hit is counted, the LRU order is untouched and no file is read: this only looks.
    """
    if location == "memory" and entry is not None:
        return True, entry.value
    if location in ("weak", "spilled"):
        # A spilled result may still be alive elsewhere (its mapped copy, or the user's).
        value = store.peek(key)
        if value is not MISSING:
            return True, value
    return False, None


def _entry_text(entry: Entry | None, field: str) -> str | None:
    """A text the store keeps for results outside memory (``type``/``summary``), if any."""
    text = getattr(entry, field, None) if entry is not None else None
    return text if isinstance(text, str) else None


def _absent_summary(node: Node, entry: Entry | None, location: str) -> str:
    kept = _entry_text(entry, "summary")
    if kept is not None:
        return kept
    size = f" {human_bytes(entry.nbytes)}" if entry is not None else ""
    if location == "spilled":
        return f"spilled{size} (memory-mapped back on the next pull)"
    if location == "disk":
        return f"persisted{size} (loaded from the cache directory on the next pull)"
    if not node.options.cache:
        return "not cached (cache=False)"
    return "not in the cache (runs on the next pull)"


def _seconds(seconds: float | None) -> str:
    """A duration with about three significant digits: ``"840 µs"``, ``"12.5 ms"``, ``"3.21 s"``.

    >>> _seconds(0.000_000_5), _seconds(0.000_84), _seconds(0.0125), _seconds(3.214)
    ('500 ns', '840 µs', '12.5 ms', '3.21 s')
    """
    if seconds is None:
        return "-"
    for unit, scale in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3)):
        value = seconds * scale
        if value < 999.5:
            return f"{value:.0f} {unit}" if value >= 99.5 or value == 0 else f"{value:.3g} {unit}"
    return f"{seconds:.2f} s"


# -- session.stats() ---------------------------------------------------------------------


def stats_text(stats: Stats) -> str:
    """The text of ``str(session.stats())``: counters and where the bytes are.

    >>> from lazygraph.store.store import Stats
    >>> s = Stats(hits=8, misses=2, computes=2, evictions=1, spills=0, reloads=0,
    ...           bytes_in_memory=2048, bytes_spilled=0, bytes_on_disk=0,
    ...           peak_bytes_in_memory=4096, entries_in_memory=2)
    >>> print(stats_text(s))
    lazygraph stats: 8 hits, 2 misses (80% hit rate), 2 computes
      memory   2.0 KiB in 2 entries (peak 4.0 KiB)
      spilled  0 B (0 spills, 0 reloads)
      on disk  0 B
      evicted  1 entry
    """
    lookups = stats.hits + stats.misses
    rate = f" ({stats.hits / lookups:.0%} hit rate)" if lookups else ""
    lines = [
        f"lazygraph stats: {stats.hits} hits, {stats.misses} misses{rate}, "
        f"{stats.computes} computes",
        f"  memory   {human_bytes(stats.bytes_in_memory)} in "
        f"{_plural(getattr(stats, 'entries_in_memory', 0), 'entry', 'entries')} "
        f"(peak {human_bytes(stats.peak_bytes_in_memory)})",
        f"  spilled  {human_bytes(stats.bytes_spilled)} ({_plural(stats.spills, 'spill')}, "
        f"{_plural(stats.reloads, 'reload')})",
        f"  on disk  {human_bytes(stats.bytes_on_disk)}",
        f"  evicted  {_plural(stats.evictions, 'entry', 'entries')}",
    ]
    cuda_bytes = getattr(stats, "cuda_bytes", 0)
    if cuda_bytes:
        lines.append(f"  on GPU   {human_bytes(cuda_bytes)}")
    return "\n".join(lines)


def stats_html(stats: Stats) -> str:
    """The notebook view of ``session.stats()``: every field, sizes also in bytes.

    >>> from lazygraph.store.store import Stats
    >>> s = Stats(1, 0, 1, 0, 0, 0, 10, 0, 0, 10)
    >>> stats_html(s).startswith("<div class='lazygraph-stats'>")
    True
    """
    rows = []
    for field in fields(stats):
        value = getattr(stats, field.name)
        text = f"{value:,}"
        if field.name.endswith("bytes") or field.name.startswith("bytes"):
            text = f"{human_bytes(value)} ({value:,} B)"
        rows.append(f"<tr><th style='text-align:left'>{_esc(field.name)}</th><td>{text}</td></tr>")
    return (
        "<div class='lazygraph-stats'><strong>lazygraph stats</strong>"
        f"<table>{''.join(rows)}</table></div>"
    )


def _plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


# -- session.report() --------------------------------------------------------------------


@dataclass(frozen=True)
class ReportRow:
    """One function's line of a :class:`Report`.

    ``calls``: times the function ran; ``hits``: results reused (from a tier, or by early
    cutoff); ``total_seconds``: run time of the ``timed`` calls, those whose results the
    store still knows (an uncached node's runs have no time); ``nbytes``: size of its
    distinct results the store holds; ``where``: how many of those live in each location.
    """

    function: str
    calls: int
    hits: int
    total_seconds: float
    nbytes: int
    where: tuple[tuple[str, int], ...]
    timed: int = 0

    @property
    def mean_seconds(self) -> float | None:
        """Mean run time of the timed calls, None when none was timed."""
        return self.total_seconds / self.timed if self.timed else None

    def where_text(self) -> str:
        """Locations as ``"memory 3, disk 2"``, or ``"-"`` when nothing is held."""
        return ", ".join(f"{loc} {n}" for loc, n in self.where) or "-"


class Report:
    """Per-function table of the session's pulls (``session.report()``, S8.3).

    ``str()`` is an aligned table, ``to_pandas()`` a DataFrame indexed by function,
    ``_repr_html_`` the notebook view; iterating yields :class:`ReportRow`.

    >>> import lazygraph
    >>> @lazygraph.node
    ... def square(x):
    ...     return x * x
    >>> with lazygraph.Session(progress=False) as s:
    ...     _ = s.compute(square(2), square(3))
    ...     _ = s.compute(square(2))
    ...     report = s.report()
    >>> [(row.function, row.calls, row.hits) for row in report]
    [('square', 2, 1)]
    """

    _HEADER = ("function", "calls", "hits", "total", "mean", "results", "where")

    def __init__(self, rows: list[ReportRow], *, pulls: int) -> None:
        self.rows = rows
        self.pulls = pulls

    def __iter__(self) -> Iterator[ReportRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, function: str) -> ReportRow:
        for row in self.rows:
            if row.function == function:
                return row
        raise KeyError(f"no function {function!r} in this report (has {self.functions()})")

    def functions(self) -> list[str]:
        """The function names, in table order."""
        return [row.function for row in self.rows]

    def _cells(self) -> list[tuple[str, ...]]:
        cells: list[tuple[str, ...]] = [
            (
                row.function,
                f"{row.calls:,}",
                f"{row.hits:,}",
                _seconds(row.total_seconds if row.timed else None),
                _seconds(row.mean_seconds),
                human_bytes(row.nbytes) if row.where else "-",
                row.where_text(),
            )
            for row in self.rows
        ]
        calls = sum(r.calls for r in self.rows)
        hits = sum(r.hits for r in self.rows)
        seconds = sum(r.total_seconds for r in self.rows)
        held = sum(r.nbytes for r in self.rows)
        cells.append(
            ("total", f"{calls:,}", f"{hits:,}", _seconds(seconds), "", human_bytes(held), "")
        )
        return cells

    def __str__(self) -> str:
        if not self.rows:
            return "lazygraph report: no function ran in this session"
        table = [self._HEADER, *self._cells()]
        widths = [max(len(line[i]) for line in table) for i in range(len(self._HEADER))]
        lines = []
        for line in table:
            parts = [line[0].ljust(widths[0])]
            parts += [cell.rjust(w) for cell, w in zip(line[1:-1], widths[1:-1], strict=True)]
            parts.append(line[-1])
            lines.append("  ".join(parts).rstrip())
        rule = "-" * max(len(line) for line in lines)
        return "\n".join([lines[0], rule, *lines[1:-1], rule, lines[-1]])

    def __repr__(self) -> str:
        return f"<lazygraph.Report {len(self.rows)} functions over {self.pulls} pulls>"

    def to_pandas(self) -> pandas.DataFrame:
        """The table as a DataFrame indexed by function (seconds and bytes as numbers)."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "function": [r.function for r in self.rows],
                "calls": [r.calls for r in self.rows],
                "hits": [r.hits for r in self.rows],
                "total_seconds": [r.total_seconds for r in self.rows],
                "mean_seconds": [r.mean_seconds for r in self.rows],
                "nbytes": [r.nbytes for r in self.rows],
                "where": [r.where_text() for r in self.rows],
            }
        )
        return frame.set_index("function")

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{_esc(h)}</th>" for h in self._HEADER)
        body = []
        for cells in self._cells():
            tds = [f"<td style='text-align:left'>{_esc(cells[0])}</td>"]
            tds += [f"<td>{_esc(c)}</td>" for c in cells[1:-1]]
            tds.append(f"<td style='text-align:left'>{_esc(cells[-1])}</td>")
            body.append(f"<tr>{''.join(tds)}</tr>")
        return (
            "<div class='lazygraph-report'><strong>lazygraph report</strong> "
            f"({_plural(self.pulls, 'pull')})<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )


def session_report(session: Session) -> Report:
    """The per-function table over the whole session (``session.report()``, S8.3).

    Calls, hits and times are the store's running tallies (every execution and every
    reuse since the session started, also re-pulls served straight from memory); sizes and
    locations are those of the results the store holds now.
    """
    store = session.store
    held = store.placement()
    rows = []
    for name, (calls, hits, seconds) in store.functions.items():
        nbytes, where = held.get(name, (0, {}))
        ordered = tuple((loc, where[loc]) for loc in LOCATIONS if loc in where)
        rows.append(ReportRow(name, int(calls), int(hits), seconds, nbytes, ordered, int(calls)))
    return Report(rows, pulls=session.pulls)


# -- pictures ----------------------------------------------------------------------------


def to_dot(node: Node, session: Session | None = None) -> str:
    """The graph above ``node`` in Graphviz dot: one box per node, coloured by location.

    Labels carry the name, the result's summary and its compute time; edges point from a
    dependency to its consumer. Colours: :data:`LOCATION_COLORS`.

    >>> import lazygraph
    >>> @lazygraph.node
    ... def inc(x):
    ...     return x + 1
    >>> with lazygraph.Session(progress=False):
    ...     top = inc(inc(1))
    ...     _ = top.compute()
    ...     dot = to_dot(top)
    >>> dot.splitlines()[0], dot.count(" -> "), LOCATION_COLORS["memory"] in dot
    ('digraph lazygraph {', 1, True)
    """
    session = session if session is not None else _session_of(node)
    nodes = _distinct(node)
    ids = {n._key: f"n{i}" for i, n in enumerate(nodes)}
    lines = [
        "digraph lazygraph {",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        *_dot_legend(),
    ]
    for n in nodes:
        info = node_info(n, session)
        tooltip = f"{info.name} key {info.key} ({info.location})"
        lines.append(
            f"  {ids[n._key]} [label={_dot_str(_dot_label(info))}, "
            f'fillcolor="{LOCATION_COLORS[info.location]}", tooltip={_dot_str(tooltip)}];'
        )
    edges: dict[str, None] = {}  # ordered and without repeats
    for n in nodes:
        for d in n.deps:
            edges[f"  {ids[d._key]} -> {ids[n._key]};"] = None
    lines.extend(edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _distinct(node: Node) -> list[Node]:
    """The nodes above ``node`` (itself first), one per key: equal calls are one result."""
    node.key  # noqa: B018 - resolves every key above it
    seen: set[bytes | None] = set()
    found = []
    for n in walk([cast(Any, node)]):
        if n._key not in seen:
            seen.add(n._key)
            found.append(n)
    return found


def _dot_label(info: NodeInfo) -> str:
    summary = info.summary if len(info.summary) <= 48 else info.summary[:47] + "…"
    parts = [info.name, summary]
    if info.compute_seconds is not None:
        parts.append(f"{_seconds(info.compute_seconds)} · {info.location}")
    else:
        parts.append(info.location)
    return "\n".join(parts)


def _dot_legend() -> list[str]:
    """A boxed key of the colours, one small node per location (no edges)."""
    entries = " ".join(
        f'legend_{loc} [label="{loc}", fillcolor="{color}", fontsize=8];'
        for loc, color in LOCATION_COLORS.items()
    )
    return [
        '  subgraph cluster_legend { label="where results live"; fontsize=9; style=dashed;',
        f"    rank=same; {entries}",
        "  }",
    ]


def _dot_str(text: str) -> str:
    """``text`` as a double-quoted dot string (newlines become line breaks)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def visualize(node: Node, path: str | os.PathLike[str]) -> str:
    """Write the picture of ``node``'s graph to ``path``; returns the path written.

    ``.dot`` is always written; ``.svg``, ``.png`` and ``.pdf`` need Graphviz's ``dot``
    program on ``PATH`` (raises ``LazyGraphError`` saying how to get it when missing).

    >>> import lazygraph, tempfile, os
    >>> @lazygraph.node
    ... def one():
    ...     return 1
    >>> target = os.path.join(tempfile.mkdtemp(), "graph.dot")
    >>> with lazygraph.Session(progress=False):
    ...     visualize(one(), target) == target
    True
    """
    target = os.fspath(path)
    suffix = os.path.splitext(target)[1].lower().lstrip(".")
    if suffix != "dot" and suffix not in _PICTURE_FORMATS:
        raise ConfigError(
            f"visualize() writes .dot, .svg, .png or .pdf files (got {target!r}); "
            "pick one of those suffixes"
        )
    dot_text = to_dot(node)
    if suffix == "dot":
        with open(target, "w", encoding="utf-8") as out:
            out.write(dot_text)
        return target
    _render(dot_text, target, suffix)
    return target


def _render(dot_text: str, target: str, fmt: str) -> None:
    program = shutil.which("dot")
    if program is None:
        raise LazyGraphError(
            f"writing a .{fmt} picture needs Graphviz's 'dot' program, which is not on PATH; "
            "install Graphviz (apt install graphviz, brew install graphviz or conda install "
            "graphviz), or write a .dot file instead"
        )
    done = subprocess.run(
        [program, f"-T{fmt}", "-o", target],
        input=dot_text.encode(),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise LazyGraphError(f"Graphviz 'dot' failed writing {target} ({message})")


# -- notebook views ----------------------------------------------------------------------


def node_html(node: Node) -> str:
    """The notebook view of a Node: its info, then the nodes above it with their locations.

    Never raises: a node that cannot be inspected (e.g. a cycle) shows its ``repr``.
    """
    try:
        session = _session_of(node)
        info = node_info(node, session)
        ancestors = _distinct(node)[1:]
        rows = [_ancestor_row(node_info(n, session)) for n in ancestors[:_HTML_NODE_ROWS]]
    except LazyGraphError as exc:
        return f"<pre>{_esc(repr(node))}\n{_esc(str(exc))}</pre>"
    more = len(ancestors) - len(rows)
    if more > 0:
        rows.append(f"<tr><td colspan='4'>… and {more:,} more</td></tr>")
    graph = ""
    if ancestors:
        graph = (
            f"<details><summary>{_plural(len(ancestors), 'node')} above it</summary>"
            "<table><thead><tr><th>node</th><th>where</th><th>result</th><th>time</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
        )
    return _info_html(info, css="lazygraph-node", extra=graph)


def _ancestor_row(info: NodeInfo) -> str:
    return (
        f"<tr><td style='text-align:left'>{_esc(info.name)}</td><td>{_badge(info.location)}"
        f"</td><td style='text-align:left'>{_esc(info.summary)}</td>"
        f"<td>{_esc(_seconds(info.compute_seconds))}</td></tr>"
    )


def _badge(location: str) -> str:
    color = LOCATION_COLORS.get(location, "#ffffff")
    return (
        f"<span style='background:{color};padding:0 4px;border-radius:3px'>{_esc(location)}</span>"
    )


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)
