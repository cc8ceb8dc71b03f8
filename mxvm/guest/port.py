"""Byte-stream ports the guest agent serves on.

`VirtioPort` is the real one: a virtio-serial port, opened once read-write (the driver allows
one opener, and reopening would flap the host's view of the port). Its semantics, which the
agent is written against: read() returns b"" while no host is connected to QEMU's socket,
and write() blocks until one is.

`UnixListenPort` mimics those semantics with a listening unix socket (one host connection
at a time, like QEMU's `-chardev socket,server=on`). Tests run the real agent on it, and a
developer can run the agent on the host with `python -m mxvm.guest --listen PATH`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Protocol

from mxvm.guest.protocol import PORT_NAME

SYS_PORTS = Path("/sys/class/virtio-ports")


class PortUnavailable(OSError):
    """The port cannot be found or opened."""


class Port(Protocol):
    def read(self) -> bytes:
        """Block for input; b"" means no host is connected right now."""

    def write(self, data: bytes) -> None:
        """Block until `data` is handed to the host side (or dropped on disconnect)."""

    def watch_host(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arrange for wait_for_host() to wake when a host (re)connects, if the port can."""

    def wait_for_host(self, timeout: float) -> None:
        """Called after read() returned b"": wait (at most `timeout`) for a host."""

    def close(self) -> None: ...


class _NoHostSignal:
    """Ports whose read() itself waits for a host: nothing to watch, a short nap."""

    def watch_host(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def wait_for_host(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.05))


def find_virtio_port(name: str = PORT_NAME, sys_dir: Path = SYS_PORTS) -> Path:
    """The /dev node of the virtio-serial port called `name` (mdev makes no name symlinks)."""
    for entry in sorted(sys_dir.glob("*")):
        with contextlib.suppress(OSError):
            if (entry / "name").read_text().strip() == name:
                return Path("/dev") / entry.name
    raise PortUnavailable(f"no virtio-serial port named {name!r} under {sys_dir}")


class VirtioPort:
    def __init__(self, dev: Path) -> None:
        try:
            self._fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise PortUnavailable(f"cannot open {dev}: {exc}") from exc
        self._host_event = threading.Event()

    def watch_host(self, loop: asyncio.AbstractEventLoop) -> None:
        """virtio_console raises SIGIO on an O_ASYNC port when the host side opens or
        closes, so an idle guest with no host attached needs no polling (a 20 Hz poll costs
        a TCG guest a fifth of a host core). asyncio's handler works whichever thread the
        signal lands on; the 1 s fallback in the agent covers a missed edge."""
        loop.add_signal_handler(signal.SIGIO, self._host_event.set)
        fcntl.fcntl(self._fd, fcntl.F_SETOWN, os.getpid())
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_ASYNC)

    def wait_for_host(self, timeout: float) -> None:
        self._host_event.wait(timeout)
        self._host_event.clear()

    def read(self) -> bytes:
        return os.read(self._fd, 65536)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class SerialPort(_NoHostSignal):
    """A UART as the channel (cloud-hypervisor has no virtio-serial ports: its 16550 is the
    unix socket). Raw mode, so no byte of a frame is translated or taken as a signal. A UART
    has no "host attached" state: reads just wait, and frames written while no host is
    connected are buffered or lost by the VMM (ping/status/attach recover from that)."""

    def __init__(self, dev: Path) -> None:
        import tty  # only here: termios is not needed on the virtio path

        try:
            self._fd = os.open(dev, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            tty.setraw(self._fd)
        except OSError as exc:
            raise PortUnavailable(f"cannot open {dev} as a raw serial line: {exc}") from exc

    def read(self) -> bytes:
        return os.read(self._fd, 65536)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class UnixListenPort(_NoHostSignal):
    """A listening unix socket that serves one host connection at a time."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        self._conn: socket.socket | None = None
        self._cond = threading.Condition()
        self._closed = False

    def read(self) -> bytes:
        conn = self._current() or self._accept()
        if conn is None:
            return b""
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
        return data

    def write(self, data: bytes) -> None:
        with self._cond:
            while self._conn is None and not self._closed:
                self._cond.wait()
            conn = self._conn
        if conn is None:
            return
        try:
            conn.sendall(data)
        except OSError:
            self._drop(conn)  # like virtio-serial: what the departed host missed is gone

    def close(self) -> None:
        with self._cond:
            self._closed = True
            conn, self._conn = self._conn, None
            self._cond.notify_all()
        for sock in (conn, self._server):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self._path.unlink(missing_ok=True)

    def _current(self) -> socket.socket | None:
        with self._cond:
            return self._conn

    def _accept(self) -> socket.socket | None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return None
        with self._cond:
            if self._closed:
                conn.close()
                return None
            self._conn = conn
            self._cond.notify_all()
        return conn

    def _drop(self, conn: socket.socket) -> None:
        with self._cond:
            if self._conn is conn:
                self._conn = None
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv()
        conn.close()
