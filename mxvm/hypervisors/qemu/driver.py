"""QemuDriver: microVMs as detached QEMU processes, controlled over QMP.

Detachment: QEMU is started with `start_new_session=True` and `-daemonize`, so it leaves
the agent's session and process group and is reparented to init; an agent restart or
`kill -9` does not take VMs with it, and `recover()` re-adopts them from run_dir/vm.json.
Where systemd is PID 1, production should rather start QEMU in a transient unit
(`systemd-run --unit=mxvm-<alloc> --property=KillMode=mixed --collect -- qemu ...`
without -daemonize), which also moves it out of the agent's cgroup; the rest of this
driver (pidfile, QMP, vm.json) stays the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from mxvm.hypervisors import process
from mxvm.hypervisors.base import (
    Capabilities,
    DriverError,
    VmHandle,
    VmSpec,
    VmState,
    VmStatus,
)
from mxvm.hypervisors.images import check_images
from mxvm.hypervisors.qemu.argv import DEFAULT_GUEST_PORT, Accel, build_argv
from mxvm.hypervisors.qemu.kvm_probe import probe_kvm
from mxvm.hypervisors.qemu.qmp import QmpClient, QmpStatus
from mxvm.hypervisors.qemu.state import (
    VmRecord,
    exit_status,
    halted_reason,
    load_record,
    save_record,
)
from mxvm.hypervisors.vmm_process import VmmProcesses

log = logging.getLogger(__name__)

NAME = "qemu"
# Cleared before each start (the console is appended to: a restart must not see the last
# boot's panic at its tail).
_RUN_FILES = ("qmp.sock", "guest.sock", "vmm.pid", "vm.json", "console.log", "console.log.1")
_CRASHED_RUNSTATES = frozenset({"guest-panicked", "internal-error", "io-error"})


def detect_host_mhz() -> int:
    """The host CPU clock in MHz, for the TCG guest's tsc_early_khz."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return round(float(line.partition(":")[2]))
    except (OSError, ValueError):
        pass
    return 2000


