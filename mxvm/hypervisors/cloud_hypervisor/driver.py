"""CloudHypervisorDriver: microVMs as detached cloud-hypervisor processes, driven over
their REST API.

Lifecycle: spawn `cloud-hypervisor --api-socket path=<run_dir>/ch.sock` in a new session
(so it is out of the agent's process group and survives an agent restart or kill -9),
record pid + argv in <run_dir>/vm.json, wait for vmm.ping, then vm.create and vm.boot.
Where systemd is PID 1, production should rather start it in a transient unit
(`systemd-run --unit=mxvm-<alloc> --collect -- cloud-hypervisor ...`) to leave the
agent's cgroup too; the rest (vm.json, API socket) stays the same. cloud-hypervisor
needs KVM; without it the VMM fails and start() reports its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from mxvm.hypervisors import process
from mxvm.hypervisors.base import Capabilities, DriverError, VmHandle, VmSpec, VmState, VmStatus
from mxvm.hypervisors.cloud_hypervisor.api import ChvClient, ChvConnectionError, ChvNotFound
from mxvm.hypervisors.cloud_hypervisor.argv import API_SOCKET, VMM_LOG, build_argv, build_vm_config
from mxvm.hypervisors.cloud_hypervisor.models import VmStateName
from mxvm.hypervisors.cloud_hypervisor.state import (
    ChvRecord,
    exit_status,
    load_record,
    panic_reason,
    save_record,
)
from mxvm.hypervisors.images import check_images
from mxvm.hypervisors.qemu.kvm_probe import probe_ioctl
from mxvm.hypervisors.qemu.state import console_tail
from mxvm.hypervisors.vmm_process import VmmProcesses

log = logging.getLogger(__name__)

NAME = "cloud-hypervisor"
VMM_STDERR = "vmm.stderr"
_RUN_FILES = (API_SOCKET, f"{API_SOCKET}.lock", "guest.sock", "vm.json", "console.log")
_REAP_S = 2.0
_VM_STATES: dict[VmStateName, VmState] = {
    "Running": VmState.RUNNING,
    "Paused": VmState.RUNNING,  # alive and resumable; the agent did not pause it
    "BreakPoint": VmState.RUNNING,
    "Shutdown": VmState.STOPPED,
    "Created": VmState.UNKNOWN,  # created but never booted
}
ApiCall = Callable[[ChvClient], Awaitable[object]]


class CloudHypervisorDriver:
    """The Driver protocol over cloud-hypervisor."""

    def __init__(
        self,
        *,
        binary: str = "cloud-hypervisor",
        start_timeout_s: float = 15.0,
        api_timeout_s: float = 5.0,
        kill_timeout_s: float = 10.0,
        poll_interval_s: float = 0.2,
    ) -> None:
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._api_timeout_s = api_timeout_s
        self._poll_s = poll_interval_s
        self._kvm: bool | None = None
        # VMMs this instance spawned: only for their exit status (a recovered one has none).
        self._children: dict[str, asyncio.subprocess.Process] = {}
        self._vmm = VmmProcesses(
            driver=NAME,
            vmm="cloud-hypervisor",
            load=load_record,
            save=save_record,
            is_ours=_is_ours,
            log=log,
            kill_timeout_s=kill_timeout_s,
            poll_s=poll_interval_s,
        )

    @property
    def name(self) -> str:
        return NAME

    def capabilities(self) -> Capabilities:
        if self._kvm is None:
            self._kvm = probe_ioctl().usable
        return Capabilities(
            name=NAME, kvm=self._kvm, graceful_stop=True, recover=True, device_passthrough=True
        )

    # -- start ---------------------------------------------------------------------------

    async def start(self, spec: VmSpec) -> VmHandle:
        check_images(spec)
        binary = shutil.which(self._binary)
        if binary is None:
            raise DriverError(f"{self._binary} is not installed (not found on PATH)")
        self._vmm.prepare_run_dir(spec, (*_RUN_FILES, VMM_LOG, VMM_STDERR))
        argv = build_argv(spec, binary=binary)
        # Recorded before the VMM runs (pid 0 until it does): an agent killed meanwhile leaves
        # a VMM that `recover` still finds, by its command line.
        record = ChvRecord(
            alloc_id=spec.alloc_id,
            pid=0,
            argv=argv,
            api_socket=spec.run_dir / API_SOCKET,
            started_at=datetime.now(UTC),
        )
        save_record(spec.run_dir, record)
        proc = await self._spawn(spec, argv)
        record.pid = proc.pid
        save_record(spec.run_dir, record)
        handle = VmHandle(alloc_id=spec.alloc_id, driver=NAME, pid=proc.pid, run_dir=spec.run_dir)
        try:
            await self._wait_ping(handle, self._start_timeout_s)
            async with self._api(handle) as api:
                await api.create(build_vm_config(spec))
                await api.boot()
        except DriverError:
            await self._abort(handle)
            raise
        log.info("vm.started alloc=%s pid=%d", spec.alloc_id, proc.pid)
        return handle

    async def _spawn(self, spec: VmSpec, argv: list[str]) -> asyncio.subprocess.Process:
        try:
            with (spec.run_dir / VMM_STDERR).open("ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,
                )
        except OSError as exc:
            raise DriverError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        self._children[spec.alloc_id] = proc
        return proc

    async def _wait_ping(self, handle: VmHandle, timeout_s: float) -> None:
        """vmm.ping until it answers; the VMM may still be binding its socket."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                async with self._api(handle) as api:
                    await api.ping()
                    return
            except DriverError as exc:
                if not process.is_alive(handle.pid):
                    raise DriverError(
                        f"cloud-hypervisor exited during start: {_log_tail(handle.run_dir)}"
                    ) from exc
                if loop.time() >= deadline:
                    raise DriverError(
                        f"cloud-hypervisor API did not answer in {timeout_s}s: {exc.detail}"
                    ) from exc
            await asyncio.sleep(self._poll_s)

    async def _abort(self, handle: VmHandle) -> None:
        """A start that failed leaves no VMM behind (its logs stay for diagnosis)."""
        record = load_record(handle.run_dir)
        if record is not None:
            record.killed = True
            save_record(handle.run_dir, record)
        with contextlib.suppress(DriverError):
            await self._vmm.kill(handle)
        await self._exit_code(handle)  # reap it now
        log.warning("vm.start_failed alloc=%s pid=%d", handle.alloc_id, handle.pid)

    def _api(self, handle: VmHandle, timeout_s: float | None = None) -> ChvClient:
        timeout_s = self._api_timeout_s if timeout_s is None else timeout_s
        return ChvClient(handle.run_dir / API_SOCKET, timeout_s=timeout_s)

    # -- recover, inspect, wait ----------------------------------------------------------

    async def recover(self, alloc_id: str, run_dir: Path) -> VmHandle | None:
        return await self._vmm.recover(alloc_id, run_dir, self._ping)

    async def _ping(self, handle: VmHandle) -> None:
        await self._wait_ping(handle, self._api_timeout_s)

    async def _exit_code(self, handle: VmHandle) -> int | None:
        proc = self._children.get(handle.alloc_id)
        if proc is None or proc.pid != handle.pid:
            return None
        try:
            # Short: an ended VMM is reaped at once, and one that still runs (its run
            # state removed under it) must not stall inspect().
            async with asyncio.timeout(_REAP_S):
                return await proc.wait()
        except TimeoutError:
            return None

    async def _ended(self, handle: VmHandle) -> VmStatus:
        record = self._vmm.record(handle)
        code = await self._exit_code(handle)
        return exit_status(record, handle.console_log, code)

    async def inspect(self, handle: VmHandle) -> VmStatus:
        if self._vmm.running(handle) is None:
            return await self._ended(handle)
        panic = panic_reason(handle.console_log)
        if panic is not None:
            return VmStatus(state=VmState.CRASHED, pid=handle.pid, reason=panic)
        try:
            async with self._api(handle) as api:
                info = await api.info()
        except ChvNotFound:
            return VmStatus(state=VmState.UNKNOWN, pid=handle.pid, reason="no VM created")
        except DriverError as exc:
            if not process.is_alive(handle.pid):
                return await self._ended(handle)
            return VmStatus(state=VmState.UNKNOWN, pid=handle.pid, reason=exc.detail)
        return VmStatus(state=_VM_STATES[info.state], pid=handle.pid, reason=info.state)

    async def wait(self, handle: VmHandle) -> VmStatus:
        """Until the VMM exits, or the guest kernel panics (CH idles on forever then)."""
        return await self._vmm.wait(handle, crash_reason=panic_reason, ended=self._ended)

    # -- stop, destroy -------------------------------------------------------------------

    async def stop(self, handle: VmHandle, grace_s: float) -> VmStatus:
        """Power button; after `grace_s` vm.shutdown + vmm.shutdown; then SIGKILL."""
        record = self._vmm.running(handle)
        if record is None:
            return await self._ended(handle)
        record.stop_requested = True
        save_record(handle.run_dir, record)
        await self._try(handle, ChvClient.power_button)
        if not await self._wait_stopped(handle, grace_s):
            record.forced = True
            save_record(handle.run_dir, record)
            log.info("vm.shutdown_after_grace alloc=%s grace_s=%s", handle.alloc_id, grace_s)
            await self._try(handle, ChvClient.shutdown)
        if process.is_alive(handle.pid):
            await self._try(handle, ChvClient.shutdown_vmm)
        if not await process.wait_exit_for(handle.pid, self._api_timeout_s, poll_s=self._poll_s):
            record.killed = True
            save_record(handle.run_dir, record)
            log.info("vm.kill alloc=%s pid=%d", handle.alloc_id, handle.pid)
            await self._vmm.kill(handle)
        return await self._ended(handle)

    async def _wait_stopped(self, handle: VmHandle, grace_s: float) -> bool:
        """Up to `grace_s` for the VMM to exit or the VM to reach state Shutdown."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while (left := deadline - loop.time()) > 0:
            step = min(left, self._poll_s)
            if await process.wait_exit_for(handle.pid, step, poll_s=self._poll_s):
                return True
            with contextlib.suppress(DriverError):
                # Bounded by the grace left: a hung VMM must not stretch the grace period.
                async with self._api(handle, min(self._api_timeout_s, max(left, 0.05))) as api:
                    if (await api.info()).state == "Shutdown":
                        return True
        return not process.is_alive(handle.pid)

    async def _try(self, handle: VmHandle, call: ApiCall) -> None:
        """One best-effort API call on the way down; the next step covers a failure."""
        try:
            async with self._api(handle) as api:
                await call(api)
        except ChvConnectionError as exc:
            log.info("vm.api_gone alloc=%s error=%s", handle.alloc_id, exc.detail)
        except DriverError as exc:
            log.warning("vm.api_failed alloc=%s error=%s", handle.alloc_id, exc.detail)

    async def destroy(self, handle: VmHandle) -> None:
        await self._vmm.destroy(handle, self._forget)

    async def _forget(self, handle: VmHandle) -> None:
        await self._exit_code(handle)  # reap it
        self._children.pop(handle.alloc_id, None)


def _is_ours(record: ChvRecord) -> bool:
    """The pid runs the command line we started (guards against pid reuse).

    The arguments must match exactly and the binary must come before them: an
    interpreted VMM (a script with a #! line) runs as `<interpreter> <binary> <args>`.
    """
    cmd = process.cmdline(record.pid)
    if cmd is None or not process.is_alive(record.pid):
        return False
    n_args = len(record.argv) - 1
    head, args = cmd[: len(cmd) - n_args], cmd[len(cmd) - n_args :]
    return args == record.argv[1:] and record.argv[0] in head


def _log_tail(run_dir: Path, lines: int = 5) -> str:
    """The last lines CH wrote (its log file, then its stderr), for start errors."""
    text: list[str] = []
    for name in (VMM_LOG, VMM_STDERR):
        text += [ln for ln in console_tail(run_dir / name).splitlines() if ln.strip()]
    return " | ".join(text[-lines:]) or "no output"
