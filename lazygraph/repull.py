"""What the re-pull fast path must not skip: one set, empty in the common case.

``node.compute()`` on a Node whose result is in memory returns it after one truth test of
``attention`` (~0.5 µs in all). The set names each reason that test must fail instead, so
the pull looks closer; it is kept by the modules that own the reason:

- ``"watched"``: file sources exist (``incremental.watch``): each pull ``stat``s them first
  (SPEC S1.12); removed when the last one goes;
- ``"outdated"``: a node function was replaced by a newer definition
  (``redefinitions.note_definition``): such nodes warn (S3.9); removed when the last
  replaced function goes;
- ``"suspect"``: something a code fingerprint read has died since (a helper or global
  rebound, its old object collected), or the process is interactive (IPython, Jupyter,
  the REPL), where cells redefine helpers: a keyed Node's key is re-checked before its
  result is trusted (``fingerprint``; ``keys.needs_refresh``). Never removed: Nodes keyed
  before the event may still be pulled.

>>> sorted(REASONS)
['outdated', 'suspect', 'watched']
"""

from __future__ import annotations

import sys

__all__ = ["REASONS", "attention", "interactive"]

REASONS = frozenset({"watched", "outdated", "suspect"})


def interactive() -> bool:
    """Whether this process runs IPython, a Jupyter kernel or the plain REPL."""
    return "IPython" in sys.modules or hasattr(sys, "ps1")


attention: set[str] = {"suspect"} if interactive() else set()
