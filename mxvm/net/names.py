"""Deterministic interface names and MAC addresses (pure, no I/O).

Kernel limit: an interface name is at most IFNAMSIZ - 1 = 15 bytes. Tap names carry a fixed
prefix so that leftovers from a crashed agent are recognisable and can be swept.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from mxvm.net.errors import NetworkError

DEFAULT_BRIDGE = "mxvm0"
TAP_PREFIX = "mxt"
IFNAME_MAX_BYTES = 15
_TAP_HASH_CHARS = IFNAME_MAX_BYTES - len(TAP_PREFIX)
_TAP_NAME_RE = re.compile(rf"^{TAP_PREFIX}[0-9a-f]{{{_TAP_HASH_CHARS}}}$")
# What `ip link` accepts, narrowed to a portable set: no '/', ':', whitespace or '%'.
_IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _digest(alloc_id: str) -> bytes:
    if not alloc_id:
        raise NetworkError("allocation id must not be empty")
    return hashlib.sha256(alloc_id.encode()).digest()


def tap_name(alloc_id: str) -> str:
    """The tap interface of an allocation: 'mxt' + 12 hex chars of sha256(alloc_id)."""
    return TAP_PREFIX + _digest(alloc_id).hex()[:_TAP_HASH_CHARS]


def is_tap_name(name: str) -> bool:
    """True for names tap_name() produces (the ones cleanup may delete)."""
    return _TAP_NAME_RE.match(name) is not None


def mac_address(alloc_id: str) -> str:
    """The guest NIC's MAC: 02:xx:xx:xx:xx:xx, locally administered unicast, 40 hashed bits."""
    return _format_mac(0x02, _digest(alloc_id))


def host_tap_mac(alloc_id: str) -> str:
    """The host side of the tap: same bytes as the guest MAC but first octet 0xfe.

    It must differ from the guest's MAC (the bridge would treat the guest's frames as its
    own) and 0xfe keeps it out of the way of the bridge's own address selection.
    """
    return _format_mac(0xFE, _digest(alloc_id))


def bridge_mac(bridge: str) -> str:
    """A fixed MAC for the bridge so it does not change as ports come and go."""
    return _format_mac(0x02, hashlib.sha256(b"bridge:" + bridge.encode()).digest())


def _format_mac(first: int, digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in (first, *digest[:5]))


def validate_ifname(name: str) -> str:
    """Return name if the kernel will accept it as an interface name, else raise NetworkError."""
    encoded = name.encode("utf-8", errors="replace")
    if not name or len(encoded) > IFNAME_MAX_BYTES:
        raise NetworkError(
            f"interface name {name!r} must be 1 to {IFNAME_MAX_BYTES} bytes long",
            ifname=name,
        )
    if name in {".", ".."} or not _IFNAME_RE.match(name):
        raise NetworkError(
            f"interface name {name!r} may only contain letters, digits, '_', '.', '-'"
            " and must start with a letter or digit",
            ifname=name,
        )
    return name


# Idle taps parked for reuse: renaming one costs far less than the kernel's ~15 ms for
# unregistering a netdev and creating another.
POOL_PREFIX = "mxp"
_POOL_NAME_RE = re.compile(rf"^{POOL_PREFIX}[0-9a-f]{{{_TAP_HASH_CHARS}}}$")


def pool_name() -> str:
    return POOL_PREFIX + secrets.token_hex(_TAP_HASH_CHARS // 2)


def is_pool_name(name: str) -> bool:
    return _POOL_NAME_RE.match(name) is not None


def resolve_tap_name(alloc_id_or_name: str) -> str:
    """Accept either an allocation id or a tap name already derived from one."""
    if is_tap_name(alloc_id_or_name) or is_pool_name(alloc_id_or_name):
        return alloc_id_or_name
    return tap_name(alloc_id_or_name)
