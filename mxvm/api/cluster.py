"""Health, readiness and cluster status."""

from __future__ import annotations

from aiohttp import web

from mxvm.api.http import coordinator, reply
from mxvm.api.schemas import ClusterStatus, Health, Readiness


async def health(_request: web.Request) -> web.Response:
    return reply(Health(status="ok"))


async def ready(request: web.Request) -> web.Response:
    checks = await coordinator(request).readiness()
    ok = all(v == "ok" for v in checks.values())
    resp = reply(Readiness(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503)
    if not ok:
        resp.headers["Retry-After"] = "2"
    return resp


async def cluster_status(request: web.Request) -> web.Response:
    return reply(ClusterStatus(**await coordinator(request).cluster_status()))
