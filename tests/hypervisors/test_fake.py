"""FakeDriver: the knobs do what control-plane tests rely on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mxvm.hypervisors import Driver, DriverError, VmSpec, VmState
from mxvm.hypervisors.fake import FakeDriver


def spec(run_dir: Path, alloc_id: str = "a1") -> VmSpec:
    return VmSpec(
        alloc_id=alloc_id,
        name="n",
        vcpus=1,
        memory_mb=128,
        kernel=Path("/k"),
        run_dir=run_dir / alloc_id,
    )


def test_fake_is_a_driver() -> None:
    assert isinstance(FakeDriver(), Driver)


async def test_start_error(tmp_path: Path) -> None:
    driver = FakeDriver(start_error="no capacity")
    with pytest.raises(DriverError, match="no capacity"):
        await driver.start(spec(tmp_path))
    assert driver.starts == 1


async def test_boot_delay(tmp_path: Path) -> None:
    driver = FakeDriver(boot_delay_s=0.2)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await driver.start(spec(tmp_path))
    assert loop.time() - t0 >= 0.2


@pytest.mark.parametrize(("code", "state"), [(0, VmState.STOPPED), (3, VmState.CRASHED)])
async def test_run_time_then_exit_code(tmp_path: Path, code: int, state: VmState) -> None:
    driver = FakeDriver(run_time_s=0.1, exit_code=code)
    handle = await driver.start(spec(tmp_path))
    assert (await driver.inspect(handle)).state is VmState.RUNNING
    status = await asyncio.wait_for(driver.wait(handle), 2)
    assert (status.state, status.exit_code) == (state, code)


async def test_stop_wakes_wait_and_hang_waits_out_grace(tmp_path: Path) -> None:
    driver = FakeDriver()
    handle = await driver.start(spec(tmp_path))
    waiter = asyncio.create_task(driver.wait(handle))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    stopped = await driver.stop(handle, grace_s=5)
    assert stopped.reason == "guest powered off"
    assert (await asyncio.wait_for(waiter, 1)).state is VmState.STOPPED

    driver.hang = True
    handle = await driver.start(spec(tmp_path, "a2"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status = await driver.stop(handle, grace_s=0.2)
    assert loop.time() - t0 >= 0.2
    assert status.reason == "killed after the grace period"


async def test_crash_hook(tmp_path: Path) -> None:
    driver = FakeDriver()
    handle = await driver.start(spec(tmp_path))
    waiter = asyncio.create_task(driver.wait(handle))
    driver.crash("a1", "oom")
    status = await asyncio.wait_for(waiter, 1)
    assert (status.state, status.reason) == (VmState.CRASHED, "oom")


async def test_recover_across_instances_with_persist(tmp_path: Path) -> None:
    first = FakeDriver(persist=True, run_time_s=30)
    handle = await first.start(spec(tmp_path))
    again = await FakeDriver(persist=True).recover("a1", handle.run_dir)
    assert again == handle
    assert await FakeDriver(persist=True).recover("other", handle.run_dir) is None

    await first.stop(handle, 1)
    assert await FakeDriver(persist=True).recover("a1", handle.run_dir) is None
    await first.destroy(handle)
    assert not handle.run_dir.exists()


async def test_recover_after_run_time_passed_is_none(tmp_path: Path) -> None:
    handle = await FakeDriver(persist=True, run_time_s=0.05).start(spec(tmp_path))
    await asyncio.sleep(0.1)
    assert await FakeDriver(persist=True).recover("a1", handle.run_dir) is None
