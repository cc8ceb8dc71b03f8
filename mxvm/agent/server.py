"""The agent's own small API, called by the coordinator (never by users directly): an
allocation's log (optionally followed while it runs) and exec in its running guest.
Authenticated with the secret this agent gave the coordinator at registration."""

from __future__ import annotations

import asyncio
import hmac
from pathlib import Path
from typing import Protocol

from aiohttp import web

from mxvm.agent import alloclog
from mxvm.agent.runner import AllocRunner
from mxvm.api.errors import Handler, error_middleware
from mxvm.api.parse import body
from mxvm.errors import NotFound, Unauthorized
from mxvm.models import ExecRequest, ExecResult

CHUNK = 64 * 1024
FOLLOW_POLL_S = 0.2


class AgentView(Protocol):
    """What the API needs from the agent."""

    def runner(self, alloc_id: str) -> AllocRunner | None: ...

    def run_dir(self, alloc_id: str) -> Path: ...


AGENT = web.AppKey("agent", AgentView)
SECRET = web.AppKey("secret", str)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    if not token or not hmac.compare_digest(token.encode(), request.app[SECRET].encode()):
        raise Unauthorized("bad or missing agent secret")
    return await handler(request)


async def logs(request: web.Request) -> web.StreamResponse:
    """The output from `offset` (counted from the allocation's first byte); a stretch the
    node no longer keeps is skipped with a one-line note (not counted in offsets)."""
    alloc_id = request.match_info["id"]
    run_dir = request.app[AGENT].run_dir(alloc_id)
    runner = request.app[AGENT].runner(alloc_id)
    if runner is None and not alloclog.exists(run_dir):
        raise NotFound(f"no log for allocation {alloc_id} on this node")
    follow = request.query.get("follow", "false").lower() in ("1", "true", "yes")
    offset = int(request.query.get("offset", "0") or 0)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    while True:
        at, data = await asyncio.to_thread(alloclog.read, run_dir, offset, CHUNK)
        if at > offset:
            await resp.write(f"[mxvm: {at - offset} bytes of older output dropped]\n".encode())
            offset = at
        if data:
            offset += len(data)
            await resp.write(data)
            continue
        if not follow or runner is None or runner.finished.is_set():
            break
        await asyncio.sleep(FOLLOW_POLL_S)
    await resp.write_eof()
    return resp


async def exec_(request: web.Request) -> web.Response:
    alloc_id = request.match_info["id"]
    runner = request.app[AGENT].runner(alloc_id)
    if runner is None:
        raise NotFound(f"allocation {alloc_id} is not running on this node")
    req = await body(request, ExecRequest)
    res = await runner.exec(req.argv, req.env, req.cwd, req.timeout_s)
    out = ExecResult(
        stdout=res.stdout.decode(errors="replace"),
        stderr=res.stderr.decode(errors="replace"),
        exit_code=res.exit_code,
        error=res.error,
    )
    return web.json_response(out.model_dump())


def create_agent_app(agent: AgentView, secret: str) -> web.Application:
    app = web.Application(middlewares=[error_middleware, _auth])
    app[AGENT] = agent
    app[SECRET] = secret
    app.router.add_get("/v1/allocations/{id}/logs", logs)
    app.router.add_post("/v1/allocations/{id}/exec", exec_)
    return app
