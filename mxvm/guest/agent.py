"""The guest agent: runs inside the microVM, serves protocol frames on one port.

Stdlib only (it runs on the guest image's bare Python). One asyncio loop handles frames
concurrently; two daemon threads move bytes, because the virtio-serial port only offers
blocking semantics that matter (read() -> b"" while no host is attached, write() blocks until
one is). The agent outlives host connections: a host that re-connects sends
`status_request` and learns whether the main command still runs.

Commands run with asyncio subprocesses in their own session (so `signal` reaches the whole
process group), never through a shell unless argv itself is `sh -c ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxvm.guest.port import Port
from mxvm.guest.protocol import (
    AGENT_VERSION,
    MAX_CHUNK,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Error,
    Exec,
    Exit,
    Frame,
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
    decode_host_frame,
    encode,
)

log = logging.getLogger("mxvm.guest.agent")

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
# After a command exits, how long to keep reading pipes a backgrounded grandchild holds open.
PIPE_GRACE_S = 2.0
NO_HOST_POLL_S = 0.05
NO_HOST_WAIT_S = 1.0  # upper bound between read attempts while no host is attached


def read_uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return time.monotonic()


class _StartFailure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Command:
    id: str
    is_main: bool
    proc: asyncio.subprocess.Process | None = None
    code: int | None = None


class GuestAgent:
    def __init__(
        self,
        port: Port,
        *,
        base_env: dict[str, str] | None = None,
        default_cwd: str = "/",
    ) -> None:
        self._port = port
        self._base_env = dict(BASE_ENV if base_env is None else base_env)
        self._default_cwd = default_cwd
        self._outq: queue.Queue[bytes] = queue.Queue(maxsize=256)
        self._commands: dict[str, _Command] = {}
        self._main: _Command | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._stopping = False
        self._grace_s = 5.0
        self._boot_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def serve(self, warnings: list[str] | None = None) -> None:
        """Serve until a shutdown request; then stop every command and flush what is queued."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._boot_s = read_uptime()
        self._port.watch_host(self._loop)
        threading.Thread(target=self._write_loop, name="port-writer", daemon=True).start()
        threading.Thread(target=self._read_loop, name="port-reader", daemon=True).start()
        await self._send(
            Ready(
                agent_version=AGENT_VERSION,
                protocol=PROTOCOL_VERSION,
                kernel=os.uname().release,
                boot_s=self._boot_s,
                warnings=list(warnings or []),
            )
        )
        log.info("guest.ready boot_s=%.3f", self._boot_s)
        await self._stop.wait()
        log.info("guest.stopping grace_s=%.1f", self._grace_s)
        await self._stop_commands(self._grace_s)
        os.sync()
        await self._drain(limit_s=2.0)
        self._closing = True
        with contextlib.suppress(queue.Full):
            self._outq.put_nowait(b"")

    def request_shutdown(self, grace_s: float = 5.0) -> None:
        """Thread-safe: ask serve() to stop (the power button calls this)."""
        loop, stop = self._loop, self._stop
        if loop is None or stop is None:
            return

        def _set() -> None:
            self._grace_s = grace_s
            stop.set()

        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(_set)

    # -- byte movers (threads) ------------------------------------------------------------

    def _read_loop(self) -> None:
        buf = bytearray()
        while not self._closing:
            try:
                chunk = self._port.read()
            except OSError:
                chunk = b""
            if not chunk:
                buf.clear()  # a partial frame from a departed host is garbage
                self._port.wait_for_host(NO_HOST_WAIT_S)
                continue
            buf += chunk
            while (nl := buf.find(b"\n")) >= 0:
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                if line.strip():
                    self._post(self._on_line, line)
            if len(buf) > MAX_FRAME_BYTES:
                buf.clear()
                self._post(self._reject, f"a frame exceeded {MAX_FRAME_BYTES} bytes: dropped")

    def _write_loop(self) -> None:
        while line := self._outq.get():  # b"" (queued by serve() at the end) stops it
            try:
                self._port.write(line)
            except OSError as exc:
                log.warning("guest.write_failed error=%s", exc)
                time.sleep(NO_HOST_POLL_S)
            finally:
                self._outq.task_done()

    def _post(self, fn: Any, *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    async def _send(self, frame: Frame) -> None:
        line = encode(frame)
        while True:  # a full queue means no host is reading: hold the producer back
            try:
                self._outq.put_nowait(line)
                return
            except queue.Full:
                await asyncio.sleep(0.02)

    async def _drain(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        # The queue is emptied by a thread, so there is no event to await: poll.
        while self._outq.unfinished_tasks and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    # -- frame dispatch (loop) ------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_line(self, line: bytes) -> None:
        try:
            frame = decode_host_frame(line)
        except ProtocolError as exc:
            self._reject(f"bad frame: {exc}")
            return
        self._dispatch(frame)

    def _reject(self, message: str) -> None:
        log.warning("guest.bad_frame error=%s", message)
        self._spawn(self._send(Error(message=message)))

    def _dispatch(self, frame: Any) -> None:
        match frame:
            case Run() | Exec() if self._stopping:
                self._spawn(self._send(Error(message="the guest is shutting down", id=frame.id)))
            case Run() if self._main is not None:
                msg = f"main command {self._main.id!r} already started"
                self._spawn(self._send(Error(message=msg, id=frame.id)))
            case Run() | Exec() if frame.id in self._commands:
                self._spawn(self._send(Error(message="duplicate command id", id=frame.id)))
            case Run() | Exec():
                cmd = _Command(frame.id, is_main=isinstance(frame, Run))
                self._commands[cmd.id] = cmd
                if cmd.is_main:
                    self._main = cmd
                self._spawn(self._execute(cmd, frame))
            case Signal():
                self._spawn(self._signal(frame))
            case StatusRequest():
                self._spawn(self._send(self._status()))
            case Ping():
                self._spawn(self._send(self._pong(frame.nonce)))
            case Shutdown():
                self.request_shutdown(frame.grace_s)

    def _status(self) -> Status:
        main = self._main
        state = "none" if main is None else ("running" if main.code is None else "exited")
        running = [c.id for c in self._commands.values() if c.proc is not None and c.code is None]
        return Status(
            main_id=main.id if main else None,
            main_state=state,  # type: ignore[arg-type]
            main_code=main.code if main else None,
            running=running,
            uptime_s=read_uptime(),
        )

    def _pong(self, nonce: str) -> Pong:
        return Pong(
            nonce=nonce,
            agent_version=AGENT_VERSION,
            protocol=PROTOCOL_VERSION,
            kernel=os.uname().release,
            boot_s=self._boot_s,
            uptime_s=read_uptime(),
        )

    # -- commands -------------------------------------------------------------------------

    async def _execute(self, cmd: _Command, req: Run | Exec) -> None:
        try:
            cmd.proc = await self._start_process(req)
        except _StartFailure as fail:
            cmd.code = fail.code
            log.info("guest.cmd_failed id=%s code=%d error=%s", cmd.id, fail.code, fail.message)
            await self._send(Exit(id=cmd.id, code=fail.code, error=fail.message))
            self._forget(cmd)
            return
        log.info("guest.cmd_started id=%s pid=%d main=%s", cmd.id, cmd.proc.pid, cmd.is_main)
        if self._stopping:  # started while a shutdown was already stopping the others
            _kill_group(cmd.proc, signal.SIGTERM)
        assert cmd.proc.stdout is not None and cmd.proc.stderr is not None
        pumps = asyncio.gather(
            self._pump(cmd.id, "stdout", cmd.proc.stdout),
            self._pump(cmd.id, "stderr", cmd.proc.stderr),
        )
        rc = await cmd.proc.wait()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(pumps, PIPE_GRACE_S)
        code, sig = (128 - rc, -rc) if rc < 0 else (rc, None)
        cmd.code = code
        log.info("guest.cmd_exited id=%s code=%d", cmd.id, code)
        await self._send(Exit(id=cmd.id, code=code, signal=sig))
        self._forget(cmd)

    def _forget(self, cmd: _Command) -> None:
        if not cmd.is_main:  # the main command's record answers status requests
            self._commands.pop(cmd.id, None)

    async def _start_process(self, req: Run | Exec) -> asyncio.subprocess.Process:
        cwd = req.cwd or self._default_cwd
        try:
            return await asyncio.create_subprocess_exec(
                *req.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**self._base_env, **req.env},
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            if exc.filename == cwd:  # the child's chdir failed, not the exec
                raise _StartFailure(126, f"working directory {cwd}: {exc.strerror}") from exc
            raise _StartFailure(127, f"{req.argv[0]}: {exc.strerror or exc}") from exc
        except OSError as exc:
            raise _StartFailure(126, f"{req.argv[0]}: {exc.strerror or exc}") from exc

    async def _pump(self, cmd_id: str, stream: Stream, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(MAX_CHUNK):
            await self._send(Output.of(cmd_id, stream, chunk))

    async def _signal(self, req: Signal) -> None:
        cmd = self._commands.get(req.id)
        if cmd is None or cmd.proc is None or cmd.code is not None:
            await self._send(Error(message="no running command with this id", id=req.id))
            return
        _kill_group(cmd.proc, req.signal)

    async def _stop_commands(self, grace_s: float) -> None:
        self._stopping = True
        running = [c for c in self._commands.values() if c.code is None]
        for cmd in running:  # a command still starting is signalled by _execute
            if cmd.proc is not None:
                _kill_group(cmd.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(c.code is None for c in running) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for cmd in running:
            if cmd.code is None and cmd.proc is not None:
                _kill_group(cmd.proc, signal.SIGKILL)
        if self._tasks:  # let the exit frames of the stopped commands go out
            await asyncio.wait(set(self._tasks), timeout=PIPE_GRACE_S + 1)


def _kill_group(proc: asyncio.subprocess.Process, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
