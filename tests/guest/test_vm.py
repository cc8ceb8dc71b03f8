"""The dev image booted for real: QEMU microvm under TCG, the guest agent over virtio-serial."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mxvm.guest.client import GuestClient
from mxvm.image import ImagePaths, build_dev_image, default_image_dir, guest_cmdline
from mxvm.image.qemu import channel_args, minimal_argv

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

BOOT_TIMEOUT_S = 180.0  # TCG on a busy 2-core machine
MAC = "52:54:00:87:03:05"
GUEST_IP = "10.0.2.15/24"


@dataclass
class BootedVM:
    proc: asyncio.subprocess.Process
    sock: Path
    qmp: Path
    console: Path
    client: GuestClient


@pytest.fixture(scope="session")
def dev_image() -> ImagePaths:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    return build_dev_image(default_image_dir())


async def _boot(image: ImagePaths, workdir: Path, *, with_nic: bool = False) -> BootedVM:
    sock, qmp, console = workdir / "guest.sock", workdir / "qmp.sock", workdir / "console.log"
    if with_nic:  # QEMU's restricted user-mode network: guest-only, nothing on the host
        cmdline = guest_cmdline(ip=GUEST_IP, gateway="10.0.2.2", mac=MAC, hostname="mxvm-t")
        argv = minimal_argv(
            image, sock, cmdline=cmdline, console_log=console, qmp_sock=qmp, user_net_mac=MAC
        )
    else:
        argv = minimal_argv(image, sock, cmdline=guest_cmdline(), console_log=console, qmp_sock=qmp)
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
    client = await GuestClient.connect(sock, timeout=30)
    await client.wait_ready(timeout=BOOT_TIMEOUT_S)
    return BootedVM(proc, sock, qmp, console, client)


async def _destroy(vm: BootedVM) -> None:
    await vm.client.close()
    if vm.proc.returncode is None:
        vm.proc.kill()
        await vm.proc.wait()


def _assert_clean_power_off(console: Path) -> None:
    """The agent exited by itself and the kernel powered off (no panic, no abort)."""
    text = console.read_text(errors="replace")
    assert "guest agent exited with status 0" in text, text[-2000:]
    assert "reboot: Power down" in text and "Kernel panic" not in text, text[-2000:]


@pytest.fixture
async def vm_dir() -> AsyncIterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mxvm-vm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
async def shared_vm(dev_image: ImagePaths) -> AsyncIterator[BootedVM]:
    """One VM for the tests that leave it running (a boot costs seconds under TCG)."""
    path = Path(tempfile.mkdtemp(prefix="mxvm-vm-"))
    vm = await _boot(dev_image, path, with_nic=True)
    try:
        yield vm
    finally:
        await _destroy(vm)
        shutil.rmtree(path, ignore_errors=True)


async def test_main_command_output_and_exit_code(shared_vm: BootedVM) -> None:
    handle = await shared_vm.client.run(["sh", "-c", "echo hello; exit 3"], cmd_id="main")
    out = b"".join([c.data async for c in handle if c.stream == "stdout"])
    assert b"hello" in out
    assert await handle.exit_code(timeout=60) == 3


async def test_exec_uname(shared_vm: BootedVM, dev_image: ImagePaths) -> None:
    manifest = json.loads(dev_image.manifest.read_text())
    result = await shared_vm.client.exec(["uname", "-r"], timeout=60)
    assert result.exit_code == 0
    assert result.stdout.decode().strip() == manifest["kernel_release"]


async def test_command_not_found(shared_vm: BootedVM) -> None:
    result = await shared_vm.client.exec(["definitely-not-a-command"], timeout=60)
    assert result.exit_code == 127
    assert result.error == "definitely-not-a-command: No such file or directory"


async def test_network_configured_from_the_kernel_cmdline(shared_vm: BootedVM) -> None:
    addr = await shared_vm.client.exec(["ip", "-4", "addr", "show"], timeout=60)
    route = await shared_vm.client.exec(["ip", "route"], timeout=60)
    hostname = await shared_vm.client.exec(["hostname"], timeout=60)
    assert f"inet {GUEST_IP}" in addr.stdout.decode()
    assert "default via 10.0.2.2" in route.stdout.decode()
    assert hostname.stdout == b"mxvm-t\n"


def test_second_build_is_served_from_the_cache(dev_image: ImagePaths) -> None:
    messages: list[str] = []
    again = build_dev_image(dev_image.manifest.parent, progress=messages.append)
    assert again == dev_image
    assert messages[-1].endswith("is up to date")


async def test_python_runs_in_the_guest(shared_vm: BootedVM) -> None:
    result = await shared_vm.client.exec(
        ["python3", "-c", "import json, sys; print(json.dumps(sys.version_info[:2]))"],
        timeout=120,
    )
    assert (result.exit_code, result.stdout.strip()) == (0, b"[3, 11]"), result.stderr


async def test_reconnect_reports_main_command_state(shared_vm: BootedVM) -> None:
    await _ensure_main_ran(shared_vm)
    await shared_vm.client.close()
    shared_vm.client = await GuestClient.connect(shared_vm.sock, timeout=30)
    await shared_vm.client.wait_ready(timeout=60)
    status = await shared_vm.client.status(timeout=60)
    assert (status.main_id, status.main_state, status.main_code) == ("main", "exited", 3)
    assert (await shared_vm.client.exec(["true"], timeout=60)).exit_code == 0


async def test_output_made_while_no_host_is_connected_is_delivered_later(
    shared_vm: BootedVM,
) -> None:
    """virtio-serial holds the guest's writes while no host is attached (host agent restart)."""
    handle = await shared_vm.client.start_exec(["sh", "-c", "sleep 2; echo late; exit 5"])
    await shared_vm.client.close()
    await asyncio.sleep(5)  # the command prints and exits while nobody is connected
    shared_vm.client = await GuestClient.connect(shared_vm.sock, timeout=30)
    await shared_vm.client.wait_ready(timeout=60)
    again = shared_vm.client.attach(handle.id)
    assert b"".join([c.data async for c in again]) == b"late\n"
    assert await again.exit_code(timeout=60) == 5


