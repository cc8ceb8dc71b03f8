"""Postgres as a child process, for `mxvm up` (standalone) and the tests.

Layout of `data_dir`: pgdata/ (the cluster), password (0600), port, postgres.log.
The cluster is built in pgdata.init/ and renamed into place only once initdb and the
creation of database `mxvm` have both succeeded, so a half-made cluster is never started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path

import psutil

from mxvm.embedded.binaries import PostgresBinaries, find_postgres_binaries
from mxvm.embedded.errors import EmbeddedServerError
from mxvm.embedded.process import ChildProcess, run_once
from mxvm.embedded.state import load_or_choose_port, load_or_create_secret, log_tail
from mxvm.embedded.user import RunAs, check_traversable, unprivileged_user

log = logging.getLogger(__name__)

USER = "mxvm"
DATABASE = "mxvm"
_NO_DURABILITY = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class EmbeddedPostgres:
    """`settings` are extra `name=value` server settings (`-c`), applied last."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        fsync: bool = True,
        binaries: PostgresBinaries | None = None,
        settings: Sequence[str] = (),
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.fsync = fsync
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._requested_port = port
        self._binaries = binaries
        self._extra_settings = tuple(settings)
        self._port: int | None = None
        self._password: str | None = None
        self._child: ChildProcess | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError("embedded Postgres has not been started yet")
        return self._port

    @property
    def dsn(self) -> str:
        return self.dsn_for(DATABASE)

    def dsn_for(self, database: str) -> str:
        """The DSN of another database in this cluster (tests create one per test)."""
        if self._password is None:
            raise EmbeddedServerError("embedded Postgres has not been started yet")
        return f"postgresql://{USER}:{self._password}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while running (tests freeze it with SIGSTOP)."""
        return self._child.pid if self.running and self._child is not None else None

    async def start(self) -> str:
        """Initialise on first use, start the server, wait until it accepts connections."""
        if self.running:
            return self.dsn
        binaries = self._binaries or find_postgres_binaries()
        run_as = unprivileged_user()
        self._prepare_data_dir(run_as)
        if not (self.pgdata / "PG_VERSION").exists():
            await self._init_cluster(binaries, run_as)
        self._remove_stale_pidfile()
        self._child = await ChildProcess.spawn(
            "postgres",
            self._server_argv(binaries),
            log_path=self.log_path,
            run_as=run_as,
            stop_signal=signal.SIGINT,  # "fast" shutdown: abort transactions, exit cleanly
        )
        try:
            await self._wait_ready(self._child)
        except BaseException:
            await self._child.kill()
            raise
        log.info("embedded.postgres.ready port=%d", self.port, extra={"port": self.port})
        return self.dsn

    async def stop(self) -> None:
        """Fast shutdown and wait; does nothing when not running."""
        if self._child is not None:
            await self._child.stop(self.stop_timeout_s)

    async def kill(self) -> None:
        """SIGKILL the server and its backends (a crash), leaving the cluster restartable."""
        if self._child is None or not self._child.running:
            return
        await self._child.kill()
        self._remove_pidfile()

    def _prepare_data_dir(self, run_as: RunAs | None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        check_traversable(self.data_dir, run_as)
        password_file = self.data_dir / "password"
        self._password = load_or_create_secret(password_file)
        self._port = load_or_choose_port(self.data_dir / "port", self._requested_port)
        if run_as is not None:
            # initdb reads the password file as the server user.
            for path in (self.data_dir, password_file):
                os.chown(path, run_as.uid, run_as.gid)

    async def _init_cluster(self, binaries: PostgresBinaries, run_as: RunAs | None) -> None:
        staging = self.data_dir / "pgdata.init"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(staging, run_as.uid, run_as.gid)
        initdb = [
            str(binaries.initdb),
            *("-D", str(staging), "-U", USER, "-E", "UTF8", "--no-locale"),
            f"--pwfile={self.data_dir / 'password'}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
        ]
        if not self.fsync:
            initdb.append("--no-sync")
        await self._run_step("initdb", initdb, run_as)
        # Single-user mode creates the database without a listening server.
        single = [str(binaries.postgres), "--single", "-D", str(staging), "postgres"]
        await self._run_step("create database", single, run_as, stdin=b"CREATE DATABASE mxvm;\n")
        staging.rename(self.pgdata)
        log.info("embedded.postgres.initialised %s", self.pgdata)

    async def _run_step(
        self, what: str, argv: list[str], run_as: RunAs | None, stdin: bytes | None = None
    ) -> None:
        rc = await run_once(argv, log_path=self.log_path, run_as=run_as, stdin=stdin)
        if rc != 0:
            raise EmbeddedServerError(
                f"embedded Postgres {what} failed (exit {rc}); log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def _server_argv(self, binaries: PostgresBinaries) -> list[str]:
        settings = [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",  # TCP only: no socket path length or permission issues
            "log_min_messages=warning",
        ]
        if not self.fsync:
            settings.extend(_NO_DURABILITY)
        settings.extend(self._extra_settings)  # last, so they override the above
        argv = [str(binaries.postgres), "-D", str(self.pgdata), "-p", str(self.port)]
        for setting in settings:
            argv.extend(("-c", setting))
        return argv

    def _pidfile_lines(self) -> list[str]:
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return []

    async def _wait_ready(self, child: ChildProcess) -> None:
        """Poll postmaster.pid until our postmaster marks itself "ready"."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        while True:
            lines = self._pidfile_lines()
            # Line 1 is the postmaster's pid, line 8 its status (PG >= 10).
            if len(lines) >= 8 and lines[0] == str(child.pid) and lines[7].strip() == "ready":
                return
            if not child.running:
                problem = f"exited with code {child.returncode} during start-up"
            elif loop.time() > deadline:
                problem = f"was not ready within {self.start_timeout_s:.0f}s"
            else:
                await asyncio.sleep(0.05)
                continue
            raise EmbeddedServerError(
                f"embedded Postgres on port {self.port} {problem}; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def _remove_stale_pidfile(self) -> None:
        """Drop a postmaster.pid whose process is gone or is not a postgres (pid reuse)."""
        lines = self._pidfile_lines()
        if not lines:
            return
        try:
            alive = psutil.Process(int(lines[0])).name() == "postgres"
        except (psutil.Error, ValueError):
            alive = False
        if not alive:
            log.warning("embedded.postgres.stale_pidfile pid=%s", lines[0])
            self._remove_pidfile()

    def _remove_pidfile(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.pgdata / "postmaster.pid").unlink()
