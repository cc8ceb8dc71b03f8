"""What a QEMU VM leaves in its run_dir for the next agent: vm.json, and how it ended.

A daemonized QEMU is not our child, so its exit status is out of reach. How it ended is
read instead from what we recorded (stop asked, kill sent) and from the guest's serial
console, where the kernel always prints (at KERN_EMERG) "reboot: Power down" on a clean
power-off and "Kernel panic" on a panic.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mxvm.hypervisors.base import VmState, VmStatus
from mxvm.hypervisors.statefile import load_model, save_model

STATE_FILE = "vm.json"
_TAIL_BYTES = 64 * 1024
_POWER_OFF = "reboot: Power down"
_RESTART = "reboot: Restarting system"
_PANIC = "Kernel panic"
_HALTED = "-- System halted"  # the x86 boot decompressor's last words; QEMU keeps running


class VmRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alloc_id: str
    pid: int
    argv: list[str]
    accel: str
    started_at: datetime
    stop_requested: bool = False
    killed: bool = False


def save_record(run_dir: Path, record: VmRecord) -> None:
    save_model(run_dir / STATE_FILE, record)


def load_record(run_dir: Path) -> VmRecord | None:
    return load_model(run_dir / STATE_FILE, VmRecord)


def console_tail(console_log: Path) -> str:
    try:
        with console_log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _panic_line(tail: str) -> str | None:
    for line in reversed(tail.splitlines()):
        if _PANIC in line:
            return line[line.index(_PANIC) :].strip()
    return None


def halted_reason(console_log: Path) -> str | None:
    """Why the guest kernel halted before it started (corrupt image, too little memory)."""
    tail = console_tail(console_log)
    if _HALTED not in tail:
        return None
    before = [line.strip() for line in tail[: tail.rindex(_HALTED)].splitlines() if line.strip()]
    return f"guest kernel halted during boot: {before[-1] if before else 'no message'}"


def exit_status(record: VmRecord | None, console_log: Path) -> VmStatus:
    """How a VM whose QEMU process is gone ended."""
    if record is None:
        return VmStatus(state=VmState.STOPPED, reason="no run state (destroyed)")
    tail = console_tail(console_log)
    panic = _panic_line(tail)
    if panic is not None:
        return VmStatus(state=VmState.CRASHED, pid=record.pid, reason=f"guest {panic}")
    if _POWER_OFF in tail:
        return VmStatus(state=VmState.STOPPED, pid=record.pid, reason="guest powered off")
    if _RESTART in tail:
        return VmStatus(state=VmState.STOPPED, pid=record.pid, reason="guest rebooted")
    if record.killed:
        return VmStatus(
            state=VmState.STOPPED, pid=record.pid, reason="killed after the grace period"
        )
    if record.stop_requested:
        return VmStatus(state=VmState.STOPPED, pid=record.pid, reason="stopped on request")
    return VmStatus(
        state=VmState.CRASHED,
        pid=record.pid,
        reason=f"QEMU (pid {record.pid}) exited without a guest power-off",
    )
