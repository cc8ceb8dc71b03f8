"""Host-side client of the guest agent, over the unix socket QEMU's virtio-serial chardev
listens on (`-chardev socket,id=mxvmch,path=SOCK,server=on,wait=off`).

    client = await GuestClient.connect(sock, timeout=30)
    info = await client.wait_ready(timeout=120)
    handle = await client.run(["sh", "-c", "echo hi"])
    async for chunk in handle: ...           # OutputChunk(stream, data)
    code = await handle.exit_code()
    result = await client.exec(["uname", "-r"], timeout=30)   # ExecResult
    await client.shutdown(); await client.close()

QEMU serves one connection at a time; a client that re-connects after a host agent restart
calls `status()` to learn the main command's state and `attach(id)` to follow its output.
"""

# Timeouts are arguments on purpose: each call has its own deadline, converted to the
# typed GuestTimeout / GuestUnavailable errors callers expect.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from mxvm.guest.errors import (
    GuestCommandRejected,
    GuestError,
    GuestProtocolError,
    GuestTimeout,
    GuestUnavailable,
)
from mxvm.guest.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Error,
    Exec,
    Exit,
    GuestFrame,
    HostFrame,
    Output,
    Ping,
    Pong,
    ProtocolError,
    Ready,
    Run,
    Shutdown,
    Signal,
    Status,
    StatusRequest,
    Stream,
    decode_guest_frame,
    encode,
)

log = logging.getLogger("mxvm.guest.client")
T = TypeVar("T")


@dataclass(frozen=True)
class ReadyInfo:
    agent_version: str
    protocol: int
    kernel: str
    boot_s: float  # guest uptime when the agent started serving
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OutputChunk:
    stream: Stream
    data: bytes


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int
    signal: int | None = None
    error: str | None = None  # set when the command could not start (exit code 126/127)


