"""VmmProcesses over a real detached process (sleep) standing in for a VMM: no VM needed."""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mxvm.errors import InvalidState
from mxvm.hypervisors import DriverError, VmHandle, VmSpec, VmState, VmStatus, process
from mxvm.hypervisors.qemu.state import VmRecord, load_record, save_record
from mxvm.hypervisors.vmm_process import VmmProcesses, handle_record

ARGV = ["sleep", "300"]


def vmms() -> VmmProcesses[VmRecord]:
    return VmmProcesses(
        driver="test",
        vmm="TESTVMM",
        load=load_record,
        save=save_record,
        is_ours=lambda r: process.is_our_process(r.pid, r.argv),
        log=logging.getLogger("tests.vmm_process"),
        kill_timeout_s=5.0,
        poll_s=0.05,
    )


def started(argv: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, start_new_session=True)
    # Popen returns once forked: until the child has exec'd, its command line is still ours.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1] != [
        a.encode() for a in argv
    ]:
        assert time.monotonic() < deadline, "the stand-in VMM never started"
        time.sleep(0.005)
    return proc


@pytest.fixture
def vmm() -> Iterator[subprocess.Popen[bytes]]:
    proc = started(ARGV)
    yield proc
    proc.kill()
    proc.wait()


def record(pid: int, alloc_id: str = "a1", argv: list[str] = ARGV) -> VmRecord:
    now = datetime.now(UTC)
    return VmRecord(alloc_id=alloc_id, pid=pid, argv=argv, accel="tcg", started_at=now)


def handle_for(pid: int, run_dir: Path) -> VmHandle:
    return VmHandle(alloc_id="a1", driver="test", pid=pid, run_dir=run_dir)


async def test_recover_adopts_our_process_after_probing_it(
    vmm: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    save_record(tmp_path, record(vmm.pid))
    probed: list[VmHandle] = []

    async def probe(handle: VmHandle) -> None:
        probed.append(handle)

    handle = await vmms().recover("a1", tmp_path, probe)
    assert handle == handle_for(vmm.pid, tmp_path)
    assert probed == [handle]


async def test_recover_refuses_what_is_not_ours(
    vmm: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    async def probe(handle: VmHandle) -> None:
        raise AssertionError("must not probe a VMM that is not ours")

    assert await vmms().recover("a1", tmp_path, probe) is None  # no record
    save_record(tmp_path, record(vmm.pid))
    assert await vmms().recover("other", tmp_path, probe) is None
    save_record(tmp_path, record(vmm.pid, argv=["sleep", "301"]))  # a reused pid
    assert await vmms().recover("a1", tmp_path, probe) is None


async def test_recover_raises_when_the_probe_does(
    vmm: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    save_record(tmp_path, record(vmm.pid))

    async def mute(handle: VmHandle) -> None:
        raise DriverError("not answering")

    with pytest.raises(DriverError, match="not answering"):
        await vmms().recover("a1", tmp_path, mute)


def test_records_belong_to_the_handles_pid(vmm: subprocess.Popen[bytes], tmp_path: Path) -> None:
    save_record(tmp_path, record(vmm.pid))
    assert vmms().running(handle_for(vmm.pid, tmp_path)) is not None
    other = handle_for(vmm.pid + 1, tmp_path)  # an earlier VM of the same allocation
    assert vmms().running(other) is None
    assert handle_record(other, load_record) is None
    assert vmms().record(handle_for(vmm.pid, tmp_path)) == load_record(tmp_path)


def test_prepare_run_dir_refuses_a_running_vm_and_clears_an_ended_one(
    vmm: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    spec = VmSpec(
        alloc_id="a1", name="t", vcpus=1, memory_mb=256, kernel=Path("/k"), run_dir=tmp_path
    )
    save_record(tmp_path, record(vmm.pid))
    (tmp_path / "qmp.sock").touch()
    with pytest.raises(InvalidState, match=f"already has a VM \\(pid {vmm.pid}\\)"):
        vmms().prepare_run_dir(spec, ["qmp.sock"])
    assert (tmp_path / "qmp.sock").exists()
    save_record(tmp_path, record(vmm.pid, argv=["sleep", "301"]))
    vmms().prepare_run_dir(spec, ["qmp.sock", "absent"])
    assert not (tmp_path / "qmp.sock").exists()


async def test_destroy_kills_forgets_and_removes_the_run_dir(
    vmm: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_record(run_dir, record(vmm.pid))
    forgotten: list[VmHandle] = []

    async def forget(handle: VmHandle) -> None:
        forgotten.append(handle)

    handle = handle_for(vmm.pid, run_dir)
    await vmms().destroy(handle, forget)
    assert not process.is_alive(vmm.pid)
    assert not run_dir.exists()
    assert forgotten == [handle]
    await vmms().destroy(handle, forget)  # idempotent
    assert forgotten == [handle, handle]


async def test_wait_returns_the_console_crash_while_the_vmm_idles_on(
    vmm: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    save_record(tmp_path, record(vmm.pid))
    (tmp_path / "console.log").write_text("Kernel panic - not syncing\n")

    async def ended(handle: VmHandle) -> VmStatus:
        raise AssertionError("the VMM still runs")

    status = await vmms().wait(
        handle_for(vmm.pid, tmp_path),
        crash_reason=lambda log: log.read_text().strip(),
        ended=ended,
    )
    assert status == VmStatus(
        state=VmState.CRASHED, pid=vmm.pid, reason="Kernel panic - not syncing"
    )
    assert process.is_alive(vmm.pid)


async def test_wait_returns_how_it_ended_once_the_vmm_exits(
    vmm: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    save_record(tmp_path, record(vmm.pid))
    handle = handle_for(vmm.pid, tmp_path)
    await vmms().kill(handle)

    async def ended(h: VmHandle) -> VmStatus:
        return VmStatus(state=VmState.STOPPED, pid=h.pid, reason="ended")

    status = await vmms().wait(handle, crash_reason=lambda log: None, ended=ended)
    assert status.reason == "ended"


async def test_a_vmm_whose_pid_was_never_noted_is_found_and_not_doubled(tmp_path: Path) -> None:
    # The record is written before the VMM runs, with pid 0: a starter killed before it
    # learnt the pid leaves a VMM that is found by its (unique) command line.
    argv = ["sleep", f"300.{secrets.randbelow(10**9)}"]

    async def probe(handle: VmHandle) -> None:
        pass

    save_record(tmp_path, record(0, argv=argv))
    assert await vmms().recover("a1", tmp_path, probe) is None  # it never ran
    proc = started(argv)
    try:
        spec = VmSpec(
            alloc_id="a1", name="t", vcpus=1, memory_mb=256, kernel=Path("/k"), run_dir=tmp_path
        )
        with pytest.raises(InvalidState, match=f"already has a VM \\(pid {proc.pid}\\)"):
            vmms().prepare_run_dir(spec, ["vm.json"])  # no second VM beside it either
        handle = await vmms().recover("a1", tmp_path, probe)
        assert handle == handle_for(proc.pid, tmp_path)
        noted = load_record(tmp_path)
        assert noted is not None and noted.pid == proc.pid
    finally:
        proc.kill()
        proc.wait()
