"""Watching a VMM process we are not the parent of (it was daemonized, maybe by an earlier
agent): liveness from /proc, identity from /proc/<pid>/cmdline, exit via pidfd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

PROC = Path("/proc")


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def is_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by init) counts as dead."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    # Field 3, after the parenthesised command name (which may itself contain ')').
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def pids() -> list[int]:
    """Every process's pid, now."""
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def is_our_process(pid: int, argv: list[str]) -> bool:
    """The pid runs the exact command line we started (guards against pid reuse)."""
    return is_alive(pid) and cmdline(pid) == argv


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


async def wait_exit(pid: int, *, poll_s: float = 0.5) -> None:
    """Return once `pid` has exited. pidfd where the kernel has it, else /proc polling."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        await _poll_exit(pid, poll_s)
        return
    try:
        await _pidfd_readable(pidfd, pid, poll_s)
    finally:
        os.close(pidfd)


async def _pidfd_readable(pidfd: int, pid: int, poll_s: float) -> None:
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        # A slow poll as well: belt and braces against a missed wake-up.
        while is_alive(pid):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(poll_s, 1.0) * 4):
                    await exited.wait()
                    return
    finally:
        loop.remove_reader(pidfd)


async def _poll_exit(pid: int, poll_s: float) -> None:
    while is_alive(pid):  # noqa: ASYNC110 - nothing to wait on without a pidfd
        await asyncio.sleep(poll_s)


async def wait_exit_for(pid: int, timeout_s: float, *, poll_s: float = 0.5) -> bool:
    """Wait up to `timeout_s` for `pid` to exit; True if it did."""
    try:
        async with asyncio.timeout(timeout_s):
            await wait_exit(pid, poll_s=poll_s)
    except TimeoutError:
        return not is_alive(pid)
    return True
