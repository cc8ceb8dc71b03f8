"""The error every mxvm.net operation raises when the kernel says no."""

from __future__ import annotations

from typing import Any

from mxvm.errors import MxvmError


class NetworkError(MxvmError):
    """A netlink, tun/tap or nftables operation failed; the message names the interface."""

    status = 500
    title = "network error"

    def __init__(self, detail: str, *, ifname: str | None = None, **extra: Any) -> None:
        super().__init__(detail, ifname=ifname, **extra)
        self.ifname = ifname
