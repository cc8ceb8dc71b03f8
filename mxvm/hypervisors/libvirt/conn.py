"""A small typed, async wrapper over one libvirt connection; the only `import libvirt`.

libvirt's calls block, so each runs in a worker thread (`asyncio.to_thread`) under a
timeout; a libvirt connection is thread-safe, so one is shared. `libvirt.libvirtError`
is translated here, with libvirt's own message, into the LibvirtError tree below, so
nothing above this module sees libvirt's types or error codes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar

import libvirt
from pydantic import BaseModel, ConfigDict

from mxvm.errors import InvalidState, NotFound
from mxvm.hypervisors.base import DriverError

log = logging.getLogger(__name__)
T = TypeVar("T")


class LibvirtError(DriverError):
    """libvirt refused or failed a call; `code` is libvirt's error number."""

    title = "libvirt error"

    def __init__(self, detail: str, *, code: int | None = None) -> None:
        super().__init__(detail, libvirt_code=code)
        self.code = code


class LibvirtUnavailable(LibvirtError):
    """No connection to libvirtd (not running, socket missing, connection lost)."""

    status = 503
    title = "libvirt unavailable"


class DomainNotFound(LibvirtError, NotFound):
    status = 404
    title = "libvirt domain not found"


class DomainStateError(LibvirtError, InvalidState):
    """The call does not fit the domain's state (destroying a domain that is not running)."""

    status = 409
    title = "libvirt domain in the wrong state"


class DomainRejected(LibvirtError):
    """libvirt or QEMU refused the domain's configuration."""

    status = 422
    title = "libvirt rejected the domain"


