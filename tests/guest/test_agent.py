"""The real guest agent, in-process, driven through the real host client."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from mxvm.guest.client import GuestClient, OutputChunk
from mxvm.guest.errors import (
    GuestCommandRejected,
    GuestProtocolError,
    GuestTimeout,
    GuestUnavailable,
)
from mxvm.guest.protocol import (
    AGENT_VERSION,
    MAX_CHUNK,
    MAX_FRAME_BYTES,
    Error,
    Ready,
    decode_guest_frame,
    encode,
)

from .conftest import AgentUnderTest


async def collect(handle: object) -> list[OutputChunk]:
    return [chunk async for chunk in handle]  # type: ignore[attr-defined]


async def test_ready_reports_version(served: AgentUnderTest) -> None:
    c = await GuestClient.connect(served.sock, timeout=30)
    info = await c.wait_ready(timeout=30)
    assert info.agent_version == AGENT_VERSION and info.protocol == 1
    await c.close()


async def test_a_guest_speaking_another_protocol_is_refused(short_dir: Path) -> None:
    """A stale guest image: the client says so instead of misreading frames."""
    sock = short_dir / "old.sock"
    ready = Ready(agent_version="0.0.1", protocol=0, kernel="k", boot_s=1.0)

    async def old_guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode(ready))
        await writer.drain()
        await reader.read()

    server = await asyncio.start_unix_server(old_guest, sock)
    async with server:
        c = await GuestClient.connect(sock, timeout=30)
        with pytest.raises(GuestProtocolError, match="rebuild the guest image"):
            await c.wait_ready(timeout=30)
        await c.close()


async def test_run_streams_output_and_reports_exit_code(client: GuestClient) -> None:
    handle = await client.run(["sh", "-c", "echo hello; echo oops >&2; exit 3"])
    chunks = await collect(handle)
    assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"hello\n"
    assert b"".join(c.data for c in chunks if c.stream == "stderr") == b"oops\n"
    assert await handle.exit_code(timeout=30) == 3


def gated(script: str, gate: Path, before: str = "true") -> list[str]:
    """sh that runs `before`, waits until the test creates `gate`, then runs `script`:
    ordering without timing assumptions."""
    return ["sh", "-c", f"{before}; while [ ! -e {gate} ]; do sleep 0.05; done; {script}"]


async def test_output_arrives_before_the_command_ends(client: GuestClient, short_dir: Path) -> None:
    gate = short_dir / "go"
    handle = await client.start_exec(gated("echo second", gate, before="echo first"))
    first = await asyncio.wait_for(anext(aiter(handle)), 30)
    assert first.data == b"first\n"
    assert not handle.done  # the command is held at the gate: output was streamed
    gate.touch()
    assert await handle.exit_code(timeout=30) == 0


async def test_exec_collects_output(client: GuestClient, short_dir: Path) -> None:
    result = await client.exec(
        ["sh", "-c", 'printf "%s in %s" "$GREETING" "$(pwd)"'],
        env={"GREETING": "hi"},
        cwd=str(short_dir),
        timeout=10,
    )
    assert result.stdout == f"hi in {short_dir}".encode()
    assert (result.stderr, result.exit_code, result.error) == (b"", 0, None)


async def test_large_output_is_chunked_and_complete(client: GuestClient) -> None:
    handle = await client.start_exec(["head", "-c", "200000", "/dev/urandom"])
    chunks = await collect(handle)
    assert sum(len(c.data) for c in chunks) == 200000
    assert max(len(c.data) for c in chunks) <= MAX_CHUNK


async def test_command_not_found_is_127_with_the_error(client: GuestClient) -> None:
    result = await client.exec(["no-such-command-xyz"], timeout=30)
    assert result.exit_code == 127
    assert result.error is not None and "No such file or directory" in result.error


async def test_missing_cwd_is_126(client: GuestClient) -> None:
    result = await client.exec(["true"], cwd="/nonexistent/dir", timeout=30)
    assert result.exit_code == 126
    assert result.error is not None and "/nonexistent/dir" in result.error


async def test_signal_reaches_the_process_group(client: GuestClient) -> None:
    handle = await client.start_exec(["sh", "-c", "echo up; sleep 30; echo survived"])
    assert (await asyncio.wait_for(anext(aiter(handle)), 30)).data == b"up\n"  # it runs
    await handle.signal(signal.SIGTERM)
    end = await handle.wait(timeout=30)
    assert (end.code, end.signal) == (128 + signal.SIGTERM, signal.SIGTERM)


async def test_exec_timeout_kills_the_command(client: GuestClient) -> None:
    with pytest.raises(GuestTimeout):
        await client.exec(["sh", "-c", "echo started; sleep 30"], timeout=0.5)
    status = await client.status(timeout=30)
    for _ in range(300):  # the SIGKILL is asynchronous
        if not status.running:
            break
        await asyncio.sleep(0.1)
        status = await client.status(timeout=30)
    assert status.running == []
    await client.ping(timeout=30)  # the killed command's frames have arrived by now
    assert client._handles == {} and client._abandoned == set()  # nothing left behind


async def test_second_main_command_is_rejected(client: GuestClient) -> None:
    first = await client.run(["true"])
    assert await first.exit_code(timeout=30) == 0
    second = await client.run(["true"])
    with pytest.raises(GuestCommandRejected, match="already started"):
        await second.exit_code(timeout=30)


async def test_status_after_reconnect(served: AgentUnderTest, short_dir: Path) -> None:
    first = await GuestClient.connect(served.sock, timeout=30)
    await first.wait_ready(timeout=30)
    gate = short_dir / "go"
    handle = await first.run(gated("echo done; exit 7", gate), cmd_id="main-1")
    await first.close()
    with pytest.raises(GuestUnavailable):
        await handle.exit_code()

    second = await GuestClient.connect(served.sock, timeout=30)
    info = await second.wait_ready(timeout=30)  # answered by a pong: no second Ready
    assert info.agent_version == AGENT_VERSION
    status = await second.status(timeout=30)
    assert (status.main_id, status.main_state, status.main_code) == ("main-1", "running", None)
    main = second.attach("main-1")
    gate.touch()
    assert b"done" in b"".join(c.data for c in await collect(main))
    assert await main.exit_code(timeout=30) == 7
    status = await second.status(timeout=30)
    assert (status.main_state, status.main_code) == ("exited", 7)
    assert (await second.exec(["echo", "still here"], timeout=30)).stdout == b"still here\n"
    await second.close()


async def test_malformed_frame_gets_an_error_and_the_agent_carries_on(
    served: AgentUnderTest,
) -> None:
    reader, writer = await asyncio.open_unix_connection(served.sock)
    writer.write(b'{"type": "exec", "id": "x", "argv": []}\n')
    await writer.drain()
    frames = [decode_guest_frame(await asyncio.wait_for(reader.readline(), 10)) for _ in range(2)]
    errors = [f for f in frames if isinstance(f, Error)]
    assert errors and "argv must not be empty" in errors[0].message
    writer.write(b"x" * (MAX_FRAME_BYTES + 10))  # no newline: the agent must not hoard it
    await writer.drain()
    rejected = decode_guest_frame(await asyncio.wait_for(reader.readline(), 30))
    assert isinstance(rejected, Error) and "exceeded" in rejected.message
    writer.close()
    c = await GuestClient.connect(served.sock, timeout=30)
    assert (await c.exec(["true"], timeout=30)).exit_code == 0
    await c.close()


@pytest.mark.parametrize("settle_s", [0.0, 0.3], ids=["while-starting", "running"])
async def test_shutdown_stops_commands_and_ends_serve(
    served: AgentUnderTest, settle_s: float
) -> None:
    c = await GuestClient.connect(served.sock, timeout=30)
    await c.wait_ready(timeout=30)
    handle = await c.run(["sleep", "30"])
    await asyncio.sleep(settle_s)
    await c.shutdown(grace_s=1.0)
    end = await handle.wait(timeout=30)
    assert end.signal == signal.SIGTERM
    await asyncio.wait_for(served.task, 30)
    await c.close()
    served.port.close()
    assert not served.sock.exists()  # the listening socket is cleaned up
