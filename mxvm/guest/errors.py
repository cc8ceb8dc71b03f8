"""Errors of the host <-> guest channel, raised by mxvm.guest.client (host side only)."""

from __future__ import annotations

from mxvm.errors import MxvmError


class GuestError(MxvmError):
    status = 502
    title = "guest agent error"


class GuestUnavailable(GuestError):
    """The guest agent cannot be reached: no socket, connection lost, or not ready in time."""

    status = 503
    title = "guest agent unavailable"


class GuestTimeout(GuestError):
    """A request or command in the guest did not finish within its timeout."""

    status = 504
    title = "guest agent timeout"


class GuestProtocolError(GuestError):
    """The guest sent a frame that breaks the protocol."""

    title = "guest protocol error"


class GuestCommandRejected(GuestError):
    """The guest agent refused a request (duplicate id, main command already started...)."""

    status = 409
    title = "guest command rejected"
