"""Watching processes we may not be the parent of: liveness, identity, exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mxvm.hypervisors import process
from mxvm.hypervisors.qemu.state import VmRecord, exit_status, halted_reason, load_record


def test_alive_cmdline_and_identity() -> None:
    me = os.getpid()
    assert process.is_alive(me)
    argv = process.cmdline(me)
    assert argv is not None
    assert argv == sys.orig_argv
    assert process.is_our_process(me, argv)
    assert not process.is_our_process(me, ["qemu-system-x86_64"])
    assert process.cmdline(2**22 + 1) is None


def test_zombie_counts_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while process.is_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process.is_alive(child.pid)  # exited but not reaped yet: a zombie
    assert Path(f"/proc/{child.pid}").exists()
    child.wait()


async def test_wait_exit_and_timeout() -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(0.3)"
    )
    try:
        assert not await process.wait_exit_for(child.pid, 0.05)
        assert await process.wait_exit_for(child.pid, 10)
    finally:
        await child.wait()
    await asyncio.wait_for(process.wait_exit(child.pid), 1)  # already gone: returns at once


def test_pidfile(tmp_path: Path) -> None:
    (tmp_path / "p").write_text("1234\n")
    assert process.read_pidfile(tmp_path / "p") == 1234
    (tmp_path / "p").write_text("garbage")
    assert process.read_pidfile(tmp_path / "p") is None
    assert process.read_pidfile(tmp_path / "absent") is None


def test_exit_classification_from_console(tmp_path: Path) -> None:
    record = VmRecord(alloc_id="a", pid=42, argv=["q"], accel="tcg", started_at=datetime.now(UTC))
    log = tmp_path / "console.log"
    log.write_text("[ 1.0] reboot: Power down\n")
    assert exit_status(record, log).reason == "guest powered off"
    log.write_text("[ 1.0] Kernel panic - not syncing: Attempted to kill init!\n")
    assert exit_status(record, log).reason.startswith("guest Kernel panic - not syncing")
    log.write_text("")
    assert exit_status(record, log).state.value == "crashed"
    record.stop_requested = True
    assert exit_status(record, log).reason == "stopped on request"
    assert exit_status(None, log).reason == "no run state (destroyed)"
    log.write_text("Decoding failed\n\n -- System halted")
    assert halted_reason(log) == "guest kernel halted during boot: Decoding failed"
    assert load_record(tmp_path) is None
