"""Test harness: a real coordinator (API + leader loops) on a free port, over the real
Postgres and Redis. The `api` fixture in tests/conftest.py uses it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from pydantic import SecretStr

from mxvm.config import CoordinatorSettings
from mxvm.coordinator import Coordinator
from mxvm.coordinator.process import open_coordinator, serve

ADMIN = "admin-secret"
AGENT = "agent-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Api:
    url: str
    coord: Coordinator
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, token: str | None = ADMIN, json: Any = None
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.url + path, json=json, headers=headers
        ) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body, resp.headers

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        status, body, _ = await self.call(method, path, **kw)
        assert status < 300, (status, body)
        return body

    async def wait_eval(self, eval_id: str, timeout_s: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                ev: dict[str, Any] = await self.ok("GET", f"/api/v1/evaluations/{eval_id}")
                if ev["status"] != "pending":
                    return ev
                await asyncio.sleep(0.05)

    async def register(self, name: str, memory: int = 4096, **kw: Any) -> dict[str, Any]:
        reg = {
            "name": name,
            "resources": {"cpu_millicores": 8000, "memory_mb": memory, "disk_mb": 100000},
            "drivers": ["fake", "qemu"],
            **kw,
        }
        out: dict[str, Any] = await self.ok("POST", "/api/v1/agent/register", json=reg, token=AGENT)
        return out["node"]  # type: ignore[no-any-return]


def settings_for(db: str, redis: str, **kw: Any) -> CoordinatorSettings:
    base: dict[str, Any] = {
        "database_url": db,
        "redis_url": redis,
        "listen": f"127.0.0.1:{free_port()}",
        "admin_token": SecretStr(ADMIN),
        "agent_tokens": [SecretStr(AGENT)],
        "leader_ttl_s": 2.0,
        "heartbeat_ttl_s": 2.0,
        "eval_poll_interval_s": 0.5,
        "drain_interval_s": 0.2,
        "backend_timeout_s": 2.0,
    }
    base.update(kw)
    return CoordinatorSettings(**base)


@contextlib.asynccontextmanager
async def running(settings: CoordinatorSettings) -> AsyncIterator[Api]:
    """The coordinator serving; once it leads, unless it does not stand (settings.leader)."""
    stop = asyncio.Event()
    ready = asyncio.Event()
    async with open_coordinator(settings) as coord:
        task = asyncio.create_task(serve(coord, stop, ready=ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                # Wait until this coordinator leads, so evaluations get processed.
                async with asyncio.timeout(10):
                    while settings.leader and coord.leader_epoch is None:
                        await asyncio.sleep(0.05)
                yield Api(f"http://{settings.listen}", coord, session)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
