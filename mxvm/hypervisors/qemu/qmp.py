"""A small async QMP client over a unix socket.

Protocol (QEMU's docs/interop/qmp-spec): the server greets with {"QMP": ...}; the client
negotiates with `qmp_capabilities`; then every command gets exactly one {"return": ...} or
{"error": {"class", "desc"}} reply carrying the command's "id", and asynchronous
{"event": ...} messages may arrive in between. Replies are matched by id, events queued.
Callers use the typed methods; nothing above this module looks at raw replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ConfigDict

from mxvm.hypervisors.base import DriverError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
_LINE_LIMIT = 1 << 20


class QmpConnectionError(DriverError):
    """The QMP socket is absent, refused the connection, or closed under us."""

    title = "QMP connection failed"


class QmpTimeout(DriverError):
    title = "QMP timed out"


class QmpError(DriverError):
    """QEMU answered a command with an error reply."""

    title = "QMP command failed"

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}", error_class=error_class)
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QmpStatus(BaseModel):
    """The reply of query-status. `status` is QEMU's RunState (running, paused, ...)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    running: bool
    status: str


class QmpEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event: str
    data: dict[str, Any] = {}


class QmpClient:
    """One negotiated QMP session. Use `async with await QmpClient.connect(path):`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[QmpEvent] = asyncio.Queue()
        self._reader_task: asyncio.Task[None] | None = None
        self._closed_reason = ""

    @classmethod
    async def connect(cls, path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> QmpClient:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_unix_connection(str(path), limit=_LINE_LIMIT)
                client = cls(reader, writer)
                await client._handshake()
        except TimeoutError as exc:
            raise QmpTimeout(f"QMP at {path}: no greeting within {timeout_s}s") from exc
        except OSError as exc:
            raise QmpConnectionError(f"QMP at {path}: {exc}") from exc
        return client

    async def _handshake(self) -> None:
        greeting = await self._read_message()
        if "QMP" not in greeting:
            raise QmpConnectionError(f"QMP: unexpected greeting {greeting!r:.200}")
        self._reader_task = asyncio.create_task(self._read_loop(), name="qmp-reader")
        await self.execute("qmp_capabilities")

    async def _read_message(self) -> dict[str, Any]:
        line = await self._reader.readline()
        if not line:
            raise QmpConnectionError("QMP: connection closed by QEMU")
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QmpConnectionError(f"QMP: bad JSON {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise QmpConnectionError(f"QMP: not an object {line[:200]!r}")
        return message

    async def _read_loop(self) -> None:
        try:
            while True:
                self._dispatch(await self._read_message())
        except (QmpConnectionError, OSError) as exc:
            self._closed_reason = str(exc)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(QmpConnectionError(self._closed_reason))
        self._pending.clear()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "event" in message:
            self._events.put_nowait(QmpEvent.model_validate(message))
            return
        future = self._pending.pop(str(message.get("id")), None)
        if future is None or future.done():
            log.debug("qmp.unmatched_reply %s", str(message)[:200])
            return
        future.set_result(message)

    async def execute(
        self, command: str, arguments: dict[str, Any] | None = None, *, timeout_s: float = 5.0
    ) -> Any:
        """Run `command`; return its "return" value or raise QmpError."""
        if self._reader_task is None or self._reader_task.done():
            raise QmpConnectionError(f"QMP: {command}: not connected {self._closed_reason}")
        command_id = str(next(self._ids))
        request: dict[str, Any] = {"execute": command, "id": command_id}
        if arguments:
            request["arguments"] = arguments
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        try:
            self._writer.write(json.dumps(request).encode() + b"\n")
            async with asyncio.timeout(timeout_s):
                await self._writer.drain()
                reply: dict[str, Any] = await future
        except TimeoutError as exc:
            raise QmpTimeout(f"QMP: {command}: no reply within {timeout_s}s") from exc
        except OSError as exc:
            raise QmpConnectionError(f"QMP: {command}: {exc}") from exc
        finally:
            self._pending.pop(command_id, None)
        if "error" in reply:
            error = reply["error"]
            raise QmpError(command, str(error.get("class", "?")), str(error.get("desc", "")))
        return reply.get("return")

    async def next_event(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> QmpEvent:
        try:
            async with asyncio.timeout(timeout_s):
                return await self._events.get()
        except TimeoutError as exc:
            raise QmpTimeout(f"QMP: no event within {timeout_s}s") from exc

    async def query_status(self) -> QmpStatus:
        return QmpStatus.model_validate(await self.execute("query-status"))

    async def system_powerdown(self) -> None:
        await self.execute("system_powerdown")

    async def quit(self) -> None:
        """Ask QEMU to exit now; it may close the socket before or after replying."""
        with contextlib.suppress(QmpConnectionError):
            await self.execute("quit")

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> QmpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
