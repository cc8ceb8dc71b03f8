"""redis-server as a child process, for `mxvm up` (standalone) and the tests.

Leases are short-lived, so nothing is persisted (no RDB, no AOF); Postgres is the source of
truth and mxvm.leases copes with a Redis that lost its data. Layout of `data_dir`:
password (0600), port, redis.log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from mxvm.embedded.binaries import find_redis_server
from mxvm.embedded.errors import EmbeddedServerError
from mxvm.embedded.process import ChildProcess
from mxvm.embedded.state import load_or_choose_port, load_or_create_secret, log_tail

log = logging.getLogger(__name__)


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _auth_ping(port: int, password: str, timeout_s: float) -> bool:
    """True when the server answers AUTH + PING with +OK +PONG."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(_resp("AUTH", password) + _resp("PING"))
                await writer.drain()
                return (await reader.readline(), await reader.readline()) == (
                    b"+OK\r\n",
                    b"+PONG\r\n",
                )
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False


class EmbeddedRedis:
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        binary: Path | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._requested_port = port
        self._binary = binary
        self._port: int | None = None
        self._password: str | None = None
        self._child: ChildProcess | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError("embedded Redis has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        if self._password is None:
            raise EmbeddedServerError("embedded Redis has not been started yet")
        return f"redis://:{self._password}@127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    @property
    def pid(self) -> int | None:
        """The redis-server's pid while running (tests freeze it with SIGSTOP)."""
        return self._child.pid if self.running and self._child is not None else None

    async def start(self) -> str:
        """Start redis-server and wait until it answers an authenticated PING."""
        if self.running:
            return self.url
        binary = self._binary or find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._password = load_or_create_secret(self.data_dir / "password")
        self._port = load_or_choose_port(self.data_dir / "port", self._requested_port)
        self._child = await ChildProcess.spawn(
            "redis",
            self._argv(binary),
            log_path=self.log_path,
            run_as=None,
            stop_signal=signal.SIGTERM,
        )
        try:
            await self._wait_ready(self._child)
        except BaseException:
            await self._child.kill()
            raise
        log.info("embedded.redis.ready port=%d", self.port, extra={"port": self.port})
        return self.url

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop(self.stop_timeout_s)

    async def kill(self) -> None:
        if self._child is not None and self._child.running:
            await self._child.kill()

    def _argv(self, binary: Path) -> list[str]:
        assert self._password is not None
        return [
            str(binary),
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--requirepass", self._password),
            *("--save", "", "--appendonly", "no"),
            *("--dir", str(self.data_dir), "--logfile", str(self.log_path)),
            *("--daemonize", "no"),
        ]

    async def _wait_ready(self, child: ChildProcess) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        while not await _auth_ping(self.port, self._password or "", timeout_s=1.0):
            if not child.running:
                problem = f"exited with code {child.returncode} during start-up"
            elif loop.time() > deadline:
                problem = f"was not ready within {self.start_timeout_s:.0f}s"
            else:
                await asyncio.sleep(0.02)
                continue
            raise EmbeddedServerError(
                f"embedded Redis on port {self.port} {problem}; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )
