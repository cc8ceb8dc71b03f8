"""The QMP client against a real QEMU (a paused, empty microvm: no guest kernel needed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mxvm.hypervisors.qemu.qmp import QmpClient, QmpConnectionError, QmpError, QmpTimeout


@pytest.fixture
async def paused_qemu(qemu_binary: str, short_dir: Path) -> AsyncIterator[Path]:
    sock = short_dir / "qmp.sock"
    proc = await asyncio.create_subprocess_exec(
        qemu_binary, "-M", "microvm", "-accel", "tcg", "-nodefaults", "-no-user-config",
        "-display", "none", "-S", "-qmp", f"unix:{sock},server=on,wait=off",
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        if sock.exists():
            break
        await asyncio.sleep(0.05)
    yield sock
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


async def test_status_cont_and_events(paused_qemu: Path) -> None:
    async with await QmpClient.connect(paused_qemu) as qmp:
        status = await qmp.query_status()
        assert (status.running, status.status) == (False, "prelaunch")
        await qmp.execute("cont")
        event = await qmp.next_event(timeout_s=5)
        assert event.event == "RESUME"
        assert (await qmp.query_status()).running is True


async def test_error_reply_is_typed(paused_qemu: Path) -> None:
    async with await QmpClient.connect(paused_qemu) as qmp:
        with pytest.raises(QmpError) as info:
            await qmp.execute("no-such-command")
        assert info.value.error_class == "CommandNotFound"
        assert "no-such-command" in info.value.desc
        with pytest.raises(QmpError) as info:
            await qmp.execute("query-status", {"bogus": 1})
        assert info.value.error_class == "GenericError"
        # The session survives errors.
        assert (await qmp.query_status()).status == "prelaunch"


async def test_quit_ends_qemu_and_closes_the_session(paused_qemu: Path) -> None:
    async with await QmpClient.connect(paused_qemu) as qmp:
        await qmp.quit()
        await qmp.next_event(timeout_s=5)  # SHUTDOWN
        with pytest.raises(QmpConnectionError):
            for _ in range(50):
                await qmp.query_status()
                await asyncio.sleep(0.05)


async def test_missing_socket(short_dir: Path) -> None:
    with pytest.raises(QmpConnectionError, match=r"absent\.sock"):
        await QmpClient.connect(short_dir / "absent.sock")


async def test_silent_server_times_out(short_dir: Path) -> None:
    sock = short_dir / "silent.sock"
    server = await asyncio.start_unix_server(lambda r, w: None, path=str(sock))
    async with server:
        with pytest.raises(QmpTimeout):
            await QmpClient.connect(sock, timeout_s=0.2)


async def test_command_timeout(short_dir: Path) -> None:
    sock = short_dir / "slow.sock"

    async def greet_then_ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        await reader.readline()  # qmp_capabilities
        writer.write(b'{"return": {}, "id": "1"}\n')
        await reader.readline()  # then never answer again
        await asyncio.sleep(5)

    server = await asyncio.start_unix_server(greet_then_ignore, path=str(sock))
    async with server, await QmpClient.connect(sock) as qmp:
        with pytest.raises(QmpTimeout, match="query-status"):
            await qmp.execute("query-status", timeout_s=0.2)
