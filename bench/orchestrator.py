"""Orchestrator benchmarks: control-plane latency, cold-boot overhead, agent memory.

    .venv/bin/python -m bench.orchestrator latency   # fake driver, 50 concurrent submits
    .venv/bin/python -m bench.orchestrator overhead  # real QEMU, 10 cold boots vs bare QEMU
    .venv/bin/python -m bench.orchestrator rss       # agent process RSS with 10 VMs running

Each starts its own Postgres and Redis, a coordinator (in this process) and an agent, and
prints its figures; the last line is `name: value`. `overhead` and `rss` need root (bridge,
taps) and qemu-system-x86_64.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import SecretStr

from bench.guest_boot import one_boot
from mxvm.agent.agent import Agent
from mxvm.client import ApiClient
from mxvm.config import AgentSettings
from mxvm.embedded import EmbeddedPostgres, EmbeddedRedis
from mxvm.errors import MxvmError
from mxvm.hypervisors.base import Driver, VmHandle, VmSpec
from mxvm.hypervisors.fake import FakeDriver
from mxvm.hypervisors.qemu.driver import QemuDriver
from mxvm.image import build_dev_image, default_image_dir
from mxvm.net import NodeNetwork

ADMIN, AGENT = "bench-admin", "bench-agent"


@dataclass
class Cluster:
    api: ApiClient
    url: str
    tmp: Path
    pids: dict[str, list[int]]  # its processes: coordinator(s), postmaster, redis-server

    def processes(self) -> dict[str, list[int]]:
        """Its processes by name, Postgres with the backends it has now."""
        out = dict(self.pids)
        with contextlib.suppress(psutil.Error):
            out["postgres"] = [
                pid
                for p in out["postgres"]
                for pid in (p, *(c.pid for c in psutil.Process(p).children()))
            ]
        return out


def _tmp() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="mxvm-bench-"))
    tmp.chmod(0o755)
    return tmp


@contextlib.asynccontextmanager
async def cluster(
    port: int,
    *,
    leader_apart: bool = False,
    coordinator_argv: Sequence[str] = ("-m", "mxvm", "coordinator"),
) -> AsyncIterator[Cluster]:
    """Postgres, Redis and a `mxvm coordinator` process of their own (as in production, the
    coordinator does not share an event loop with the agent or the client). `leader_apart`:
    that coordinator serves the API only, and a second one (on port + 10) leads.
    `coordinator_argv`: the coordinators' Python arguments (bench.timeline traces them)."""
    tmp = _tmp()
    pg, rd = EmbeddedPostgres(tmp / "pg"), EmbeddedRedis(tmp / "redis")
    env = {**os.environ, "MXVM_DATABASE_URL": await pg.start(), "MXVM_REDIS_URL": await rd.start(),
           "MXVM_LISTEN": f"127.0.0.1:{port}", "MXVM_ADMIN_TOKEN": ADMIN,
           "MXVM_AGENT_TOKENS": AGENT, "MXVM_NODE_SUBNET_POOL": "10.214.0.0/16",
           "MXVM_LOG_LEVEL": "WARNING"}  # fmt: skip
    env["MXVM_LEADER"] = "false" if leader_apart else "true"
    procs = [await asyncio.create_subprocess_exec(sys.executable, *coordinator_argv, env=env)]
    if leader_apart:
        env2 = {**env, "MXVM_LISTEN": f"127.0.0.1:{port + 10}", "MXVM_LEADER": "true"}
        procs.append(
            await asyncio.create_subprocess_exec(sys.executable, *coordinator_argv, env=env2)
        )
    try:
        async with ApiClient(f"http://127.0.0.1:{port}", ADMIN) as api:
            for _ in range(300):
                with contextlib.suppress(MxvmError):
                    if (await api.get("/api/v1/cluster/status"))["leader"]:
                        break
                await asyncio.sleep(0.1)
            pids = {"coordinator": [p.pid for p in procs], "postgres": [pg.pid or 0],
                    "redis": [rd.pid or 0]}  # fmt: skip
            yield Cluster(api, f"http://127.0.0.1:{port}", tmp, pids)
    finally:
        for proc in procs:
            proc.terminate()
            await proc.wait()
        await rd.stop()
        await pg.stop()


