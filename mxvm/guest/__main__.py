"""`python -m mxvm.guest`: the guest agent's entry point (PID 1's child inside the VM).

In the VM it serves the virtio-serial port named org.mxvm.guest.0 and configures the network
from /proc/cmdline. `--listen PATH` serves a unix socket instead (tests, development).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from mxvm.guest import netconf, power
from mxvm.guest.agent import GuestAgent, read_uptime
from mxvm.guest.port import (
    Port,
    PortUnavailable,
    SerialPort,
    UnixListenPort,
    VirtioPort,
    find_virtio_port,
)
from mxvm.guest.protocol import PORT_NAME

log = logging.getLogger("mxvm.guest")


def _open_virtio(name: str, wait_s: float) -> VirtioPort:
    """The port appears once virtio_console has probed; /init loads it just before us."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return VirtioPort(find_virtio_port(name))
        except PortUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def _run(port: Port, *, cmdline: str | None, cwd: str) -> None:
    warnings = await netconf.apply(cmdline) if cmdline is not None else []
    agent = GuestAgent(port, default_cwd=cwd)
    power.watch(power.find_power_buttons(), agent.request_shutdown)
    await agent.serve(warnings)


USAGE = "usage: python -m mxvm.guest [--listen PATH] [--port-name NAME] [--no-net]"


def parse_args(argv: list[str]) -> dict[str, str | bool]:
    """A hand-rolled parser: argparse costs ~0.2 s of import time in a TCG guest."""
    opts: dict[str, str | bool] = {"port_name": PORT_NAME, "no_net": False}
    args = iter(argv)
    for arg in args:
        if arg in ("--listen", "--port-name"):
            value = next(args, None)
            if value is None:
                raise SystemExit(f"{arg} needs a value\n{USAGE}")
            opts[arg[2:].replace("-", "_")] = value
        elif arg == "--no-net":
            opts["no_net"] = True
        else:
            raise SystemExit(f"unknown argument {arg!r}\n{USAGE}")
    return opts


def serial_channel(cmdline: str) -> Path | None:
    """`mxvm.channel=ttyS0` on the kernel cmdline: serve that UART instead of virtio."""
    for word in cmdline.split():
        if word.startswith("mxvm.channel="):
            name = word.split("=", 1)[1]
            if name.startswith("tty") and "/" not in name:
                return Path("/dev") / name
    return None


def _open_port(opts: dict[str, str | bool], cmdline: str | None) -> Port:
    if "listen" in opts:
        return UnixListenPort(Path(str(opts["listen"])))
    serial = serial_channel(cmdline or "")
    if serial is not None:
        return SerialPort(serial)
    return _open_virtio(str(opts["port_name"]), 30.0)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    imported_at = read_uptime()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="mxvm-guest %(levelname)s %(message)s"
    )
    cmdline = None if "listen" in opts else Path("/proc/cmdline").read_text()
    try:
        port = _open_port(opts, cmdline)
    except (PortUnavailable, OSError) as exc:
        log.error("guest.no_port error=%s", exc)
        return 2
    log.info("guest.starting imported_at=%.3f port_open_at=%.3f", imported_at, read_uptime())
    cwd = "/root" if Path("/root").is_dir() else "/"
    try:
        asyncio.run(_run(port, cmdline=None if opts["no_net"] else cmdline, cwd=cwd))
    finally:
        port.close()
    logging.shutdown()
    # Skip interpreter finalisation: the port threads are blocked in read()/write() on a
    # device that never returns, and /init powers off next anyway.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
