"""explain(): why the last pull reused, recomputed or cut off each node of a graph (S8.7).

Covers: finding the last pull that included a node (the node's own ``_last_pull`` when it
was pulled as a root, else the newest pull in ``session.history`` whose record holds it),
turning that pull's record into one line per node — an Input that changed or not, a result
*reused* from a tier, *recomputed* because an input, a dependency or the code changed (or
because it was new or evicted), or *cut off* (early cutoff: a dependency was recomputed to
the same result, so the node's last verified result was reused; the record calls this
``incremental.BACKDATED``) — and showing it as text, HTML or tuples. Does not cover:
deciding any of it (``scheduler`` and ``incremental`` write the record) or per-node sizes
and timings (``node.info()``, ``session.report()``).

>>> import lazygraph
>>> x = lazygraph.Input(2, name="x")
>>> @lazygraph.node
... def magnitude(v):
...     return abs(v)
>>> @lazygraph.node
... def double(v):
...     return 2 * v
>>> result = double(magnitude(x))
>>> with lazygraph.Session(progress=False):
...     _ = result.compute()
...     x.set(-2)                   # |x| is still 2: double does not run again
...     _ = result.compute()
...     print(result.explain())
explain(double): 1 input changed, 1 recomputed, 1 cut off
  x          input       changed
  magnitude  recomputed  input x changed; result unchanged (early cutoff)
  double     cut off     magnitude unchanged: earlier result reused
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import display
from .context import current_session
from .incremental import BACKDATED
from .inspection import esc
from .keys import key_current
from .node import Input, Node
from .redefinitions import outdated_name, redefined_note

if TYPE_CHECKING:
    from .scheduler import Pull
    from .session import Session

__all__ = ["explain", "Explanation"]

#: How the record's tier names read in an explanation.
_TIERS = {
    "memory": "memory",
    "weak": "memory (held elsewhere, weakly cached)",
    "spilled": "a spill file",
    "disk": "the disk cache",
}
_UNCHANGED = "result unchanged"
_TEXT_LINES = 40  # an explanation of a 10,000-node pull stays readable in a REPL
_HTML_ROWS = 200

#: One line of an explanation: ``(node name, outcome, reason)``.
Step = tuple[str, str, str]


class Explanation:
    """One line per node of a pull: ``(name, outcome, reason)``.

    ``outcome`` is one of ``"input"`` (reason: changed / unchanged / new), ``"reused"``
    (reason: the tier it came from), ``"recomputed"`` (reason: what changed) or ``"cut off"``
    (an unchanged dependency let it keep its earlier result). Entries are in dependency
    order, the explained node last. ``str()`` is an aligned list, ``_repr_html_`` a table.

    >>> e = Explanation("total", [("x", "input", "changed"),
    ...                           ("total", "recomputed", "input x changed")])
    >>> e.outcome("total"), e.counts["recomputed"]
    ('recomputed', 1)
    >>> print(e)
    explain(total): 1 input changed, 1 recomputed
      x      input       changed
      total  recomputed  input x changed
    """

    def __init__(self, name: str, entries: list[Step], *, note: str = "") -> None:
        self.name = name
        self.entries = entries
        self.note = note

    @property
    def counts(self) -> Counter[str]:
        """How many nodes had each outcome."""
        return Counter(outcome for _, outcome, _ in self.entries)

    def outcome(self, name: str) -> str | None:
        """The outcome of the last entry named ``name`` (None when there is none)."""
        found = [o for n, o, _ in self.entries if n == name]
        return found[-1] if found else None

    def reason(self, name: str) -> str | None:
        """The reason of the last entry named ``name`` (None when there is none)."""
        found = [r for n, _, r in self.entries if n == name]
        return found[-1] if found else None

    def __iter__(self) -> Iterator[Step]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def summary(self) -> str:
        """The first line: how many nodes had each outcome."""
        counts = self.counts
        parts = []
        changed = sum(1 for _, o, r in self.entries if o == "input" and r == "changed")
        if changed:
            parts.append(f"{changed} input{'s' if changed > 1 else ''} changed")
        for outcome in ("recomputed", "cut off", "reused"):
            if counts[outcome]:
                parts.append(f"{counts[outcome]:,} {outcome}")
        body = ", ".join(parts) if parts else "nothing"
        if self.note:
            body = f"{body} ({self.note})" if parts else self.note
        return f"explain({self.name}): {body}"

    def _shown(self, limit: int) -> tuple[list[Step], int]:
        """Up to ``limit`` entries, the ones that did work first; how many were left out."""
        if len(self.entries) <= limit:
            return self.entries, 0
        keep = {i for i, e in enumerate(self.entries) if e[1] != "reused"}
        if len(keep) > limit:
            keep = set(sorted(keep)[-limit:])  # the explained node's end of the graph
        for i in range(len(self.entries) - 1, -1, -1):
            if len(keep) >= limit:
                break
            keep.add(i)
        shown = [e for i, e in enumerate(self.entries) if i in keep]
        return shown, len(self.entries) - len(shown)

    def __str__(self) -> str:
        shown, hidden = self._shown(_TEXT_LINES)
        lines = [self.summary()]
        if shown:
            width = max(len(n) for n, _, _ in shown)
            owidth = max(len(o) for _, o, _ in shown)
            lines += [f"  {n:<{width}}  {o:<{owidth}}  {r}".rstrip() for n, o, r in shown]
        if hidden:
            lines.append(f"  … {hidden:,} more (entries has them all)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Explanation {self.summary()}>"

    def _repr_html_(self) -> str:
        shown, hidden = self._shown(_HTML_ROWS)
        rows = "".join(
            f"<tr class='lazygraph-{esc(o.replace(' ', '-'))}'><td><code>{esc(n)}</code></td>"
            f"<td>{esc(o)}</td><td>{esc(r)}</td></tr>"
            for n, o, r in shown
        )
        more = f"<p>… {hidden:,} more rows</p>" if hidden else ""
        return (
            f"<div class='lazygraph-explain'><p><b>{esc(self.summary())}</b></p>"
            "<table><thead><tr><th>node</th><th>outcome</th><th>reason</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>{more}</div>"
        )


def explain(node: Node, *, session: Session | None = None) -> Explanation:
    """Why the last pull that included ``node`` reused, recomputed or cut off each node.

    Only the part of the graph that pull looked at is listed: above a reused result
    nothing was visited, so nothing is said about it.

    >>> import lazygraph
    >>> @lazygraph.node
    ... def one():
    ...     return 1
    >>> n = one()
    >>> with lazygraph.Session(progress=False):
    ...     _ = n.compute()
    ...     explain(n).entries
    [('one', 'recomputed', 'new')]
    """
    pull, tier = _find_pull(node, session)
    if pull is None:
        if tier is None:
            return Explanation(node.name, [], note="not pulled yet in this session")
        reason = _outdated_note(node, "from " + _TIERS.get(tier, tier))
        return Explanation(node.name, [(node.name, "reused", reason)])
    return Explanation(node.name, _entries(node, pull))


def _outdated_note(n: Node, reason: str) -> str:
    """``reason``, plus a warning when ``n`` was built from a since-replaced definition."""
    name = outdated_name(n)
    if name is not None:
        reason = f"{reason}; built from an older definition of `{name}` (rebuild the graph)"
    helpers = redefined_note(n)  # a helper or global its key covers was redefined (S3.9)
    if helpers is None or helpers.endswith("(rebuild the graph)") and key_current(n):
        return reason  # kept then, keyed afresh since (an Input was set)
    return f"{reason}; {helpers}"


# -- finding the pull ------------------------------------------------------------------------


def _find_pull(node: Node, session: Session | None) -> tuple[Pull | None, str | None]:
    """The pull to explain, or (None, tier) for a re-pull served without planning."""
    last = node._last_pull
    if isinstance(last, str):  # a re-pull answered straight from a tier (no plan, no record)
        return None, last
    if last is not None:
        return last, None
    if session is None:
        session = current_session()
    for pull in reversed(session.history):
        if any(r is node for r in pull.roots):
            # Pulled as a root, yet its last pull is unset: a later re-pull took the
            # session's memory fast path, which plans nothing.
            return None, "memory"
        if any(n is node for n, _, _ in pull.record):
            return pull, None
    key = node._key
    if key is not None and session.store.location(key) != "absent":
        return None, session.store.location(key)
    return None, None


# -- the entries -----------------------------------------------------------------------------


def _entries(node: Node, pull: Pull) -> list[Step]:
    """The pull's record restricted to ``node``'s graph, dependencies first."""
    by_id: dict[int, int] = {}
    by_key: dict[bytes, int] = {}
    for index, (n, _, _) in enumerate(pull.record):
        by_id[id(n)] = index
        if n._key is not None:
            by_key.setdefault(n._key, index)

    def find(n: Node) -> int | None:
        i = by_id.get(id(n))
        if i is None and n._key is not None:  # an equal call built twice: its twin ran
            i = by_key.get(n._key)
        return i

    order: list[int] = []
    emitted: set[int] = set()
    seen: set[int] = set()
    stack: list[tuple[Node, int | None]] = [(node, None)]
    while stack:
        n, done = stack.pop()
        if done is not None:
            if done not in emitted:
                emitted.add(done)
                order.append(done)
            continue
        if id(n) in seen:
            continue
        seen.add(id(n))
        i = find(n)
        if i is None:
            continue
        stack.append((n, i))
        if pull.record[i][1] != "hit":  # above a hit nothing was visited
            stack.extend((d, None) for d in reversed(n.deps) if id(d) not in seen)
    outcomes = {i: pull.record[i] for i in order}
    return [_describe(pull.record[i], find, outcomes) for i in order]


def _describe(item: tuple[Node, str, str], find: Any, outcomes: dict[int, Any]) -> Step:
    n, outcome, detail = item
    if isinstance(n, Input):
        return n.name, "input", detail or "unchanged"
    if outcome == "hit":
        return n.name, "reused", _outdated_note(n, "from " + _TIERS.get(detail, detail))
    if outcome == BACKDATED:
        return n.name, "cut off", _outdated_note(n, _cutoff_reason(n, find, outcomes))
    return n.name, "recomputed", _outdated_note(n, _ran_reason(n, detail))


def _ran_reason(n: Node, detail: str) -> str:
    why, _, tail = detail.partition("; ")
    if why == "new":
        reason = "new (code changed since it last ran)" if n.options._replaced else "new"
    elif why == "code changed":
        reason = "code changed (a function it calls was redefined)"
    elif why.startswith("changed: "):
        names = why[len("changed: ") :].split(", ")
        inputs = {d.name for d in n.deps if isinstance(d, Input)}
        labelled = [f"input {name}" if name in inputs else name for name in names]
        reason = ", ".join(labelled) + " changed"
    else:  # "not cached", or a record written by an executor that gives no reason
        reason = "not cached (evicted, or computed in another session)"
    if tail == _UNCHANGED:
        reason += "; result unchanged (early cutoff)"
    return reason


def _cutoff_reason(n: Node, find: Any, outcomes: dict[int, Any]) -> str:
    """Name the dependencies that were re-verified without changing."""
    names = []
    for d in n.deps:
        i = find(d)
        if i is None or i not in outcomes:
            continue
        _, outcome, detail = outcomes[i]
        if outcome == BACKDATED or detail.endswith(_UNCHANGED) or detail == "unchanged":
            names.append(d.name)
    if not names:
        return "dependencies unchanged: earlier result reused"
    return ", ".join(dict.fromkeys(names)) + " unchanged: earlier result reused"


display.register("explain", explain)
