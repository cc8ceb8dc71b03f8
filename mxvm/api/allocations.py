"""Allocations and evaluations (read-only for clients)."""

from __future__ import annotations

from aiohttp import web

from mxvm.api.http import coordinator, query_number, reply


async def list_allocations(request: web.Request) -> web.Response:
    store = coordinator(request).store
    if job_id := request.query.get("job_id"):
        return reply(await store.job_allocations(job_id))
    if node_id := request.query.get("node_id"):
        return reply(await store.node_allocation_list(node_id))
    limit = int(query_number(request, "limit", 1000, 1, 100000))
    return reply(await store.list_allocations(limit))


async def get_allocation(request: web.Request) -> web.Response:
    return reply(await coordinator(request).store.get_allocation(request.match_info["id"]))


async def get_evaluation(request: web.Request) -> web.Response:
    return reply(await coordinator(request).store.get_evaluation(request.match_info["id"]))
