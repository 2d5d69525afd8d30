"""Whether the process that named a file is still alive: ``HOST_TAG`` and ``process_gone``.

Covers: a tag naming this host *and* pid namespace, put into the names of temp files and
spill directories next to the writer's pid, and the test that the pid behind such a name is
gone, so what it left can be removed. Does not cover: which files carry these names
(``store.files``, ``store.spilldir``) or removing them.

>>> len(HOST_TAG), process_gone(HOST_TAG, str(os.getpid())), process_gone("other", "1")
(8, False, False)
"""

from __future__ import annotations

import os
import socket

import xxhash

__all__ = ["HOST_TAG", "process_gone"]


def _host_tag() -> str:
    """8 hex digits naming this host *and* pid namespace: a pid means one process under it.

    Two containers may share a hostname and a directory; their pids are not comparable.
    """
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:  # no procfs: the hostname alone
        namespace = ""
    return xxhash.xxh3_64_hexdigest(f"{socket.gethostname()}\0{namespace}".encode())[:8]


HOST_TAG = _host_tag()


def process_gone(host_tag: str, pid: str) -> bool:
    """True when ``pid`` (a decimal string) named a process of this ``HOST_TAG`` that is gone.

    False whenever unsure: another host or namespace, a pid that exists (maybe reused), or
    one we may not signal.
    """
    if host_tag != HOST_TAG or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False
