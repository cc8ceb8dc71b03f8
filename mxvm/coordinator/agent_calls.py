"""Calls from the coordinator to a node's agent (Nomad's client API): an allocation's log and
exec in its guest. The agent's URL and secret come from the node's registration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from mxvm.errors import BackendUnavailable, InvalidState, MxvmError, NotFound
from mxvm.store import Store

CHUNK = 64 * 1024


class AgentCalls:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No total timeout: a followed log lasts as long as the allocation runs.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _endpoint(self, alloc_id: str) -> tuple[str, dict[str, str]]:
        alloc = await self.store.get_allocation(alloc_id)
        url, secret = await self.store.agent_endpoint(alloc.node_id)
        if not url:
            raise InvalidState(f"node {alloc.node_id} has no agent API to ask")
        return url, {"Authorization": f"Bearer {secret}"}

    async def logs(self, alloc_id: str, *, follow: bool, offset: int) -> AsyncIterator[bytes]:
        url, headers = await self._endpoint(alloc_id)
        params = {"follow": str(follow).lower(), "offset": str(offset)}
        try:
            async with self._http().get(
                f"{url}/v1/allocations/{alloc_id}/logs", params=params, headers=headers
            ) as resp:
                await _raise_for(resp, alloc_id)
                async for chunk in resp.content.iter_chunked(CHUNK):
                    yield chunk
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise BackendUnavailable(f"agent at {url} unreachable: {exc}", backend="agent") from exc

    async def exec(self, alloc_id: str, body: dict[str, Any]) -> dict[str, Any]:
        url, headers = await self._endpoint(alloc_id)
        limit = float(body.get("timeout_s") or 60) + 10
        try:
            async with self._http().post(
                f"{url}/v1/allocations/{alloc_id}/exec",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as resp:
                await _raise_for(resp, alloc_id)
                out: dict[str, Any] = await resp.json()
                return out
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise BackendUnavailable(f"agent at {url} unreachable: {exc}", backend="agent") from exc


async def _raise_for(resp: aiohttp.ClientResponse, alloc_id: str) -> None:
    if resp.status < 400:
        return
    try:
        detail = (await resp.json(content_type=None)).get("detail", "")
    except (ValueError, aiohttp.ContentTypeError):
        detail = await resp.text()
    if resp.status == 404:
        raise NotFound(detail or f"allocation {alloc_id} not found on its node")
    if resp.status == 409:
        raise InvalidState(detail)
    err = MxvmError(f"agent answered {resp.status}: {detail}")
    err.status = resp.status if resp.status in (422,) else 502
    err.title = "agent error"
    raise err
