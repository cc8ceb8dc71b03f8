"""`python -m mxvm.guest`: the guest agent's entry point (PID 1's child inside the VM).

In the VM it serves the virtio-serial port named org.mxvm.guest.0 and configures the network
from /proc/cmdline. `--listen PATH` serves a unix socket instead (tests, development).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

from mxvm.guest import netconf, power
from mxvm.guest.agent import GuestAgent
from mxvm.guest.port import Port, PortUnavailable, UnixListenPort, VirtioPort, find_virtio_port
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxvm.guest")
    parser.add_argument("--listen", type=Path, help="serve a unix socket instead of virtio")
    parser.add_argument("--port-name", default=PORT_NAME)
    parser.add_argument("--no-net", action="store_true", help="leave the network alone")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="mxvm-guest %(levelname)s %(message)s"
    )
    try:
        port: Port = (
            UnixListenPort(args.listen) if args.listen else _open_virtio(args.port_name, 30.0)
        )
    except (PortUnavailable, OSError) as exc:
        log.error("guest.no_port error=%s", exc)
        return 2
    configure_net = not (args.no_net or args.listen)
    cmdline = Path("/proc/cmdline").read_text() if configure_net else None
    cwd = "/root" if Path("/root").is_dir() else "/"
    try:
        asyncio.run(_run(port, cmdline=cmdline, cwd=cwd))
    finally:
        port.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
