"""LibvirtDriver against a real libvirtd (`qemu:///system`): real microVM boots under TCG.

The session fixture uses the libvirtd already running, or starts `libvirtd -d` (and
`virtlogd -d`, which libvirt's QEMU driver needs for serial logs) and stops what it
started afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from mxvm.errors import MxvmError
from mxvm.guest.client import GuestClient
from mxvm.hypervisors import VmHandle, VmSpec, VmState
from mxvm.hypervisors.libvirt import LibvirtDriver
from mxvm.hypervisors.libvirt.conn import Connection, DomainNotFound
from mxvm.hypervisors.qemu.kvm_probe import probe_kvm
from mxvm.image import ImagePaths, build_dev_image, default_image_dir

from .initramfs import build_initramfs

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

URI = "qemu:///system"
RUN = Path("/run")
DAEMONS = (  # (binary, its socket, its pidfile); virtlogd first, libvirtd uses it
    ("virtlogd", RUN / "libvirt/virtlogd-sock", RUN / "virtlogd.pid"),
    ("libvirtd", RUN / "libvirt/libvirt-sock", RUN / "libvirtd.pid"),
)
KVM = Path("/dev/kvm")
BOOT_TIMEOUT_S = 180.0  # TCG on a busy 2-core machine
SLEEP_FOREVER = "while true; do sleep 1; done"


def _answers(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def _start_daemon(binary: str, sock: Path, pidfile: Path) -> int | None:
    """Start `binary -d` unless its socket answers; its pid when we started it."""
    if _answers(sock):
        return None
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed (apt-get install libvirt-daemon-system)")
    done = subprocess.run([binary, "-d"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"cannot start {binary}: {done.stderr.strip()}")
    deadline = time.monotonic() + 30
    while not _answers(sock):
        if time.monotonic() > deadline:
            pytest.skip(f"{binary} started but {sock} does not answer")
        time.sleep(0.1)
    return int(pidfile.read_text().strip())


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        psutil.Process(pid).wait(timeout=30)


@contextlib.contextmanager
def kvm_group_access() -> Iterator[None]:
    """What Debian's udev rule does (/dev/kvm 0660 root:kvm), for the session.

    Without udev (containers) /dev/kvm stays 0600 root; libvirt 9.0 then finds its cached
    QEMU capabilities invalid on every use (its QEMU user cannot open /dev/kvm) and
    re-probes QEMU ~10 times per domain start: ~40 s instead of ~0.5 s.
    """
    try:
        st = KVM.stat()
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        yield
        return
    os.chown(KVM, -1, kvm_gid)
    KVM.chmod(stat.S_IMODE(st.st_mode) | 0o060)
    try:
        yield
    finally:
        os.chown(KVM, -1, st.st_gid)
        KVM.chmod(stat.S_IMODE(st.st_mode))


@dataclass
class Daemons:
    uri: str
    started: dict[str, int]  # binary -> pid, for the daemons this session started

    def restart_libvirtd(self) -> None:
        _stop(self.started.pop("libvirtd"))
        binary, sock, pidfile = DAEMONS[1]
        pid = _start_daemon(binary, sock, pidfile)
        assert pid is not None
        self.started[binary] = pid


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Daemons]:
    if os.geteuid() != 0:
        pytest.skip("qemu:///system needs root")
    daemons = Daemons(URI, {})
    with kvm_group_access():
        try:
            for binary, sock, pidfile in DAEMONS:
                if (pid := _start_daemon(binary, sock, pidfile)) is not None:
                    daemons.started[binary] = pid
            yield daemons
        finally:
            for pid in reversed(daemons.started.values()):
                _stop(pid)


@pytest.fixture(scope="session")
def dev_image() -> ImagePaths:
    try:
        return build_dev_image(default_image_dir())
    except MxvmError as exc:
        pytest.skip(f"the dev guest image cannot be built here: {exc}")


@pytest.fixture
async def driver(libvirtd: Daemons) -> AsyncIterator[LibvirtDriver]:
    # "auto": KVM where the qemu driver's probe boots a guest under it, TCG here.
    drv = LibvirtDriver(libvirtd.uri, kvm_probe_timeout_s=8)
    yield drv
    await drv.close()


@pytest.fixture
async def conn(libvirtd: Daemons) -> AsyncIterator[Connection]:
    c = Connection(libvirtd.uri)
    yield c
    await c.close()


@pytest.fixture
def tap() -> Iterator[str]:
    """A tap this test owns (mxvm.net makes them in production; libvirt only uses it)."""
    name = f"mxlv{os.getpid() % 100000}"
    subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def qemu_processes(alloc_id: str) -> list[int]:
    marker = f"guest=mxvm-{alloc_id},"
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(marker in arg for arg in (p.info["cmdline"] or []))
    ]


def busybox_spec(short_dir: Path, kernel: Path, body: str, alloc_id: str) -> VmSpec:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    return VmSpec(
        alloc_id=alloc_id,
        name=f"libvirt-{alloc_id}",
        vcpus=1,
        memory_mb=128,
        kernel=kernel,
        initrd=build_initramfs(short_dir / "i.gz", Path(busybox), body),
        run_dir=short_dir / "run",
    )


async def until_console(spec: VmSpec, text: str) -> None:
    async with asyncio.timeout(BOOT_TIMEOUT_S):
        while text not in spec.console_log.read_text(errors="replace"):
            await asyncio.sleep(0.2)


async def assert_gone(conn: Connection, handle: VmHandle) -> None:
    with pytest.raises(DomainNotFound):
        await conn.info(f"mxvm-{handle.alloc_id}")
    assert not psutil.pid_exists(handle.pid)
    assert qemu_processes(handle.alloc_id) == []
    assert not handle.run_dir.exists()


async def talk_to_guest(spec: VmSpec, mac: str) -> float:
    """The guest agent over the virtio-serial channel; returns seconds until ready."""
    started = time.monotonic()
    async with await GuestClient.connect(spec.guest_socket, timeout=30) as client:
        await client.wait_ready(timeout=BOOT_TIMEOUT_S)
        ready_s = time.monotonic() - started
        run = await client.run(["sh", "-c", "echo hello; exit 3"])
        out = b"".join([c.data async for c in run if c.stream == "stdout"])
        assert (out, await run.exit_code(timeout=60)) == (b"hello\n", 3)
        nic = await client.exec(["sh", "-c", "cat /sys/class/net/e*/address"], timeout=60)
        assert nic.stdout.decode().split() == [mac]
    return ready_s


async def test_dev_guest_boots_runs_a_command_and_powers_off(
    driver: LibvirtDriver,
    conn: Connection,
    dev_image: ImagePaths,
    tap: str,
    short_dir: Path,
) -> None:
    mac = "52:54:00:6c:76:01"
    spec = VmSpec(
        alloc_id="lv-dev",
        name="libvirt-dev",
        vcpus=1,
        memory_mb=256,
        kernel=dev_image.kernel,
        initrd=dev_image.initrd,
        kernel_args=["quiet"],
        tap=tap,
        mac=mac,
        run_dir=short_dir / "run",
    )
    await driver.select_domain_type(spec.kernel)  # the KVM probe, kept out of the timing
    t0 = time.monotonic()
    handle = await driver.start(spec)
    start_s = time.monotonic() - t0
    try:
        assert qemu_processes(spec.alloc_id) == [handle.pid]
        assert (await driver.inspect(handle)).state is VmState.RUNNING
        probe = await probe_kvm(driver.emulator, spec.kernel)
        assert driver.capabilities().kvm is probe.usable
        restarted = LibvirtDriver(URI)  # a restarted agent
        assert await restarted.recover(spec.alloc_id, spec.run_dir) == handle
        await restarted.close()

        ready_s = await talk_to_guest(spec, mac)
        print(f"\nlibvirt boot: start() {start_s:.2f}s, guest agent ready {ready_s:.2f}s later")
        assert "Linux version" in spec.console_log.read_text(errors="replace")

        status = await driver.stop(handle, grace_s=60)
        assert (status.state, status.reason) == (VmState.STOPPED, "guest powered off")
        assert not psutil.pid_exists(handle.pid)
    finally:
        await driver.destroy(handle)
    await assert_gone(conn, handle)
    # managed="no": libvirt left our tap alone
    assert await asyncio.to_thread(Path("/sys/class/net", tap).exists)


async def test_guest_ignoring_the_power_button_is_killed_after_the_grace(
    driver: LibvirtDriver, conn: Connection, dev_image: ImagePaths, short_dir: Path
) -> None:
    spec = busybox_spec(short_dir, dev_image.kernel, SLEEP_FOREVER, "lv-bb")
    handle = await driver.start(spec)
    try:
        await until_console(spec, "mxvm-test-guest: userspace up")
        status = await driver.stop(handle, grace_s=2)
        assert (status.state, status.reason) == (VmState.STOPPED, "killed after the grace period")
        assert qemu_processes(spec.alloc_id) == []
    finally:
        await driver.destroy(handle)
    await assert_gone(conn, handle)


async def test_init_exiting_is_a_crash_with_the_panic_as_reason(
    driver: LibvirtDriver, conn: Connection, dev_image: ImagePaths, short_dir: Path
) -> None:
    spec = busybox_spec(short_dir, dev_image.kernel, "exit 7", "lv-panic")
    handle = await driver.start(spec)
    try:
        async with asyncio.timeout(BOOT_TIMEOUT_S):
            status = await driver.wait(handle)
        assert status.state is VmState.CRASHED
        assert "Kernel panic" in status.reason and "Attempted to kill init" in status.reason
    finally:
        await driver.destroy(handle)
    await assert_gone(conn, handle)


async def test_vm_survives_a_libvirtd_restart(
    libvirtd: Daemons,
    driver: LibvirtDriver,
    conn: Connection,
    dev_image: ImagePaths,
    short_dir: Path,
) -> None:
    if "libvirtd" not in libvirtd.started:
        pytest.skip("libvirtd ran before these tests; they restart only a daemon they started")
    spec = busybox_spec(short_dir, dev_image.kernel, SLEEP_FOREVER, "lv-restart")
    handle = await driver.start(spec)
    try:
        await until_console(spec, "mxvm-test-guest: userspace up")
        await asyncio.to_thread(libvirtd.restart_libvirtd)
        # The same driver (and connection) carries on: reads reconnect once.
        assert (await driver.inspect(handle)).state is VmState.RUNNING
        assert await driver.recover(spec.alloc_id, spec.run_dir) == handle
        assert qemu_processes(spec.alloc_id) == [handle.pid]
    finally:
        await driver.destroy(handle)
    await assert_gone(conn, handle)


async def test_qemu_killed_is_a_crash(
    driver: LibvirtDriver, conn: Connection, dev_image: ImagePaths, short_dir: Path
) -> None:
    spec = busybox_spec(short_dir, dev_image.kernel, SLEEP_FOREVER, "lv-kill")
    handle = await driver.start(spec)
    try:
        waiter = asyncio.create_task(driver.wait(handle))
        await until_console(spec, "mxvm-test-guest: userspace up")
        assert not waiter.done()
        os.kill(handle.pid, signal.SIGKILL)
        async with asyncio.timeout(60):
            status = await waiter
        # libvirt sees QEMU's monitor hang up without a shutdown: shut off (crashed).
        assert (status.state, status.reason) == (VmState.CRASHED, "QEMU crashed")
        assert status.pid == handle.pid
    finally:
        await driver.destroy(handle)
    await assert_gone(conn, handle)
