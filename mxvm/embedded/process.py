"""Run a server as a child process: spawn, graceful stop, hard kill.

Children get a parent-death signal so a crashed `mxvm up` or test run does not leave servers
behind, and a session of their own so a terminal's Ctrl-C reaches only us; we stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from mxvm.embedded.errors import EmbeddedServerError
from mxvm.embedded.user import RunAs

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _parent_death_signal(sig: signal.Signals) -> Callable[[], None]:
    """A preexec_fn that asks the kernel to send `sig` when our thread dies.

    CPython calls preexec_fn after the uid/gid switch, which matters: the kernel clears the
    setting when credentials change.
    """

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return arm


def child_env() -> dict[str, str]:
    """Our environment minus PG*/REDIS* variables that would change a server's defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "REDIS"))}
    env["LC_ALL"] = "C"
    return env


async def run_once(
    argv: Sequence[str], *, log_path: Path, run_as: RunAs | None, stdin: bytes | None = None
) -> int:
    """Run a one-shot helper (initdb, postgres --single) to completion; output to log_path."""
    with log_path.open("ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env=child_env(),
            user=_uid(run_as),
            group=_gid(run_as),
            extra_groups=_extra_groups(run_as),
        )
    await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode


def _uid(run_as: RunAs | None) -> int | None:
    return None if run_as is None else run_as.uid


def _gid(run_as: RunAs | None) -> int | None:
    return None if run_as is None else run_as.gid


def _extra_groups(run_as: RunAs | None) -> list[int] | None:
    # [] drops root's supplementary groups along with its uid.
    return None if run_as is None else []


class ChildProcess:
    """One long-running server process we started."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stop_signal: int) -> None:
        self.name = name
        self._proc = proc
        self._stop_signal = stop_signal

    @classmethod
    async def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        run_as: RunAs | None,
        stop_signal: signal.Signals,
    ) -> ChildProcess:
        with log_path.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=child_env(),
                start_new_session=True,
                preexec_fn=_parent_death_signal(stop_signal),
                user=_uid(run_as),
                group=_gid(run_as),
                extra_groups=_extra_groups(run_as),
            )
        log.info("embedded.spawned %s pid=%d", name, proc.pid, extra={"pid": proc.pid})
        return cls(name, proc, stop_signal)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def stop(self, timeout_s: float) -> None:
        """Send the server's own shutdown signal; SIGKILL everything if it takes too long."""
        if not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(self._stop_signal)
        try:
            await asyncio.wait_for(self._proc.wait(), timeout_s)
        except TimeoutError:
            log.warning("embedded.stop_timeout %s pid=%d", self.name, self.pid)
            await self.kill()
            return
        log.info("embedded.stopped %s pid=%d rc=%s", self.name, self.pid, self.returncode)

    async def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the process and its descendants and wait until all of them have exited.

        Descendants are collected explicitly: Postgres backends call setsid(), so they are not
        in our child's process group.
        """
        victims = _descendants(self.pid) if self.running else []
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        for victim in victims:
            with contextlib.suppress(psutil.Error):
                victim.kill()
        await asyncio.wait_for(self._proc.wait(), timeout_s)
        await _wait_exited(victims, timeout_s)
        log.info("embedded.killed %s pid=%d", self.name, self.pid)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _exited(proc: psutil.Process) -> bool:
    # A zombie has released its memory and locks; only the process-table entry is left,
    # and whether that is reaped depends on our PID 1, not on us.
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _wait_exited(procs: list[psutil.Process], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not all(_exited(p) for p in procs):
        if loop.time() > deadline:
            raise EmbeddedServerError(
                f"processes {[p.pid for p in procs if not _exited(p)]} survived SIGKILL"
            )
        await asyncio.sleep(0.02)