async def _ensure_main_ran(vm: BootedVM) -> None:
    """Makes the reconnect test independent of test order: ensure `main` ran."""
    status = await vm.client.status(timeout=60)
    if status.main_state == "none":
        handle = await vm.client.run(["sh", "-c", "echo hello; exit 3"], cmd_id="main")
        assert await handle.exit_code(timeout=60) == 3


async def test_shutdown_powers_the_guest_off(dev_image: ImagePaths, vm_dir: Path) -> None:
    vm = await _boot(dev_image, vm_dir)
    try:
        sleeper = await vm.client.run(["sleep", "600"])
        await vm.client.shutdown(grace_s=2.0)
        end = await sleeper.wait(timeout=60)
        assert end.signal == 15
        assert await asyncio.wait_for(vm.proc.wait(), 120) == 0
        _assert_clean_power_off(vm.console)
    finally:
        await _destroy(vm)


async def test_serial_channel_as_under_cloud_hypervisor(
    dev_image: ImagePaths, vm_dir: Path
) -> None:
    """Channel on the UART (ttyS0), console on virtio-console (hvc0): CH's layout."""
    sock, console = vm_dir / "guest.sock", vm_dir / "console.log"
    cmdline = guest_cmdline(console="hvc0", serial_channel="ttyS0")
    argv = minimal_argv(dev_image, sock, cmdline=cmdline, console_log=console, serial_channel=True)
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
    vm = BootedVM(proc, sock, vm_dir / "none", console, await GuestClient.connect(sock, 30))
    try:
        await vm.client.wait_ready(timeout=BOOT_TIMEOUT_S)
        cmdline_seen = await vm.client.exec(["cat", "/proc/cmdline"], timeout=120)
        assert b"mxvm.channel=ttyS0" in cmdline_seen.stdout
        made = await vm.client.exec(
            ["sh", "-c", "head -c 65536 /dev/urandom > /tmp/r && sha256sum /tmp/r"], timeout=120
        )
        digest = made.stdout.split()[0].decode()
        binary = await vm.client.exec(["cat", "/tmp/r"], timeout=120)
        assert hashlib.sha256(binary.stdout).hexdigest() == digest
        await vm.client.shutdown(grace_s=1.0)
        assert await asyncio.wait_for(proc.wait(), 120) == 0
        assert "guest agent exited with status 0" in console.read_text(errors="replace")
    finally:
        await _destroy(vm)


async def test_pci_machine_boots_the_same_image(dev_image: ImagePaths, vm_dir: Path) -> None:
    """q35 (virtio over PCI, as libvirt uses): the image's virtio_pci path and the
    PCI flavour of the channel (channel_args(mmio=False))."""
    sock, console = vm_dir / "guest.sock", vm_dir / "console.log"
    argv = [
        "qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-cpu", "max", "-m", "256",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-serial", f"file:{console}", "-kernel", str(dev_image.kernel),
        "-initrd", str(dev_image.initrd), "-append", guest_cmdline(),
        *channel_args(sock, mmio=False),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
    vm = BootedVM(proc, sock, vm_dir / "none", console, await GuestClient.connect(sock, 30))
    try:
        await vm.client.wait_ready(timeout=BOOT_TIMEOUT_S)
        drivers = await vm.client.exec(["ls", "/sys/bus/pci/drivers"], timeout=120)
        assert b"virtio-pci" in drivers.stdout.split()
        await vm.client.shutdown(grace_s=1.0)
        assert await asyncio.wait_for(proc.wait(), 120) == 0
        _assert_clean_power_off(console)
    finally:
        await _destroy(vm)


async def test_acpi_power_button_powers_the_guest_off(dev_image: ImagePaths, vm_dir: Path) -> None:
    vm = await _boot(dev_image, vm_dir)
    try:
        reader, writer = await asyncio.open_unix_connection(vm.qmp)
        await reader.readline()  # greeting
        for command in ("qmp_capabilities", "system_powerdown"):
            writer.write(json.dumps({"execute": command}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
            while "event" in reply:  # e.g. POWERDOWN, which may come before the return
                reply = json.loads(await reader.readline())
            assert "return" in reply, reply
        writer.close()
        assert await asyncio.wait_for(vm.proc.wait(), 120) == 0
        _assert_clean_power_off(vm.console)
    finally:
        await _destroy(vm)