def agent_settings(c: Cluster, port: int, **kw: Any) -> AgentSettings:
    return AgentSettings(
        url=c.url,
        agent_token=SecretStr(AGENT),
        node_name="bench-node",
        state_dir=c.tmp / "agent",
        api_listen=f"127.0.0.1:{port}",
        sysfs_root=c.tmp / "no-sysfs",
        **kw,
    )


def agent_env(c: Cluster, port: int, **settings: str) -> dict[str, str]:
    """The environment of an agent process (`mxvm agent` or `fake-agent`) for this cluster;
    `settings` are further MXVM_* variables, named without the prefix."""
    return {**os.environ, "MXVM_URL": c.url, "MXVM_AGENT_TOKEN": AGENT,
            "MXVM_STATE_DIR": str(c.tmp / "agent"), "MXVM_API_LISTEN": f"127.0.0.1:{port}",
            "MXVM_LOG_LEVEL": "WARNING",
            **{f"MXVM_{k}": v for k, v in settings.items()}}  # fmt: skip


@contextlib.asynccontextmanager
async def agent(
    settings: AgentSettings, drivers: dict[str, Driver], images: Path, net: NodeNetwork | None
) -> AsyncIterator[Agent]:
    a = Agent(settings, drivers, image_dir=images, network=net)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(a.run(stop, ready=ready))
    await ready.wait()
    try:
        yield a
    finally:
        stop.set()
        await task


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


class TimedFake(FakeDriver):
    """The fake driver, noting when each VM process would have been started (the
    system-wide monotonic clock, so the bench process can compare it with its submits).
    The notes go out on stdout in batches, 20 ms after the first unsent one: a write per
    start, each waking the bench process, cost the agent a fifth of its time."""

    def __init__(self) -> None:
        super().__init__()
        self._unsent: list[str] = []

    async def start(self, spec: VmSpec) -> VmHandle:
        if not self._unsent:
            asyncio.get_running_loop().call_later(0.02, self._send)
        self._unsent.append(f"started {spec.alloc_id} {time.monotonic():.6f}\n")
        return await super().start(spec)

    def _send(self) -> None:
        sys.stdout.write("".join(self._unsent))
        sys.stdout.flush()
        self._unsent.clear()


async def fake_agent() -> None:
    """`bench.orchestrator fake-agent`: a host agent process (settings from MXVM_* as for
    `mxvm agent`) offering only the timed fake driver, and no network (no bridge, no taps)."""
    settings = AgentSettings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    images = settings.images_dir or settings.state_dir / "images"
    await Agent(settings, {"fake": TimedFake()}, image_dir=images, network=None).run(stop)


class FakeAgentProcess:
    """The fake agent as its own process, as agents run in production: not sharing the
    benchmark client's event loop. Its start times arrive on its stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.started: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            word, alloc_id, at = line.decode().split()
            if word == "started":
                self.started[alloc_id] = float(at)
                self._changed.set()

    async def wait_started(self, count: int) -> None:
        while len(self.started) < count:
            self._changed.clear()
            await self._changed.wait()

    async def new_starts(self, before: Collection[str], n: int) -> dict[str, float]:
        """Once `n` VMs not in `before` (an earlier copy of `started`) have started: their
        allocation ids and start times."""
        await self.wait_started(len(before) + n)
        return {a: t for a, t in self.started.items() if a not in before}


@contextlib.asynccontextmanager
async def fake_agent_process(
    c: Cluster, port: int, agent_argv: Sequence[str] = ("-m", "bench.orchestrator", "fake-agent")
) -> AsyncIterator[FakeAgentProcess]:
    images = c.tmp / "images" / "default"
    images.mkdir(parents=True)
    (images / "manifest.json").write_text('{"kernel": "vmlinuz", "min_memory_mb": 128}')
    env = agent_env(c, port, NODE_NAME="bench-node", IMAGES_DIR=str(images.parent),
                    SYSFS_ROOT=str(c.tmp / "no-sysfs"), CPU_OVERCOMMIT="64")  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *agent_argv, env=env, stdout=asyncio.subprocess.PIPE
    )
    fake = FakeAgentProcess(proc)
    try:
        while not await c.api.get("/api/v1/nodes"):
            await asyncio.sleep(0.1)
        yield fake
    finally:
        proc.terminate()
        await proc.wait()
        fake._reader.cancel()


def _latency_spec(name: str) -> dict[str, Any]:
    return {"name": name, "type": "service",
            "task": {"driver": "fake", "argv": ["x"], "memory_mb": 128}}  # fmt: skip


async def _one_at_a_time(c: Cluster, fake: FakeAgentProcess, n: int) -> list[float]:
    """Submit → VM process started, one job at a time (nothing else in flight), in ms."""
    out: list[float] = []
    for i in range(n):
        before = set(fake.started)
        t0 = time.monotonic()
        await c.api.post("/api/v1/jobs", json=_latency_spec(f"one-{i}"))
        [started] = (await fake.new_starts(before, 1)).values()
        out.append((started - t0) * 1000)
        await asyncio.sleep(0.05)
    return out


async def _http_floor(c: Cluster, n: int) -> list[float]:
    """`n` concurrent GET /health (no Postgres, no Redis), in ms: what any request costs the
    client and the coordinator's HTTP stack on this machine, the floor under a submit. It
    also leaves the client holding `n` open connections, as a long-running client would,
    so the burst measures the control plane rather than TCP handshakes."""

    async def one() -> float:
        t0 = time.monotonic()
        await c.api.get("/health")
        return (time.monotonic() - t0) * 1000

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _burst(c: Cluster, fake: FakeAgentProcess, n: int) -> list[float]:
    """Submit → VM process started for `n` jobs submitted at once, in ms."""
    before = set(fake.started)

    async def submit(i: int) -> tuple[str, float]:
        t0 = time.monotonic()
        out = await c.api.post("/api/v1/jobs", json=_latency_spec(f"burst-{i}"))
        return out["job"]["id"], t0

    submitted = dict(await asyncio.gather(*(submit(i) for i in range(n))))
    started = await fake.new_starts(before, n)
    job_of = {a["id"]: a["job_id"] for a in await c.api.get("/api/v1/allocations")}
    return [(t - submitted[job_of[aid]]) * 1000 for aid, t in started.items()]


def _cpu_ticks() -> tuple[int, int]:
    """(all, stolen) CPU ticks so far, from /proc/stat: on a virtual machine whose host is
    busy, time stolen from our vCPUs shows up as latency that no code change affects."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7]


