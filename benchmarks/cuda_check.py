"""GPU check for the store (SPEC S5.6): cuda_limit eviction and the out-of-memory retry.

Run on a machine with a CUDA GPU; elsewhere it prints "no CUDA device, skipped" and exits 0.

1. Eviction: a Session with ``cuda_limit`` = 4 blocks pulls 8 blocks (tensors made on the GPU,
   dropped by the caller). After each pull it prints the store's GPU bytes and torch's
   ``memory_allocated()`` / ``memory_reserved()``: the store evicts the least recently used
   block and empties torch's cache, so reserved memory stays near 4 blocks instead of growing
   to 8. ``store.release_cuda()`` then brings it back to the baseline.
2. OOM retry: the store fills most of the free GPU memory with cached blocks, then a node asks
   for more than is left. Its first try raises ``torch.cuda.OutOfMemoryError``; the store
   releases its GPU entries, empties the cache, and the retry succeeds.

    python benchmarks/cuda_check.py                 # 512 MB blocks
    python benchmarks/cuda_check.py --block-mb 64   # a smaller GPU

Exit status: 0 when every check passes (or there is no GPU), 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import lazygraph

MB = 2**20
tries: dict[str, int] = {}


def cuda_ready() -> Any:
    """torch, when it is installed and sees a GPU; else None."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:  # a broken driver counts as no GPU here
        return None


@lazygraph.node
def gpu_block(i: int, nbytes: int) -> Any:
    import torch

    return torch.full((nbytes // 4,), float(i), device="cuda")


@lazygraph.node
def big_allocation(nbytes: int, tag: str) -> float:
    """Allocates ``nbytes`` on the GPU: more than is free until the store lets go."""
    import torch

    tries[tag] = tries.get(tag, 0) + 1
    block = torch.ones(nbytes // 4, device="cuda")
    return float(block[:1024].sum())


def readings(torch: Any) -> tuple[float, float]:
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated() / MB, torch.cuda.memory_reserved() / MB


def eviction_check(torch: Any, block_mb: int, limit_blocks: int, pulls: int) -> bool:
    nbytes = block_mb * MB
    limit = limit_blocks * nbytes + MB
    base_alloc, base_reserved = readings(torch)
    print(
        f"-- eviction: blocks of {block_mb} MB, cuda_limit = {limit_blocks} blocks "
        f"({limit / MB:,.0f} MB), baseline reserved {base_reserved:,.0f} MB"
    )
    print(f"{'pull':>4} {'store GPU MB':>13} {'allocated MB':>13} {'reserved MB':>12}")
    ok = True
    with lazygraph.Session(cuda_limit=limit, progress=False) as session:
        for i in range(pulls):
            session.compute(gpu_block(i, nbytes))  # the result is dropped: only the store holds it
            held = session.stats().cuda_bytes
            allocated, reserved = readings(torch)
            print(f"{i + 1:>4} {held / MB:>13,.0f} {allocated:>13,.0f} {reserved:>12,.0f}")
            ok &= held <= limit
            # One block may sit in torch's cache between the new block and the eviction.
            ok &= reserved - base_reserved <= (limit_blocks + 1) * block_mb + 64
        before = readings(torch)[1]
        freed = session.store.release_cuda()
        after = readings(torch)[1]
        print(
            f"release_cuda(): freed {freed / MB:,.0f} MB of entries; reserved "
            f"{before:,.0f} -> {after:,.0f} MB"
        )
        ok &= after < before and session.stats().cuda_bytes == 0
    print(
        f"{'PASS' if ok else 'FAIL'}  GPU memory stays within cuda_limit; eviction lowers "
        f"memory_reserved()\n"
    )
    return ok


def oom_check(torch: Any, block_mb: int) -> bool:
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    nbytes = block_mb * MB
    blocks = int(free * 0.8) // nbytes
    print(
        f"-- OOM retry: {free / MB:,.0f} MB free of {total / MB:,.0f} MB; caching {blocks} "
        f"blocks of {block_mb} MB"
    )
    tries.clear()
    ok = True
    with lazygraph.Session(cuda_limit=total, progress=False) as session:
        session.compute(*[gpu_block(1000 + i, nbytes) for i in range(blocks)])
        still_free = torch.cuda.mem_get_info()[0]
        want = int(free * 0.5)
        print(
            f"store holds {session.stats().cuda_bytes / MB:,.0f} MB; {still_free / MB:,.0f} MB "
            f"free; the node asks for {want / MB:,.0f} MB"
        )
        try:
            value = session.compute(big_allocation(want, "retry"))[0]
        except lazygraph.NodeError as exc:
            print(f"the retry failed too: {exc.__cause__!r}")
            return False
        print(
            f"tries: {tries.get('retry')}, result {value}, store GPU bytes after: "
            f"{session.stats().cuda_bytes / MB:,.0f} MB"
        )
        ok &= tries.get("retry") == 2 and value == 1024.0
    print(
        f"{'PASS' if ok else 'FAIL'}  a node that ran out of GPU memory succeeded on its retry "
        f"after the store released its GPU entries\n"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-mb", type=int, default=512)
    parser.add_argument("--limit-blocks", type=int, default=4)
    parser.add_argument("--pulls", type=int, default=8)
    args = parser.parse_args(argv)
    torch = cuda_ready()
    if torch is None:
        print("no CUDA device, skipped")
        return 0
    name = torch.cuda.get_device_name(0)
    print(f"lazygraph {lazygraph.__version__}, torch {torch.__version__}, {name}\n")
    ok = eviction_check(torch, args.block_mb, args.limit_blocks, args.pulls)
    ok &= oom_check(torch, max(args.block_mb, 1024))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
