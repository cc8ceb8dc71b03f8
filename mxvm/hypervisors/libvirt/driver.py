"""LibvirtDriver: microVMs as persistent libvirt domains named `mxvm-<alloc_id>`.

libvirtd, not the agent, is QEMU's parent, so VMs outlive an agent restart by
construction and `recover()` is a lookup by name. Domains are defined (persistent) rather
than created transient: once a VM ends, libvirt still holds its shut-off reason for
`inspect()`/`wait()`; `destroy()` undefines it.

`wait()` polls the domain's state (every `poll_interval_s`, 0.5 s by default) instead of
subscribing to lifecycle events: events need a libvirt event loop thread per process, and
the agent's own converge loop only needs "has it ended" at human time scales.

Host requirement: libvirt's QEMU user must be able to open /dev/kvm when it exists
(Debian's udev rule: 0660 root:kvm). Where it cannot (containers without udev leave
0600 root:root), libvirt 9.0 finds its cached QEMU capabilities invalid on every use and
re-probes QEMU ~10 times per domain start, turning a 0.5 s start into ~40 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from mxvm.errors import InvalidState
from mxvm.hypervisors.base import Capabilities, VmHandle, VmSpec, VmState, VmStatus
from mxvm.hypervisors.images import check_images
from mxvm.hypervisors.libvirt.conn import (
    Connection,
    DomainInfo,
    DomainNotFound,
    DomainState,
    DomainStateError,
    LibvirtError,
)
from mxvm.hypervisors.libvirt.state import (
    STATE_FILE,
    DomainRecord,
    ended_status,
    load_record,
    save_record,
)
from mxvm.hypervisors.libvirt.xml import (
    ROOT_DAC_LABEL,
    DomainType,
    domain_name,
    domain_xml,
)
from mxvm.hypervisors.qemu.argv import DEFAULT_GUEST_PORT
from mxvm.hypervisors.qemu.driver import detect_host_mhz
from mxvm.hypervisors.qemu.kvm_probe import probe_kvm
from mxvm.hypervisors.qemu.state import halted_reason
from mxvm.hypervisors.vmm_process import handle_record, log_ended

log = logging.getLogger(__name__)

NAME = "libvirt"
DEFAULT_URI = "qemu:///system"
_RUN_FILES = ("console.log", "guest.sock", STATE_FILE)


def default_pid_dir(uri: str) -> Path | None:
    """Where libvirtd's QEMU driver writes `<domain>.pid` for a local `uri`."""
    if uri.startswith("qemu:///system"):
        return Path("/run/libvirt/qemu")
    if uri.startswith("qemu:///session"):
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        return Path(runtime) / "libvirt" / "qemu" / "run"
    return None  # remote or non-QEMU: no local pid to read


def _emulator() -> str:
    return shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"


