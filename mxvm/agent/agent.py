"""The host agent: register, heartbeat, long-poll the desired allocations, converge, re-adopt
VMs an earlier agent process left running, and report device health changes. It talks only
HTTP to the coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from collections import deque
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from mxvm.agent import alloclog
from mxvm.agent import record as rec
from mxvm.agent.context import AgentContext
from mxvm.agent.identity import hold_state_dir, node_key
from mxvm.agent.inventory import registration, scan_devices
from mxvm.agent.passthrough import release_leftovers
from mxvm.agent.reporter import Reporter
from mxvm.agent.runner import AllocRunner
from mxvm.agent.server import create_agent_app
from mxvm.agent.vm import destroy_leftover_vm
from mxvm.client import ApiClient
from mxvm.config import AgentSettings, split_listen
from mxvm.devices import NvmlBackend
from mxvm.devices.vfio import SysfsWriter
from mxvm.errors import BackendUnavailable, Conflict, MxvmError, NotFound
from mxvm.hypervisors.base import Driver
from mxvm.models import (
    AllocStatusUpdate,
    ClientStatus,
    DesiredStatus,
    Device,
    Node,
    NodeChanges,
    Registered,
)
from mxvm.net import NodeNetwork

log = logging.getLogger(__name__)
POLL_WAIT_S = 25.0
T = TypeVar("T")
RETRY_S = 2.0
REFUSED_RETRY_S = 5.0  # registration refused: the node name is another live agent's
CONSOLE_TRIM_S = 30.0  # how often running VMs' console logs are checked against their bound


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        drivers: dict[str, Driver],
        *,
        image_dir: Path,
        network: NodeNetwork | None,
        nvml: NvmlBackend | None = None,
        sysfs_writer: SysfsWriter | None = None,
        state_dir_held: bool = False,
    ) -> None:
        """`nvml` and `sysfs_writer` are seams for tests (a fake NVML, a fake kernel);
        None means the real NVML and real sysfs writes. `state_dir_held`: the caller holds
        the state dir's lock (identity.hold_state_dir) for as long as this agent runs."""
        self.settings = settings
        self._state_dir_held = state_dir_held
        self.node_key = ""  # read from the state dir once it is held
        self.nvml = nvml
        self.secret = secrets.token_urlsafe(32)
        token = settings.agent_token.get_secret_value() if settings.agent_token else None
        self.api = ApiClient(settings.url, token, timeout_s=POLL_WAIT_S + 30)
        self.reporter = Reporter(self.api, self._reports_path)
        self.ctx = AgentContext(settings, drivers, self.reporter.report, image_dir, network)
        if sysfs_writer is not None:
            self.ctx.sysfs_writer = sysfs_writer
        self.devices: list[Device] = []  # as last reported to the coordinator
        self.runners: dict[str, AllocRunner] = {}
        self._finished: deque[Path] = deque()  # finished allocations' run dirs, oldest first
        # Live allocations told to stop before they had a runner, already reported complete:
        # still live until the coordinator applies that, and no runner will ever exist for them.
        self._settled: set[str] = set()
        self.node: Node | None = None
        self.heartbeat_s = 5.0
        self.heartbeat_ttl_s = 15.0  # the coordinator's, from registration
        self._last_contact = 0.0  # loop time of the last heartbeat the coordinator took

    # -- what the agent API sees ----------------------------------------------------------
    def runner(self, alloc_id: str) -> AllocRunner | None:
        return self.runners.get(alloc_id)

    def run_dir(self, alloc_id: str) -> Path:
        return rec.alloc_dir(self.settings.state_dir, alloc_id)

    # -- life ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
        with contextlib.ExitStack() as held:
            if not self._state_dir_held:
                held.enter_context(hold_state_dir(self.settings.state_dir))
            self.node_key = node_key(self.settings.state_dir)
            await self._run(stop, ready)

    async def _run(self, stop: asyncio.Event, ready: asyncio.Event | None) -> None:
        host, port = split_listen(self.settings.api_listen)
        server = web.AppRunner(
            create_agent_app(self, self.secret),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=2,
        )
        await server.setup()
        await web.TCPSite(server, host, port).start()
        try:
            node = await self._register_until_done(stop)
            if node is None:
                return
            await self._setup_network(node)
            await self._recover()
            if ready is not None:
                ready.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._heartbeats(stop), name="heartbeat")
                tg.create_task(self._disconnect_fence(stop), name="disconnect-fence")
                tg.create_task(self._watch(stop), name="watch")
                tg.create_task(self._device_health(stop), name="device-health")
                tg.create_task(self._trim_consoles(stop), name="console-trim")
        finally:
            for r in self.runners.values():
                if r.task is not None:
                    r.task.cancel()  # VMs keep running; the next agent re-adopts them
            await self.reporter.close()
            await server.cleanup()
            await self.api.close()

    async def _register_until_done(self, stop: asyncio.Event) -> Node | None:
        while not stop.is_set():
            try:
                return await self._register()
            except BackendUnavailable as exc:
                log.warning("agent.register_retry %s", exc.detail)
                wait_s = RETRY_S
            except Conflict as exc:  # nothing starts until the name is ours
                log.error("agent.register_refused %s", exc.detail)
                wait_s = REFUSED_RETRY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
        return None

    async def _register(self) -> Node:
        host, port = split_listen(self.settings.api_listen)
        advertised = self.settings.address or host
        reg = await registration(
            self.settings,
            self.ctx.drivers,
            self.ctx.image_dir,
            agent_url=f"http://{advertised}:{port}",
            agent_secret=self.secret,
            nvml=self.nvml,
        )
        # agent_secret and node_key are excluded from serialisation (they must never leave
        # the coordinator again), so they are added to the registration body explicitly.
        body = reg.model_dump(mode="json") | {
            "agent_secret": self.secret,
            "node_key": self.node_key,
        }
        out = Registered.model_validate(await self.api.post("/api/v1/agent/register", json=body))
        self.node = out.node
        # Registration only records the devices; the first health report (which fails the
        # allocations on a GPU that broke while this agent was away) is always sent.
        self.devices = []
        self.ctx.subnet = out.node.subnet
        self.heartbeat_s = max(0.2, out.heartbeat_ttl_s / 3)
        self.heartbeat_ttl_s = out.heartbeat_ttl_s
        self._last_contact = asyncio.get_running_loop().time()
        log.info("agent.registered %s subnet=%s", out.node.id, out.node.subnet)
        return out.node

    async def _setup_network(self, node: Node) -> None:
        net = self.ctx.net
        if net is None or node.subnet is None:
            return
        await net.ensure_bridge(f"{self.ctx.gateway}/{self.ctx.prefixlen}")
        if self.settings.nat:
            await net.enable_nat(node.subnet, self.settings.uplink)

    async def _recover(self) -> None:
        """Re-adopt the VMs a previous agent process left running; drop leftovers."""
        desired = {a.allocation.id: a for a in (await self._poll(0, 0)).changed}
        for run_dir, record in rec.load_all(self.settings.state_dir):
            assigned = desired.get(record.alloc_id)
            if assigned is None:  # ended or lost while we were away: nothing may keep running
                await self._discard(run_dir, record)
                continue
            self._start_runner(AllocRunner(self.ctx, assigned, record))
        # What earlier agents left finished: read once, then kept up as runners finish.
        skip = {r.run_dir.name for r in self.runners.values()}
        self._finished.extend(rec.finished_dirs(self.settings.state_dir, skip))
        self._prune_finished()
        held = {d for r in self.runners.values() for d in r.assigned.allocation.device_ids}
        released = await release_leftovers(self.ctx, held)
        if released:
            log.info("vfio.leftovers_released %s", released)
        if self.ctx.net is not None:
            removed = await self.ctx.net.cleanup_leftovers(set(self.runners))
            if removed:
                log.info("net.leftovers_removed %s", removed)

    async def _discard(self, run_dir: Path, record: rec.AllocRecord) -> None:
        await destroy_leftover_vm(self.ctx, record, run_dir)
        rec.remove(run_dir)

    # -- loops -----------------------------------------------------------------------------
    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            assert self.node is not None
            try:
                await self.api.post(f"/api/v1/agent/nodes/{self.node.id}/heartbeat")
                self._last_contact = asyncio.get_running_loop().time()
            except NotFound:
                await self._reregister()
            except BackendUnavailable as exc:
                log.warning("agent.heartbeat_failed %s", exc.detail)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.heartbeat_s)

    async def _reregister(self) -> None:
        """The coordinator forgot this node (e.g. a new database): register again, and on
        failure try again at the next heartbeat (which will not find the node either)."""
        try:
            await self._register()
        except BackendUnavailable as exc:
            log.warning("agent.register_retry %s", exc.detail)
        except Conflict as exc:
            log.error("agent.register_refused %s", exc.detail)

    async def _disconnect_fence(self, stop: asyncio.Event) -> None:
        """Stop the allocations of jobs with on_disconnect='stop' once no heartbeat has got
        through for half the heartbeat TTL. The coordinator declares the node lost (and
        replaces them elsewhere) no sooner than a whole TTL after the last heartbeat it took,
        so with at most a quarter TTL to power off, they are gone before their replacements
        are placed. A loop of its own: a heartbeat to an unreachable coordinator can hang."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.heartbeat_s / 2)
            cut_off = loop.time() - self._last_contact
            if stop.is_set() or cut_off < self.heartbeat_ttl_s / 2:
                continue
            why = (
                f"node lost contact with the coordinator for {cut_off:.1f}s: stopped "
                "(on_disconnect=stop) before it could be replaced elsewhere"
            )
            for runner in self.runners.values():
                stop_it = runner.assigned.on_disconnect == "stop"
                if stop_it and runner.fence(why, grace_s=self.heartbeat_ttl_s / 4):
                    log.warning("alloc.fenced %s %s", runner.alloc_id, why)

    async def _trim_consoles(self, stop: asyncio.Event) -> None:
        """Keep running VMs' console logs (written by the VMM, not by us) within their bound:
        a guest that floods its console must not fill the node's disk."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CONSOLE_TRIM_S)
            handles = [r.attempt.handle for r in self.runners.values() if r.attempt.handle]
            consoles = [h.console_log for h in handles]
            trimmed = await asyncio.to_thread(
                alloclog.trim_consoles, consoles, self.settings.console_log_max_bytes
            )
            for path in trimmed:
                log.info("vm.console_trimmed %s", path.parent.parent.name)

    async def _device_health(self, stop: asyncio.Event) -> None:
        """Re-scan the devices every health_interval_s and report any change (a GPU that
        NVML finds broken, one that recovered, one gone): the coordinator fails the
        allocations on a broken one and stops placing work there."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.health_interval_s)
            if stop.is_set():
                return
            try:
                devices = await asyncio.to_thread(scan_devices, self.settings, self.nvml)
            except (MxvmError, OSError) as exc:  # sysfs mid-change, a corrupt name cache
                log.warning("agent.device_scan_failed %s", exc)
                continue
            if devices == self.devices:
                continue
            assert self.node is not None
            body = [d.model_dump(mode="json") for d in devices]
            try:
                await self.api.post(f"/api/v1/agent/nodes/{self.node.id}/devices", json=body)
            except (BackendUnavailable, NotFound) as exc:
                log.warning("agent.devices_report_failed %s", exc.detail)
                continue  # reported again on the next scan
            changed = [d.id for d in devices if d not in self.devices]
            log.info("agent.devices_reported changed=%s", changed)
            self.devices = devices

    async def _poll(self, index: int, wait_s: float) -> NodeChanges:
        """What changed in this node's allocations after `index` (everything from 0)."""
        assert self.node is not None
        data = await self.api.get(
            f"/api/v1/agent/nodes/{self.node.id}/allocations/changes", index=index, wait=wait_s
        )
        return NodeChanges.model_validate(data)

    async def _watch(self, stop: asyncio.Event) -> None:
        index = 0
        while not stop.is_set():
            try:
                changes = await _unless_stopped(self._poll(index, POLL_WAIT_S), stop)
                if changes is None:
                    return
            except (BackendUnavailable, NotFound) as exc:
                log.warning("agent.poll_failed %s", exc.detail)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_S)
                continue
            unknown = await self.converge(changes)
            if unknown:  # a change we never got in full: ask for everything once
                log.warning("agent.resync unknown live allocations %s", sorted(unknown))
                index = 0
            else:
                index = changes.index

    async def converge(self, changes: NodeChanges) -> set[str]:
        """Make what runs here match what the coordinator wants: start or stop what changed,
        stop what is no longer live. Returns the live allocations this agent knows nothing
        of (none after an answer from index 0, which carries every one in full)."""
        wanted = set(changes.live)
        for assigned in changes.changed:
            a = assigned.allocation
            runner = self.runners.get(a.id)
            if a.desired_status == DesiredStatus.RUN and runner is None:
                self._start_runner(AllocRunner(self.ctx, assigned))
            elif a.desired_status == DesiredStatus.STOP and runner is not None:
                runner.assigned = assigned  # carries the reason for stopping
                runner.request_stop()
            elif a.desired_status == DesiredStatus.STOP and a.id not in self._settled:
                update = AllocStatusUpdate(
                    client_status=ClientStatus.COMPLETE, description="stopped before it started"
                )
                self._settled.add(a.id)
                await self.reporter.report(a.id, update)
        for alloc_id, runner in list(self.runners.items()):
            if alloc_id not in wanted:
                if runner.finished.is_set():
                    del self.runners[alloc_id]
                else:
                    runner.request_stop()
        self._settled &= wanted
        return wanted - set(self.runners) - self._settled

    def _start_runner(self, runner: AllocRunner) -> None:
        self.runners[runner.alloc_id] = runner
        runner.task = asyncio.create_task(runner.run(), name=f"alloc-{runner.alloc_id[:8]}")
        runner.task.add_done_callback(lambda _: self._runner_done(runner))

    def _runner_done(self, runner: AllocRunner) -> None:
        if runner.finished.is_set():  # not when cancelled: its VM runs on for the next agent
            self._finished.append(runner.run_dir)
            self._prune_finished()

    def _prune_finished(self) -> None:
        """Keep the run dirs (logs) of the newest `keep_finished` finished allocations."""
        gone = []
        while len(self._finished) > self.settings.keep_finished:
            gone.append(self._finished.popleft())
            shutil.rmtree(gone[-1], ignore_errors=True)
        if gone:
            log.info("alloc.dirs_pruned %d", len(gone), extra={"dirs": [p.name for p in gone]})

    def _reports_path(self) -> str:
        assert self.node is not None
        return f"/api/v1/agent/nodes/{self.node.id}/allocations/status"


async def _unless_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await `aw`, or give up (cancelling it) as soon as `stop` is set."""
    task = asyncio.ensure_future(aw)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()
