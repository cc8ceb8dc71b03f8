"""Tap life-cycle benchmark: what one VM's networking costs on the node.

    .venv/bin/python -m bench.tap --iterations 200

In a fresh network namespace (deleted afterwards): one bridge, then per iteration
create tap + attach to the bridge + set the isolated flag, then delete it. Needs root.
Prints mean and p99 of each half and of the whole cycle; the last line is
`tap_cycle_ms: X` (mean per VM, in milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import time

from mxvm.net import NodeNetwork


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _report(label: str, samples_s: list[float]) -> None:
    ms = [s * 1000 for s in samples_s]
    print(
        f"{label:<28} mean {statistics.fmean(ms):7.3f} ms   "
        f"median {statistics.median(ms):7.3f} ms   p99 {_p99(ms):7.3f} ms"
    )


async def _measure(netns: str, iterations: int) -> list[float]:
    create: list[float] = []
    delete: list[float] = []
    async with NodeNetwork("mxvmbench0", netns=netns) as net:
        await net.ensure_bridge("10.250.0.1/24")
        await net.create_tap("warm-up")  # opens the netlink socket, fills the bridge cache
        await net.delete_tap("warm-up")
        for i in range(iterations):
            alloc_id = f"bench-{i}"
            t0 = time.perf_counter()
            await net.create_tap(alloc_id, isolated=True)
            t1 = time.perf_counter()
            await net.delete_tap(alloc_id)
            t2 = time.perf_counter()
            create.append(t1 - t0)
            delete.append(t2 - t1)
    cycle = [c + d for c, d in zip(create, delete, strict=True)]
    print(f"iterations: {iterations} (namespace {netns})")
    _report("create + attach + isolate", create)
    _report("delete", delete)
    _report("cycle", cycle)
    return cycle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", "-n", type=int, default=200)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.tap needs root (network namespaces, netlink)", file=sys.stderr)
        return 2
    netns = f"mxvmbench-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        cycle = asyncio.run(_measure(netns, args.iterations))
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    print(f"tap_cycle_ms: {statistics.fmean(cycle) * 1000:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
