"""The typed HTTP client of the REST API, used by the CLI and the host agent: problem+json
answers become MxvmError subclasses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from mxvm import errors

_BY_STATUS: dict[int, type[errors.MxvmError]] = {
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    422: errors.InvalidSpec,
}


class ApiError(errors.MxvmError):
    """Any other error status from the coordinator."""


class ApiClient:
    def __init__(self, url: str, token: str | None, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        )

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def request(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        query = {k: str(v) for k, v in params.items() if v is not None}
        try:
            async with self._session.request(
                method, self.url + path, json=json, params=query
            ) as resp:
                data = await resp.json(content_type=None) if resp.content_length != 0 else None
                if resp.status >= 400:
                    raise _error(resp.status, data, resp.headers.get("Retry-After"))
                return data
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise errors.BackendUnavailable(
                f"cannot reach the coordinator at {self.url}: {exc}", backend="coordinator"
            ) from exc

    async def stream(self, path: str, **params: Any) -> AsyncIterator[bytes]:
        """A streamed GET (e.g. a followed log), chunk by chunk, with no overall timeout."""
        query = {k: str(v) for k, v in params.items() if v is not None}
        try:
            async with self._session.get(
                self.url + path, params=query, timeout=aiohttp.ClientTimeout(total=None)
            ) as resp:
                if resp.status >= 400:
                    data = await resp.json(content_type=None)
                    raise _error(resp.status, data, resp.headers.get("Retry-After"))
                async for chunk in resp.content.iter_any():
                    yield chunk
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise errors.BackendUnavailable(
                f"cannot reach the coordinator at {self.url}: {exc}", backend="coordinator"
            ) from exc

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, **params)

    async def post(self, path: str, json: Any = None, **params: Any) -> Any:
        return await self.request("POST", path, json=json, **params)


def _error(status: int, data: Any, retry_after: str | None) -> errors.MxvmError:
    detail = data.get("detail", "") if isinstance(data, dict) else str(data)
    extra = {k: v for k, v in data.items() if k == "errors"} if isinstance(data, dict) else {}
    if status == 503:
        return errors.BackendUnavailable(
            detail,
            backend=str(data.get("backend", "?")) if isinstance(data, dict) else "?",
            retry_after_s=int(retry_after or 2),
        )
    cls = _BY_STATUS.get(status, ApiError)
    err = cls(detail, **extra)
    err.status = status
    return err
