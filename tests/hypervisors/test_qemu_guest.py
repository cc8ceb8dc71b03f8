"""QemuDriver with the real dev guest image: the guest agent answers over the channel, and
stop() is a real ACPI power-off."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mxvm.guest.client import GuestClient
from mxvm.guest.protocol import PORT_NAME
from mxvm.hypervisors import VmSpec, VmState
from mxvm.hypervisors.qemu import QemuDriver
from mxvm.hypervisors.qemu import process as proc
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
