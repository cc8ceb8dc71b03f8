"""QemuDriver with the real dev guest image: the guest agent answers over the channel, and
stop() is a real ACPI power-off."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mxvm.guest.client import GuestClient
from mxvm.guest.protocol import PORT_NAME
from mxvm.hypervisors import VmSpec, VmState
from mxvm.hypervisors import process as proc
from mxvm.hypervisors.qemu import QemuDriver
from mxvm.hypervisors.qemu.argv import DEFAULT_GUEST_PORT

from .conftest import DevImage

pytestmark = pytest.mark.vm

READY_TIMEOUT_S = 120  # TCG on a busy 2-core machine


def test_driver_and_guest_agree_on_the_port_name() -> None:
    assert DEFAULT_GUEST_PORT == PORT_NAME


async def test_run_a_command_then_power_off(dev_image: DevImage, short_dir: Path) -> None:
    spec = VmSpec(
        alloc_id="g1",
        name="guest",
        vcpus=1,
        memory_mb=256,
        kernel=dev_image.kernel,
        initrd=dev_image.initrd,
        kernel_args=["quiet"],
        run_dir=short_dir / "run",
    )
    driver = QemuDriver(kvm_probe_timeout_s=8)
    handle = await driver.start(spec)
    try:
        async with await GuestClient.connect(spec.guest_socket, timeout=10) as guest:
            await guest.wait_ready(timeout=READY_TIMEOUT_S)
            run = await guest.run(["sh", "-c", "echo hello; exit 3"])
            output = b"".join([chunk.data async for chunk in run])
            assert (output, await run.exit_code(timeout=30)) == (b"hello\n", 3)

        # A fresh driver (agent restart) adopts the VM and powers it off gracefully.
        restarted = QemuDriver()
        adopted = await restarted.recover("g1", spec.run_dir)
        assert adopted == handle
        async with asyncio.timeout(60):
            status = await restarted.stop(adopted, grace_s=45)
        assert (status.state, status.reason) == (VmState.STOPPED, "guest powered off")
        assert not proc.is_alive(handle.pid)
    finally:
        await driver.destroy(handle)


def can_create_taps() -> bool:
    return os.geteuid() == 0 and Path("/dev/net/tun").exists()


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


@pytest.mark.privileged
async def test_tap_nic_reaches_the_guest_with_its_mac(dev_image: DevImage, short_dir: Path) -> None:
    if not can_create_taps():
        pytest.skip("needs root and /dev/net/tun to create a tap")
    tap = f"mxq{os.getpid() % 100000}"  # QEMU creates it and it vanishes when QEMU exits
    mac = "52:54:00:4d:58:01"
    spec = VmSpec(
        alloc_id="g2",
        name="guest",
        vcpus=1,
        memory_mb=256,
        kernel=dev_image.kernel,
        initrd=dev_image.initrd,
        kernel_args=["quiet"],
        tap=tap,
        mac=mac,
        run_dir=short_dir / "run",
    )
    driver = QemuDriver(kvm_probe_timeout_s=8)
    handle = await driver.start(spec)
    try:
        assert link_exists(tap)
        async with await GuestClient.connect(spec.guest_socket, timeout=10) as guest:
            await guest.wait_ready(timeout=READY_TIMEOUT_S)
            result = await guest.exec(["cat", "/sys/class/net/eth0/address"], timeout=30)
            assert result.stdout.decode().strip() == mac
    finally:
        await driver.destroy(handle)
    # The kernel removes a non-persistent tap once QEMU's fd is closed, a moment after exit.
    async with asyncio.timeout(10):
        while link_exists(tap):
            await asyncio.sleep(0.05)
