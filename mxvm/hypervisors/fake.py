"""FakeDriver: "VMs" that are timers, with fault knobs, for control-plane tests and benches.

A fake VM runs from `start()` until `run_time_s` passes (then it ends with `exit_code`:
0 → stopped, else crashed), until `stop()`/`destroy()`, or until a test calls `crash()`.
With `persist=True` each VM is also written to <run_dir>/fake-vm.json, and since a fake
VM's life is a function of wall-clock time, a new FakeDriver `recover()`s it like the
QEMU driver re-adopts a surviving process after an agent restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from mxvm.hypervisors.base import (
    Capabilities,
    DriverError,
    VmHandle,
    VmSpec,
    VmState,
    VmStatus,
)

NAME = "fake"
STATE_FILE = "fake-vm.json"
_pids = itertools.count(4_000_000)  # above any real pid_max default, so never a live pid


class _FakeVm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alloc_id: str
    pid: int
    run_dir: Path
    started_at: float
    run_time_s: float | None
    exit_code: int
    ended: VmStatus | None = None

    def natural_end(self) -> float | None:
        return None if self.run_time_s is None else self.started_at + self.run_time_s

    def settle(self, now: float) -> None:
        """Mark the VM ended if its run time has passed."""
        end = self.natural_end()
        if self.ended is None and end is not None and now >= end:
            state = VmState.STOPPED if self.exit_code == 0 else VmState.CRASHED
            code = self.exit_code
            reason = f"exited {code}"
            self.ended = VmStatus(state=state, pid=self.pid, reason=reason, exit_code=code)


class FakeDriver:
    """In-memory Driver. Knobs are plain attributes; change them between calls freely."""

    def __init__(
        self,
        *,
        start_error: str | None = None,
        boot_delay_s: float = 0.0,
        exit_code: int = 0,
        run_time_s: float | None = None,
        hang: bool = False,
        persist: bool = False,
        kvm: bool = True,
    ) -> None:
        self.start_error = start_error
        self.boot_delay_s = boot_delay_s
        self.exit_code = exit_code
        self.run_time_s = run_time_s
        self.hang = hang  # the guest ignores power-down: stop() always waits out the grace
        self.persist = persist
        self.kvm = kvm
        self.starts = 0
        self._vms: dict[str, _FakeVm] = {}
        self._changed: dict[str, asyncio.Event] = {}

    @property
    def name(self) -> str:
        return NAME

    def capabilities(self) -> Capabilities:
        return Capabilities(
            name=NAME,
            kvm=self.kvm,
            graceful_stop=True,
            recover=True,
            device_passthrough=True,
            guest_agent=False,
        )

    def _save(self, vm: _FakeVm) -> None:
        self._vms[vm.alloc_id] = vm
        self._changed.setdefault(vm.alloc_id, asyncio.Event()).set()
        if self.persist and vm.run_dir.is_dir():
            (vm.run_dir / STATE_FILE).write_text(vm.model_dump_json())

    def _vm(self, handle: VmHandle) -> _FakeVm | None:
        vm = self._vms.get(handle.alloc_id)
        if vm is None or vm.pid != handle.pid:
            return None
        vm.settle(time.time())
        return vm

    async def start(self, spec: VmSpec) -> VmHandle:
        self.starts += 1
        if self.boot_delay_s:
            await asyncio.sleep(self.boot_delay_s)
        if self.start_error is not None:
            raise DriverError(self.start_error, alloc_id=spec.alloc_id)
        current = self._vms.get(spec.alloc_id)
        if current is not None and current.ended is None:
            raise DriverError(f"allocation {spec.alloc_id} already has a VM")
        if self.persist:
            spec.run_dir.mkdir(parents=True, exist_ok=True)
        vm = _FakeVm(
            alloc_id=spec.alloc_id,
            pid=next(_pids),
            run_dir=spec.run_dir,
            started_at=time.time(),
            run_time_s=self.run_time_s,
            exit_code=self.exit_code,
        )
        self._save(vm)
        return VmHandle(alloc_id=vm.alloc_id, driver=NAME, pid=vm.pid, run_dir=vm.run_dir)

    async def recover(self, alloc_id: str, run_dir: Path) -> VmHandle | None:
        try:
            vm = _FakeVm.model_validate_json((run_dir / STATE_FILE).read_bytes())
        except (OSError, ValidationError):
            return None
        vm.settle(time.time())
        if vm.alloc_id != alloc_id or vm.ended is not None:
            return None
        self._save(vm)
        return VmHandle(alloc_id=alloc_id, driver=NAME, pid=vm.pid, run_dir=run_dir)

    async def inspect(self, handle: VmHandle) -> VmStatus:
        vm = self._vm(handle)
        if vm is None:
            return VmStatus(state=VmState.UNKNOWN, pid=handle.pid, reason="no such fake VM")
        return vm.ended or VmStatus(state=VmState.RUNNING, pid=vm.pid, reason="running")

    def crash(self, alloc_id: str, reason: str = "injected crash") -> None:
        """Test hook: the VM dies now."""
        vm = self._vms[alloc_id]
        if vm.ended is None:
            vm.ended = VmStatus(state=VmState.CRASHED, pid=vm.pid, reason=reason)
            self._save(vm)

    async def wait(self, handle: VmHandle) -> VmStatus:
        while True:
            vm = self._vm(handle)
            if vm is None:
                return VmStatus(state=VmState.UNKNOWN, pid=handle.pid, reason="no such fake VM")
            if vm.ended is not None:
                return vm.ended
            changed = self._changed.setdefault(handle.alloc_id, asyncio.Event())
            changed.clear()
            end = vm.natural_end()
            timeout = None if end is None else max(0.0, end - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await changed.wait()

    async def stop(self, handle: VmHandle, grace_s: float) -> VmStatus:
        vm = self._vm(handle)
        if vm is None or vm.ended is not None:
            return await self.inspect(handle)
        if self.hang:
            await asyncio.sleep(grace_s)
            vm.ended = VmStatus(
                state=VmState.STOPPED, pid=vm.pid, reason="killed after the grace period"
            )
        else:
            vm.ended = VmStatus(state=VmState.STOPPED, pid=vm.pid, reason="guest powered off")
        self._save(vm)
        return vm.ended

    async def destroy(self, handle: VmHandle) -> None:
        vm = self._vm(handle)
        if vm is not None:
            if vm.ended is None:
                vm.ended = VmStatus(state=VmState.STOPPED, pid=vm.pid, reason="destroyed")
                self._save(vm)
            del self._vms[handle.alloc_id]
        if self.persist:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(handle.run_dir)
