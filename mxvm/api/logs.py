"""An allocation's log (streamed, optionally followed) and exec in its guest: the coordinator
forwards both to the agent of the allocation's node."""

from __future__ import annotations

from aiohttp import web

from mxvm.api.http import BadRequest, body, coordinator, reply
from mxvm.models import ExecRequest, ExecResult


async def logs(request: web.Request) -> web.StreamResponse:
    alloc_id = request.match_info["id"]
    follow = request.query.get("follow", "false").lower() in ("1", "true", "yes")
    try:
        offset = int(request.query.get("offset", "0"))
    except ValueError as exc:
        raise BadRequest("offset must be an integer") from exc
    chunks = coordinator(request).agents.logs(alloc_id, follow=follow, offset=offset)
    first = await anext(chunks, b"")  # errors surface before any byte is sent
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    if first:
        await resp.write(first)
    async for chunk in chunks:
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def exec_(request: web.Request) -> web.Response:
    req = await body(request, ExecRequest)
    out = await coordinator(request).agents.exec(request.match_info["id"], req.model_dump())
    return reply(ExecResult.model_validate(out))