def _steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    return 100 * (after[1] - before[1]) / max(1, after[0] - before[0])


def _cpu_ns(pid: int) -> int:
    """Time all threads of `pid` have spent on a CPU so far, in ns (schedstat: exact, where
    psutil's cpu_times counts 10 ms ticks)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
    return total


def _cpu_by_process(groups: dict[str, list[int]]) -> dict[str, int]:
    return {name: sum(_cpu_ns(pid) for pid in pids) for name, pids in groups.items()}


async def latency(n: int, leader_apart: bool = False) -> None:
    async with (
        cluster(18480, leader_apart=leader_apart) as c,
        fake_agent_process(c, 18481) as fake,
    ):
        t0 = _cpu_ticks()
        alone = await _one_at_a_time(c, fake, 20)
        await _http_floor(c, n)  # opens the connections
        floor = await _http_floor(c, n)
        t1 = _cpu_ticks()
        groups = {"client": [os.getpid()], **c.processes(), "agent": [fake.proc.pid]}
        cpu0 = _cpu_by_process(groups)
        lat = await _burst(c, fake, n)
        cpu1 = _cpu_by_process(groups)
        t2 = _cpu_ticks()
    print("submit -> VM process started (fake driver), ms")
    print(f"cpu_steal_pct: one_at_a_time {_steal_pct(t0, t1):.0f}  burst {_steal_pct(t1, t2):.0f}")
    # The CPU the burst cost each process, per job. On a host with few cores it bounds the
    # latency: the median job is started after about half the burst's work, and that work
    # cannot go faster than all cores busy all the time.
    per_job = {name: (cpu1[name] - cpu0[name]) / n / 1e6 for name in cpu1}
    cores = os.cpu_count() or 1
    print("cpu_ms_per_job: " + "  ".join(f"{k} {v:.2f}" for k, v in per_job.items())
          + f"  total {sum(per_job.values()):.2f}")  # fmt: skip
    print(f"cpu_bound_p50_ms: {sum(per_job.values()) * n / 2 / cores:.1f}  ({cores} cores)")
    print(f"one_at_a_time_p50_ms: {statistics.median(alone):.1f}  p99: {pct(alone, 0.99):.1f}")
    print(f"http_floor_{n}_p50_ms: {statistics.median(floor):.1f}  p99: {pct(floor, 0.99):.1f}"
          "  (concurrent GET /health)")  # fmt: skip
    print(f"concurrent_{n}_p50_ms: {statistics.median(lat):.1f}  p99: {pct(lat, 0.99):.1f}  "
          f"max: {max(lat):.1f}")  # fmt: skip
    print(f"control_plane_p50_ms: {statistics.median(lat):.1f}")


async def _ready_times(c: Cluster, job_id: str) -> float | None:
    for a in await c.api.get(f"/api/v1/jobs/{job_id}/allocations"):
        for e in a["events"]:
            if e["type"] == "running":
                return datetime.fromisoformat(e["time"]).timestamp()
    return None


async def overhead(runs: int) -> None:
    image = build_dev_image(default_image_dir())
    bare = [(await one_boot(image, 192, 1))["ready_s"] for _ in range(runs)]
    net = NodeNetwork(f"mxvmb{secrets.token_hex(3)}")
    orchestrated: list[float] = []
    try:
        async with cluster(18482) as c:
            qemu = QemuDriver()
            await qemu.select_accel(image.kernel)  # the probe happens once, at agent start
            s = agent_settings(c, 18483, bridge=net.bridge)
            async with agent(s, {"qemu": qemu}, default_image_dir().parent, net):
                for i in range(runs):
                    spec = {"name": f"boot-{i}", "type": "service",
                            "task": {"argv": ["sleep", "600"], "memory_mb": 192}}  # fmt: skip
                    t0 = time.time()
                    out = await c.api.post("/api/v1/jobs", json=spec)
                    while (ready := await _ready_times(c, out["job"]["id"])) is None:
                        await asyncio.sleep(0.05)
                    orchestrated.append(ready - t0)
                    await c.api.post(f"/api/v1/jobs/{out['job']['id']}/stop")
    finally:
        await net.teardown()
        await net.close()
    ratio = statistics.median(orchestrated) / statistics.median(bare)
    print(f"runs: {runs}; guest agent ready, seconds (median / min / max)")
    print(f"bare_qemu_s: {statistics.median(bare):.2f} / {min(bare):.2f} / {max(bare):.2f}")
    print(f"mxvm_submit_s: {statistics.median(orchestrated):.2f} / "
          f"{min(orchestrated):.2f} / {max(orchestrated):.2f}")  # fmt: skip
    print(f"overhead_ratio: {ratio:.3f}")


async def rss(vms: int) -> None:
    build_dev_image(default_image_dir())
    bridge = f"mxvmb{secrets.token_hex(3)}"
    async with cluster(18484) as c:
        env = agent_env(c, 18485, BRIDGE=bridge, CPU_OVERCOMMIT="8")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "mxvm", "agent", env=env)
        try:
            while not await c.api.get("/api/v1/nodes"):
                await asyncio.sleep(0.2)
            spec = {"name": "fleet", "type": "service", "count": vms,
                    "task": {"argv": ["sleep", "600"], "memory_mb": 128}}  # fmt: skip
            out = await c.api.post("/api/v1/jobs", json=spec)
            while True:
                allocs = await c.api.get(f"/api/v1/jobs/{out['job']['id']}/allocations")
                if sum(a["client_status"] == "running" for a in allocs) >= vms:
                    break
                await asyncio.sleep(0.5)
            mib = psutil.Process(proc.pid).memory_info().rss / 2**20
            await c.api.post(f"/api/v1/jobs/{out['job']['id']}/stop")
            path = f"/api/v1/jobs/{out['job']['id']}/allocations"
            live = ("pending", "starting", "running")
            while any(a["client_status"] in live for a in await c.api.get(path)):
                await asyncio.sleep(0.5)
        finally:
            proc.terminate()
            await proc.wait()
            await NodeNetwork(bridge).teardown()
    print(f"vms_running: {vms}")
    print(f"agent_rss_mib: {mib:.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("what", choices=["latency", "overhead", "rss", "fake-agent"])
    p.add_argument("-n", type=int, default=None, help="submits / runs / VMs")
    p.add_argument(
        "--leader-apart",
        action="store_true",
        help="latency: an API-only coordinator in front, the leader in a process of its own",
    )
    args = p.parse_args(argv)
    if args.what == "latency":
        asyncio.run(latency(args.n or 50, args.leader_apart))
    elif args.what == "overhead":
        asyncio.run(overhead(args.n or 10))
    elif args.what == "fake-agent":  # started by `latency`
        asyncio.run(fake_agent())
    else:
        asyncio.run(rss(args.n or 10))


if __name__ == "__main__":
    main()
