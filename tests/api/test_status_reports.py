"""An agent's batched status reports: applied in order in one transaction, each with its own
result; a refused report does not stop the others."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from mxvm.agent.reporter import Reporter
from mxvm.client import ApiClient
from mxvm.models import AllocStatusUpdate, ClientStatus
from tests.api.test_scheduling_flow import job, submit
from tests.harness import AGENT, Api, free_port


async def _allocs(api: Api, job_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = await api.ok("GET", f"/api/v1/jobs/{job_id}/allocations")
    return sorted(out, key=lambda a: a["index"])


async def test_batch_applies_in_order_and_reports_each_result(api: Api) -> None:
    node = await api.register("n1")
    other = await api.register("n2", memory=512)  # too small for the job: it stays empty
    reschedule = {"attempts": 1, "interval_s": 3600, "delay_s": 0}
    j, _ = await submit(api, job("fleet", count=2, type_="service", reschedule=reschedule))
    a, b = await _allocs(api, j["id"])
    assert {a["node_id"], b["node_id"]} == {node["id"]}
    reports = [
        {"alloc_id": a["id"], "client_status": "starting"},
        {"alloc_id": b["id"], "client_status": "running"},
        {"alloc_id": a["id"], "client_status": "running",
         "events": [{"time": "2026-01-01T00:00:00Z", "type": "running", "message": "up"}]},
        {"alloc_id": b["id"], "client_status": "starting"},  # running -> starting: refused
        {"alloc_id": "no-such-alloc", "client_status": "running"},
        {"alloc_id": b["id"], "client_status": "failed", "exit_code": 3, "description": "x"},
    ]  # fmt: skip
    path = f"/api/v1/agent/nodes/{node['id']}/allocations/status"
    out = await api.ok("POST", path, token=AGENT, json={"reports": reports})
    assert [r["status"] for r in out["results"]] == [200, 200, 200, 409, 404, 200]
    assert "cannot go from running to starting" in out["results"][3]["detail"]
    now = {x["id"]: x for x in await _allocs(api, j["id"])}  # a replacement may be there too
    a2, b2 = now[a["id"]], now[b["id"]]
    assert a2["client_status"] == "running"
    assert [e["message"] for e in a2["events"] if e["type"] == "running"] == ["up"]
    assert (b2["client_status"], b2["exit_code"], b2["client_description"]) == ("failed", 3, "x")
    # The failure queued a new evaluation: the service job gets a replacement.
    async with asyncio.timeout(10):
        while len(await _allocs(api, j["id"])) < 3:
            await asyncio.sleep(0.05)
    # Another node may not report on these allocations; the whole batch is still answered.
    path2 = f"/api/v1/agent/nodes/{other['id']}/allocations/status"
    bad = {"reports": [{"alloc_id": a["id"], "client_status": "complete"}]}
    out = await api.ok("POST", path2, token=AGENT, json=bad)
    assert out["results"][0]["status"] == 403
    now = {x["id"]: x for x in await _allocs(api, j["id"])}
    assert now[a["id"]]["client_status"] == "running"


async def test_batch_input_is_validated(api: Api) -> None:
    node = await api.register("n1")
    path = f"/api/v1/agent/nodes/{node['id']}/allocations/status"
    status, body, _ = await api.call("POST", path, token=AGENT, json={"reports": []})
    assert status == 422 and any(e["field"] == "reports" for e in body["errors"])
    status, _, _ = await api.call("POST", path, token=None, json={"reports": []})
    assert status == 401


class CountingClient(ApiClient):
    posts: int = 0

    async def post(self, path: str, json: Any = None, **params: Any) -> Any:
        self.posts += 1
        return await super().post(path, json=json, **params)


async def test_reporter_sends_concurrent_reports_in_few_requests(api: Api) -> None:
    node = await api.register("n1", memory=64_000)
    j, _ = await submit(api, job("many", count=20, type_="service", memory=128))
    allocs = await _allocs(api, j["id"])
    client = CountingClient(api.url, AGENT)
    async with client:
        reporter = Reporter(client, lambda: f"/api/v1/agent/nodes/{node['id']}/allocations/status")

        async def life(alloc_id: str) -> None:
            for status in (ClientStatus.STARTING, ClientStatus.RUNNING, ClientStatus.COMPLETE):
                await reporter.report(alloc_id, AllocStatusUpdate(client_status=status))

        await asyncio.gather(*(life(a["id"]) for a in allocs))
        await reporter.close()
    done = await _allocs(api, j["id"])
    assert {a["client_status"] for a in done if a["id"] in {x["id"] for x in allocs}} == {
        "complete"
    }
    # 60 reports; each sender round takes everything queued meanwhile.
    assert client.posts <= 10, client.posts


@contextlib.asynccontextmanager
async def _late_server(port: int, seen: list[Any]) -> AsyncIterator[None]:
    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        results = [{"alloc_id": r["alloc_id"], "status": 200} for r in body["reports"]]
        return web.json_response({"results": results})

    app = web.Application()
    app.router.add_post("/r", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def test_reporter_retries_while_the_coordinator_is_unreachable() -> None:
    port = free_port()
    seen: list[Any] = []
    async with ApiClient(f"http://127.0.0.1:{port}", "t") as client:
        reporter = Reporter(client, lambda: "/r")
        first = asyncio.create_task(
            reporter.report("a1", AllocStatusUpdate(client_status=ClientStatus.STARTING))
        )
        await asyncio.sleep(0.5)  # nothing listens yet: the sender backs off and retries
        assert not first.done()
        second = asyncio.create_task(
            reporter.report("a1", AllocStatusUpdate(client_status=ClientStatus.RUNNING))
        )
        async with _late_server(port, seen):
            await asyncio.wait_for(asyncio.gather(first, second), 10)
        await reporter.close()
    sent = [(r["alloc_id"], r["client_status"]) for body in seen for r in body["reports"]]
    assert sent == [("a1", "starting"), ("a1", "running")]


async def test_a_garbled_answer_does_not_leave_the_reporter_waiting() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"not": "results"})

    app = web.Application()
    app.router.add_post("/r", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with ApiClient(f"http://127.0.0.1:{port}", "t") as client:
            reporter = Reporter(client, lambda: "/r")
            update = AllocStatusUpdate(client_status=ClientStatus.RUNNING)
            await asyncio.wait_for(reporter.report("a1", update), 10)
            await asyncio.wait_for(reporter.report("a1", update), 10)  # and it keeps working
            await reporter.close()
    finally:
        await runner.cleanup()
