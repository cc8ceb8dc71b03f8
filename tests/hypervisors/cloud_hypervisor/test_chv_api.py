"""ChvClient against the spec-following fake API server, in-process on a unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from mxvm.hypervisors import DriverError
from mxvm.hypervisors.cloud_hypervisor.api import (
    ChvApiError,
    ChvBadRequest,
    ChvClient,
    ChvConflict,
    ChvConnectionError,
    ChvInvalidState,
    ChvNotFound,
    ChvServerError,
    ChvTimeout,
    api_error,
    error_messages,
)
from mxvm.hypervisors.cloud_hypervisor.models import (
    ConsoleConfig,
    CpusConfig,
    MemoryConfig,
    PayloadConfig,
    VmConfig,
)

from .fake_chv import VERSION, FakeVmm

CONFIG = VmConfig(
    payload=PayloadConfig(kernel="/img/vmlinuz", cmdline="console=hvc0"),
    cpus=CpusConfig(boot_vcpus=2, max_vcpus=2),
    memory=MemoryConfig(size=256 << 20),
)


@pytest.fixture
async def vmm(short_dir: Path) -> AsyncIterator[tuple[FakeVmm, Path]]:
    fake = FakeVmm()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    sock = short_dir / "ch.sock"
    await web.UnixSite(runner, str(sock)).start()
    yield fake, sock
    await runner.cleanup()


@pytest.fixture
async def api(vmm: tuple[FakeVmm, Path]) -> AsyncIterator[ChvClient]:
    async with ChvClient(vmm[1], timeout_s=5) as client:
        yield client


async def test_ping(api: ChvClient) -> None:
    pong = await api.ping()
    assert pong.version == VERSION
    assert pong.pid is not None


async def test_create_boot_info_shutdown_delete(api: ChvClient, vmm: tuple[FakeVmm, Path]) -> None:
    fake, _ = vmm
    await api.create(CONFIG)
    assert fake.config == CONFIG.to_json()
    assert (await api.info()).state == "Created"
    await api.boot()
    info = await api.info()
    assert info.state == "Running"
    assert info.config == CONFIG
    await api.shutdown()
    assert (await api.info()).state == "Shutdown"
    await api.delete()
    with pytest.raises(ChvNotFound):
        await api.info()
    assert fake.calls == [
        "vm.create", "vm.info", "vm.boot", "vm.info",
        "vm.shutdown", "vm.info", "vm.delete", "vm.info",
    ]  # fmt: skip


async def test_power_button_powers_the_guest_off(api: ChvClient, vmm: tuple[FakeVmm, Path]) -> None:
    fake, _ = vmm
    await api.create(CONFIG)
    await api.boot()
    await api.power_button()
    async with asyncio.timeout(5):
        await fake.exited.wait()
    assert fake.state == "Shutdown"


async def test_shutdown_vmm(api: ChvClient, vmm: tuple[FakeVmm, Path]) -> None:
    await api.shutdown_vmm()
    assert vmm[0].exited.is_set()


async def test_add_device_cold_then_hot_then_duplicate(api: ChvClient) -> None:
    await api.create(CONFIG)
    assert await api.add_device("/sys/bus/pci/devices/0000:65:00.0") is None  # 204: cold
    await api.boot()
    hot = await api.add_device("/sys/bus/pci/devices/0000:66:00.0", device_id="gpu1")
    assert hot is not None
    assert hot.id == "gpu1"
    assert hot.bdf.startswith("0000:00:")
    with pytest.raises(ChvConflict) as err:
        await api.add_device("/sys/bus/pci/devices/0000:66:00.0")
    assert err.value.http_status == 409
    paths = [d.path for d in (await api.info()).config.devices or []]
    assert paths == ["/sys/bus/pci/devices/0000:65:00.0", "/sys/bus/pci/devices/0000:66:00.0"]


async def test_boot_before_create_is_not_found_with_chs_messages(api: ChvClient) -> None:
    with pytest.raises(ChvNotFound) as err:
        await api.boot()
    assert err.value.http_status == 404
    assert err.value.messages == ["Error from API", "The VM could not boot", "VM is not created"]
    assert "vm.boot: HTTP 404: Error from API: The VM could not boot" in err.value.detail
    assert isinstance(err.value, DriverError)


async def test_actions_in_the_wrong_state_are_invalid_state(api: ChvClient) -> None:
    await api.create(CONFIG)
    with pytest.raises(ChvInvalidState):
        await api.power_button()  # created, not booted
    with pytest.raises(ChvInvalidState):
        await api.shutdown()


async def test_create_twice_and_boot_twice_are_server_errors(api: ChvClient) -> None:
    await api.create(CONFIG)
    with pytest.raises(ChvServerError, match="VM already created"):
        await api.create(CONFIG)
    await api.boot()
    with pytest.raises(ChvServerError, match="already running"):
        await api.boot()


async def test_invalid_config_is_bad_request(api: ChvClient) -> None:
    bad = CONFIG.model_copy(update={"console": ConsoleConfig(mode="Socket")})
    with pytest.raises(ChvBadRequest, match="No socket option support"):
        await api.create(bad)


async def test_missing_socket_is_a_connection_error(short_dir: Path) -> None:
    async with ChvClient(short_dir / "absent.sock", timeout_s=2) as client:
        with pytest.raises(ChvConnectionError):
            await client.ping()


async def test_a_server_that_never_answers_times_out(short_dir: Path) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hold the connection open, never reply
        writer.close()

    sock = short_dir / "mute.sock"
    server = await asyncio.start_unix_server(hang, path=str(sock))
    try:
        async with ChvClient(sock, timeout_s=0.3) as client:
            with pytest.raises(ChvTimeout):
                await client.ping()
    finally:
        server.close()
        await server.wait_closed()


def test_error_bodies_old_and_new() -> None:
    assert error_messages(b'["Error from API", "VM is not created"]') == [
        "Error from API",
        "VM is not created",
    ]
    assert error_messages(b"VmNotCreated\n") == ["VmNotCreated"]  # older CH: plain text
    assert error_messages(b"") == []


def test_status_codes_map_to_exception_types() -> None:
    assert type(api_error("x", 400, b"")) is ChvBadRequest
    assert type(api_error("x", 404, b"")) is ChvNotFound
    assert type(api_error("x", 405, b"")) is ChvInvalidState
    assert type(api_error("x", 409, b"")) is ChvConflict
    assert type(api_error("x", 500, b"")) is ChvServerError
    other = api_error("vm.resize", 429, b'["cpu removal pending"]')
    assert type(other) is ChvApiError
    assert other.detail == "vm.resize: HTTP 429: cpu removal pending"
