"""Real microVM boots with QemuDriver (TCG here, KVM where the probe finds it usable).

The guest is a throwaway busybox initramfs whose /init runs a per-test script, so each
way a VM can end is produced for real: power-off, panic, QEMU killed, corrupt kernel.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from mxvm.errors import InvalidState
from mxvm.hypervisors import DriverError, ImageError, VmHandle, VmSpec, VmState
from mxvm.hypervisors import process as proc
from mxvm.hypervisors.qemu import QemuDriver

from .initramfs import build_initramfs

pytestmark = pytest.mark.vm

SLEEP_FOREVER = "while true; do sleep 1; done"
BOOT_TIMEOUT_S = 60  # TCG on a busy 2-core machine; KVM needs ~1 s


@pytest.fixture(scope="module")
def driver() -> QemuDriver:
    return QemuDriver(kvm_probe_timeout_s=8)


def make_spec(run_dir: Path, kernel: Path, initrd: Path, alloc_id: str = "t1") -> VmSpec:
    return VmSpec(
        alloc_id=alloc_id,
        name="test",
        vcpus=1,
        memory_mb=128,
        kernel=kernel,
        initrd=initrd,
        run_dir=run_dir / "run",
    )


def guest(short_dir: Path, busybox: Path, kernel: Path, body: str) -> VmSpec:
    initrd = build_initramfs(short_dir / "initrd.gz", busybox, body)
    return make_spec(short_dir, kernel, initrd)


async def until_console(spec: VmSpec, text: str) -> None:
    async with asyncio.timeout(BOOT_TIMEOUT_S):
        while text not in spec.console_log.read_text(errors="replace"):
            await asyncio.sleep(0.1)


async def wait_status(driver: QemuDriver, handle: VmHandle) -> tuple[VmState, str]:
    async with asyncio.timeout(BOOT_TIMEOUT_S):
        status = await driver.wait(handle)
    return status.state, status.reason


async def test_boot_inspect_recover_and_stop(
    driver: QemuDriver, short_dir: Path, busybox: Path, guest_kernel: Path
) -> None:
    spec = guest(short_dir, busybox, guest_kernel, SLEEP_FOREVER)
    handle = await driver.start(spec)
    try:
        assert proc.is_alive(handle.pid)
        # Detached: its own session, not the test process's.
        assert os.getsid(handle.pid) != os.getsid(0)
        assert (await driver.inspect(handle)).state is VmState.RUNNING
        await until_console(spec, "mxvm-test-guest: userspace up")

        restarted = QemuDriver()  # a new agent process would build a fresh driver
        recovered = await restarted.recover("t1", spec.run_dir)
        assert recovered == handle
        assert await restarted.recover("other-alloc", spec.run_dir) is None
        assert (await restarted.inspect(recovered)).state is VmState.RUNNING

        # This guest has no ACPI power-button handler, so stop() must kill after the grace.
        status = await restarted.stop(recovered, grace_s=1)
        assert (status.state, status.reason) == (VmState.STOPPED, "killed after the grace period")
        assert not proc.is_alive(handle.pid)
        assert await restarted.recover("t1", spec.run_dir) is None
        assert (await driver.inspect(handle)).state is VmState.STOPPED
    finally:
        await driver.destroy(handle)
    assert not spec.run_dir.exists()


async def test_guest_power_off_is_stopped(
    driver: QemuDriver, short_dir: Path, busybox: Path, guest_kernel: Path
) -> None:
    spec = guest(short_dir, busybox, guest_kernel, "poweroff -f")
    handle = await driver.start(spec)
    assert await wait_status(driver, handle) == (VmState.STOPPED, "guest powered off")


async def test_init_exiting_is_a_crash_with_the_panic_as_reason(
    driver: QemuDriver, short_dir: Path, busybox: Path, guest_kernel: Path
) -> None:
    spec = guest(short_dir, busybox, guest_kernel, "exit 7")
    handle = await driver.start(spec)
    state, reason = await wait_status(driver, handle)
    assert state is VmState.CRASHED
    assert "Kernel panic" in reason
    assert "Attempted to kill init" in reason


async def test_qemu_killed_is_a_crash(
    driver: QemuDriver, short_dir: Path, busybox: Path, guest_kernel: Path
) -> None:
    spec = guest(short_dir, busybox, guest_kernel, SLEEP_FOREVER)
    handle = await driver.start(spec)
    waiter = asyncio.create_task(wait_status(driver, handle))
    await asyncio.sleep(0.5)
    assert not waiter.done()
    os.kill(handle.pid, signal.SIGKILL)
    state, reason = await waiter
    assert state is VmState.CRASHED
    assert reason == f"QEMU (pid {handle.pid}) exited without a guest power-off"
    await driver.destroy(handle)


async def test_second_start_of_a_running_allocation_is_refused(
    driver: QemuDriver, short_dir: Path, busybox: Path, guest_kernel: Path
) -> None:
    spec = guest(short_dir, busybox, guest_kernel, SLEEP_FOREVER)
    handle = await driver.start(spec)
    try:
        with pytest.raises(InvalidState, match="already has a VM"):
            await driver.start(spec)
        assert proc.is_alive(handle.pid)
    finally:
        await driver.destroy(handle)
    assert not proc.is_alive(handle.pid)


async def test_missing_kernel_names_the_file(
    driver: QemuDriver, short_dir: Path, busybox: Path
) -> None:
    missing = short_dir / "no-such-vmlinuz"
    spec = make_spec(short_dir, missing, build_initramfs(short_dir / "i.gz", busybox, "true"))
    with pytest.raises(ImageError) as info:
        await driver.start(spec)
    assert info.value.path == missing
    assert str(missing) in str(info.value)
    assert not spec.run_dir.exists()  # nothing was started


async def test_random_bytes_kernel_is_refused_before_qemu(
    driver: QemuDriver, short_dir: Path, busybox: Path
) -> None:
    junk = short_dir / "vmlinuz"
    junk.write_bytes(os.urandom(1 << 20).replace(b"HdrS", b"----").replace(b"\x7fELF", b"----"))
    spec = make_spec(short_dir, junk, build_initramfs(short_dir / "i.gz", busybox, "true"))
    with pytest.raises(ImageError, match="not a Linux kernel") as info:
        await driver.start(spec)
    assert info.value.path == junk


async def test_corrupt_kernel_payload_is_a_crash_with_the_decompressor_message(
    driver: QemuDriver, short_dir: Path, busybox: Path, compressed_kernel: Path
) -> None:
    # A valid boot header over a damaged compressed kernel: QEMU starts it happily, the
    # guest's decompressor fails and halts; QEMU itself would idle on forever.
    data = bytearray(await asyncio.to_thread(compressed_kernel.read_bytes))
    middle = len(data) // 3
    data[middle : middle + (1 << 16)] = os.urandom(1 << 16)
    bad = short_dir / "vmlinuz.corrupt"
    bad.write_bytes(bytes(data))
    spec = make_spec(short_dir, bad, build_initramfs(short_dir / "i.gz", busybox, "true"))
    handle = await driver.start(spec)
    try:
        state, reason = await wait_status(driver, handle)
        assert state is VmState.CRASHED
        assert reason.startswith("guest kernel halted during boot:")
        assert (await driver.inspect(handle)).state is VmState.CRASHED
    finally:
        await driver.destroy(handle)


async def test_qemu_refusing_to_start_is_a_driver_error_with_its_message(
    driver: QemuDriver, short_dir: Path, busybox: Path, guest_kernel: Path
) -> None:
    initrd = build_initramfs(short_dir / "i.gz", busybox, "true")
    spec = make_spec(short_dir, guest_kernel, initrd).model_copy(
        update={"pci_devices": ["0000:ff:1f.7"]}  # no such host device
    )
    with pytest.raises(DriverError, match=r"QEMU failed to start \(exit 1\): .*0000:ff:1f\.7"):
        await driver.start(spec)
    assert proc.read_pidfile(spec.pidfile) is None


async def test_qemu_that_does_not_answer_is_unknown_and_not_adopted(
    short_dir: Path, busybox: Path, guest_kernel: Path
) -> None:
    spec = guest(short_dir, busybox, guest_kernel, SLEEP_FOREVER)
    driver = QemuDriver(qmp_timeout_s=0.5)
    handle = await driver.start(spec)
    try:
        os.kill(handle.pid, signal.SIGSTOP)  # alive, but QMP goes silent
        status = await driver.inspect(handle)
        assert status.state is VmState.UNKNOWN
        assert "QMP" in status.reason
        with pytest.raises(DriverError, match="QMP"):
            await QemuDriver(qmp_timeout_s=0.5).recover("t1", spec.run_dir)
        os.kill(handle.pid, signal.SIGCONT)
        # Resumed, it answers again (give it a moment: a busy host may need more than 0.5 s).
        async with asyncio.timeout(15):
            while (await driver.inspect(handle)).state is not VmState.RUNNING:
                await asyncio.sleep(0.2)
    finally:
        os.kill(handle.pid, signal.SIGCONT)
        await driver.destroy(handle)
