"""Inspecting throwaway namespaces from outside: `ip -j`, `ip netns exec` (argv, no shell)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest


def run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


NETNS_PREFIX = "mxvmtest-"
# What a hypervisor does with ifname=...: attach to the persistent tap (argv[1]) with its
# own flags, say so, and hold it like a running VM until stdin closes.
HOLD_TAP_SCRIPT = """
import fcntl, os, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH22x", sys.argv[1].encode(), 0x0002 | 0x1000 | 0x4000))
print("attached", flush=True)
sys.stdin.read()
"""
_probe_result: str | None = None


@contextlib.asynccontextmanager
async def tap_held(netns: str, name: str) -> AsyncIterator[None]:
    """A process holding the tap `name` the way a running hypervisor does, until the block
    ends."""
    holder = await asyncio.create_subprocess_exec(
        *["ip", "netns", "exec", netns, "python3", "-c", HOLD_TAP_SCRIPT, name],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 10)).strip() == b"attached"
        yield
    finally:
        await asyncio.wait_for(holder.communicate(b""), 10)


def _why_no_netns() -> str:
    """'' when this host can run the privileged tests, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for network namespaces)"
    if shutil.which("ip") is None:
        return "needs the `ip` command (Debian package iproute2)"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun"
    probe = f"{NETNS_PREFIX}probe-{secrets.token_hex(3)}"
    made = run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    run(["ip", "netns", "del", probe], check=False)
    return ""


def require_netns() -> None:
    global _probe_result
    if _probe_result is None:
        _probe_result = _why_no_netns()
    if _probe_result:
        pytest.skip(_probe_result)


def require_binary(name: str, package: str) -> None:
    if shutil.which(name) is None:
        pytest.skip(f"needs `{name}` (Debian package {package}, installed by scripts/bootstrap)")


def ip(ns: str, *args: str) -> str:
    """Run `ip -n ns args...` and return stdout (raises on failure)."""
    return run(["ip", "-n", ns, *args]).stdout


def ip_ok(ns: str, *args: str) -> bool:
    return run(["ip", "-n", ns, *args], check=False).returncode == 0


def link_json(ns: str, ifname: str) -> dict[str, Any] | None:
    res = run(["ip", "-n", ns, "-j", "-d", "link", "show", "dev", ifname], check=False)
    if res.returncode != 0:
        return None
    links: list[dict[str, Any]] = json.loads(res.stdout)
    return links[0]


def link_names(ns: str) -> set[str]:
    links: list[dict[str, Any]] = json.loads(ip(ns, "-j", "link", "show"))
    return {str(link["ifname"]) for link in links}


def ipv4_addresses(ns: str, ifname: str) -> list[str]:
    data: list[dict[str, Any]] = json.loads(ip(ns, "-j", "-4", "addr", "show", "dev", ifname))
    return [f"{a['local']}/{a['prefixlen']}" for d in data for a in d.get("addr_info", [])]


def in_netns(ns: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", ns, *argv], check=check)


def plug_vm(node_ns: str, vm_ns: str, port: str, address: str, gateway: str | None = None) -> None:
    """A 'VM': veth `port` in node_ns, its peer eth0 in vm_ns with address/24 (and a route)."""
    ip(node_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", vm_ns)
    ip(vm_ns, "addr", "add", f"{address}/24", "dev", "eth0")
    ip(vm_ns, "link", "set", "eth0", "up")
    ip(vm_ns, "link", "set", "lo", "up")
    if gateway is not None:
        ip(vm_ns, "route", "add", "default", "via", gateway)


def pings(ns: str, target: str, *, tries: int = 1) -> bool:
    """One ICMP echo with a 1 s deadline, retried (a first ping may race the ARP reply)."""
    return any(
        in_netns(ns, "ping", "-n", "-q", "-c1", "-W1", target).returncode == 0 for _ in range(tries)
    )


def qemu_tap_argv(ns: str, tap: str) -> list[str]:
    """QEMU opening tap `tap` the way mxvm's VMs do (ifname=, no scripts), paused, no guest."""
    require_binary("qemu-system-x86_64", "qemu-system-x86")
    netdev = f"tap,id=n0,ifname={tap},script=no,downscript=no,vhost=off"
    qemu = ["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none", "-S"]
    return ["ip", "netns", "exec", ns, *qemu, "-monitor", "none", "-netdev", netdev]