class RunHandle:
    """A command in the guest: iterate it for output chunks, await exit_code() for the end."""

    def __init__(self, client: GuestClient, cmd_id: str) -> None:
        self.id = cmd_id
        self._client = client
        self._chunks: asyncio.Queue[OutputChunk | GuestError | None] = asyncio.Queue()
        self._exit: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()
        self._exit.add_done_callback(_consume_exception)

    def __aiter__(self) -> AsyncIterator[OutputChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[OutputChunk]:
        while (item := await self._chunks.get()) is not None:
            if isinstance(item, GuestError):
                raise item
            yield item

    async def wait(self, timeout: float | None = None) -> Exit:
        """The command's Exit frame (code, signal, start error)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._exit), timeout)
        except TimeoutError as exc:
            raise GuestTimeout(f"command {self.id} still running after {timeout}s") from exc

    async def exit_code(self, timeout: float | None = None) -> int:
        return (await self.wait(timeout)).code

    async def signal(self, signum: int) -> None:
        await self._client.signal(self.id, signum)

    @property
    def done(self) -> bool:
        return self._exit.done()

    def _feed(self, frame: Output) -> None:
        self._chunks.put_nowait(OutputChunk(frame.stream, frame.raw()))

    def _finish(self, frame: Exit) -> None:
        if not self._exit.done():
            self._exit.set_result(frame)
            self._chunks.put_nowait(None)

    def _fail(self, exc: GuestError) -> None:
        if not self._exit.done():
            self._exit.set_exception(exc)
            self._chunks.put_nowait(exc)


class GuestClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock_path: Path
    ) -> None:
        self.sock_path = sock_path
        self._reader = reader
        self._writer = writer
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[ReadyInfo] = loop.create_future()
        self._ready.add_done_callback(_consume_exception)
        self._handles: dict[str, RunHandle] = {}
        self._abandoned: set[str] = set()
        self._pongs: dict[str, asyncio.Future[Pong]] = {}
        self._statuses: deque[asyncio.Future[Status]] = deque()
        self._lost: GuestError | None = None
        self._read_task = loop.create_task(self._read_loop(), name=f"guest-client:{sock_path}")

    @classmethod
    async def connect(cls, sock_path: Path | str, timeout: float = 10.0) -> GuestClient:
        """Connect, retrying while QEMU has not created its socket yet."""
        path = Path(sock_path)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(path, limit=2 * MAX_FRAME_BYTES)
                return cls(reader, writer, path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if loop.time() >= deadline:
                    raise GuestUnavailable(f"cannot connect to {path}: {exc}") from exc
                await asyncio.sleep(0.05)

    async def __aenter__(self) -> GuestClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 60.0) -> ReadyInfo:
        """The agent's Ready (fresh boot) or Pong (a guest already up when we connected)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._ready.done():
            self._check_connected()
            await self._send(Ping(nonce="ready"))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise GuestUnavailable(f"guest agent not ready after {timeout}s")
            await asyncio.wait({self._ready}, timeout=min(1.0, remaining))
        info = self._ready.result()
        if info.protocol != PROTOCOL_VERSION:
            raise GuestProtocolError(
                f"guest agent {info.agent_version} speaks protocol {info.protocol}, "
                f"this host speaks {PROTOCOL_VERSION}: rebuild the guest image"
            )
        return info

    async def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        *,
        cmd_id: str | None = None,
    ) -> RunHandle:
        """Start the allocation's main command (once per guest boot)."""
        handle = self.attach(cmd_id or f"main-{uuid.uuid4().hex[:12]}")
        await self._send(Run(id=handle.id, argv=list(argv), env=dict(env or {}), cwd=cwd))
        return handle

    async def start_exec(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> RunHandle:
        """Start a further command and stream it like run()."""
        handle = self.attach(f"exec-{uuid.uuid4().hex[:12]}")
        await self._send(Exec(id=handle.id, argv=list(argv), env=dict(env or {}), cwd=cwd))
        return handle

    async def exec(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run a command to completion and collect its output; SIGKILLed on timeout."""
        handle = await self.start_exec(argv, env, cwd)
        try:
            async with asyncio.timeout(timeout):
                out, err = bytearray(), bytearray()
                async for chunk in handle:
                    (out if chunk.stream == "stdout" else err).extend(chunk.data)
                end = await handle.wait()
        except TimeoutError as exc:
            with contextlib.suppress(GuestError):
                await self.signal(handle.id, 9)
            raise GuestTimeout(f"exec {list(argv)!r} still running after {timeout}s") from exc
        finally:
            self._handles.pop(handle.id, None)
            if not handle.done:  # timed out: drop its late frames instead of re-adding it
                self._abandoned.add(handle.id)
        return ExecResult(bytes(out), bytes(err), end.code, end.signal, end.error)

    def attach(self, cmd_id: str) -> RunHandle:
        """The handle for a command id (e.g. the main command after a re-connect)."""
        handle = self._handles.get(cmd_id)
        if handle is None:
            handle = self._handles[cmd_id] = RunHandle(self, cmd_id)
            if self._lost is not None:
                handle._fail(self._lost)
        return handle

    async def status(self, timeout: float = 10.0) -> Status:
        fut: asyncio.Future[Status] = asyncio.get_running_loop().create_future()
        self._statuses.append(fut)
        await self._send(StatusRequest())
        return await self._await(fut, timeout, "status")

    async def ping(self, timeout: float = 10.0) -> Pong:
        nonce = uuid.uuid4().hex[:12]
        fut = self._pongs[nonce] = asyncio.get_running_loop().create_future()
        try:
            await self._send(Ping(nonce=nonce))
            return await self._await(fut, timeout, "ping")
        finally:
            self._pongs.pop(nonce, None)

    async def signal(self, cmd_id: str, signum: int) -> None:
        await self._send(Signal(id=cmd_id, signal=signum))

    async def shutdown(self, grace_s: float = 5.0) -> None:
        """Ask the guest to stop its commands, sync and power off (QEMU then exits)."""
        await self._send(Shutdown(grace_s=grace_s))

    async def close(self) -> None:
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        self._lose(GuestUnavailable("guest client closed"))

    @property
    def connected(self) -> bool:
        return self._lost is None

    # -- internals --------------------------------------------------------------------------

    async def _await(self, fut: asyncio.Future[T], timeout: float, what: str) -> T:
        try:  # wait_for cancels `fut` on timeout, so a late reply finds it done and skips it
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError as exc:
            raise GuestTimeout(f"no {what} reply from the guest within {timeout}s") from exc

    def _check_connected(self) -> None:
        if self._lost is not None:
            raise self._lost

    async def _send(self, frame: HostFrame) -> None:
        self._check_connected()
        try:
            self._writer.write(encode(frame))
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._lose(GuestUnavailable(f"guest channel {self.sock_path} lost: {exc}"))
            raise self._lost from exc  # type: ignore[misc]

    async def _read_loop(self) -> None:
        try:
            while line := await self._reader.readline():
                if line.strip():
                    self._handle_line(line)
        except (ConnectionError, OSError, ValueError) as exc:  # ValueError: line over limit
            self._lose(GuestUnavailable(f"guest channel {self.sock_path} lost: {exc}"))
            return
        self._lose(GuestUnavailable(f"guest channel {self.sock_path} closed"))

    def _handle_line(self, line: bytes) -> None:
        try:
            frame = decode_guest_frame(line)
        except ProtocolError as exc:
            # Skip it: after a re-connect the first line may be a torn frame.
            log.warning("guest.bad_frame sock=%s error=%s", self.sock_path, exc)
            return
        self._dispatch(frame)

    def _dispatch(self, frame: GuestFrame) -> None:
        match frame:
            case Output() | Exit():
                self._on_command_frame(frame)
            case Ready() | Pong():
                self._on_ready_or_pong(frame)
            case Status():
                while self._statuses:  # replies come in request order; skip timed-out ones
                    fut = self._statuses.popleft()
                    if not fut.done():
                        fut.set_result(frame)
                        break
            case Error():
                self._on_error(frame)

    def _on_command_frame(self, frame: Output | Exit) -> None:
        if frame.id in self._abandoned:
            if isinstance(frame, Exit):
                self._abandoned.discard(frame.id)
        elif isinstance(frame, Output):
            self.attach(frame.id)._feed(frame)
        else:
            self.attach(frame.id)._finish(frame)

    def _on_ready_or_pong(self, frame: Ready | Pong) -> None:
        if not self._ready.done():
            self._ready.set_result(_ready_info(frame))
        if isinstance(frame, Pong):
            fut = self._pongs.get(frame.nonce)
            if fut is not None and not fut.done():
                fut.set_result(frame)

    def _on_error(self, frame: Error) -> None:
        handle = self._handles.get(frame.id) if frame.id is not None else None
        if handle is not None:
            handle._fail(GuestCommandRejected(frame.message, id=frame.id))
        else:
            log.warning("guest.error sock=%s message=%s", self.sock_path, frame.message)

    def _lose(self, exc: GuestError) -> None:
        if self._lost is not None:
            return
        self._lost = exc
        for handle in self._handles.values():
            handle._fail(exc)
        waiters: list[asyncio.Future[Pong] | asyncio.Future[Status] | asyncio.Future[ReadyInfo]]
        waiters = [*self._pongs.values(), *self._statuses, self._ready]
        for fut in waiters:
            if not fut.done():
                fut.set_exception(exc)


def _ready_info(frame: Ready | Pong) -> ReadyInfo:
    warnings = frame.warnings if isinstance(frame, Ready) else []
    return ReadyInfo(frame.agent_version, frame.protocol, frame.kernel, frame.boot_s, warnings)


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    """Mark a failure as seen, so nobody is warned about a handle that was never awaited."""
    if not fut.cancelled():
        fut.exception()
