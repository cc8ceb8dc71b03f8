"""A VMM process a driver started itself, detached, and recorded in the VM's run dir.

The QEMU and cloud-hypervisor drivers both spawn their VMM in a new session and write
`vm.json` (pid + argv) next to its sockets, so that a later agent can tell whether the pid
still runs the command line we started (pid reuse) and re-adopt it. vm.json is written
before the VMM runs, with pid 0: a VMM whose starter died before learning its pid is then
found by its command line. What follows from
that record is the same for both and lives here: refusing a second VM, recover, "is it
still ours", waiting for the end, SIGKILL with a bound, destroy. How a VMM is asked to
stop and how an ended VM's verdict is read stay in each driver.

Log records go to the driver's own logger, with the event names the drivers always used.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from mxvm.errors import InvalidState
from mxvm.hypervisors import process
from mxvm.hypervisors.base import DriverError, VmHandle, VmSpec, VmState, VmStatus

# How often wait() looks at the console while the VMM runs: a guest that halted or
# panicked leaves the VMM idling on, so its exit alone would never come.
CONSOLE_CHECK_S = 2.0


class PidRecord(Protocol):
    pid: int  # 0 while the VMM is being started (the record is written before it runs)


class VmmRecord(PidRecord, Protocol):
    """What every driver's vm.json holds about its VMM process."""

    @property
    def alloc_id(self) -> str: ...

    @property
    def argv(self) -> list[str]: ...


P = TypeVar("P", bound=PidRecord)
R = TypeVar("R", bound=VmmRecord)


def handle_record(handle: VmHandle, load: Callable[[Path], P | None]) -> P | None:
    """The run dir's record when it is about the handle's VMM (same pid); else None."""
    record = load(handle.run_dir)
    return record if record is not None and record.pid == handle.pid else None


def log_ended(log: logging.Logger, handle: VmHandle, status: VmStatus) -> None:
    log.info(
        "vm.ended alloc=%s state=%s reason=%s",
        handle.alloc_id,
        status.state.value,
        status.reason,
    )


@dataclass(frozen=True)
class VmmProcesses(Generic[R]):
    """The VMM processes one driver starts, each known by the record in its run dir."""

    driver: str  # VmHandle.driver
    vmm: str  # the VMM's name in error messages ("QEMU", "cloud-hypervisor")
    load: Callable[[Path], R | None]
    save: Callable[[Path, R], None]
    is_ours: Callable[[R], bool]  # the record's pid runs the command line we started
    log: logging.Logger
    kill_timeout_s: float
    poll_s: float

    def prepare_run_dir(self, spec: VmSpec, run_files: Iterable[str]) -> None:
        """Refuse a second VM for the allocation; clear what an ended one left behind."""
        spec.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = self._load(spec.run_dir)
        if old is not None and self.is_ours(old):
            raise InvalidState(f"allocation {spec.alloc_id} already has a VM (pid {old.pid})")
        for name in run_files:
            (spec.run_dir / name).unlink(missing_ok=True)

    def _load(self, run_dir: Path) -> R | None:
        """The run dir's record, with the pid of a VMM whose starter died before learning it
        (pid 0) filled in: the process `is_ours` recognises. Our VMMs' command lines name
        their own run dir, so no other process matches."""
        record = self.load(run_dir)
        if record is None or record.pid != 0:
            return record
        for pid in process.pids():
            record.pid = pid
            if self.is_ours(record):
                self.save(run_dir, record)
                return record
        record.pid = 0
        return record

    def record(self, handle: VmHandle) -> R | None:
        return handle_record(handle, self.load)

    def running(self, handle: VmHandle) -> R | None:
        """The record, while the handle's VMM still runs; None once it has ended."""
        record = self.record(handle)
        return record if record is not None and self.is_ours(record) else None

    async def recover(
        self,
        alloc_id: str,
        run_dir: Path,
        probe: Callable[[VmHandle], Awaitable[object]],
    ) -> VmHandle | None:
        """A handle on the VMM recorded in `run_dir` when it still runs ours.

        `probe` must answer from the VMM's control socket; it raises DriverError for a
        VMM that is alive but mute, and so does recover.
        """
        record = self._load(run_dir)
        if record is None or record.alloc_id != alloc_id:
            return None
        if not self.is_ours(record):
            self.log.info("vm.recover_gone alloc=%s pid=%d", alloc_id, record.pid)
            return None
        handle = VmHandle(alloc_id=alloc_id, driver=self.driver, pid=record.pid, run_dir=run_dir)
        await probe(handle)
        self.log.info("vm.recovered alloc=%s pid=%d", alloc_id, record.pid)
        return handle

    async def wait(
        self,
        handle: VmHandle,
        *,
        crash_reason: Callable[[Path], str | None],
        ended: Callable[[VmHandle], Awaitable[VmStatus]],
    ) -> VmStatus:
        """Until the VMM exits, or `crash_reason(console.log)` finds the guest gone."""
        status: VmStatus | None = None
        while status is None and self.running(handle) is not None:
            if await process.wait_exit_for(handle.pid, CONSOLE_CHECK_S, poll_s=self.poll_s):
                break
            reason = crash_reason(handle.console_log)
            if reason is not None:
                status = VmStatus(state=VmState.CRASHED, pid=handle.pid, reason=reason)
        status = status or await ended(handle)
        log_ended(self.log, handle, status)
        return status

    async def kill(self, handle: VmHandle) -> None:
        """SIGKILL, then up to kill_timeout_s for the process to be gone."""
        process.kill(handle.pid)
        if not await process.wait_exit_for(handle.pid, self.kill_timeout_s, poll_s=self.poll_s):
            raise DriverError(
                f"{self.vmm} pid {handle.pid} survived SIGKILL for {self.kill_timeout_s}s"
            )

    async def destroy(
        self, handle: VmHandle, forget: Callable[[VmHandle], Awaitable[None]]
    ) -> None:
        """Kill the VMM if it runs, `forget` the driver's own state, remove the run dir."""
        if self.running(handle) is not None:
            await self.kill(handle)
        await forget(handle)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(handle.run_dir)
        self.log.info("vm.destroyed alloc=%s pid=%d", handle.alloc_id, handle.pid)
