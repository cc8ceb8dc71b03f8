"""Persistent taps through /dev/net/tun: creation (the kernel has no netlink call for it)
and destruction by clearing the persist flag (what libvirt does).

pyroute2 would fork a child per tap when working in another namespace; opening the tun
device from this thread inside the namespace costs microseconds instead.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from mxvm.net import netns
from mxvm.net.errors import NetworkError

TUN_DEVICE = "/dev/net/tun"
# _IOW('T', 202, int) and _IOW('T', 203, int) for the x86/arm ioctl encoding.
_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_IFF_TAP = 0x0002
_IFF_MULTI_QUEUE = 0x0100
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000
_IFF_TUN_EXCL = 0x8000  # fail with EBUSY instead of attaching to an existing device
_IFREQ_SIZE = 40
# Attaching to the tap failed for a reason that netlink deletion does not share.
_CANNOT_ATTACH = frozenset({errno.EBUSY, errno.EINVAL, errno.EPERM})


def _ifreq(name: str, *, multi_queue: bool, exclusive: bool) -> bytes:
    flags = _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR
    if multi_queue:
        flags |= _IFF_MULTI_QUEUE
    if exclusive:
        flags |= _IFF_TUN_EXCL
    return struct.pack(f"16sH{_IFREQ_SIZE - 18}x", name.encode(), flags)


def _open_tun(name: str, namespace: str | None) -> int:
    """An fd on /dev/net/tun bound to namespace (the opener's namespace is the tap's)."""
    try:
        with netns.entered(namespace):
            return os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise NetworkError(f"cannot open {TUN_DEVICE} for tap {name}: {exc}", ifname=name) from exc


def create_persistent_tap(
    name: str,
    *,
    namespace: str | None = None,
    multi_queue: bool = False,
) -> bool:
    """Create tap `name` (persistent, so it outlives this fd) in `namespace`.

    Returns False, touching nothing, when an interface of that name already exists.
    The hypervisor reopens the tap later with ifname=...; multi_queue must match its queues.
    """
    ifreq = _ifreq(name, multi_queue=multi_queue, exclusive=True)
    fd = _open_tun(name, namespace)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, ifreq)
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.EBUSY:
            return False
        raise NetworkError(f"cannot create tap {name}: {exc}", ifname=name) from exc
    try:
        fcntl.ioctl(fd, _TUNSETPERSIST, 1)
    except OSError as exc:
        raise NetworkError(f"cannot create tap {name}: {exc}", ifname=name) from exc
    finally:
        os.close(fd)
    return True


def destroy_tap(name: str, *, namespace: str | None = None, multi_queue: bool = False) -> bool:
    """Attach to tap `name`, clear its persist flag and close: the kernel removes it.

    The close() is the slow part (unregistering waits for RCU), which is why callers run
    this in a worker thread: the event loop stays free and deletions overlap. Returns
    False when the tap cannot be attached (a hypervisor holds it, or its flags differ);
    the caller then deletes it by netlink.
    """
    ifreq = _ifreq(name, multi_queue=multi_queue, exclusive=False)
    fd = _open_tun(name, namespace)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, ifreq)
        fcntl.ioctl(fd, _TUNSETPERSIST, 0)
    except OSError as exc:
        if exc.errno in _CANNOT_ATTACH:
            return False
        raise NetworkError(f"cannot delete tap {name}: {exc}", ifname=name) from exc
    finally:
        os.close(fd)
    return True
