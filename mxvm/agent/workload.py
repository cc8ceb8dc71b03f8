"""Supervising a running allocation: whichever comes first of the main command's exit, the
VM ending on its own (a hypervisor crash), or a stop request decides the Outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from mxvm.agent.alloclog import LogWriter
from mxvm.guest.client import RunHandle
from mxvm.guest.errors import GuestError
from mxvm.hypervisors.base import Driver, VmHandle, VmState


@dataclass(frozen=True)
class Outcome:
    code: int | None  # the guest command's exit code; None when it never got one
    reason: str = ""
    stopped: bool = False  # ended because the coordinator asked
    fatal: bool = False  # restarting cannot help (bad image, bad spec)

    def describe(self) -> str:
        if self.code is not None:
            return f"exited {self.code}" + (f": {self.reason}" if self.reason else "")
        return self.reason or "failed"


async def _pump(run: RunHandle, open_log: Callable[[], LogWriter]) -> None:
    """Append the command's output to the allocation's log as it arrives."""
    with open_log() as log:
        async for chunk in run:
            log.write(chunk.data)


async def _first(*aws: asyncio.Task[object]) -> asyncio.Task[object]:
    done, _ = await asyncio.wait(aws, return_when=asyncio.FIRST_COMPLETED)
    return next(iter(done))


async def supervise_guest(
    driver: Driver,
    handle: VmHandle,
    run: RunHandle,
    open_log: Callable[[], LogWriter],
    stop: asyncio.Event,
) -> Outcome:
    pump = asyncio.create_task(_pump(run, open_log))
    exited = asyncio.create_task(run.wait())
    vm_end = asyncio.create_task(driver.wait(handle))
    stopping = asyncio.create_task(stop.wait())
    tasks: tuple[asyncio.Task[object], ...] = (exited, vm_end, stopping)
    try:
        first = await _first(*tasks)
        if first is exited and exited.exception() is None:
            with contextlib.suppress(TimeoutError, GuestError):
                await asyncio.wait_for(asyncio.shield(pump), 5)  # the last output frames
            end = exited.result()
            return Outcome(code=end.code, reason=end.error or "")
        if first is stopping:
            return Outcome(code=None, reason="stopped", stopped=True)
        if first is vm_end:
            st = vm_end.result()
            return Outcome(
                code=None, reason=f"VM ended before the command did: {st.reason or st.state.value}"
            )
        # The channel dropped: usually because the VM itself died. Give the driver a moment
        # to see that, so the reason names the real cause.
        with contextlib.suppress(TimeoutError):
            st = await asyncio.wait_for(asyncio.shield(vm_end), 5)
            why = st.reason or st.state.value
            return Outcome(code=None, reason=f"VM ended before the command did: {why}")
        return Outcome(code=None, reason=f"lost the guest agent: {exited.exception()}")
    finally:
        for t in (pump, exited, vm_end, stopping):
            t.cancel()


async def supervise_vm(driver: Driver, handle: VmHandle, stop: asyncio.Event) -> Outcome:
    """Drivers without a guest agent: the VM's own end is the workload's end."""
    vm_end = asyncio.create_task(driver.wait(handle))
    stopping = asyncio.create_task(stop.wait())
    try:
        first = await _first(vm_end, stopping)
        if first is stopping:
            return Outcome(code=None, reason="stopped", stopped=True)
        st = vm_end.result()
        if st.state == VmState.CRASHED:
            return Outcome(code=st.exit_code, reason=f"VM crashed: {st.reason}")
        return Outcome(code=st.exit_code if st.exit_code is not None else 0, reason=st.reason)
    finally:
        vm_end.cancel()
        stopping.cancel()
