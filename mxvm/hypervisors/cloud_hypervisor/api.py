"""An async client of cloud-hypervisor's REST API over its unix socket (--api-socket).

Mirrors the OpenAPI spec (paths under /api/v1, PUT for actions, GET for vmm.ping and
vm.info). Actions answer 204; failures answer 400 (bad JSON), 404 (VM not created), 405
(wrong state, per the spec), 409 (duplicate device) or 500 (everything else CH refuses),
with a body that recent CH versions make a JSON list of error messages, outermost first,
and older ones plain text. Each status class is a typed exception here, so nothing above
this module looks at a status code. Every call has a timeout.
"""

# Timeouts are per-client settings, converted to ChvTimeout.

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from mxvm.hypervisors.base import DriverError
from mxvm.hypervisors.cloud_hypervisor.models import (
    ApiBody,
    DeviceConfig,
    PciDeviceInfo,
    VmConfig,
    VmInfo,
    VmmPingResponse,
)

DEFAULT_TIMEOUT_S = 5.0
API_ROOT = "http://localhost/api/v1"
_M = TypeVar("_M", bound=BaseModel)


class ChvConnectionError(DriverError):
    """The API socket is absent, refuses connections, or closed mid-request."""

    title = "cloud-hypervisor API unreachable"


class ChvTimeout(DriverError):
    title = "cloud-hypervisor API timed out"


class ChvApiError(DriverError):
    """cloud-hypervisor answered with an error status; `messages` is its error chain."""

    title = "cloud-hypervisor API error"

    def __init__(self, endpoint: str, status: int, messages: list[str]) -> None:
        text = ": ".join(messages) or "no message"
        super().__init__(f"{endpoint}: HTTP {status}: {text}", endpoint=endpoint, status=status)
        self.endpoint = endpoint
        self.http_status = status
        self.messages = messages


class ChvBadRequest(ChvApiError):
    """400: the body did not parse or the config is not valid."""


class ChvNotFound(ChvApiError):
    """404: no VM has been created (or no such device / endpoint)."""


class ChvInvalidState(ChvApiError):
    """405: the VM is in the wrong state for the action (e.g. shutdown before boot)."""


class ChvConflict(ChvApiError):
    """409: a device with the same identifier or path already exists."""


class ChvServerError(ChvApiError):
    """500: CH could not do it (its messages say why; invalid transitions land here too)."""


_BY_STATUS: dict[int, type[ChvApiError]] = {
    400: ChvBadRequest,
    404: ChvNotFound,
    405: ChvInvalidState,
    409: ChvConflict,
    500: ChvServerError,
}


def error_messages(body: bytes) -> list[str]:
    """CH's error body: a JSON list of messages (newer), else the text itself (older)."""
    text = body.decode(errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return [text] if text else []
    if isinstance(parsed, list):
        return [str(m) for m in parsed]
    return [text]


def api_error(endpoint: str, status: int, body: bytes) -> ChvApiError:
    return _BY_STATUS.get(status, ChvApiError)(endpoint, status, error_messages(body))


class ChvClient:
    """One session on one VMM's API socket: `async with ChvClient(sock) as api: ...`."""

    def __init__(self, socket: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket = socket
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ChvClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.UnixConnector(path=str(self.socket))
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def _call(self, method: str, endpoint: str, body: dict[str, Any] | None) -> bytes:
        """One request; the response body on 2xx, a typed exception otherwise."""
        try:
            async with self._client().request(method, f"{API_ROOT}/{endpoint}", json=body) as resp:
                data = await resp.read()
                status = resp.status
        except TimeoutError as exc:
            raise ChvTimeout(f"{endpoint}: no answer from {self.socket}") from exc
        except aiohttp.ClientError as exc:
            raise ChvConnectionError(f"{endpoint}: {self.socket}: {exc}") from exc
        if status >= 300:
            raise api_error(endpoint, status, data)
        return data

    async def _get(self, endpoint: str, model: type[_M]) -> _M:
        data = await self._call("GET", endpoint, None)
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            raise DriverError(f"{endpoint}: unexpected reply: {exc}") from exc

    async def _put(self, endpoint: str, body: ApiBody | None = None) -> bytes:
        return await self._call("PUT", endpoint, None if body is None else body.to_json())

    # -- the spec's operations -------------------------------------------------------------

    async def ping(self) -> VmmPingResponse:
        return await self._get("vmm.ping", VmmPingResponse)

    async def info(self) -> VmInfo:
        return await self._get("vm.info", VmInfo)

    async def create(self, config: VmConfig) -> None:
        await self._put("vm.create", config)

    async def boot(self) -> None:
        await self._put("vm.boot")

    async def shutdown(self) -> None:
        await self._put("vm.shutdown")

    async def power_button(self) -> None:
        await self._put("vm.power-button")

    async def delete(self) -> None:
        await self._put("vm.delete")

    async def shutdown_vmm(self) -> None:
        """vmm.shutdown. CH may close the socket as it exits; that counts as done."""
        try:
            await self._put("vmm.shutdown")
        except ChvConnectionError as exc:
            if not isinstance(exc.__cause__, aiohttp.ServerDisconnectedError):
                raise

    async def add_device(self, path: str, *, device_id: str | None = None) -> PciDeviceInfo | None:
        """vm.add-device (VFIO hot-plug): 200 with the PCI info, or 204 when cold-added."""
        data = await self._put("vm.add-device", DeviceConfig(path=path, id=device_id))
        if not data.strip():
            return None
        try:
            return PciDeviceInfo.model_validate_json(data)
        except ValidationError as exc:
            raise DriverError(f"vm.add-device: unexpected reply: {exc}") from exc
