"""What ``@node`` was given: ``NodeOptions``, shared by every Node a factory builds.

Covers: the public options (name, version, cache, spill, persist, cutoff, local, nout,
ignore) and the per-factory state the key resolution keeps beside them (the fingerprint
last used, when the code last changed). Does not cover: checking the options (``@node``
in ``node``) or what they do (``keys``, ``store``, ``scheduler``).

>>> NodeOptions("load", version="1").version
'1'
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from .node_ops import checked_nout, readable_name

__all__ = ["NodeOptions", "checked_options"]


class NodeOptions:
    """The options given to ``@node``, shared by every Node the factory builds."""

    __slots__ = (
        "_fp_entry",
        "_key_prefix",
        "name",
        "version",
        "cache",
        "spill",
        "persist",
        "cutoff",
        "local",
        "nout",
        "_fingerprint",
        "_code_changed_at",
        "_replaced",
        "ignore",
        "_ignored",
        "_code_persistable",
    )
    _PUBLIC = ("name", "version", "cache", "spill", "persist", "cutoff", "local", "nout", "ignore")

    def __init__(
        self,
        name: str,
        *,
        version: str | None = None,
        cache: bool = True,
        spill: bool = True,
        persist: bool = True,
        cutoff: bool = True,
        local: bool = False,
        nout: int | None = None,
        ignore: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.ignore = ignore  # arguments left out of the key (joblib's ignore)
        # (positions, names) of the ignored arguments in a bound call; set by NodeFactory.
        self._ignored: tuple[frozenset[int], frozenset[str]] | None = None
        self._code_persistable = True  # False: the fingerprint keyed a global by identity
        self.nout = nout  # a call unpacks into this many Nodes (dask's nout)
        self.version = version
        self.cache = cache
        self.spill = spill
        self.persist = persist
        self.cutoff = cutoff
        self.local = local
        # Code tracking (``keys.resolve_keys``): the fingerprint last used for
        # keys, the revision at which it last changed (a helper edited and its cell re-run)
        # and whether this factory replaced one of the same name with other code.
        self._fingerprint: bytes | None = None
        self._fp_entry: Any = None  # the fingerprint cache entry last used (checked before reuse)
        self._key_prefix = b""  # keys.SCHEME + that entry's fingerprint
        self._code_changed_at = -1
        self._replaced = False

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._PUBLIC)
        return f"NodeOptions({fields})"

    def __reduce__(self) -> Any:  # shipped to workers (a function using another factory)
        return functools.partial(NodeOptions, **{f: getattr(self, f) for f in self._PUBLIC}), ()


def checked_options(
    f: Callable[..., Any],
    *,
    name: str | None,
    version: str | None,
    flags: dict[str, bool],
    nout: int | None,
    ignore: Iterable[str],
) -> NodeOptions:
    """The options of ``@node`` for ``f``, each checked; ``TypeError`` naming a bad one.

    >>> checked_options(len, name=None, version="2", flags={}, nout=None, ignore="n").ignore
    ('n',)
    """
    if not callable(f):
        raise TypeError(f"@node expects a function (got {type(f).__name__})")
    if version is not None and not isinstance(version, str):
        raise TypeError(f"version must be a str (got {type(version).__name__})")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str (got {type(name).__name__})")
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False (got {value!r})")
    ignored = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    if not all(isinstance(item, str) for item in ignored):
        raise TypeError(f"ignore must be parameter names (got {ignore!r})")
    label = name if name is not None else readable_name(f)
    return NodeOptions(label, version=version, nout=checked_nout(nout), ignore=ignored, **flags)
