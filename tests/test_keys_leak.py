"""Fingerprints never keep what the user dropped alive (SPEC S3.8, issue 14).

A notebook that re-runs a cell defining a closure over an 8 MiB array 1,000 times, computing
a node of it each time and then dropping the factory: the process's RSS and the fingerprint
state (the cache of fingerprints, the code digest cache, the per-name code record) stay
bounded. Run in a subprocess so the measure is of that process alone; it stops early (and
fails) once it has grown by more than the bound, so the old code, which kept every closure,
fails in seconds instead of filling the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys, weakref, psutil
    import numpy as np
    import lazygraph
    from lazygraph import codetrace, keys

    fingerprint = sys.modules[keys.function_fingerprint.__module__]  # keys itself, before

    CELL = '''
    def make():
        data = np.full(1 << 20, {i}.0)  # 8 MiB
        def f(x):
            return x + float(data[0])
        return f
    f = make()
    '''
    ROUNDS, BOUND = 1000, 300 << 20
    ns = {"__name__": "notebook", "np": np}
    proc = psutil.Process()

    def state():
        return {
            "entries": len(fingerprint._CACHE._entries),
            "code_digests": codetrace.code_digest.cache_info().currsize,
            "code_seen": len(getattr(keys, "_code_seen", ())),
        }

    samples, arrays = [], []  # weak references to every round's array: how many live
    with lazygraph.Session(progress=False):
        for i in range(ROUNDS):
            exec(CELL.format(i=i), ns)
            arrays.append(weakref.ref(ns["f"].__closure__[0].cell_contents))
            factory = lazygraph.node(ns["f"])
            assert factory(1).compute() == 1 + i
            del factory
            if i % 50 == 49:
                gc.collect()
                alive = sum(ref() is not None for ref in arrays)
                rss = proc.memory_info().rss
                samples.append({"round": i + 1, "rss": rss, "alive": alive, **state()})
                if samples[-1]["rss"] - samples[0]["rss"] > BOUND:
                    break
    print(json.dumps(samples))
    """
)


def test_a_thousand_redefined_closures_over_8_mib_arrays_stay_flat():
    # A fixed mmap threshold: glibc would otherwise move 8 MiB blocks to its heap after the
    # first frees and keep freed heap pages, which reads as growth that is not ours.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    samples = json.loads(out.stdout.strip().splitlines()[-1])
    first, last = samples[0], samples[-1]
    growth = last["rss"] - first["rss"]
    note = (
        f"rounds {first['round']}->{last['round']}: RSS {first['rss'] >> 20} -> "
        f"{last['rss'] >> 20} MiB; arrays alive {last['alive']}; fingerprint entries "
        f"{first['entries']} -> {last['entries']}, code digests {last['code_digests']}, "
        f"names {last['code_seen']}"
    )
    print(note)
    assert last["round"] == 1000, f"stopped early: grew by {growth >> 20} MiB ({note})"
    # Flat: a few arrays may be alive at a time (the session's last 8 pulls, the current
    # cell), never one per round (1,000 rounds x 8 MiB would be 8 GiB).
    assert growth < 100 << 20 and last["alive"] <= 12, note
    assert last["entries"] <= first["entries"] + 10, note
    assert last["code_seen"] <= 2, note
    assert last["code_digests"] <= 4096, note


def test_a_rebound_global_array_is_not_kept_alive_by_the_fingerprint():
    import gc
    import weakref

    import numpy as np

    import lazygraph

    ns = {"__name__": "notebook_cell", "np": np}
    exec("DATA = np.ones(1 << 20)\ndef total(x):\n    return x + float(DATA.sum())\n", ns)
    factory = lazygraph.node(ns["total"])
    assert factory(1).key  # fingerprinted: DATA was read and is watched
    old = weakref.ref(ns["DATA"])
    exec("DATA = np.zeros(1 << 20)", ns)  # the cell re-run: the old array is dropped
    gc.collect()
    assert old() is None  # not held by the fingerprint cache
    assert factory(1).key != factory(2).key
