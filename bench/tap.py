"""Tap life-cycle benchmark: what one VM's networking costs on the node.

    .venv/bin/python -m bench.tap --iterations 200

In a fresh network namespace (deleted afterwards): one bridge, then per iteration
create tap + attach to the bridge + set the isolated flag, then delete it. Needs root.
Prints mean and p99 of each half and of the whole cycle; how often the event loop was
held meanwhile (a deletion waits ~15 ms in the kernel, which must not hold the loop);
and the amortised cost with several VMs in flight. The last line is `tap_cycle_ms: X`
(mean of the one-at-a-time cycle, in milliseconds).

This is the agent's steady state: the warm-up parks one tap, so each create reuses a
parked one (renamed to the allocation's tap name, given its MAC and isolation flag, and
brought up; a parked tap stays a down port of the bridge, so it needs no re-attach) and
each delete parks it again (down, renamed). Between iterations the loop is given a turn,
as the agent's would be, so that the stall meter sees how long each call holds it (the
link requests answer within the call and never wait in the loop).
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


class LoopStallMeter:
    """How late a 1 ms timer fires, i.e. how long the event loop was held (or starved)."""

    def __init__(self) -> None:
        self.late_s: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.late_s.append(time.perf_counter() - start - 0.001)

    def summary(self) -> str:
        over = sum(1 for s in self.late_s if s > 0.005)
        worst = max(self.late_s, default=0.0) * 1000
        return f"{over} of {len(self.late_s)} 1 ms ticks late by > 5 ms, worst {worst:.1f} ms"

    def __enter__(self) -> LoopStallMeter:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def _sequential(net: NodeNetwork, iterations: int) -> list[float]:
    create: list[float] = []
    delete: list[float] = []
    with LoopStallMeter() as stall:
        for i in range(iterations):
            alloc_id = f"bench-{i}"
            t0 = time.perf_counter()
            await net.create_tap(alloc_id, isolated=True)
            t1 = time.perf_counter()
            await net.delete_tap(alloc_id)
            t2 = time.perf_counter()
            create.append(t1 - t0)
            delete.append(t2 - t1)
            await asyncio.sleep(0)
    _report("create + attach + isolate", create)
    _report("delete", delete)
    cycle = [c + d for c, d in zip(create, delete, strict=True)]
    _report("cycle", cycle)
    print(f"{'event-loop stalls':<28} {stall.summary()}")
    return cycle


async def _concurrent(net: NodeNetwork, iterations: int, in_flight: int) -> None:
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with gate:
            await net.create_tap(f"conc-{i}")
            await net.delete_tap(f"conc-{i}")

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(iterations)))
    per_vm = (time.perf_counter() - start) / iterations * 1000
    print(f"{f'cycle, {in_flight} in flight':<28} {per_vm:7.3f} ms per VM (amortised)")


async def _measure(netns: str, iterations: int, in_flight: int) -> list[float]:
    async with NodeNetwork("mxvmbench0", netns=netns) as net:
        await net.ensure_bridge("10.250.0.1/24")
        await net.create_tap("warm-up")  # opens the netlink socket, fills the bridge cache
        await net.delete_tap("warm-up")
        print(f"iterations: {iterations} (namespace {netns})")
        cycle = await _sequential(net, iterations)
        await _concurrent(net, iterations, in_flight)
    return cycle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", "-n", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=8)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.tap needs root (network namespaces, netlink)", file=sys.stderr)
        return 2
    netns = f"mxvmbench-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        cycle = asyncio.run(_measure(netns, args.iterations, args.in_flight))
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    print(f"tap_cycle_ms: {statistics.fmean(cycle) * 1000:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
