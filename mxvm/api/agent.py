"""Agent-facing endpoints: register, heartbeat, long-poll desired allocations, report status
and device health."""

from __future__ import annotations

from aiohttp import web
from pydantic import RootModel

from mxvm.api.http import body, coordinator, query_number, reply
from mxvm.models import (
    AllocReportResults,
    AllocStatusBatch,
    AllocStatusUpdate,
    Device,
    NodeRegistration,
)

MAX_WAIT_S = 300.0


class DeviceList(RootModel[list[Device]]):
    """The node's devices as its agent sees them now (the whole list, health included)."""


async def register(request: web.Request) -> web.Response:
    reg = await body(request, NodeRegistration)
    return reply(await coordinator(request).register_node(reg))


async def heartbeat(request: web.Request) -> web.Response:
    await coordinator(request).heartbeat(request.match_info["id"])
    return web.json_response({"ok": True})


def _long_poll(request: web.Request) -> tuple[str, int, float]:
    """A long-poll's node, the index it answers past, and how long it may wait."""
    index = int(query_number(request, "index", 0, 0, 2**62))
    return request.match_info["id"], index, query_number(request, "wait", 30, 0, MAX_WAIT_S)


async def desired_allocations(request: web.Request) -> web.Response:
    return reply(await coordinator(request).node_allocations(*_long_poll(request)))


async def allocation_changes(request: web.Request) -> web.Response:
    return reply(await coordinator(request).node_changes(*_long_poll(request)))


async def report_status(request: web.Request) -> web.Response:
    update = await body(request, AllocStatusUpdate)
    alloc = await coordinator(request).report_allocation(
        request.match_info["id"], request.match_info["alloc_id"], update
    )
    return reply(alloc)


async def report_statuses(request: web.Request) -> web.Response:
    batch = await body(request, AllocStatusBatch)
    results = await coordinator(request).report_allocations(request.match_info["id"], batch.reports)
    return reply(AllocReportResults(results=results))


async def report_devices(request: web.Request) -> web.Response:
    devices = await body(request, DeviceList)
    node = await coordinator(request).report_devices(request.match_info["id"], devices.root)
    return reply(node)
