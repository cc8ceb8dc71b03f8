"""LibvirtDriver against libvirt's in-process `test:///default` driver (no daemon, no QEMU).

The test driver accepts the real microvm domain XML and keeps domain state like libvirtd
does, so lifecycle, recovery and error translation run for real; what it cannot do is
boot a guest (that is tests/hypervisors/test_libvirt_vm.py).
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mxvm.errors import InvalidState, NotFound
from mxvm.hypervisors import Driver, DriverError, ImageError, VmSpec, VmState, get_driver
from mxvm.hypervisors.libvirt import LibvirtDriver
from mxvm.hypervisors.libvirt.conn import (
    Connection,
    DomainNotFound,
    DomainRejected,
    DomainState,
    DomainStateError,
    LibvirtUnavailable,
    ShutoffReason,
)
from mxvm.hypervisors.libvirt.state import STATE_FILE, DomainRecord, ended_status, load_record

URI = "test:///default"
_ids = itertools.count()


def fake_kernel(path: Path) -> Path:
    data = bytearray(0x400)
    data[0x202:0x206] = b"HdrS"  # the bzImage header is all the image check looks at
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def images(short_dir: Path) -> tuple[Path, Path]:
    initrd = short_dir / "initrd.gz"
    initrd.write_bytes(gzip.compress(b"070701"))
    return fake_kernel(short_dir / "vmlinuz"), initrd


@pytest.fixture
async def driver() -> AsyncIterator[LibvirtDriver]:
    drv = LibvirtDriver(URI, domain_type="qemu", host_mhz=2300)
    yield drv
    await drv.close()


@pytest.fixture
async def conn() -> AsyncIterator[Connection]:
    c = Connection(URI)
    yield c
    await c.close()


def make_spec(short_dir: Path, images: tuple[Path, Path], **kw: object) -> VmSpec:
    alloc = f"td{next(_ids)}"
    fields: dict[str, object] = {
        "alloc_id": alloc,
        "name": "test-job[0]",
        "vcpus": 1,
        "memory_mb": 128,
        "kernel": images[0],
        "initrd": images[1],
        "run_dir": short_dir / alloc,
    }
    fields.update(kw)
    return VmSpec.model_validate(fields)


async def test_registry_builds_a_driver() -> None:
    drv = get_driver("libvirt", uri=URI, domain_type="qemu")
    assert isinstance(drv, LibvirtDriver)
    assert isinstance(drv, Driver)
    caps = drv.capabilities()
    assert (caps.name, caps.kvm, caps.graceful_stop, caps.recover) == ("libvirt", False, True, True)


async def test_start_inspect_recover_stop_destroy(
    driver: LibvirtDriver, conn: Connection, short_dir: Path, images: tuple[Path, Path]
) -> None:
    spec = make_spec(short_dir, images)
    handle = await driver.start(spec)
    info = await conn.info(f"mxvm-{spec.alloc_id}")
    assert info.state is DomainState.RUNNING
    assert handle.pid == info.id  # no pidfile on the test driver: the domain id
    record = load_record(spec.run_dir)
    assert record is not None and (record.uuid, record.domain_type) == (info.uuid, "qemu")
    assert (await driver.inspect(handle)).state is VmState.RUNNING

    fresh = LibvirtDriver(URI, domain_type="qemu")  # what a restarted agent builds
    assert await fresh.recover(spec.alloc_id, spec.run_dir) == handle
    assert await fresh.recover("no-such-alloc", spec.run_dir) is None

    status = await fresh.stop(handle, grace_s=5)
    assert (status.state, status.reason) == (VmState.STOPPED, "stopped on request")
    assert (await driver.inspect(handle)).state is VmState.STOPPED
    assert await fresh.recover(spec.alloc_id, spec.run_dir) is None
    # Persistent: libvirt keeps the ended domain and why it ended until destroy().
    info = await conn.info(f"mxvm-{spec.alloc_id}")
    assert (info.state, info.reason) == (DomainState.SHUTOFF, ShutoffReason.SHUTDOWN)

    await driver.destroy(handle)
    with pytest.raises(DomainNotFound):
        await conn.info(f"mxvm-{spec.alloc_id}")
    assert not spec.run_dir.exists()
    await driver.destroy(handle)  # idempotent
    assert (await driver.inspect(handle)).reason == "no run state (destroyed)"
    await fresh.close()


async def test_destroyed_behind_our_back_is_a_crash(
    driver: LibvirtDriver, conn: Connection, short_dir: Path, images: tuple[Path, Path]
) -> None:
    spec = make_spec(short_dir, images)
    handle = await driver.start(spec)
    await conn.destroy(f"mxvm-{spec.alloc_id}")
    status = await driver.wait(handle)
    assert (status.state, status.reason) == (VmState.CRASHED, "domain destroyed outside mxvm")
    assert status.pid == handle.pid
    await driver.destroy(handle)


async def test_console_evidence_beats_libvirts_reason(
    driver: LibvirtDriver, conn: Connection, short_dir: Path, images: tuple[Path, Path]
) -> None:
    spec = make_spec(short_dir, images)
    handle = await driver.start(spec)
    spec.console_log.write_text("[ 1.0] Kernel panic - not syncing: Attempted to kill init!\n")
    await conn.destroy(f"mxvm-{spec.alloc_id}")
    status = await driver.inspect(handle)
    assert status.state is VmState.CRASHED
    assert status.reason == "guest Kernel panic - not syncing: Attempted to kill init!"
    await driver.destroy(handle)


async def test_halted_guest_is_a_crash_while_the_domain_runs(
    driver: LibvirtDriver, short_dir: Path, images: tuple[Path, Path]
) -> None:
    spec = make_spec(short_dir, images)
    handle = await driver.start(spec)
    spec.console_log.write_text("Decompressing Linux... crc error\n\n -- System halted")
    status = await driver.wait(handle)
    assert status.state is VmState.CRASHED
    assert status.reason == "guest kernel halted during boot: Decompressing Linux... crc error"
    await driver.destroy(handle)


async def test_second_start_is_refused_and_an_ended_domain_is_replaced(
    driver: LibvirtDriver, conn: Connection, short_dir: Path, images: tuple[Path, Path]
) -> None:
    spec = make_spec(short_dir, images)
    handle = await driver.start(spec)
    with pytest.raises(InvalidState, match="already has a VM"):
        await driver.start(spec)
    await driver.stop(handle, grace_s=1)
    again = await driver.start(spec)  # the shut-off definition is replaced
    assert (await driver.inspect(again)).state is VmState.RUNNING
    assert (await driver.inspect(handle)).state is not VmState.RUNNING
    assert await conn.names("mxvm-" + spec.alloc_id) == [f"mxvm-{spec.alloc_id}"]
    await driver.destroy(again)


async def test_missing_kernel_is_an_image_error_and_defines_nothing(
    driver: LibvirtDriver, conn: Connection, short_dir: Path, images: tuple[Path, Path]
) -> None:
    missing = short_dir / "no-vmlinuz"
    spec = make_spec(short_dir, images, kernel=missing)
    with pytest.raises(ImageError) as info:
        await driver.start(spec)
    assert info.value.path == missing
    assert await conn.names(f"mxvm-{spec.alloc_id}") == []


async def test_libvirt_errors_are_translated(conn: Connection) -> None:
    with pytest.raises(DomainNotFound, match="Domain not found") as missing:
        await conn.info("mxvm-missing")
    assert isinstance(missing.value, NotFound) and isinstance(missing.value, DriverError)
    assert missing.value.detail.startswith("look up domain mxvm-missing: ")

    with pytest.raises(DomainRejected):
        await conn.define_and_start("<domain")

    # "test" is the test driver's built-in domain; once destroyed it is not running.
    with contextlib.suppress(DomainStateError):
        await conn.destroy("test")
    with pytest.raises(DomainStateError, match="not running") as wrong:
        await conn.destroy("test")
    assert isinstance(wrong.value, InvalidState)


async def test_unreachable_daemon_is_unavailable() -> None:
    conn = Connection("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    with pytest.raises(LibvirtUnavailable, match="/nonexistent/libvirt-sock"):
        await conn.info("anything")


def test_ended_status_without_evidence_uses_libvirts_reason(tmp_path: Path) -> None:
    record = DomainRecord(
        alloc_id="a",
        domain="mxvm-a",
        uuid="u",
        pid=7,
        domain_type="qemu",
        started_at="2026-01-01T00:00:00Z",
    )
    console = tmp_path / "console.log"
    assert ended_status(record, None, console).reason == "domain vanished (undefined outside mxvm)"
    console.write_text("[ 2.0] reboot: Power down\n")
    status = ended_status(record, None, console)
    assert (status.state, status.reason, status.pid) == (VmState.STOPPED, "guest powered off", 7)
    record.killed = True
    console.write_text("")
    assert ended_status(record, None, console).reason == "killed after the grace period"
    assert STATE_FILE == "vm.json"


async def test_stop_works_when_the_run_state_was_lost(
    driver: LibvirtDriver, conn: Connection, short_dir: Path, images: tuple[Path, Path]
) -> None:
    spec = make_spec(short_dir, images)
    handle = await driver.start(spec)
    (spec.run_dir / STATE_FILE).unlink()
    assert await driver.recover(spec.alloc_id, spec.run_dir) == handle  # libvirt knows it
    status = await driver.stop(handle, grace_s=5)
    assert (status.state, status.reason) == (VmState.STOPPED, "stopped on request")
    info = await conn.info(f"mxvm-{spec.alloc_id}")
    assert info.state is DomainState.SHUTOFF
    await driver.destroy(handle)
