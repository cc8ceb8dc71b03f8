"""What a libvirt VM leaves in its run_dir (vm.json), and how an ended VM ended.

The verdict comes first from the guest's serial console, the same evidence the qemu
driver reads (a panic or a decompressor halt is a crash, "reboot: Power down" a clean
power-off), then from what mxvm asked for (stop, kill after the grace), and last from
libvirt's own shut-off reason, which the domain keeps because it is persistent.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mxvm.hypervisors.base import VmState, VmStatus
from mxvm.hypervisors.libvirt.conn import DomainInfo, DomainState, ShutoffReason
from mxvm.hypervisors.qemu.state import console_tail, halted_reason
from mxvm.hypervisors.statefile import load_model, save_model

STATE_FILE = "vm.json"
_POWER_OFF = "reboot: Power down"
_PANIC = "Kernel panic"

_SHUTOFF: dict[ShutoffReason, tuple[VmState, str]] = {
    ShutoffReason.SHUTDOWN: (VmState.STOPPED, "guest powered off"),
    ShutoffReason.DESTROYED: (VmState.CRASHED, "domain destroyed outside mxvm"),
    ShutoffReason.CRASHED: (VmState.CRASHED, "QEMU crashed"),
    ShutoffReason.FAILED: (VmState.CRASHED, "QEMU failed to start"),
    ShutoffReason.DAEMON: (VmState.CRASHED, "QEMU ended while libvirtd was not running"),
    ShutoffReason.SAVED: (VmState.STOPPED, "domain saved"),
    ShutoffReason.MIGRATED: (VmState.STOPPED, "domain migrated away"),
    ShutoffReason.FROM_SNAPSHOT: (VmState.STOPPED, "domain reverted to a snapshot"),
}


class DomainRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alloc_id: str
    domain: str
    uuid: str
    pid: int
    domain_type: str
    started_at: datetime
    stop_requested: bool = False
    killed: bool = False


def save_record(run_dir: Path, record: DomainRecord) -> None:
    save_model(run_dir / STATE_FILE, record)


def load_record(run_dir: Path) -> DomainRecord | None:
    return load_model(run_dir / STATE_FILE, DomainRecord)


def _console_verdict(console_log: Path) -> tuple[VmState, str] | None:
    tail = console_tail(console_log)
    for line in reversed(tail.splitlines()):
        if _PANIC in line:
            return VmState.CRASHED, "guest " + line[line.index(_PANIC) :].strip()
    halted = halted_reason(console_log)
    if halted is not None:
        return VmState.CRASHED, halted
    if _POWER_OFF in tail:
        return VmState.STOPPED, "guest powered off"
    return None


def _libvirt_verdict(info: DomainInfo | None) -> tuple[VmState, str]:
    if info is None:
        return VmState.CRASHED, "domain vanished (undefined outside mxvm)"
    if info.state is DomainState.CRASHED:
        return VmState.CRASHED, "QEMU crashed"
    try:
        return _SHUTOFF[ShutoffReason(info.reason)]
    except (ValueError, KeyError):
        return VmState.CRASHED, "QEMU exited without a guest power-off"


def ended_status(
    record: DomainRecord | None, info: DomainInfo | None, console_log: Path
) -> VmStatus:
    """How a VM whose domain no longer runs ended; `info` is None once it is undefined."""
    if record is None:
        return VmStatus(state=VmState.STOPPED, reason="no run state (destroyed)")
    verdict = _console_verdict(console_log)
    if verdict is None and record.killed:
        verdict = VmState.STOPPED, "killed after the grace period"
    if verdict is None and record.stop_requested:
        verdict = VmState.STOPPED, "stopped on request"
    state, reason = verdict or _libvirt_verdict(info)
    return VmStatus(state=state, pid=record.pid, reason=reason)
