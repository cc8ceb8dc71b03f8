"""One allocation's life on this node: boot its microVM, run the command in the guest, stream
its output to the allocation's log, report every transition, restart per the restart policy,
and stop it when the coordinator says so. A runner can also re-adopt a VM that an earlier
agent process started (after a restart or kill -9)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mxvm.agent import record as rec
from mxvm.agent.alloclog import LogWriter
from mxvm.agent.context import AgentContext
from mxvm.agent.vm import destroy_leftover_vm, teardown, vm_spec
from mxvm.agent.workload import Outcome, supervise_guest, supervise_vm
from mxvm.errors import MxvmError
from mxvm.guest.client import ExecResult, GuestClient, RunHandle
from mxvm.guest.errors import GuestError
from mxvm.hypervisors.base import VmHandle
from mxvm.models import (
    AllocEvent,
    AllocStatusUpdate,
    AssignedAllocation,
    ClientStatus,
    DesiredStatus,
    JobType,
)

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 120.0  # TCG boots on a busy host can be slow


def _event(kind: str, message: str) -> AllocEvent:
    return AllocEvent(time=datetime.now(UTC), type=kind, message=message)


@dataclass
class Attempt:
    handle: VmHandle | None = None
    guest: GuestClient | None = None


class AllocRunner:
    def __init__(
        self, ctx: AgentContext, assigned: AssignedAllocation, record: rec.AllocRecord | None = None
    ) -> None:
        self.ctx = ctx
        self.assigned = assigned
        self.alloc_id = assigned.allocation.id
        self.run_dir = rec.alloc_dir(ctx.settings.state_dir, self.alloc_id)
        self.record = record or rec.AllocRecord(alloc_id=self.alloc_id, driver=assigned.task.driver)
        self.stop_requested = asyncio.Event()
        self.finished = asyncio.Event()
        self.attempt = Attempt()
        self.status = ClientStatus(assigned.allocation.client_status)
        self.task: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self.fenced: tuple[str, float] | None = None  # (why, grace) when fence() stopped it

    def _open_log(self) -> LogWriter:
        return LogWriter(self.run_dir, self.ctx.settings.alloc_log_max_bytes)

    def request_stop(self) -> None:
        self.stop_requested.set()

    def fence(self, reason: str, grace_s: float) -> bool:
        """Stop on the agent's own account (the node lost contact with the coordinator, or
        the task's max runtime ran out): the allocation fails with `reason`, its VM given at
        most `grace_s` to power off. False when it was fenced already or has finished."""
        if self.fenced is not None or self.finished.is_set():
            return False
        self.fenced = (reason, grace_s)
        self.request_stop()
        return True

    async def exec(
        self, argv: list[str], env: dict[str, str], cwd: str | None, limit_s: float | None
    ) -> ExecResult:
        guest = self.attempt.guest
        if guest is None or not guest.connected:
            raise GuestUnavailableHere(f"allocation {self.alloc_id} has no running guest")
        return await guest.exec(argv, env, cwd, timeout=limit_s)

    async def _report(
        self,
        status: ClientStatus,
        description: str = "",
        *,
        exit_code: int | None = None,
        events: list[AllocEvent] | None = None,
    ) -> None:
        if self._starting is not None and status != ClientStatus.STARTING:
            await self._starting  # reports stay in order
            self._starting = None
        self.status = status
        update = AllocStatusUpdate(
            client_status=status, description=description, exit_code=exit_code, events=events or []
        )
        await self.ctx.report(self.alloc_id, update)

    async def run(self) -> None:
        """The runner's task: from pending (or adopted) to a terminal status."""
        # Cancellation (the agent shutting down) leaves the VM running on purpose: the next
        # agent process re-adopts it. Only a finished allocation tears its VM down.
        if self.record.final is not None:  # finished before a restart; not yet reported
            await self._deliver_final(self.record.final)
            return
        if self.record.started_at is None:  # kept in the record: a restart does not reset it
            self.record.started_at = time.time()
            if self.record.handle is not None:  # adopted from an agent older than the field
                rec.save(self.run_dir, self.record)
        watchdog = (
            asyncio.create_task(self._enforce_max_runtime(self.assigned.task.max_runtime_s))
            if self.assigned.task.max_runtime_s is not None
            else None
        )
        try:
            if self.record.handle is not None:
                outcome = await self._adopt(self.record.handle)
            else:
                # Reported while the VM boots: the report's round trip is not on the boot path.
                self._starting = asyncio.create_task(
                    self._report(ClientStatus.STARTING, events=[_event("starting", "")])
                )
                outcome = await self._attempt()
            while self._restart_due(outcome):
                outcome = await self._restart(outcome)
        except asyncio.CancelledError:
            # Agent shutdown: let go of the guest channel (the VM serves one connection at a
            # time, and the next agent must get it), but leave the VM running.
            if self.attempt.guest is not None:
                await self.attempt.guest.close()
            raise
        except Exception as exc:  # a bug must end the allocation, not the agent
            log.exception("alloc.runner_crashed %s", self.alloc_id)
            outcome = Outcome(code=None, reason=f"agent error: {exc}")
        finally:
            if watchdog is not None:
                watchdog.cancel()
        final = self._final(outcome)
        self.record.final = final
        rec.save(self.run_dir, self.record)
        await teardown(
            self.ctx,
            self.record.driver,
            self.attempt.handle,
            self.alloc_id,
            self.assigned.allocation.device_ids,  # kept bound across restarts, released here
            grace_s=self.fenced[1] if self.fenced else None,
        )
        await self._deliver_final(final)

    async def _enforce_max_runtime(self, limit: float) -> None:
        """Fence the allocation once it has run for its task's max_runtime_s."""
        assert self.record.started_at is not None
        await asyncio.sleep(max(0.0, self.record.started_at + limit - time.time()))
        why = f"exceeded its max runtime of {limit:g}s: stopped"
        if self.fence(why, grace_s=self.ctx.settings.stop_grace_s):
            log.warning("alloc.max_runtime %s %s", self.alloc_id, why)

    async def _deliver_final(self, final: AllocStatusUpdate) -> None:
        if self._starting is not None:
            await self._starting
            self._starting = None
        self.status = final.client_status
        await self.ctx.report(self.alloc_id, final)
        rec.remove(self.run_dir)
        self.finished.set()
        log.info("alloc.finished %s %s", self.alloc_id, final.description)

    async def _attempt(self) -> Outcome:
        """Boot a VM, run the main command, supervise it; the VM is torn down afterwards."""
        try:
            self.run_dir.mkdir(parents=True)
            first = True  # nothing can be left over in a run dir that did not exist
        except FileExistsError:
            first = False
        # Noted before the VM exists: if this agent dies while the VM starts, the next one
        # finds the record, and with it the VM (destroy_leftover_vm), not a VM nobody knows.
        self.record.handle = self.record.main_cmd_id = None
        rec.save(self.run_dir, self.record)
        try:
            if not first:
                await destroy_leftover_vm(self.ctx, self.record, self.run_dir)
            # Stopped already (also while no agent ran, for a record a restarted agent found):
            # no VM to boot.
            stopped = self.assigned.allocation.desired_status == DesiredStatus.STOP
            if stopped or self.stop_requested.is_set():
                return Outcome(code=None, stopped=True)
            spec = await vm_spec(self.ctx, self.assigned, rec.vm_dir(self.run_dir))
            driver = self.ctx.driver(self.record.driver)
            handle = await driver.start(spec)
        except MxvmError as exc:
            return Outcome(code=None, reason=exc.detail, fatal=True)
        self.attempt = Attempt(handle=handle)
        self.record.handle = handle
        rec.save(self.run_dir, self.record)
        if not driver.capabilities().guest_agent:
            await self._running("VM started")
            return await supervise_vm(driver, handle, self.stop_requested)
        return await self._run_in_guest(handle, spec.guest_socket)

    async def _run_in_guest(self, handle: VmHandle, socket: Path) -> Outcome:
        task = self.assigned.task
        driver = self.ctx.driver(self.record.driver)
        try:
            guest = await GuestClient.connect(socket, timeout=30)
            self.attempt.guest = guest
            info = await guest.wait_ready(READY_TIMEOUT_S)
            run = await self._start_main(guest)
        except GuestError as exc:
            status = await driver.inspect(handle)
            why = (
                f"guest agent unreachable: {exc.detail} (VM {status.state.value}: {status.reason})"
            )
            return Outcome(code=None, reason=why)
        await self._running(f"guest ready after {info.boot_s:.2f}s; running {task.argv[0]}")
        return await supervise_guest(driver, handle, run, self._open_log, self.stop_requested)

    async def _start_main(self, guest: GuestClient) -> RunHandle:
        """Send the guest its main command, noting the command's id first: an agent that dies
        in between leaves an id the next one asks the guest about, and the next one sends the
        command only if the guest never got it. So it runs once, whatever dies when."""
        task = self.assigned.task
        self.record.main_cmd_id = self.record.main_cmd_id or f"main-{uuid.uuid4().hex[:12]}"
        rec.save(self.run_dir, self.record)
        return await guest.run(task.argv, self._env(), task.cwd, cmd_id=self.record.main_cmd_id)

    async def _adopt(self, handle: VmHandle) -> Outcome:
        """Re-attach to a VM an earlier agent process started (same pid, still running)."""
        driver = self.ctx.driver(self.record.driver)
        adopted = await driver.recover(self.alloc_id, rec.vm_dir(self.run_dir))
        if adopted is None:
            return Outcome(code=None, reason="VM was gone when the agent restarted")
        self.attempt = Attempt(handle=adopted)
        log.info("alloc.adopted %s pid=%d", self.alloc_id, adopted.pid)
        if not driver.capabilities().guest_agent:
            return await supervise_vm(driver, adopted, self.stop_requested)
        try:
            socket = adopted.guest_socket
            guest = await GuestClient.connect(socket, timeout=30)
            self.attempt.guest = guest
            # Attach before anything else: the guest flushes the output it held while no
            # host was connected as soon as we are, and frames for unknown ids are dropped.
            main_id = self.record.main_cmd_id
            run = guest.attach(main_id) if main_id else None
            await guest.wait_ready(30)
            st = await guest.status()
            if st.main_id is None:  # the last agent died before the guest got its command
                run = await self._start_main(guest)
                await self._running(f"running {self.assigned.task.argv[0]} (after a restart)")
        except GuestError as exc:
            return Outcome(code=None, reason=f"guest agent unreachable after restart: {exc.detail}")
        if run is None or st.main_id not in (None, run.id):
            why = f"the guest runs a main command this agent has no record of ({st.main_id})"
            return Outcome(code=None, reason=why)
        if st.main_state == "exited" and st.main_code is not None and run.done:
            return Outcome(code=st.main_code, reason="")
        return await supervise_guest(driver, adopted, run, self._open_log, self.stop_requested)

    async def _running(self, message: str) -> None:
        if self.status != ClientStatus.RUNNING:
            await self._report(ClientStatus.RUNNING, events=[_event("running", message)])

    def _env(self) -> dict[str, str]:
        a = self.assigned.allocation
        env = {
            "MXVM_ALLOC_ID": a.id,
            "MXVM_ALLOC_NAME": a.name,
            "MXVM_JOB_NAME": self.assigned.job_name,
            "MXVM_ALLOC_INDEX": str(a.index),
        }
        if a.device_ids:
            env["MXVM_ALLOCATED_DEVICE_IDS"] = ",".join(a.device_ids)
            # The guest enumerates the passed-through GPUs in VmSpec.pci_devices order.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(a.device_ids)))
        env.update(self.assigned.task.env)
        return env

    def _restart_due(self, outcome: Outcome) -> bool:
        if outcome.stopped or outcome.fatal:
            return False
        if outcome.code == 0 and self.assigned.job_type in (JobType.BATCH, JobType.SYSBATCH):
            return False
        policy = self.assigned.restart
        now = time.time()
        recent = [t for t in self.record.restarts if now - t < policy.interval_s]
        return len(recent) < policy.attempts

    async def _restart(self, previous: Outcome) -> Outcome:
        await teardown(self.ctx, self.record.driver, self.attempt.handle, self.alloc_id)
        self.attempt = Attempt()
        self.record.restarts.append(time.time())
        delay = self.assigned.restart.delay_s
        why = previous.describe()
        await self._report(
            self.status, events=[_event("restarting", f"{why}; restarting in {delay:g}s")]
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_requested.wait(), delay)
        if self.stop_requested.is_set():
            return Outcome(code=None, reason="stopped", stopped=True)
        return await self._attempt()

    def _final(self, outcome: Outcome) -> AllocStatusUpdate:
        if outcome.stopped and self.fenced is not None:
            status, desc = ClientStatus.FAILED, self.fenced[0]
        elif outcome.stopped:
            why = self.assigned.allocation.desired_description or "by the coordinator"
            status, desc = ClientStatus.COMPLETE, f"stopped: {why}"
        elif outcome.code == 0:
            status, desc = ClientStatus.COMPLETE, "exited 0"
        else:
            status, desc = ClientStatus.FAILED, outcome.describe()
        return AllocStatusUpdate(
            client_status=status,
            description=desc,
            exit_code=outcome.code,
            events=[_event(status.value, desc)],
        )


class GuestUnavailableHere(MxvmError):
    status = 409
    title = "no running guest"
