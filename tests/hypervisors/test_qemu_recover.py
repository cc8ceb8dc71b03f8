"""recover() refuses what is not provably our QEMU (no VM needed)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from mxvm.hypervisors import VmHandle, VmState
from mxvm.hypervisors.qemu import QemuDriver
from mxvm.hypervisors.qemu.state import VmRecord, save_record


def record(pid: int, argv: list[str]) -> VmRecord:
    return VmRecord(alloc_id="a1", pid=pid, argv=argv, accel="tcg", started_at=datetime.now(UTC))


async def test_no_state_file(tmp_path: Path) -> None:
    assert await QemuDriver().recover("a1", tmp_path) is None


async def test_live_pid_with_another_command_line_is_not_adopted(tmp_path: Path) -> None:
    # The recorded pid is alive (it is us) but runs something else: a reused pid.
    save_record(tmp_path, record(os.getpid(), ["qemu-system-x86_64", "-name", "mxvm-a1"]))
    assert await QemuDriver().recover("a1", tmp_path) is None


async def test_dead_pid_is_not_adopted_and_reads_as_crashed(tmp_path: Path) -> None:
    save_record(tmp_path, record(2**22 + 7, ["qemu-system-x86_64"]))
    driver = QemuDriver()
    assert await driver.recover("a1", tmp_path) is None
    handle = VmHandle(alloc_id="a1", driver="qemu", pid=2**22 + 7, run_dir=tmp_path)
    status = await driver.inspect(handle)
    assert status.state is VmState.CRASHED
    assert (await driver.wait(handle)) == status


async def test_wrong_allocation_is_not_adopted(tmp_path: Path) -> None:
    save_record(tmp_path, record(os.getpid(), sys.orig_argv))
    assert await QemuDriver().recover("other", tmp_path) is None
