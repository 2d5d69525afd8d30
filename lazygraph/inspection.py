"""Seeing one node: ``node.info()`` and a Node's notebook view, and the views' shared words.

Covers: :class:`NodeInfo` and :func:`node_info` (SPEC S8.1: where a result lives, its type,
size, summary, timing, hits), a Node's ``_repr_html_`` (:func:`node_html`, S8.6), the
locations and their colours (:data:`LOCATIONS`, :data:`LOCATION_COLORS`) and the small
formatters every view uses (durations, plurals, HTML escaping, the graph above a node).
Everything here only reads: no lookup counts a hit, touches the LRU order or loads a file.

Does not cover: one-line summaries of values (``describe``), stats and the per-function
report (``report``), pictures of the graph (``picture``), why a node ran (``explain``), or
the counting itself (the store and the scheduler keep the numbers shown here).

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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from . import display
from .context import current_session
from .describe import summarize
from .errors import LazyGraphError
from .graph import walk
from .node import Input, Node
from .sizing import sizeof
from .store.base import MISSING
from .units import format_bytes

if TYPE_CHECKING:
    from .session import Session
    from .store.base import Entry
    from .store.store import Store

__all__ = [
    "LOCATIONS",
    "LOCATION_COLORS",
    "NodeInfo",
    "badge",
    "distinct_nodes",
    "esc",
    "format_seconds",
    "node_html",
    "node_info",
    "plural",
    "session_of",
]

LOCATIONS = ("memory", "weak", "spilled", "disk", "cluster", "absent")
LOCATION_COLORS = {
    "memory": "#66bb6a",  # green: served at once
    "weak": "#c5e1a5",  # light green: served while someone else holds it
    "spilled": "#ffd54f",  # yellow: a file of this session, memory-mapped back
    "disk": "#64b5f6",  # blue: persisted, loaded on the next use
    "cluster": "#ba68c8",  # purple: on a Dask cluster's workers, used there
    "absent": "#e0e0e0",  # grey: would run on the next pull
}
# html.escape's table; ``html`` itself costs milliseconds at ``import lazygraph``.
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})
_HTML_NODE_ROWS = 50  # ancestors listed in a node's notebook view before "and N more"


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
            ("size", "-" if self.nbytes is None else format_bytes(self.nbytes)),
            ("computed in", format_seconds(self.compute_seconds)),
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
        f"<tr><th style='text-align:left'>{esc(label)}</th><td>{esc(text)}</td></tr>"
        for label, text in info.rows()
    )
    return (
        f"<div class='{css}'><strong>{esc(info.name)}</strong> "
        f"{badge(info.location)} <code>{esc(info.key[:16])}</code>"
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
    session = session if session is not None else session_of(node)
    key_hex = node.key  # resolves the key (and its stale ancestors') if needed
    key: bytes = node._key  # type: ignore[assignment]
    store = session.store
    location = store.location(key)
    entry = store.entry(key)
    found, value = _peek(store, key, location, entry)
    if not found and isinstance(node, Input) and not isinstance(node.value, Node):
        # Not cached (Inputs never are), but the Input holds its value: in memory, served
        # at once, so it is not shown as "absent" (it would not run on the next pull).
        found, value, location = True, node.value, "memory"
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


def session_of(node: Node) -> Session:
    """The session that last pulled ``node`` if it is still open, else the current one."""
    pull = node._last_pull
    if pull is not None and not isinstance(pull, str) and not pull.session.closed:
        return cast("Session", pull.session)
    return cast("Session", current_session())


def _peek(store: Store, key: bytes, location: str, entry: Entry | None) -> tuple[bool, Any]:
    """``(True, value)`` when the result is in memory or weakly held, else ``(False, None)``.

    No hit is counted, the LRU order is untouched and no file is read: this only looks.
    """
    if location == "memory" and entry is not None:
        return True, entry.value
    if location in ("weak", "spilled", "disk"):
        # A result in a file may still be alive elsewhere (its mapped copy, or the user's).
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
    size = f" {format_bytes(entry.nbytes)}" if entry is not None else ""
    if location == "spilled":
        return f"spilled{size} (memory-mapped back on the next pull)"
    if location == "disk":
        return f"persisted{size} (loaded from the cache directory on the next pull)"
    if not node.options.cache:
        return "not cached (cache=False)"
    return "not in the cache (runs on the next pull)"


# -- notebook view of a Node ----------------------------------------------------------------


def node_html(node: Node, *, session: Session | None = None) -> str:
    """The notebook view of a Node: its info, then the nodes above it with their locations.

    Never raises: a node that cannot be inspected (e.g. a cycle) shows its ``repr``.
    """
    try:
        session = session if session is not None else session_of(node)
        info = node_info(node, session)
        ancestors = distinct_nodes(node)[1:]
        rows = [_ancestor_row(node_info(n, session)) for n in ancestors[:_HTML_NODE_ROWS]]
    except LazyGraphError as exc:
        return f"<pre>{esc(repr(node))}\n{esc(str(exc))}</pre>"
    more = len(ancestors) - len(rows)
    if more > 0:
        rows.append(f"<tr><td colspan='4'>… and {more:,} more</td></tr>")
    graph = ""
    if ancestors:
        graph = (
            f"<details><summary>{plural(len(ancestors), 'node')} above it</summary>"
            "<table><thead><tr><th>node</th><th>where</th><th>result</th><th>time</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
        )
    return _info_html(info, css="lazygraph-node", extra=graph)


def _ancestor_row(info: NodeInfo) -> str:
    return (
        f"<tr><td style='text-align:left'>{esc(info.name)}</td><td>{badge(info.location)}"
        f"</td><td style='text-align:left'>{esc(info.summary)}</td>"
        f"<td>{esc(format_seconds(info.compute_seconds))}</td></tr>"
    )


# -- words every view uses ----------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    """A duration with about three significant digits: ``"840 µs"``, ``"12.5 ms"``, ``"3.21 s"``.

    >>> [format_seconds(s) for s in (5e-7, 0.000_84, 0.0125, 3.214)]
    ['500 ns', '840 µs', '12.5 ms', '3.21 s']
    """
    if seconds is None:
        return "-"
    for unit, scale in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3)):
        value = seconds * scale
        if value < 999.5:
            return f"{value:.0f} {unit}" if value >= 99.5 or value == 0 else f"{value:.3g} {unit}"
    return f"{seconds:.2f} s"


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` and ``word``, in the plural unless ``count`` is 1.

    >>> plural(1, "entry", "entries"), plural(1_200, "hit")
    ('1 entry', '1,200 hits')
    """
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def esc(text: object) -> str:
    """``str(text)`` escaped for HTML, quotes too (``html.escape``, without importing ``html``).

    >>> esc("<a href='x'>&</a>")
    '&lt;a href=&#x27;x&#x27;&gt;&amp;&lt;/a&gt;'
    """
    return str(text).translate(_ESCAPES)


def badge(location: str) -> str:
    """A location as a small HTML label in its colour."""
    color = LOCATION_COLORS.get(location, "#ffffff")
    return (
        f"<span style='background:{color};padding:0 4px;border-radius:3px'>{esc(location)}</span>"
    )


def distinct_nodes(node: Node) -> list[Node]:
    """The nodes above ``node`` (itself first), one per key: equal calls are one result."""
    node.key  # noqa: B018 - resolves every key above it
    seen: set[bytes | None] = set()
    found = []
    for n in walk([cast(Any, node)]):
        if n._key not in seen:
            seen.add(n._key)
            found.append(n)
    return found


display.register("node_info", node_info)
display.register("node_html", node_html)