class LibvirtDriver:
    """The Driver protocol over libvirt's QEMU driver (`qemu:///system` by default).

    `pid` in handles and statuses is QEMU's pid, read from libvirtd's pidfile; where there
    is none (the `test:///` driver, remote URIs) it is libvirt's domain id instead.
    """

    def __init__(
        self,
        uri: str = DEFAULT_URI,
        *,
        domain_type: Literal["auto", "kvm", "qemu"] = "auto",
        emulator: str | None = None,
        guest_port: str = DEFAULT_GUEST_PORT,
        host_mhz: int | None = None,
        dac_label: str | None = ROOT_DAC_LABEL,
        pid_dir: Path | None = None,
        call_timeout_s: float = 30.0,
        poll_interval_s: float = 0.5,
        kvm_probe_timeout_s: float = 10.0,
    ) -> None:
        self.uri = uri
        self._conn = Connection(uri, timeout_s=call_timeout_s)
        self._domain_type: DomainType | None = None if domain_type == "auto" else domain_type
        self._emulator = emulator or _emulator()
        self._guest_port = guest_port
        self._host_mhz = host_mhz or detect_host_mhz()
        self._dac_label = dac_label
        self._pid_dir = pid_dir or default_pid_dir(uri)
        self._poll_s = poll_interval_s
        self._kvm_probe_timeout_s = kvm_probe_timeout_s
        self._probe_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return NAME

    @property
    def emulator(self) -> str:
        """The QEMU binary libvirt runs (and the KVM probe tries)."""
        return self._emulator

    def capabilities(self) -> Capabilities:
        """`kvm` is known after `select_domain_type()` (or the first start) on auto."""
        return Capabilities(
            name=NAME,
            kvm=self._domain_type == "kvm",
            graceful_stop=True,
            recover=True,
            device_passthrough=Path("/dev/vfio/vfio").exists(),
        )

    async def close(self) -> None:
        await self._conn.close()

    async def select_domain_type(self, kernel: Path | None) -> DomainType:
        """The domain type: as configured, or (auto) "kvm" when the qemu driver's KVM probe
        boots `kernel` under KVM, else "qemu" (TCG)."""
        async with self._probe_lock:
            if self._domain_type is None:
                probe = await probe_kvm(self._emulator, kernel, timeout_s=self._kvm_probe_timeout_s)
                self._domain_type = "kvm" if probe.usable else "qemu"
            return self._domain_type

    # -- start ---------------------------------------------------------------------------

    async def start(self, spec: VmSpec) -> VmHandle:
        check_images(spec)
        domain_type = await self.select_domain_type(spec.kernel)
        await self._prepare(spec)
        xml = domain_xml(
            spec,
            domain_type=domain_type,
            emulator=self._emulator,
            host_mhz=self._host_mhz,
            guest_port=self._guest_port,
            dac_label=self._dac_label,
        )
        info = await self._conn.define_and_start(xml)
        pid = self._pid(info)
        record = DomainRecord(
            alloc_id=spec.alloc_id,
            domain=info.name,
            uuid=info.uuid,
            pid=pid,
            domain_type=domain_type,
            started_at=datetime.now(UTC),
        )
        save_record(spec.run_dir, record)
        log.info(
            "vm.started alloc=%s domain=%s pid=%d type=%s",
            spec.alloc_id,
            info.name,
            pid,
            domain_type,
        )
        return VmHandle(alloc_id=spec.alloc_id, driver=NAME, pid=pid, run_dir=spec.run_dir)

    async def _prepare(self, spec: VmSpec) -> None:
        """Refuse a second VM for the allocation; clear what an ended one left behind."""
        spec.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = await self._lookup(spec.alloc_id)
        if old is not None and old.active:
            raise InvalidState(f"allocation {spec.alloc_id} already has a VM (domain {old.name})")
        if old is not None:
            await self._undefine(old.name)
        for name in _RUN_FILES:
            (spec.run_dir / name).unlink(missing_ok=True)

    def _pid(self, info: DomainInfo) -> int:
        if self._pid_dir is not None:
            try:
                return int((self._pid_dir / f"{info.name}.pid").read_text().strip())
            except (OSError, ValueError):
                log.warning("libvirt.no_pidfile domain=%s dir=%s", info.name, self._pid_dir)
        if info.id is None:
            raise LibvirtError(f"domain {info.name} has neither a pidfile nor an id")
        return info.id

    # -- lookups -------------------------------------------------------------------------

    async def _lookup(self, alloc_id: str) -> DomainInfo | None:
        try:
            return await self._conn.info(domain_name(alloc_id))
        except DomainNotFound:
            return None

    async def _live(self, handle: VmHandle) -> DomainInfo | None:
        """The domain while it still runs the handle's VM (same QEMU pid); else None."""
        info = await self._lookup(handle.alloc_id)
        if info is None or not info.active or self._pid(info) != handle.pid:
            return None
        return info

    async def _ended(self, handle: VmHandle) -> VmStatus:
        info = await self._lookup(handle.alloc_id)
        record = handle_record(handle, load_record)
        if info is not None and record is not None and info.uuid != record.uuid:
            info = None  # a later definition under the same name: not this VM's verdict
        return ended_status(record, info, handle.console_log)

    # -- recover, inspect, wait ----------------------------------------------------------

    async def recover(self, alloc_id: str, run_dir: Path) -> VmHandle | None:
        info = await self._lookup(alloc_id)
        if info is None or not info.active:
            log.info("vm.recover_gone alloc=%s", alloc_id)
            return None
        pid = self._pid(info)
        log.info("vm.recovered alloc=%s domain=%s pid=%d", alloc_id, info.name, pid)
        return VmHandle(alloc_id=alloc_id, driver=NAME, pid=pid, run_dir=run_dir)

    async def inspect(self, handle: VmHandle) -> VmStatus:
        info = await self._live(handle)
        if info is None:
            return await self._ended(handle)
        # A guest whose kernel halted in boot leaves QEMU (and so the domain) running.
        halted = halted_reason(handle.console_log)
        if halted is not None:
            return VmStatus(state=VmState.CRASHED, pid=handle.pid, reason=halted)
        if info.state is DomainState.CRASHED:  # on_crash other than destroy keeps QEMU
            return VmStatus(state=VmState.CRASHED, pid=handle.pid, reason="guest crashed")
        return VmStatus(state=VmState.RUNNING, pid=handle.pid, reason=info.state.name.lower())

    async def wait(self, handle: VmHandle) -> VmStatus:
        """Until the domain stops running, or the guest kernel halts in boot."""
        while True:
            status = await self.inspect(handle)
            if status.state is not VmState.RUNNING:
                break
            await asyncio.sleep(self._poll_s)
        log_ended(log, handle, status)
        return status

    # -- stop, destroy -------------------------------------------------------------------

    async def stop(self, handle: VmHandle, grace_s: float) -> VmStatus:
        info = await self._live(handle)
        if info is None:
            return await self._ended(handle)
        record = load_record(handle.run_dir) or self._rebuilt_record(handle, info)
        record.stop_requested = True
        save_record(handle.run_dir, record)
        try:
            await self._conn.shutdown(info.name)
        except LibvirtError as exc:
            log.warning("vm.powerdown_failed alloc=%s error=%s", handle.alloc_id, exc.detail)
        if not await self._ends_within(handle, grace_s):
            record.killed = True
            save_record(handle.run_dir, record)
            log.info("vm.kill_after_grace alloc=%s grace_s=%s", handle.alloc_id, grace_s)
            with contextlib.suppress(DomainNotFound, DomainStateError):
                await self._conn.destroy(info.name)  # returns once QEMU is gone
        return await self._ended(handle)

    def _rebuilt_record(self, handle: VmHandle, info: DomainInfo) -> DomainRecord:
        """vm.json went missing under a running VM: enough of it to record how it ends."""
        handle.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return DomainRecord(
            alloc_id=handle.alloc_id,
            domain=info.name,
            uuid=info.uuid,
            pid=handle.pid,
            domain_type=self._domain_type or "unknown",
            started_at=datetime.now(UTC),
        )

    async def _ends_within(self, handle: VmHandle, seconds: float) -> bool:
        deadline = asyncio.get_running_loop().time() + seconds
        while await self._live(handle) is not None:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(min(self._poll_s, 0.2))
        return True

    async def destroy(self, handle: VmHandle) -> None:
        name = domain_name(handle.alloc_id)
        with contextlib.suppress(DomainNotFound, DomainStateError):
            await self._conn.destroy(name)
        await self._undefine(name)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(handle.run_dir)
        log.info("vm.destroyed alloc=%s domain=%s pid=%d", handle.alloc_id, name, handle.pid)

    async def _undefine(self, name: str) -> None:
        with contextlib.suppress(DomainNotFound):
            await self._conn.undefine(name)