class QemuDriver:
    """The Driver protocol over QEMU's microvm machine."""

    def __init__(
        self,
        *,
        qemu_binary: str = "qemu-system-x86_64",
        accel: Literal["auto", "kvm", "tcg"] = "auto",
        guest_port: str = DEFAULT_GUEST_PORT,
        host_mhz: int | None = None,
        start_timeout_s: float = 15.0,
        qmp_timeout_s: float = 5.0,
        kill_timeout_s: float = 10.0,
        poll_interval_s: float = 0.2,
        kvm_probe_timeout_s: float = 10.0,
    ) -> None:
        self._binary = qemu_binary
        self._guest_port = guest_port
        self._host_mhz = host_mhz or detect_host_mhz()
        self._start_timeout_s = start_timeout_s
        self._qmp_timeout_s = qmp_timeout_s
        self._poll_s = poll_interval_s
        self._kvm_probe_timeout_s = kvm_probe_timeout_s
        self._accel: Accel | None = None if accel == "auto" else accel
        self._probe_lock = asyncio.Lock()
        self._qmp_locks: dict[str, asyncio.Lock] = {}
        self._start_locks: dict[str, asyncio.Lock] = {}
        self._vmm = VmmProcesses(
            driver=NAME,
            vmm="QEMU",
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
        """`kvm` is known after `select_accel()` (or the first start) on accel=auto."""
        return Capabilities(
            name=NAME,
            kvm=self._accel == "kvm",
            graceful_stop=True,
            recover=True,
            device_passthrough=Path("/dev/vfio/vfio").exists(),
        )

    async def select_accel(self, kernel: Path | None) -> Accel:
        """KVM when configured, or (auto) when the probe boots `kernel` under it; else TCG."""
        async with self._probe_lock:
            if self._accel is None:
                probe = await probe_kvm(self._binary, kernel, timeout_s=self._kvm_probe_timeout_s)
                self._accel = "kvm" if probe.usable else "tcg"
            return self._accel

    # -- start ---------------------------------------------------------------------------

    async def start(self, spec: VmSpec) -> VmHandle:
        check_images(spec)
        accel = await self.select_accel(spec.kernel)
        async with self._start_locks.setdefault(spec.alloc_id, asyncio.Lock()):
            return await self._start(spec, accel)

    async def _start(self, spec: VmSpec, accel: Accel) -> VmHandle:
        self._vmm.prepare_run_dir(spec, _RUN_FILES)
        argv = build_argv(
            spec,
            accel=accel,
            host_mhz=self._host_mhz,
            qemu_binary=self._binary,
            guest_port=self._guest_port,
        )
        # Recorded before QEMU runs, its pid still unknown (QEMU daemonizes): an agent killed
        # meanwhile leaves a VM that `recover` still finds, by its command line.
        record = VmRecord(
            alloc_id=spec.alloc_id, pid=0, argv=argv, accel=accel, started_at=datetime.now(UTC)
        )
        save_record(spec.run_dir, record)
        record.pid = pid = await self._spawn(spec, argv)
        save_record(spec.run_dir, record)
        handle = VmHandle(alloc_id=spec.alloc_id, driver=NAME, pid=pid, run_dir=spec.run_dir)
        try:
            await self._query(handle, timeout_s=self._start_timeout_s)
        except BaseException:  # also cancellation: never leave an unowned QEMU behind
            process.kill(pid)
            raise
        log.info("vm.started alloc=%s pid=%d accel=%s", spec.alloc_id, pid, accel)
        return handle

    async def _spawn(self, spec: VmSpec, argv: list[str]) -> int:
        """Run QEMU; with -daemonize its first process exits once the VM is set up."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise DriverError(f"cannot run {self._binary}: {exc.strerror}") from exc
        try:
            async with asyncio.timeout(self._start_timeout_s):
                _, stderr = await proc.communicate()
        except BaseException as exc:  # timeout or cancellation: kill what was started
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            self._kill_pidfile(spec)
            if isinstance(exc, TimeoutError):
                timeout = self._start_timeout_s
                raise DriverError(f"QEMU did not finish starting in {timeout}s") from exc
            raise
        message = stderr.decode(errors="replace").strip()
        if proc.returncode != 0:
            raise DriverError(f"QEMU failed to start (exit {proc.returncode}): {message}")
        pid = process.read_pidfile(spec.pidfile)
        if pid is None:
            raise DriverError(f"QEMU started but wrote no pid to {spec.pidfile}: {message}")
        return pid

    def _kill_pidfile(self, spec: VmSpec) -> None:
        pid = process.read_pidfile(spec.pidfile)
        if pid is not None:
            process.kill(pid)

    # -- QMP -----------------------------------------------------------------------------

    async def _query(self, handle: VmHandle, *, timeout_s: float | None = None) -> QmpStatus:
        """query-status, retrying the connection until `timeout_s` (QEMU may be starting)."""
        deadline = asyncio.get_running_loop().time() + (timeout_s or self._qmp_timeout_s)
        sock = handle.qmp_socket
        while True:
            try:
                async with self._qmp_lock(handle), await self._connect(sock) as qmp:
                    return await qmp.query_status()
            except DriverError:
                now = asyncio.get_running_loop().time()
                if now >= deadline or not process.is_alive(handle.pid):
                    raise
            await asyncio.sleep(self._poll_s)

    async def _connect(self, sock: Path) -> QmpClient:
        return await QmpClient.connect(sock, timeout_s=self._qmp_timeout_s)

    def _qmp_lock(self, handle: VmHandle) -> asyncio.Lock:
        # QEMU serves one QMP client at a time; serialise ours rather than queue in backlog.
        return self._qmp_locks.setdefault(handle.alloc_id, asyncio.Lock())

    # -- recover, inspect, wait ----------------------------------------------------------

    async def recover(self, alloc_id: str, run_dir: Path) -> VmHandle | None:
        return await self._vmm.recover(alloc_id, run_dir, self._query)

    async def _ended(self, handle: VmHandle) -> VmStatus:
        return exit_status(self._vmm.record(handle), handle.console_log)

    async def inspect(self, handle: VmHandle) -> VmStatus:
        if self._vmm.running(handle) is None:
            return await self._ended(handle)
        halted = halted_reason(handle.console_log)
        if halted is not None:
            return VmStatus(state=VmState.CRASHED, pid=handle.pid, reason=halted)
        try:
            status = await self._query(handle)
        except DriverError as exc:
            if not process.is_alive(handle.pid):
                return await self._ended(handle)
            return VmStatus(state=VmState.UNKNOWN, pid=handle.pid, reason=exc.detail)
        if status.status in _CRASHED_RUNSTATES:
            return VmStatus(state=VmState.CRASHED, pid=handle.pid, reason=status.status)
        return VmStatus(state=VmState.RUNNING, pid=handle.pid, reason=status.status)

    async def wait(self, handle: VmHandle) -> VmStatus:
        """Until QEMU exits, or the guest kernel halts in boot (QEMU idles on forever then)."""
        return await self._vmm.wait(handle, crash_reason=halted_reason, ended=self._ended)

    # -- stop, destroy -------------------------------------------------------------------

    async def stop(self, handle: VmHandle, grace_s: float) -> VmStatus:
        record = self._vmm.running(handle)
        if record is None:
            return await self._ended(handle)
        record.stop_requested = True
        save_record(handle.run_dir, record)
        sock = handle.qmp_socket
        try:
            async with self._qmp_lock(handle), await self._connect(sock) as qmp:
                await qmp.system_powerdown()
        except DriverError as exc:
            log.warning("vm.powerdown_failed alloc=%s error=%s", handle.alloc_id, exc.detail)
        if not await process.wait_exit_for(handle.pid, grace_s, poll_s=self._poll_s):
            record.killed = True
            save_record(handle.run_dir, record)
            log.info("vm.kill_after_grace alloc=%s grace_s=%s", handle.alloc_id, grace_s)
            await self._vmm.kill(handle)
        return await self._ended(handle)

    async def destroy(self, handle: VmHandle) -> None:
        await self._vmm.destroy(handle, self._forget)

    async def _forget(self, handle: VmHandle) -> None:
        self._qmp_locks.pop(handle.alloc_id, None)
        self._start_locks.pop(handle.alloc_id, None)


def _is_ours(record: VmRecord) -> bool:
    return process.is_our_process(record.pid, record.argv)