class DomainState(IntEnum):
    """virDomainState."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4  # being shut down
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


class ShutoffReason(IntEnum):
    """virDomainShutoffReason: why a defined domain is not running."""

    UNKNOWN = 0
    SHUTDOWN = 1  # the guest powered off
    DESTROYED = 2  # virDomainDestroy, from us or anyone else
    CRASHED = 3
    MIGRATED = 4
    SAVED = 5
    FAILED = 6  # QEMU failed to start
    FROM_SNAPSHOT = 7
    DAEMON = 8  # QEMU ended while libvirtd was not watching


class DomainInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    uuid: str
    id: int | None  # libvirt's id while running
    state: DomainState
    reason: int  # the state's reason code (a ShutoffReason when SHUTOFF)

    @property
    def active(self) -> bool:
        return self.state not in (DomainState.SHUTOFF, DomainState.NOSTATE)


_NOT_FOUND = frozenset({libvirt.VIR_ERR_NO_DOMAIN})
_WRONG_STATE = frozenset({libvirt.VIR_ERR_OPERATION_INVALID})
_REJECTED = frozenset(
    {
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_ERR_XML_DETAIL,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_NO_SUPPORT,
    }
)
_UNAVAILABLE = frozenset(
    {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC}
)


def translate(exc: libvirt.libvirtError, what: str) -> LibvirtError:
    code = exc.get_error_code()
    message = f"{what}: {exc.get_error_message() or exc}"
    if code in _NOT_FOUND:
        return DomainNotFound(message, code=code)
    if code in _WRONG_STATE:
        return DomainStateError(message, code=code)
    if code in _REJECTED:
        return DomainRejected(message, code=code)
    if code in _UNAVAILABLE:
        return LibvirtUnavailable(message, code=code)
    return LibvirtError(message, code=code)


def _silence(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


libvirt.registerErrorHandler(_silence, None)


def _info(dom: Any) -> DomainInfo:
    state, reason = dom.state()
    dom_id = dom.ID()
    return DomainInfo(
        name=dom.name(),
        uuid=dom.UUIDString(),
        id=dom_id if dom_id >= 0 else None,
        state=DomainState(state),
        reason=reason,
    )


class Connection:
    """One libvirt connection, reopened when libvirtd restarted under it."""

    def __init__(self, uri: str, *, timeout_s: float = 30.0) -> None:
        self.uri = uri
        self._timeout_s = timeout_s
        self._conn: Any = None
        self._lock = threading.Lock()  # guards (re)opening, which happens in worker threads

    # -- plumbing --------------------------------------------------------------------

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is None or self._conn.isAlive() != 1:
                try:
                    self._conn = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    err = translate(exc, f"cannot connect to {self.uri}")
                    raise LibvirtUnavailable(err.detail, code=err.code) from exc
            return self._conn

    def _lost(self) -> bool:
        """True when the open connection has died (libvirtd restarted or went away)."""
        with self._lock:
            conn = self._conn
        try:
            return conn is not None and conn.isAlive() != 1
        except libvirt.libvirtError:
            return True

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        try:
            return fn(self._connection())
        except libvirt.libvirtError as exc:
            err = translate(exc, what)
            if type(err) is LibvirtError and self._lost():
                err = LibvirtUnavailable(err.detail, code=err.code)
            raise err from exc

    async def _run(self, what: str, fn: Callable[[Any], T], *, retry: bool = False) -> T:
        """`fn(connection)` in a worker thread; `retry`: once more on a fresh connection
        if the old one turns out dead (only for calls that are safe to repeat)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    return await asyncio.to_thread(self._call, what, fn)
                except LibvirtUnavailable:
                    if not retry:
                        raise
                    log.info("libvirt.reconnect uri=%s", self.uri)
                    return await asyncio.to_thread(self._call, what, fn)
        except TimeoutError as exc:
            raise LibvirtError(f"{what}: no answer from {self.uri} in {self._timeout_s}s") from exc

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except libvirt.libvirtError as exc:
                    log.debug("libvirt.close_failed uri=%s error=%s", self.uri, exc)

        await asyncio.to_thread(close)

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection now (every call opens it on demand anyway)."""
        await self._run(f"connect to {self.uri}", lambda c: None, retry=True)

    async def hypervisor(self) -> str:
        """The driver's name, e.g. "QEMU" or "TEST"."""
        result: str = await self._run("getType", lambda c: c.getType(), retry=True)
        return result

    async def library_version(self) -> int:
        """libvirt's version as major * 1_000_000 + minor * 1000 + release."""
        result: int = await self._run("getLibVersion", lambda c: c.getLibVersion(), retry=True)
        return result

    # -- domains ---------------------------------------------------------------------

    async def define_and_start(self, xml: str) -> DomainInfo:
        """defineXML + create: a persistent domain, so after it ends libvirt still says why.

        If the start fails the definition is removed again.
        """

        def call(c: Any) -> DomainInfo:
            dom = c.defineXML(xml)
            try:
                dom.create()
            except libvirt.libvirtError:
                try:
                    dom.undefine()
                except libvirt.libvirtError as exc:
                    log.warning("libvirt.undefine_failed domain=%s error=%s", dom.name(), exc)
                raise
            return _info(dom)

        return await self._run("define and start the domain", call)

    async def info(self, name: str) -> DomainInfo:
        return await self._run(
            f"look up domain {name}", lambda c: _info(c.lookupByName(name)), retry=True
        )

    async def names(self, prefix: str = "") -> list[str]:
        """Every domain libvirt knows (running or defined) whose name starts with `prefix`."""

        def call(c: Any) -> list[str]:
            return sorted(n for d in c.listAllDomains(0) if (n := d.name()).startswith(prefix))

        return await self._run("list domains", call, retry=True)

    async def shutdown(self, name: str) -> None:
        """Ask the guest to power off; returns at once.

        No flags: libvirt's QEMU driver then presses the ACPI power button, since the
        domain has no qemu-guest-agent channel (and the test driver takes no flags).
        """
        await self._run(f"shut down domain {name}", lambda c: c.lookupByName(name).shutdown())

    async def destroy(self, name: str) -> None:
        """Kill the domain's QEMU (SIGTERM, then SIGKILL)."""
        await self._run(f"destroy domain {name}", lambda c: c.lookupByName(name).destroy())

    async def undefine(self, name: str) -> None:
        await self._run(f"undefine domain {name}", lambda c: c.lookupByName(name).undefine())
