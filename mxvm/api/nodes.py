"""Nodes, as operators see them."""

from __future__ import annotations

from aiohttp import web

from mxvm.api.http import body, coordinator, reply
from mxvm.models import DrainUpdate, EligibilityUpdate


async def list_nodes(request: web.Request) -> web.Response:
    return reply(await coordinator(request).store.list_nodes())


async def get_node(request: web.Request) -> web.Response:
    return reply(await coordinator(request).store.get_node(request.match_info["id"]))


async def set_eligibility(request: web.Request) -> web.Response:
    update = await body(request, EligibilityUpdate)
    return reply(await coordinator(request).set_eligibility(request.match_info["id"], update))


async def drain(request: web.Request) -> web.Response:
    update = await body(request, DrainUpdate)
    return reply(await coordinator(request).drain_node(request.match_info["id"], update))
