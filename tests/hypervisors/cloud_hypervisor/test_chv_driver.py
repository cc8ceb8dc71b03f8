"""CloudHypervisorDriver end to end: the real spawn path, with a fake `cloud-hypervisor`
executable on PATH that serves the spec-following fake API (fake_chv.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mxvm.errors import InvalidState
from mxvm.hypervisors import (
    Driver,
    DriverError,
    ImageError,
    VmHandle,
    VmSpec,
    VmState,
    get_driver,
    known_drivers,
    process,
)
from mxvm.hypervisors.cloud_hypervisor import CloudHypervisorDriver
from mxvm.hypervisors.cloud_hypervisor.api import ChvClient, ChvServerError
from mxvm.hypervisors.qemu.kvm_probe import probe_ioctl

WAIT_S = 20


def new_driver() -> CloudHypervisorDriver:
    return CloudHypervisorDriver(start_timeout_s=10, api_timeout_s=3, poll_interval_s=0.05)


@pytest.fixture
async def started(
    fake_chv: Path, spec: VmSpec
) -> AsyncIterator[tuple[CloudHypervisorDriver, VmHandle]]:
    driver = new_driver()
    handle = await driver.start(spec)
    yield driver, handle
    await driver.destroy(handle)


async def test_start_runs_a_detached_vmm_configured_through_the_api(
    started: tuple[CloudHypervisorDriver, VmHandle], spec: VmSpec, fake_chv: Path
) -> None:
    driver, handle = started
    assert process.is_alive(handle.pid)
    assert os.getsid(handle.pid) != os.getsid(0)  # its own session: survives the agent
    record = json.loads(spec.state_file.read_text())
    assert record["pid"] == handle.pid
    assert record["argv"][0] == str(fake_chv)
    status = await driver.inspect(handle)
    assert (status.state, status.reason, status.pid) == (VmState.RUNNING, "Running", handle.pid)
    async with ChvClient(spec.run_dir / "ch.sock") as api:
        info = await api.info()
    assert info.config.payload.kernel == str(spec.kernel)
    assert info.config.cpus is not None and info.config.cpus.boot_vcpus == 2
    assert "fake guest: booted" in spec.console_log.read_text()
    assert spec.guest_socket.is_socket()  # the serial port: the guest channel


async def test_recover_from_a_new_driver_instance(
    started: tuple[CloudHypervisorDriver, VmHandle], spec: VmSpec
) -> None:
    _, handle = started
    restarted = new_driver()
    recovered = await restarted.recover("a1", spec.run_dir)
    assert recovered == handle
    assert await restarted.recover("other-alloc", spec.run_dir) is None
    assert (await restarted.inspect(handle)).state is VmState.RUNNING


async def test_recover_finds_a_vmm_whose_starter_died_before_noting_its_pid(
    started: tuple[CloudHypervisorDriver, VmHandle], spec: VmSpec
) -> None:
    _, handle = started
    # vm.json as the driver writes it just before spawning (an agent killed right then).
    spec.state_file.write_text(json.dumps({**json.loads(spec.state_file.read_text()), "pid": 0}))
    assert await new_driver().recover("a1", spec.run_dir) == handle
    assert json.loads(spec.state_file.read_text())["pid"] == handle.pid


async def test_recover_finds_nothing_once_the_vmm_is_gone(
    started: tuple[CloudHypervisorDriver, VmHandle], spec: VmSpec
) -> None:
    driver, handle = started
    os.kill(handle.pid, signal.SIGKILL)
    await driver.wait(handle)
    assert await new_driver().recover("a1", spec.run_dir) is None


async def test_graceful_stop_by_power_button(
    started: tuple[CloudHypervisorDriver, VmHandle], spec: VmSpec
) -> None:
    driver, handle = started
    status = await driver.stop(handle, grace_s=10)
    assert (status.state, status.reason, status.exit_code) == (
        VmState.STOPPED,
        "guest powered off",
        0,
    )
    assert not process.is_alive(handle.pid)
    assert "reboot: Power down" in spec.console_log.read_text()
    assert (await driver.inspect(handle)).state is VmState.STOPPED
    assert (await driver.stop(handle, grace_s=1)).state is VmState.STOPPED  # idempotent


async def test_guest_ignoring_the_button_is_shut_down_after_grace(
    fake_chv: Path, spec: VmSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CHV_IGNORE_POWER_BUTTON", "1")
    driver = new_driver()
    handle = await driver.start(spec)
    try:
        status = await driver.stop(handle, grace_s=0.5)
        assert (status.state, status.reason) == (
            VmState.STOPPED,
            "shut down after the grace period",
        )
        assert status.exit_code == 0  # vm.shutdown + vmm.shutdown, no SIGKILL needed
        assert not process.is_alive(handle.pid)
    finally:
        await driver.destroy(handle)


async def test_hung_vmm_is_unknown_not_recoverable_and_killed_on_stop(
    fake_chv: Path, spec: VmSpec
) -> None:
    driver = CloudHypervisorDriver(api_timeout_s=0.3, poll_interval_s=0.05)
    handle = await driver.start(spec)
    os.kill(handle.pid, signal.SIGSTOP)  # alive, socket open, never answers
    try:
        status = await driver.inspect(handle)
        assert status.state is VmState.UNKNOWN
        assert "vm.info" in status.reason
        with pytest.raises(DriverError, match="did not answer"):
            await CloudHypervisorDriver(api_timeout_s=0.3).recover("a1", spec.run_dir)
        status = await driver.stop(handle, grace_s=0.3)
        assert (status.state, status.reason, status.exit_code) == (
            VmState.STOPPED,
            "killed after the grace period",
            -9,
        )
        assert not process.is_alive(handle.pid)
    finally:
        await driver.destroy(handle)


async def test_kill_9_is_reported_crashed(
    started: tuple[CloudHypervisorDriver, VmHandle], spec: VmSpec
) -> None:
    driver, handle = started
    recovered = await new_driver().recover("a1", spec.run_dir)
    assert recovered is not None
    os.kill(handle.pid, signal.SIGKILL)
    async with asyncio.timeout(WAIT_S):
        status = await driver.wait(handle)
    assert (status.state, status.exit_code) == (VmState.CRASHED, -9)
    assert "killed by SIGKILL" in status.reason
    # An agent that did not spawn it cannot know the signal, but still sees a crash.
    other = await new_driver().wait(recovered)
    assert other.state is VmState.CRASHED
    assert "exited without a guest power-off" in other.reason


async def test_guest_panic_is_crashed_while_the_vmm_idles_on(
    started: tuple[CloudHypervisorDriver, VmHandle], spec: VmSpec
) -> None:
    driver, handle = started
    with spec.console_log.open("a") as f:
        f.write("[    1.5] Kernel panic - not syncing: Attempted to kill init!\n")
    status = await driver.inspect(handle)
    assert status.state is VmState.CRASHED
    assert status.reason == "guest Kernel panic - not syncing: Attempted to kill init!"
    async with asyncio.timeout(WAIT_S):
        assert (await driver.wait(handle)).state is VmState.CRASHED
    assert process.is_alive(handle.pid)  # the agent decides; destroy() kills it


async def test_destroy_kills_and_removes_run_state(fake_chv: Path, spec: VmSpec) -> None:
    driver = new_driver()
    handle = await driver.start(spec)
    await driver.destroy(handle)
    assert not process.is_alive(handle.pid)
    assert not spec.run_dir.exists()
    await driver.destroy(handle)  # idempotent
    status = await driver.inspect(handle)
    assert (status.state, status.reason) == (VmState.STOPPED, "no run state (destroyed)")


async def test_second_start_of_a_running_allocation_is_refused(
    started: tuple[CloudHypervisorDriver, VmHandle], spec: VmSpec
) -> None:
    driver, _ = started
    with pytest.raises(InvalidState):
        await driver.start(spec)


async def test_missing_kernel_names_the_file(fake_chv: Path, spec: VmSpec) -> None:
    missing = spec.model_copy(update={"kernel": spec.kernel.with_name("nope")})
    with pytest.raises(ImageError) as err:
        await new_driver().start(missing)
    assert err.value.path == missing.kernel
    assert str(missing.kernel) in err.value.detail
    assert not spec.run_dir.exists()  # nothing was started


async def test_create_error_carries_the_servers_message_and_leaves_no_process(
    fake_chv: Path, spec: VmSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CHV_CREATE_ERROR", "Cannot allocate guest memory")
    with pytest.raises(DriverError) as err:
        await new_driver().start(spec)
    assert isinstance(err.value, ChvServerError)
    assert "vm.create" in err.value.detail
    assert "Cannot allocate guest memory" in err.value.detail
    pid = json.loads(spec.state_file.read_text())["pid"]
    assert not process.is_alive(pid)


async def test_vmm_that_exits_at_start_reports_its_output(
    fake_chv: Path, spec: VmSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CHV_EXIT_AT_START", "1")
    with pytest.raises(DriverError, match=r"exited during start.*cannot open /dev/kvm"):
        await new_driver().start(spec)


async def test_binary_not_installed(spec: VmSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DriverError, match="cloud-hypervisor is not installed"):
        await new_driver().start(spec)


def test_registered_with_capabilities() -> None:
    assert "cloud-hypervisor" in known_drivers()
    driver = get_driver("cloud-hypervisor", start_timeout_s=5)
    assert isinstance(driver, CloudHypervisorDriver)
    assert isinstance(driver, Driver)
    caps = driver.capabilities()
    assert caps.name == "cloud-hypervisor"
    assert (caps.graceful_stop, caps.recover, caps.device_passthrough) == (True, True, True)
    assert caps.kvm == probe_ioctl().usable
