"""Entering a named network namespace for the few things netlink cannot do remotely.

Opening /dev/net/tun binds the new tap to the opener's namespace, and /proc/sys/net shows
the opener's namespace, so those two are done with the calling thread briefly switched
into the target namespace (setns(2) is per thread; nothing awaits while switched).
Subprocesses (nft) are started through `ip netns exec`.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mxvm.net.errors import NetworkError

NETNS_RUN_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    if not name or "/" in name or name in {".", ".."}:
        raise NetworkError(f"invalid network namespace name {name!r}")
    return NETNS_RUN_DIR / name


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetworkError(f"setns into {what} failed: {os.strerror(err)}", netns=what)


@contextmanager
def entered(netns: str | None) -> Iterator[None]:
    """Run the body in netns (None: stay where we are). Keep the body short and sync."""
    if netns is None:
        yield
        return
    try:
        target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetworkError(f"network namespace {netns!r} is not available: {exc}") from exc
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, netns)
            try:
                yield
            finally:
                _setns(home, "the original namespace")
        finally:
            os.close(home)
    finally:
        os.close(target)


def exec_prefix(netns: str | None) -> list[str]:
    """argv prefix that runs a command inside netns."""
    if netns is None:
        return []
    netns_path(netns)  # validates the name
    return ["ip", "netns", "exec", netns]
