"""What a cloud-hypervisor VM leaves in its run_dir for the next agent (vm.json), and how
a VM whose VMM has exited ended.

CH exits by itself when the guest powers off (status 0) and on vmm.shutdown; a guest
panic leaves it running (the kernel runs with panic=0), so the console tells that case.
The exit status is known only to the driver instance that spawned the VMM.
"""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mxvm.hypervisors.base import VmState, VmStatus
from mxvm.hypervisors.qemu.state import console_tail
from mxvm.hypervisors.statefile import load_model, save_model

STATE_FILE = "vm.json"
_POWER_OFF = "reboot: Power down"
_PANIC = "Kernel panic"


class ChvRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alloc_id: str
    pid: int
    argv: list[str]
    api_socket: Path
    started_at: datetime
    stop_requested: bool = False
    forced: bool = False  # vm.shutdown after the grace period: the guest did not power off
    killed: bool = False


def save_record(run_dir: Path, record: ChvRecord) -> None:
    save_model(run_dir / STATE_FILE, record)


def load_record(run_dir: Path) -> ChvRecord | None:
    return load_model(run_dir / STATE_FILE, ChvRecord)


def panic_reason(console_log: Path) -> str | None:
    """The guest kernel's panic line, when the console shows one."""
    for line in reversed(console_tail(console_log).splitlines()):
        if _PANIC in line:
            return "guest " + line[line.index(_PANIC) :].strip()
    return None


def _exit_text(pid: int, exit_code: int) -> str:
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"cloud-hypervisor (pid {pid}) was killed by {name}"
    return f"cloud-hypervisor (pid {pid}) exited with status {exit_code}"


def _requested(record: ChvRecord) -> VmStatus | None:
    reason = ""
    if record.killed:
        reason = "killed after the grace period"
    elif record.forced:
        reason = "shut down after the grace period"
    elif record.stop_requested:
        reason = "stopped on request"
    return VmStatus(state=VmState.STOPPED, pid=record.pid, reason=reason) if reason else None


def exit_status(record: ChvRecord | None, console_log: Path, exit_code: int | None) -> VmStatus:
    """How a VM whose cloud-hypervisor process is gone ended."""
    if record is None:
        return VmStatus(state=VmState.STOPPED, reason="no run state (destroyed)")
    panic = panic_reason(console_log)
    if panic is not None:
        return VmStatus(state=VmState.CRASHED, pid=record.pid, reason=panic, exit_code=exit_code)
    if _POWER_OFF in console_tail(console_log):
        return VmStatus(
            state=VmState.STOPPED, pid=record.pid, reason="guest powered off", exit_code=exit_code
        )
    requested = _requested(record)
    if requested is not None:
        return requested.model_copy(update={"exit_code": exit_code})
    if exit_code == 0:
        # CH exits 0 once the guest has shut down, even without the console saying so.
        return VmStatus(
            state=VmState.STOPPED, pid=record.pid, reason="guest shut down", exit_code=0
        )
    reason = (
        _exit_text(record.pid, exit_code)
        if exit_code is not None
        else f"cloud-hypervisor (pid {record.pid}) exited without a guest power-off"
    )
    return VmStatus(state=VmState.CRASHED, pid=record.pid, reason=reason, exit_code=exit_code)
