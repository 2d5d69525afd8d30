"""The Dask executor: hand the planned part of a graph to a ``dask.distributed`` cluster.

Covers: ``DaskExecutor(client=None)``: which Client it uses (the given one, else Dask's
current one, found the way ``dask.compute`` finds it), the session's cluster tier for that
client (``store.cluster``: results stay on the workers), how a pull on the cluster looks
results up (``finder``: held results by reference, the pulled ones brought here), and
whether the workers persist entries in the session's ``cache_dir`` themselves. Does not
cover: the run loop (``executors.dask_run``), what runs on a worker
(``executors.dask_worker``), scheduling, data transfer or worker memory (Dask does all of
it) or the local pools (``threads``, ``processes``).

A pull on the cluster: every planned node becomes one Dask task keyed by its lazygraph key,
so equal work has one key and Dask computes it once, even for two clients. Results stay on
the workers, held by the session's store as cluster references (at most ``cluster_limit``
bytes of them, least recently used first), and only the pulled values travel here; a later
pull needing a held result uses it where it is. With a ``cache_dir`` the workers can reach
(and a lazygraph secret of their own), workers write and load entries themselves.

>>> import lazygraph
>>> ex = DaskExecutor()           # uses the current dask.distributed Client when it runs
>>> ex
DaskExecutor(client=None)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..node import Node
from ..store.cluster import ClusterTier, default_cluster_limit
from .dask_run import DaskRun, dask_key

if TYPE_CHECKING:
    from ..scheduler import Pull
    from ..store.store import Store

__all__ = ["DaskExecutor", "dask_key"]

log = logging.getLogger(__name__)
_NO_CLIENT = (
    "executor='dask' needs a dask.distributed Client: create one before computing "
    "(from dask.distributed import Client; client = Client() or Client('tcp://scheduler:8786')) "
    "or pass executor=lazygraph.DaskExecutor(client)"
)


class DaskExecutor:
    """Runs pulls on a ``dask.distributed`` cluster; results stay there, pulled values come here.

    ``client``: a ``distributed.Client``; None uses Dask's current client at each run
    (``distributed.get_client()``), and fails with a ``ConfigError`` if there is none.

    >>> from dask.distributed import Client, LocalCluster
    >>> import lazygraph
    >>> @lazygraph.node
    ... def inc(x):
    ...     return x + 1
    >>> with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
    ...     with Client(cluster) as client, lazygraph.Session(progress=False) as s:
    ...         s.compute(inc(inc(1)), executor=DaskExecutor(client))
    (3,)
    """

    def __init__(self, client: Any = None) -> None:
        self.client = client
        self._workers_persist: dict[tuple[int, str], bool] = {}
        self._lock = threading.Lock()  # two pulls in threads attach one tier

    def run(self, pull: Pull) -> None:
        """Run every node of ``pull.order`` on the cluster; raise the first ``NodeError``."""
        client = self._get_client()
        config = pull.session.config
        tier = self._tier(pull.store, client, config)
        persist_dir = self._persist_dir(client, config)
        DaskRun(pull, client, tier=tier, persist_dir=persist_dir).run()

    def finder(self, store: Store, roots: Sequence[Node]) -> Callable[[bytes], tuple[Any, str]]:
        """The plan's lookup on the cluster: held results by reference, pulled ones here.

        A result the cluster holds stays there (its ``Remote`` stands in for it in the
        plan) unless it is one of ``roots``, whose value is what the caller asked for; an
        entry on disk is loaded by the workers that need it (``OnDisk``), when they can.
        """
        find, find_remote = store.find, store.find_remote
        tier = store.cluster
        # entries on disk are loaded by the workers, where they can read the cache_dir
        workers_load = tier is not None and self._persist_dir(tier.client, store.config) is not None
        keys: set[bytes] | None = None

        def lookup(key: bytes) -> tuple[Any, str]:
            nonlocal keys
            if keys is None:  # resolved by now: the plan looks keys up after resolving them
                keys = {r._key for r in roots}  # type: ignore[misc]
            return find(key) if key in keys else find_remote(key, workers_load=workers_load)

        return lookup

    def _tier(self, store: Store, client: Any, config: Any) -> ClusterTier:
        """The store's cluster tier for ``client``, attached on first use (a tier of another
        client is replaced: futures belong to their client)."""
        with self._lock:
            tier = store.cluster
            if tier is None or tier.client is not client:
                limit = config.cluster_limit or default_cluster_limit(client)
                tier = ClusterTier(client, max_bytes=limit)
                store.attach_cluster(tier)
            return tier

    def _persist_dir(self, client: Any, config: Any) -> str | None:
        """The cache_dir if every worker can write authenticated entries there, else None.

        Asked once per client and directory (one round trip to the workers).
        """
        if config.cache_dir is None or not config.persist:
            return None
        where = str(config.cache_dir)
        known = self._workers_persist.get((id(client), where))
        if known is None:
            from .dask_worker import worker_ready

            try:
                answers = client.run(worker_ready, where)
                known = bool(answers) and all(answers.values())
            except Exception as exc:  # e.g. lazygraph not importable there
                log.warning("Dask workers cannot persist to %s (%s); this process will", where, exc)
                known = False
            self._workers_persist[(id(client), where)] = known
        return where if known else None

    def _get_client(self) -> Any:
        if self.client is not None:
            return self.client
        try:
            from distributed import get_client
        except ImportError as exc:
            raise ConfigError(
                "executor='dask' needs dask.distributed, which is not installed "
                "(pip install 'lazygraph[dask]')"
            ) from exc
        try:
            return get_client()
        except ValueError as exc:  # Dask's "No global client found"
            raise ConfigError(_NO_CLIENT) from exc

    def close(self) -> None:
        """Nothing to release: the client and its cluster belong to the caller."""

    def __repr__(self) -> str:
        return f"DaskExecutor(client={self.client!r})"
