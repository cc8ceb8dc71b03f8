"""The dev guest image booted under a real cloud-hypervisor (KVM), if one is installed.

cloud-hypervisor has no Debian package, so this is skipped on the dev machine and in CI;
it runs wherever a `cloud-hypervisor` binary is on PATH and KVM works. It checks the
contract the fake VMM stands in for: boot through vm.create/vm.boot, the guest agent
answering on the serial-port channel (<run_dir>/guest.sock), recover(), and a graceful
stop by the ACPI power button.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from mxvm.guest.client import GuestClient
from mxvm.hypervisors import VmSpec, VmState
from mxvm.hypervisors.cloud_hypervisor import CloudHypervisorDriver
from mxvm.hypervisors.qemu.kvm_probe import probe_ioctl
from mxvm.image import (
    ImageBuildError,
    ImagePaths,
    build_dev_image,
    default_image_dir,
    guest_cmdline,
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(300)]

CH = "cloud-hypervisor"
BOOT_TIMEOUT_S = 60.0  # KVM boots in about a second; leave room for a busy host


@pytest.fixture(scope="module")
def dev_image() -> ImagePaths:
    if shutil.which(CH) is None:
        pytest.skip(f"{CH} is not installed (no Debian package; put a release binary on PATH)")
    kvm = probe_ioctl()
    if not kvm.usable:
        pytest.skip(f"{CH} needs KVM: {kvm.reason}")
    try:
        return build_dev_image(default_image_dir())
    except ImageBuildError as exc:
        pytest.skip(f"cannot build the dev guest image: {exc.detail}")


async def test_boot_channel_recover_and_power_button_stop(
    dev_image: ImagePaths, short_dir: Path
) -> None:
    spec = VmSpec(
        alloc_id="chv1",
        name="chv-real",
        vcpus=1,
        memory_mb=256,
        kernel=dev_image.kernel,
        initrd=dev_image.initrd,
        kernel_args=guest_cmdline(tcg=False).split(),
        run_dir=short_dir / "run",
    )
    driver = CloudHypervisorDriver()
    handle = await driver.start(spec)
    try:
        assert (await driver.inspect(handle)).state is VmState.RUNNING
        async with await GuestClient.connect(spec.guest_socket, timeout=BOOT_TIMEOUT_S) as guest:
            await guest.wait_ready(timeout=BOOT_TIMEOUT_S)
            result = await guest.exec(["cat", "/proc/cmdline"], timeout=30)
        assert result.exit_code == 0
        assert b"console=hvc0" in result.stdout

        recovered = await CloudHypervisorDriver().recover("chv1", spec.run_dir)
        assert recovered == handle

        status = await driver.stop(handle, grace_s=30)
        assert (status.state, status.reason) == (VmState.STOPPED, "guest powered off")
        async with asyncio.timeout(5):
            assert (await driver.wait(handle)).state is VmState.STOPPED
    finally:
        await driver.destroy(handle)
