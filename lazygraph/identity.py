"""Identity tokens: a random token per live object, for values that have no content hash.

Covers: the token of an object while it lives (never ``id()``, which Python reuses once an
object dies), forgotten when the object goes. Does not cover: deciding when identity is
the key (``hashing`` falls back to it, and marks the key non-persistable).

>>> class Lock: pass
>>> a, b = Lock(), Lock()
>>> identity_token(a) == identity_token(a), identity_token(a) == identity_token(b)
(True, False)
"""

from __future__ import annotations

import functools
import threading
import uuid
import weakref
from typing import Any

__all__ = ["identity_token"]


class _Tokens:
    """A random token per live object; never ``id()``, which is reused once an object dies."""

    def __init__(self) -> None:
        # Reentrant: a garbage collection inside get() may run _forget on this thread.
        self._lock = threading.RLock()
        self._tokens: dict[int, tuple[weakref.ref[Any], bytes]] = {}

    def get(self, obj: Any) -> bytes:
        with self._lock:
            entry = self._tokens.get(id(obj))
            if entry is not None and entry[0]() is obj:
                return entry[1]
            token = uuid.uuid4().bytes
            try:
                ref = weakref.ref(obj, functools.partial(self._forget, id(obj)))
            except TypeError:  # not weak-referenceable: a fresh token per call
                return token
            self._tokens[id(obj)] = (ref, token)
            return token

    def _forget(self, key: int, ref: weakref.ref[Any]) -> None:
        with self._lock:
            entry = self._tokens.get(key)
            if entry is not None and entry[0] is ref:
                del self._tokens[key]



# Process-wide: a token stands for an object of this process, whichever session keys it.
_TOKENS = _Tokens()


def identity_token(obj: Any) -> bytes:
    """16 random bytes standing for ``obj`` while it lives (a new token per call for an
    object that takes no weak reference)."""
    return _TOKENS.get(obj)
