"""Seeing a whole session: the text and HTML of ``session.stats()`` and ``session.report()``.

Covers: :func:`stats_text` and :func:`stats_html` (SPEC S8.2, S8.6: the counters and where
the bytes are), :class:`Report` and :class:`ReportRow` (S8.3: calls, hits, times, sizes and
locations per function; ``str()``, ``to_pandas()``, ``_repr_html_``) and
:func:`session_report`, which builds one from the store's running tallies.

Does not cover: counting (the store keeps the tallies and ``Stats``), one node's view
(``inspection``), pictures (``picture``) or why a node ran (``explain``).

>>> import lazygraph
>>> @lazygraph.node
... def square(x):
...     return x * x
>>> with lazygraph.Session(progress=False) as s:
...     _ = s.compute(square(2), square(3))
...     row = s.report()["square"]
...     print(s.stats().computes, row.calls, row.where_text())
2 2 memory 2
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from . import display
from .inspection import LOCATIONS, esc, format_seconds, plural
from .units import format_bytes

if TYPE_CHECKING:
    import pandas

    from .session import Session
    from .store.stats import Stats

__all__ = ["Report", "ReportRow", "session_report", "stats_html", "stats_text"]


# -- session.stats() ---------------------------------------------------------------------


def stats_text(stats: Stats) -> str:
    """The text of ``str(session.stats())``: counters and where the bytes are.

    >>> from lazygraph.store.stats import Stats
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
        f"lazygraph stats: {plural(stats.hits, 'hit')}, "
        f"{plural(stats.misses, 'miss', 'misses')}{rate}, {plural(stats.computes, 'compute')}",
        f"  memory   {format_bytes(stats.bytes_in_memory)} in "
        f"{plural(getattr(stats, 'entries_in_memory', 0), 'entry', 'entries')} "
        f"(peak {format_bytes(stats.peak_bytes_in_memory)})",
        f"  spilled  {format_bytes(stats.bytes_spilled)} ({plural(stats.spills, 'spill')}, "
        f"{plural(stats.reloads, 'reload')})",
        f"  on disk  {format_bytes(stats.bytes_on_disk)}",
        f"  evicted  {plural(stats.evictions, 'entry', 'entries')}",
    ]
    cuda_bytes = getattr(stats, "cuda_bytes", 0)
    if cuda_bytes:
        lines.append(f"  on GPU   {format_bytes(cuda_bytes)}")
    return "\n".join(lines)


def stats_html(stats: Stats) -> str:
    """The notebook view of ``session.stats()``: every field, sizes also in bytes.

    >>> from lazygraph.store.stats import Stats
    >>> s = Stats(1, 0, 1, 0, 0, 0, 10, 0, 0, 10)
    >>> stats_html(s).startswith("<div class='lazygraph-stats'>")
    True
    """
    rows = []
    for field in fields(stats):
        value = getattr(stats, field.name)
        text = f"{value:,}"
        if "bytes" in field.name.split("_"):  # bytes_spilled, peak_bytes_in_memory, ...
            text = f"{format_bytes(value)} ({value:,} B)"
        rows.append(f"<tr><th style='text-align:left'>{esc(field.name)}</th><td>{text}</td></tr>")
    return (
        "<div class='lazygraph-stats'><strong>lazygraph stats</strong>"
        f"<table>{''.join(rows)}</table></div>"
    )


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
                format_seconds(row.total_seconds if row.timed else None),
                format_seconds(row.mean_seconds),
                format_bytes(row.nbytes) if row.where else "-",
                row.where_text(),
            )
            for row in self.rows
        ]
        calls = sum(r.calls for r in self.rows)
        hits = sum(r.hits for r in self.rows)
        seconds = sum(r.total_seconds for r in self.rows)
        held = sum(r.nbytes for r in self.rows)
        cells.append(
            (
                "total",
                f"{calls:,}",
                f"{hits:,}",
                format_seconds(seconds),
                "",
                format_bytes(held),
                "",
            )
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
        head = "".join(f"<th>{esc(h)}</th>" for h in self._HEADER)
        body = []
        for cells in self._cells():
            tds = [f"<td style='text-align:left'>{esc(cells[0])}</td>"]
            tds += [f"<td>{esc(c)}</td>" for c in cells[1:-1]]
            tds.append(f"<td style='text-align:left'>{esc(cells[-1])}</td>")
            body.append(f"<tr>{''.join(tds)}</tr>")
        return (
            "<div class='lazygraph-report'><strong>lazygraph report</strong> "
            f"({plural(self.pulls, 'pull')})<table><thead><tr>{head}</tr></thead>"
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


display.register("stats_text", stats_text)
display.register("stats_html", stats_html)
display.register("session_report", session_report)
